"""Stage 2a: the patch series as data.

`patches/<base>/series` lists the patches in order (quilt format: one file name
a line, '#' starts a comment). Each patch is `git format-patch` output whose
commit message carries DEP-3 headers plus ours:

  Backends        cpu, metal, cuda (comma-separated)
  Retire-When     the upstream event that makes the patch unnecessary
  Public-Headers  yes | no: does it change a header installed under mlx/include
  Verified        the rungs of the verification ladder the patch has reached
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .bases import BasePin
from .digest import sha256_file
from .errors import MlxForkError

REQUIRED_HEADERS: tuple[str, ...] = (
    "Description",
    "Origin",
    "Forwarded",
    "Author",
    "Last-Update",
    "Backends",
    "Retire-When",
    "Public-Headers",
    "Verified",
)
OPTIONAL_HEADERS: tuple[str, ...] = ("Bug", "Applied-Upstream", "Reviewed-By", "Cost")
KNOWN_BACKENDS = frozenset({"cpu", "metal", "cuda", "common"})
# The verification ladder (design.md), plus the CPU proofs that run on Linux.
VERIFIED_RUNGS: tuple[str, ...] = (
    "applies",
    "type-checks",
    "simulated",
    "apple-silicon",
    "cpu-reproducer",
    "upstream-suite",
    "cuda-gpu",
)
_HEADER = re.compile(r"^([A-Z][A-Za-z-]*):\s?(.*)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class FileChange:
    path: str  # path in the tree, without a/ b/ prefixes
    hunks: tuple[int, ...]  # old-file start line of each hunk, in order


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path
    sha256: str
    subject: str
    headers: dict[str, str]
    files: tuple[FileChange, ...]

    @property
    def backends(self) -> list[str]:
        return _split_list(self.headers.get("Backends", ""))

    @property
    def verified(self) -> list[str]:
        return _split_list(self.headers.get("Verified", ""))

    @property
    def public_headers(self) -> bool:
        return self.headers.get("Public-Headers", "").strip().lower() == "yes"

    @property
    def retire_when(self) -> str:
        return self.headers.get("Retire-When", "")

    @property
    def touched_paths(self) -> list[str]:
        return [f.path for f in self.files]


@dataclass(frozen=True)
class Series:
    base: str
    directory: Path
    patches: tuple[Patch, ...]
    comments: tuple[str, ...] = field(default_factory=tuple)  # leading comment lines, kept on rewrite


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in value.replace(";", ",").split(",") if item.strip()]



def read_series_names(series_file: Path) -> tuple[list[str], list[str]]:
    """(patch names in order, leading comment lines). Raises on malformed lines."""
    if not series_file.is_file():
        raise MlxForkError(f"{series_file}: missing series file")
    names: list[str] = []
    leading: list[str] = []
    for number, raw in enumerate(series_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            if not names and raw.strip().startswith("#"):
                leading.append(raw.rstrip())
            continue
        words = line.split()
        if len(words) > 1 and words[1:] != ["-p1"]:
            raise MlxForkError(
                f"{series_file}:{number}: unsupported options {' '.join(words[1:])!r} "
                "(only -p1 patches are supported)"
            )
        name = words[0]
        if "/" in name or not name.endswith(".patch"):
            raise MlxForkError(f"{series_file}:{number}: {name!r} is not a .patch file name in this directory")
        if name in names:
            raise MlxForkError(f"{series_file}:{number}: {name} is listed twice")
        names.append(name)
    return names, leading


def write_series(series_file: Path, names: list[str], default_header: str) -> None:
    """Rewrite a series file to list `names`, keeping what people wrote in it.

    Leading comment lines stay first (or `default_header` for a new file); a
    patch that stays keeps its line, inline comment included, and the comment
    lines just above it (a heading between patches); comment lines after the
    last patch (notes on patches not carried, for example) follow the new
    list, in their order, after the headings of patches no longer listed.
    """
    leading: list[str] = []
    pending: list[str] = []
    above: dict[str, list[str]] = {}
    lines_by_name: dict[str, str] = {}
    if series_file.is_file():
        seen_patch = False
        for raw in series_file.read_text(encoding="utf-8").splitlines():
            entry = raw.split("#", 1)[0].strip()
            if entry:
                seen_patch = True
                name = entry.split()[0]
                lines_by_name[name] = raw.rstrip()
                above[name] = pending
                pending = []
            elif seen_patch:
                pending.append(raw.rstrip())
            else:
                leading.append(raw.rstrip())
    header = leading or [default_header]
    body: list[str] = []
    for name in names:
        body += above.pop(name, [])
        body.append(lines_by_name.get(name, name))
    orphaned = [line for block in above.values() for line in block]
    series_file.write_text("\n".join([*header, *body, *orphaned, *pending]) + "\n", encoding="utf-8")


def parse_patch(path: Path) -> Patch:
    """Parse one git format-patch file: subject, DEP-3 headers, touched files and hunks."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MlxForkError(f"{path}: patch file is listed in the series but missing") from None
    except UnicodeDecodeError as exc:
        raise MlxForkError(f"{path}: not UTF-8 text: {exc}") from exc
    lines = text.splitlines()
    subject = ""
    body_start = None
    for i, line in enumerate(lines):
        if line.startswith("Subject:"):
            subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", line[len("Subject:"):].strip())
            j = i + 1
            while j < len(lines) and lines[j].startswith(" "):  # folded subject
                subject += " " + lines[j].strip()
                j += 1
            body_start = j
            break
        if line.startswith("diff --git"):
            break
    if body_start is None:
        raise MlxForkError(f"{path}: not git format-patch output (no Subject: line before the diff)")

    headers: dict[str, str] = {}
    current: str | None = None
    i = body_start
    while i < len(lines) and lines[i] != "---" and not lines[i].startswith("diff --git"):
        line = lines[i]
        match = _HEADER.match(line)
        if match:
            current = match.group(1)
            headers[current] = match.group(2).strip()
        elif current and line.startswith((" ", "\t")) and line.strip():
            headers[current] = (headers[current] + "\n" + line.strip()).strip()
        elif not line.strip():
            current = None
        i += 1
    if "Author" not in headers:
        for line in lines[:body_start]:
            if line.startswith("From: "):
                headers.setdefault("Author", line[len("From: "):].strip())
                break
    if "Description" not in headers and subject:
        headers["Description"] = subject

    files = _parse_diff(lines)
    if not files:
        raise MlxForkError(f"{path}: contains no diff")
    return Patch(path.name, path, sha256_file(path), subject, headers, tuple(files))


