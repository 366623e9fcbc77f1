"""Stage 2b: the patch series against a tree - status, apply, rebase, export.

A *queue repository* is a git repository whose first commit is the pristine
tree and whose following commits are the patches, one each, made with `git am`
so that each commit message carries the patch's DEP-3 headers. It is the
patch-queue branch of git-buildpackage: the patch files are the truth, the
branch is a way to edit them (`export` turns commits back into patch files).

Patches are applied with `git apply`/`git am`, which never fuzz: every context
line must match. Offsets (hunks that moved) are accepted, changed context is not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from email.utils import mktime_tz, parsedate_tz
from pathlib import Path

from packaging.version import InvalidVersion, Version

from .bases import BasePin, available_bases, load_base
from .errors import MlxForkError
from .git import git
from .series import Patch, Series, lint_patch, parse_patch, read_series_names, write_series

# Fixed identities and dates keep queue commits (and so exported patches) reproducible.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "mlx-fork",
    "GIT_AUTHOR_EMAIL": "mlx-fork@localhost",
    "GIT_COMMITTER_NAME": "mlx-fork",
    "GIT_COMMITTER_EMAIL": "mlx-fork@localhost",
    "GIT_AUTHOR_DATE": "2000-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2000-01-01T00:00:00+0000",
    "GIT_CONFIG_NOSYSTEM": "1",
}
QUEUE_BRANCH = "patch-queue"

APPLIES = "applies"
UPSTREAM = "upstream"
CONFLICT = "conflict"


@dataclass(frozen=True)
class PatchStatus:
    patch: str
    status: str  # APPLIES | UPSTREAM | CONFLICT
    detail: str = ""  # for conflicts: which file and hunk, and git's words
    file: str = ""
    hunk: int = 0  # 1-based hunk number within `file`; 0 if not known

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def _git(
    repo: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """git with the queue's fixed identities and dates."""
    return git(repo, *args, check=check, env={**_GIT_ENV, **(env or {})}, input=input)


def init_queue_repo(pristine: Path, dest: Path, label: str) -> None:
    """`dest` := a git repository with the pristine tree as its only commit."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(pristine, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    _git(dest, "init", "--quiet", f"--initial-branch={QUEUE_BRANCH}")
    _git(dest, "config", "core.autocrlf", "false")
    _git(dest, "add", "--all", "--force")
    _git(dest, "commit", "--quiet", "--no-verify", "-m", f"{label} (pristine)")
    _git(dest, "tag", "pristine")


_UPSTREAM_RELEASE = re.compile(r"^v?(\d+(?:\.\d+)+)(?![\w.])")


def declared_upstream(patch: Patch, version: str | None) -> str | None:
    """The release named by `Applied-Upstream:` if `version` is that release or later.

    Only a header that starts with a release ("v0.32.0, <url>") counts; text such
    as "partly in v0.32.1" does not. Used when upstream fixed the same bug its own
    way, so the patch neither applies nor reverse-applies on the newer tree.
    """
    match = _UPSTREAM_RELEASE.match(patch.headers.get("Applied-Upstream", "").strip())
    if version is None or match is None:
        return None
    try:
        if Version(version) >= Version(match.group(1)):
            return f"v{match.group(1)}"
    except InvalidVersion:
        return None
    return None


def classify(repo: Path, patch: Patch, version: str | None = None) -> PatchStatus:
    """Does `patch` apply to the work tree of `repo` (MLX `version`), is it already there, or where does it conflict?"""
    forward = _git(repo, "apply", "--check", "--verbose", str(patch.path), check=False)
    if forward.returncode == 0:
        return PatchStatus(patch.name, APPLIES)
    reverse = _git(repo, "apply", "--check", "--reverse", str(patch.path), check=False)
    if reverse.returncode == 0:
        return PatchStatus(patch.name, UPSTREAM, "reverse-applies: its change is already in the tree")
    release = declared_upstream(patch, version)
    if release is not None:
        return PatchStatus(patch.name, UPSTREAM, f"Applied-Upstream: {release} (fixed upstream its own way)")
    return _conflict(patch, forward.stderr)


def _conflict(patch: Patch, stderr: str) -> PatchStatus:
    failed = re.search(r"error: patch failed: (.+):(\d+)", stderr)
    if failed:
        path, line = failed.group(1), int(failed.group(2))
        hunk = 0
        for change in patch.files:
            if change.path == path and line in change.hunks:
                hunk = change.hunks.index(line) + 1
        where = f"{path} hunk {hunk} (at line {line})" if hunk else f"{path} at line {line}"
        return PatchStatus(patch.name, CONFLICT, f"{where}: context does not match", path, hunk)
    missing = re.search(r"error: (.+): (No such file or directory|does not exist in index)", stderr)
    if missing:
        return PatchStatus(patch.name, CONFLICT, f"{missing.group(1)}: file to patch does not exist", missing.group(1))
    exists = re.search(r"error: (.+): already exists in working directory", stderr)
    if exists:
        return PatchStatus(patch.name, CONFLICT, f"{exists.group(1)}: file to create already exists", exists.group(1))
    message = " ".join(line.strip() for line in stderr.splitlines() if line.startswith("error:"))
    return PatchStatus(patch.name, CONFLICT, message or stderr.strip() or "git apply refused the patch")


def _commit_patch(repo: Path, patch: Patch) -> None:
    am = _git(repo, "am", "--quiet", "--keep-cr", str(patch.path), check=False)
    if am.returncode != 0:
        _git(repo, "am", "--abort", check=False)
        raise MlxForkError(f"{patch.name}: git am failed: {am.stderr.strip() or am.stdout.strip()}")


def status(series: Series, pristine: Path, scratch: Path, version: str | None = None) -> list[PatchStatus]:
    """Classify every patch, in order, against `pristine` (MLX `version`) + the patches before it that apply."""
    repo = scratch / "status-tree"
    init_queue_repo(pristine, repo, "status")
    results: list[PatchStatus] = []
    try:
        for patch in series.patches:
            result = classify(repo, patch, version)
            if result.status == APPLIES:
                _git(repo, "apply", str(patch.path))
            results.append(result)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return results


def apply_series(series: Series, pristine: Path, dest: Path, label: str | None = None) -> None:
    """`dest` := queue repository of `pristine` with every patch committed, or an error naming patch and hunk.

    Fails closed: a patch that does not apply exactly (or is already upstream)
    stops the run and `dest` is removed, so no half-patched tree is left behind.
    """
    staging = dest.with_name(dest.name + ".partial")
    init_queue_repo(pristine, staging, label or f"MLX {series.base}")
    try:
        for index, patch in enumerate(series.patches, start=1):
            result = classify(staging, patch)
            if result.status == UPSTREAM:
                raise MlxForkError(
                    f"patch {index}/{len(series.patches)} {patch.name} is already upstream in this tree ({result.detail})",
                    hint="drop it from the series (mlx-fork patches rebase does this and records it)",
                )
            if result.status == CONFLICT:
                raise MlxForkError(
                    f"patch {index}/{len(series.patches)} {patch.name} does not apply: {result.detail}",
                    hint="git apply never fuzzes; refresh the patch against this base (mlx-fork patches export)",
                )
            _commit_patch(staging, patch)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)


def series_digest(series: Series) -> str:
    """12 hex digits that name the series by its patches' contents, in order."""
    return hashlib.sha256("".join(p.sha256 for p in series.patches).encode()).hexdigest()[:12]


def patched_tree(series: Series, pristine: Path, trees: Path, label: str | None = None) -> Path:
    """`trees`/patched-<digest>: `pristine` with `series` applied, made once and reused while the series is the same.

    `pristine` must be the verified tree of the series' base. apply_series moves
    a finished tree into place, so a present folder is a complete one.
    """
    dest = trees / f"patched-{series_digest(series)}"
    if not dest.is_dir():
        trees.mkdir(parents=True, exist_ok=True)
        apply_series(series, pristine, dest, label)
    return dest