def _parse_diff(lines: list[str]) -> list[FileChange]:
    files: list[FileChange] = []
    path: str | None = None
    hunks: list[int] = []
    for line in lines:
        if line.startswith("diff --git "):
            if path is not None:
                files.append(FileChange(path, tuple(hunks)))
            parts = line.split(" ")
            path = parts[-1][2:] if parts[-1].startswith("b/") else parts[-1]
            hunks = []
        elif line.startswith("@@ ") and path is not None:
            match = re.match(r"^@@ -(\d+)", line)
            if match:
                hunks.append(int(match.group(1)))
    if path is not None:
        files.append(FileChange(path, tuple(hunks)))
    return files


def load_series(base: BasePin) -> Series:
    return load_series_dir(base.directory)


def load_series_dir(directory: Path) -> Series:
    names, leading = read_series_names(directory / "series")
    patches = tuple(parse_patch(directory / name) for name in names)
    return Series(directory.name, directory, patches, tuple(leading))


def is_installed_header(path: str) -> bool:
    """True for headers MLX installs under include/ (CMake: mlx/**/*.h, minus one)."""
    return path.startswith("mlx/") and path.endswith(".h") and path != "mlx/backend/metal/kernels.h"


@dataclass(frozen=True)
class LintProblem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def lint_series_dir(directory: Path) -> list[LintProblem]:
    """Every problem in a base's series and its patches' headers (empty list = clean)."""
    problems: list[LintProblem] = []
    try:
        names, _ = read_series_names(directory / "series")
    except MlxForkError as exc:
        return [LintProblem(str(directory / "series"), exc.message)]
    for name in names:
        try:
            patch = parse_patch(directory / name)
        except MlxForkError as exc:
            problems.append(LintProblem(name, exc.message.split(": ", 1)[-1]))
            continue
        problems.extend(LintProblem(name, m) for m in lint_patch(patch))
    listed = set(names)
    for stray in sorted(p.name for p in directory.glob("*.patch")):
        if stray not in listed:
            problems.append(LintProblem(stray, "patch file is not listed in the series"))
    return problems


def lint_patch(patch: Patch) -> list[str]:
    problems: list[str] = []
    h = patch.headers
    for key in REQUIRED_HEADERS:
        if not h.get(key, "").strip():
            problems.append(f"missing header {key}:")
    for key in h:
        if key not in REQUIRED_HEADERS and key not in OPTIONAL_HEADERS and key not in ("Signed-off-by", "Co-authored-by"):
            problems.append(f"unknown header {key}:")
    for backend in patch.backends:
        if backend not in KNOWN_BACKENDS:
            problems.append(f"Backends: unknown backend {backend!r} (known: {', '.join(sorted(KNOWN_BACKENDS))})")
    for rung in patch.verified:
        if rung not in VERIFIED_RUNGS:
            problems.append(f"Verified: unknown rung {rung!r} (known: {', '.join(VERIFIED_RUNGS)})")
    if h.get("Verified") and "applies" not in patch.verified:
        problems.append("Verified: every patch in a series must at least have reached 'applies'")
    public = h.get("Public-Headers", "").strip().lower()
    if public and public not in ("yes", "no"):
        problems.append(f"Public-Headers: must be yes or no, not {h['Public-Headers']!r}")
    installed = [p for p in patch.touched_paths if is_installed_header(p)]
    if public == "no" and installed:
        problems.append(f"Public-Headers: no, but the patch changes installed headers: {', '.join(installed)}")
    last = h.get("Last-Update", "").strip()
    if last and not _DATE.match(last):
        problems.append(f"Last-Update: {last!r} is not YYYY-MM-DD")
    return problems