@dataclass(frozen=True)
class RebaseResult:
    source_base: str
    target_base: str
    statuses: list[PatchStatus]
    written: list[str]  # patch files written into the target base

    def to_json(self) -> dict[str, object]:
        return {
            "from": self.source_base,
            "to": self.target_base,
            "patches": [s.to_json() for s in self.statuses],
            "written": self.written,
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Patch series rebase: {self.source_base} -> {self.target_base}",
            "",
            "| # | patch | result | detail |",
            "|---|---|---|---|",
        ]
        for i, s in enumerate(self.statuses, start=1):
            lines.append(f"| {i} | {s.patch} | {s.status} | {s.detail} |")
        counts = {k: sum(1 for s in self.statuses if s.status == k) for k in (APPLIES, UPSTREAM, CONFLICT)}
        lines += [
            "",
            f"{counts[APPLIES]} carried, {counts[UPSTREAM]} already upstream, {counts[CONFLICT]} to port by hand.",
        ]
        return "\n".join(lines) + "\n"


def rebase(
    series: Series,
    target: BasePin,
    target_pristine: Path,
    scratch: Path,
    *,
    write: bool = True,
    force: bool = False,
) -> RebaseResult:
    """Port `series` onto `target`: carry what applies, record what is upstream or conflicts.

    With `write`, the target base's series is rewritten: carried patches are
    re-exported from the target tree (so their context is the target's),
    patches already upstream are recorded as comments, and conflicting ones are
    copied to `unported/` for porting by hand.
    """
    existing, _ = read_series_names(target.series_file) if target.series_file.is_file() else ([], [])
    if write and existing and not force:
        raise MlxForkError(
            f"{target.series_file} already lists {len(existing)} patches",
            hint="use --force to replace them, or --dry-run to only report",
        )
    repo = scratch / f"rebase-{target.name}"
    init_queue_repo(target_pristine, repo, f"MLX {target.name}")
    statuses: list[PatchStatus] = []
    carried: list[Patch] = []
    try:
        for patch in series.patches:
            result = classify(repo, patch, target.version)
            if result.status == APPLIES:
                _commit_patch(repo, patch)
                carried.append(patch)
            statuses.append(result)
        written: list[str] = []
        if write:
            written = _write_rebased(series, target, repo, carried, statuses)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    return RebaseResult(series.base, target.name, statuses, written)


def _write_rebased(
    series: Series, target: BasePin, repo: Path, carried: list[Patch], statuses: list[PatchStatus]
) -> list[str]:
    directory = target.directory
    for old in directory.glob("*.patch"):
        old.unlink()
    names = {p.subject: p.name for p in carried}
    written = _format_patches(repo, "pristine", QUEUE_BRANCH, directory, names, {p.subject: p for p in carried})
    unported = directory / "unported"
    shutil.rmtree(unported, ignore_errors=True)
    lines = [f"# Patch series for MLX {target.name}, applied in order (quilt format).",
             f"# Ported from {series.base} by `mlx-fork patches rebase`."]
    by_name = {p.name: p for p in series.patches}
    for s in statuses:
        if s.status == APPLIES:
            lines.append(s.patch)
        elif s.status == UPSTREAM:
            lines.append(f"# {s.patch}: already upstream in {target.name} ({s.detail})")
        else:
            unported.mkdir(exist_ok=True)
            shutil.copy2(by_name[s.patch].path, unported / s.patch)
            lines.append(f"# {s.patch}: conflicts ({s.detail}); kept in unported/ to port by hand")
    (directory / "series").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def _format_patches(
    repo: Path,
    since: str,
    branch: str,
    directory: Path,
    names_by_subject: dict[str, str],
    old_by_subject: dict[str, Patch],
) -> list[str]:
    """Write `since..branch` as patch files into `directory`; return their names in order.

    A commit keeps the file name of the old patch with the same subject. If the
    commit is what `git am` makes of that old file, the old file is copied as it
    is: its bytes, so its sha256 and the build label, stay whatever git version
    or options made it. A changed commit is formatted again with the old file's
    index-line style, and regains its DEP-3 headers if its message lost them.
    """
    commits = _git(repo, "rev-list", "--reverse", f"{since}..{branch}").stdout.split()
    used_numbers = [int(n[:4]) for n in names_by_subject.values() if n[:4].isdigit()]
    next_number = max(used_numbers, default=0) + 1
    written: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for position, commit in enumerate(commits, start=1):
            fresh = _format_commit(repo, commit, Path(tmp) / f"{position}-full", abbrev=None)
            patch = parse_patch(fresh)
            name = names_by_subject.get(patch.subject)
            if name is None:
                name = f"{next_number:04d}-{fresh.name[5:]}"
                next_number += 1
            old = old_by_subject.get(patch.subject)
            if old is not None and _reproduces(repo, commit, old, fresh):
                shutil.copy2(old.path, directory / name)
            else:
                if old is not None:
                    abbrev = _index_abbrev(old.path.read_text(encoding="utf-8"))
                    if abbrev is not None:
                        fresh = _format_commit(repo, commit, Path(tmp) / f"{position}-abbrev", abbrev=abbrev)
                    if lint_patch(patch) and not lint_patch(old):
                        _restore_headers(fresh, old)
                shutil.copy2(fresh, directory / name)
            written.append(name)
    return written


def _format_commit(repo: Path, commit: str, out: Path, abbrev: int | None) -> Path:
    """`commit` as a patch file in `out`: all-zero From hash, no signature, no [PATCH n/m].

    `abbrev` is the length of the object names on index lines; None writes them
    in full. The user's global git configuration is left out because settings
    such as diff.noprefix, diff.algorithm or format.signOff change the output.
    """
    index = ["--full-index"] if abbrev is None else [f"--abbrev={abbrev}"]
    _git(
        repo,
        "format-patch",
        "--quiet",
        "-1",
        "--zero-commit",
        "--no-signature",
        "--no-numbered",
        *index,
        "-o",
        str(out),
        commit,
        env={"GIT_CONFIG_GLOBAL": os.devnull},
    )
    produced = sorted(out.glob("*.patch"))
    if len(produced) != 1:
        raise MlxForkError(f"git format-patch wrote {len(produced)} files for commit {commit[:12]}, expected one")
    return produced[0]


_INDEX_LINE = re.compile(r"^index ([0-9a-f]+)\.\.([0-9a-f]+)(.*)$")


def _file_headers(text: str) -> list[tuple[str, tuple[str, str, str] | None]]:
    """Each file's `diff --git` line with its index line's (old name, new name, mode), None if it has none."""
    headers: list[tuple[str, tuple[str, str, str] | None]] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            headers.append((line, None))
        elif headers and headers[-1][1] is None:
            match = _INDEX_LINE.match(line)
            if match:
                headers[-1] = (headers[-1][0], (match.group(1), match.group(2), match.group(3)))
    return headers


def _index_abbrev(text: str) -> int | None:
    """How long the object names on `text`'s index lines are; None when they are full (or absent)."""
    lengths = [len(name) for _, index in _file_headers(text) if index for name in index[:2]]
    if not lengths or min(lengths) >= 40:
        return None
    # git lengthens an abbreviation that would be ambiguous, so the shortest is the one asked for.
    return min(lengths)


def _reproduces(repo: Path, commit: str, old: Patch, fresh: Path) -> bool:
    """Is `commit` exactly what `git am` makes of `old` on top of the commit's parent?

    Its tree, author, date and message must be the ones `old` gives, and the
    blobs named on `old`'s index lines must be the commit's own: a patch whose
    hunks moved (an earlier patch changed the file) is written again, with its
    new line numbers, even though it still applies.
    """
    old_headers = _file_headers(old.path.read_text(encoding="utf-8"))
    new_headers = _file_headers(fresh.read_text(encoding="utf-8"))
    if len(old_headers) != len(new_headers):
        return False
    for (old_diff, old_index), (new_diff, new_index) in zip(old_headers, new_headers):
        if old_diff != new_diff or (old_index is None) != (new_index is None):
            return False
        if old_index is not None and new_index is not None and not (
            new_index[0].startswith(old_index[0]) and new_index[1].startswith(old_index[1]) and new_index[2] == old_index[2]
        ):
            return False
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        index = {"GIT_INDEX_FILE": str(scratch / "index")}
        _git(repo, "read-tree", f"{commit}^", env=index)
        if _git(repo, "apply", "--cached", str(old.path.resolve()), check=False, env=index).returncode != 0:
            return False
        if _git(repo, "write-tree", env=index).stdout.strip() != _git(repo, "rev-parse", f"{commit}^{{tree}}").stdout.strip():
            return False
        # git am takes author, date and message from what git mailinfo reads in the file.
        info = _git(repo, "mailinfo", str(scratch / "msg"), str(scratch / "patch"),
                    input=old.path.read_text(encoding="utf-8")).stdout
        body = (scratch / "msg").read_text(encoding="utf-8")
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(": ")
        fields[key] = value
    message = _git(repo, "stripspace", input=f"{fields.get('Subject', '')}\n\n{body}").stdout
    raw = _git(repo, "cat-file", "commit", commit).stdout
    if raw.partition("\n\n")[2] != message:
        return False
    author = _git(repo, "show", "-s", "--date=raw", "--format=%an%n%ae%n%ad", commit).stdout.splitlines()
    return author == [fields.get("Author", ""), fields.get("Email", ""), _raw_date(fields.get("Date", ""))]


def _raw_date(date: str) -> str:
    """An RFC 2822 date as git's raw form, "<seconds> <+hhmm>"; empty if it does not parse."""
    parsed = parsedate_tz(date)
    if parsed is None:
        return ""
    offset = parsed[9] or 0
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return f"{mktime_tz(parsed)} {sign}{hours:02d}{minutes:02d}"


def _restore_headers(path: Path, old: Patch) -> None:
    """Put `old`'s DEP-3 headers back into a format-patch file whose commit message lost them."""
    text = path.read_text(encoding="utf-8")
    block = "\n".join(f"{k}: {v}".replace("\n", "\n ") for k, v in old.headers.items())
    head, _, rest = text.partition("\n\n")  # mail headers end at the first blank line
    gap = "\n" if rest.startswith("---") else "\n\n"
    path.write_text(f"{head}\n\n{block}{gap}{rest}", encoding="utf-8")


def export(repo: Path, branch: str, base: BasePin) -> list[str]:
    """Regenerate `base`'s patch files from the commits of `branch` after the pinned tree."""
    log = _git(repo, "log", "--format=%H %T", branch).stdout.split("\n")
    since = None
    count = 0
    for row in log:
        if not row.strip():
            continue
        commit, tree = row.split()
        if tree == base.tree:
            since = commit
            break
        count += 1
    if since is None:
        raise MlxForkError(
            f"branch {branch} in {repo} has no commit with the pinned tree of {base.tag} ({base.tree})",
            hint="create the branch with `mlx-fork patches apply --dest DIR`, which commits the pristine tree first",
        )
    old_names = read_series_names(base.series_file)[0]
    old = [parse_patch(base.directory / n) for n in old_names]
    # A commit whose subject matches a patch of another base takes that patch's
    # file name, so one fix has one name (and number) on every base.
    names_by_subject = {subject: name for subject, name in _names_in_other_bases(base).items()
                        if name not in old_names}
    names_by_subject.update({p.subject: p.name for p in old})
    if _git(repo, "log", "--merges", "--format=%H", f"{since}..{branch}").stdout.strip():
        raise MlxForkError(f"{since[:12]}..{branch} contains merge commits; a series is a straight line of commits")
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        names = _format_patches(repo, since, branch, staged, names_by_subject, {p.subject: p for p in old})
        for name in old_names:
            (base.directory / name).unlink(missing_ok=True)
        for name in names:
            shutil.copy2(staged / name, base.directory / name)
    write_series(base.series_file, names, f"# Patch series for MLX {base.name}, applied in order (quilt format).")
    return names


def _names_in_other_bases(base: BasePin) -> dict[str, str]:
    """Subject -> patch file name over the series of every other base under patches/."""
    found: dict[str, str] = {}
    root = base.directory.parent
    for name in available_bases(root):
        if name == base.name:
            continue
        other = load_base(name, root)
        if not other.series_file.is_file():
            continue
        for patch_name in read_series_names(other.series_file)[0]:
            path = other.directory / patch_name
            if path.is_file():
                found.setdefault(parse_patch(path).subject, patch_name)
    return found


def status_json(results: list[PatchStatus]) -> str:
    return json.dumps([r.to_json() for r in results], indent=2)
