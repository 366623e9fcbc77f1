"""Rung 2 of the Metal ladder: type-check MLX's Metal backend on Linux.

Every C++ file of `mlx/backend/metal/` (except `no_metal.cpp`, the stand-in used
when Metal is off) is compiled with clang `-fsyntax-only` exactly as far as a
Linux machine can: against the metal-cpp headers shipped in the stock
`mlx-metal` wheel of the same MLX version (downloaded once into the work
directory, never committed), fmt 12 headers (the version MLX fetches), nlohmann
json, and small stand-in declarations for the Apple system headers those
include (`build_tools/metal_stubs/`). No code is generated or linked, so a pass
means "the host code is well-typed C++ against the real Metal API", not "it runs".

`-stdlib=libc++` is required: Apple's toolchain uses libc++, and MLX and
metal-cpp rely on what its headers pull in transitively (with libstdc++ about a
third of the files fail spuriously).

What this cannot see (stated in every report): type widths of x86_64 Linux
(`int64_t` is `long` here, `long long` on macOS, so some overload ambiguities
only show on a Mac), the `__fp16` branch of `half_types.h`, the Objective-C++
and Metal shading-language sources, and anything at run time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .bases import BasePin, load_base
from .deps import metal_cpp_dir
from .errors import MlxForkError
from .paths import PRIMARY_BASE, reports_dir, work_dir
from .proc import run, say
from .stockwheels import download_wheels

STUBS_DIR = Path(__file__).resolve().parent / "metal_stubs"  # shared with the simulated runtime (metal_sim)
METAL_DIR = Path("mlx") / "backend" / "metal"
# Compiled only when MLX is built without Metal; it defines the same symbols.
EXCLUDED = frozenset({"no_metal.cpp"})
CLANG_CANDIDATES: tuple[str, ...] = ("clang++-19", "clang++-20", "clang++-21", "clang++")
DEFAULT_JOBS = 2

# MLX's own definitions for a shared macOS Metal build: MLX_EXPORT (DEFINE_SYMBOL
# of the mlx target), the Accelerate switches (top-level CMakeLists on macOS),
# METAL_PATH (metal/CMakeLists.txt), FMT_HEADER_ONLY (fmt::fmt-header-only).
MLX_DEFINES: tuple[str, ...] = (
    "-DMLX_EXPORT",
    "-DMLX_USE_ACCELERATE",
    "-DACCELERATE_NEW_LAPACK",
    "-DFMT_HEADER_ONLY=1",
    '-DMETAL_PATH="mlx.metallib"',
)
FLAGS: tuple[str, ...] = (
    "-fsyntax-only",
    "-std=gnu++20",
    "-stdlib=libc++",
    "-fblocks",
    # metal-cpp marks declarations weak_import/availability, meaningless on ELF.
    "-Wno-ignored-attributes",
    "-fno-color-diagnostics",
)

BLIND_SPOTS: tuple[str, ...] = (
    "x86_64 Linux type widths: int64_t is long here and long long on macOS, so some overload "
    "ambiguities only show on a Mac",
    "the __fp16 branch of mlx/types/half_types.h (taken on arm64 only)",
    "Objective-C++ and Metal shading-language sources (kernels) are not compiled",
    "nothing runs: rung 3 (simulated runtime) and rung 4 (Apple silicon) cover behaviour",
)


@dataclass(frozen=True)
class CheckInputs:
    """Everything one check compiles against."""

    tree: Path
    metal_cpp: Path
    fmt_include: Path | None  # fmt 12 headers; None = system fmt (older) is used
    fmt_note: str
    clang: str
    stubs: Path = STUBS_DIR
    json_include: Path | None = None  # None: found on the default include path
    extra_args: tuple[str, ...] = ()

    def compile_args(self) -> list[str]:
        args = [*FLAGS, *MLX_DEFINES, f"-I{self.stubs}"]
        if self.fmt_include is not None:
            # Before the system include dirs, so fmt 12 wins over a system fmt.
            args.append(f"-I{self.fmt_include}")
        args.append(f"-I{self.metal_cpp}")
        if self.json_include is not None:
            args.append(f"-I{self.json_include}")
        args.append(f"-I{self.tree}")
        args.extend(self.extra_args)
        return args


@dataclass(frozen=True)
class FileResult:
    file: str  # relative to the tree
    ok: bool
    seconds: float
    message: str  # the compiler's diagnostics (empty when clean)

    def errors(self) -> list[str]:
        return [line for line in self.message.splitlines() if ": error: " in line]


@dataclass
class CheckReport:
    base: str
    tree: str
    kind: str  # "patched" (pinned tree + series), "pristine" (pinned tree), "given" (--tree, as is)
    compiler: str
    metal_cpp: str
    fmt: str
    jobs: int
    seconds: float
    results: list[FileResult] = field(default_factory=list)
    blind_spots: tuple[str, ...] = BLIND_SPOTS

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.failed == 0

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["blind_spots"] = list(self.blind_spots)
        data.update(passed=self.passed, failed=self.failed, ok=self.ok)
        return data

    def table(self) -> str:
        width = max((len(r.file) for r in self.results), default=10)
        lines = [f"{'result':6}  {'file':{width}}  seconds"]
        for r in self.results:
            lines.append(f"{'PASS' if r.ok else 'FAIL':6}  {r.file:{width}}  {r.seconds:7.1f}")
        lines.append(
            f"{self.passed} passed, {self.failed} failed of {len(self.results)} files "
            f"in {self.seconds:.0f}s ({self.jobs} jobs)"
        )
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [
            f"# Metal backend type-check: MLX {self.base} ({self.kind} tree)",
            "",
            f"- compiler: `{self.compiler}` (`-fsyntax-only -stdlib=libc++ -fblocks`)",
            f"- metal-cpp: {self.metal_cpp}",
            f"- fmt: {self.fmt}",
            f"- result: **{self.passed} passed, {self.failed} failed** of {len(self.results)} files "
            f"in {self.seconds:.0f} s",
            "",
            "| file | result | seconds |",
            "|---|---|---|",
        ]
        out += [f"| `{r.file}` | {'pass' if r.ok else '**FAIL**'} | {r.seconds:.1f} |" for r in self.results]
        for r in self.results:
            if not r.ok:
                out += ["", f"## {r.file}", "", "```", r.message.strip(), "```"]
        out += ["", "Not covered by this rung:", ""] + [f"- {s}" for s in self.blind_spots]
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------- inputs


def find_clang(explicit: str | None = None) -> str:
    candidates = [explicit] if explicit else [os.environ.get("MLX_FORK_CLANG") or "", *CLANG_CANDIDATES]
    for name in candidates:
        if name and shutil.which(name):
            return shutil.which(name) or name
    raise MlxForkError(
        "no clang++ found (clang 19 or newer with libc++ is needed)",
        hint="apt-get install clang-19 libc++-19-dev libc++abi-19-dev, or pass --clang",
    )


def check_toolchain(clang: str) -> None:
    """Fail early and clearly when clang has no libc++ (else every file fails alike)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cpp"
        probe.write_text("#include <optional>\n#include <functional>\nvoid f(void (^b)(void)) { b(); }\n")
        proc = run([clang, *FLAGS, probe], step="compile a libc++ probe", check=False)
    if proc.returncode != 0:
        raise MlxForkError(
            f"{clang} cannot compile with -stdlib=libc++ -fblocks: {proc.stderr.strip()[:500]}",
            hint="apt-get install libc++-19-dev libc++abi-19-dev (matching the clang version)",
        )


def metal_sources(tree: Path) -> list[Path]:
    directory = tree / METAL_DIR
    if not directory.is_dir():
        raise MlxForkError(f"{tree} has no {METAL_DIR}: not an MLX source tree")
    files = sorted(p for p in directory.glob("*.cpp") if p.name not in EXCLUDED)
    if not files:
        raise MlxForkError(f"{directory} has no C++ files to check")
    return files


def fmt_version(base: BasePin) -> str | None:
    for dep in base.dependencies:
        if dep.name == "fmt":
            return dep.version
    return None


def fmt_headers(base: BasePin, work: Path) -> tuple[Path | None, str]:
    """fmt headers of the version MLX fetches, from PyPI's `cmeel-fmt` wheel (cached).

    Returns (include dir or None, what is used). Without them the system fmt is
    used, which on Debian 12 is fmt 9: code that only compiles with fmt 12 (or
    only with 9) is then judged against the wrong library.
    """
    version = fmt_version(base)
    if version is None:
        return None, "system fmt (the base pins no fmt version)"
    root = work / "check-metal" / "fmt" / version
    include = root / "include"
    if (include / "fmt" / "format.h").is_file():
        return include, f"fmt {version} headers (PyPI cmeel-fmt=={version})"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        with contextlib.suppress(MlxForkError):  # judged below: no wheel
            download_wheels([f"cmeel-fmt=={version}"], Path(tmp))
        wheels = sorted(Path(tmp).glob("cmeel_fmt-*.whl"))
        if not wheels:
            say(f"warning: could not download cmeel-fmt=={version}; checking against the system fmt")
            return None, f"system fmt (fmt {version} headers unavailable: blind to fmt 9/12 differences)"
        import zipfile

        prefix = "cmeel.prefix/include/fmt/"
        staging = root / "include.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    target = staging / "fmt" / name[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(name))
        if not (staging / "fmt" / "format.h").is_file():
            raise MlxForkError(f"{wheels[0].name} has no {prefix}format.h")
        staging.rename(include)
    return include, f"fmt {version} headers (PyPI cmeel-fmt=={version})"


def json_include() -> Path | None:
    """nlohmann json: None when on the compiler's default path (Debian's /usr/include)."""
    for candidate in (Path("/usr/include"), Path("/usr/local/include"), Path("/opt/homebrew/include")):
        if (candidate / "nlohmann" / "json.hpp").is_file():
            return None if candidate == Path("/usr/include") else candidate
    say("warning: nlohmann/json.hpp not found (apt-get install nlohmann-json3-dev); files using it will fail")
    return None


# ---------------------------------------------------------------- checking


def check_file(inputs: CheckInputs, source: Path) -> FileResult:
    started = time.monotonic()
    proc = run([inputs.clang, *inputs.compile_args(), source], step=f"clang -fsyntax-only {source.name}",
               cwd=inputs.tree, check=False)
    rel = source.relative_to(inputs.tree).as_posix() if source.is_relative_to(inputs.tree) else str(source)
    return FileResult(rel, proc.returncode == 0, round(time.monotonic() - started, 2),
                      (proc.stdout + proc.stderr).strip())


def check_tree(inputs: CheckInputs, base: str, *, kind: str, jobs: int = DEFAULT_JOBS,
               files: list[Path] | None = None) -> CheckReport:
    sources = files if files is not None else metal_sources(inputs.tree)
    report = CheckReport(
        base=base, tree=str(inputs.tree), kind=kind, compiler=compiler_version(inputs.clang),
        metal_cpp=str(inputs.metal_cpp), fmt=inputs.fmt_note, jobs=jobs, seconds=0.0,
    )
    started = time.monotonic()
    done = 0

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result in pool.map(lambda src: check_file(inputs, src), sources):
            done += 1
            say(f"[{done}/{len(sources)}] {'ok  ' if result.ok else 'FAIL'} {result.file} ({result.seconds:.1f}s)")
            report.results.append(result)
    report.seconds = round(time.monotonic() - started, 1)
    return report


def compiler_version(clang: str) -> str:
    proc = run([clang, "--version"], step="clang --version", check=False)
    first = proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else clang
    return f"{Path(clang).name}: {first}"


# ---------------------------------------------------------------- trees


def patched_tree(base: BasePin, source: Path | None, work: Path) -> tuple[Path, str]:
    """The verified pristine tree of `base` with its series applied (fails closed)."""
    from .patchqueue import patched_tree
    from .series import load_series
    from .source import prepare_source

    pristine = prepare_source(base, source, work)
    series = load_series(base)
    if not series.patches:
        say(f"the {base.name} series is empty: checking the pristine tree")
        return pristine.path, "pristine"
    say(f"the {len(series.patches)} patches of {base.name} applied to the pinned tree")
    dest = patched_tree(series, pristine.path, work / base.name / "check-metal-trees",
                        label=f"MLX {base.name} + series (check-metal)")
    return dest, "patched"


def run_check(base: BasePin, *, tree: Path | None = None, source: Path | None = None, pristine: bool = False,
              jobs: int = DEFAULT_JOBS, clang: str | None = None, work: Path | None = None) -> CheckReport:
    """Type-check the Metal backend of `base`: a given tree as is, else the (patched) pinned tree."""
    work = work or work_dir()
    compiler = find_clang(clang)
    check_toolchain(compiler)
    if tree is not None:
        target, kind = tree.resolve(), "given"
    elif pristine:
        from .source import prepare_source

        target, kind = prepare_source(base, source, work).path, "pristine"
    else:
        target, kind = patched_tree(base, source, work)
    metal_cpp = metal_cpp_dir(base, work)
    fmt_include, fmt_note = fmt_headers(base, work)
    inputs = CheckInputs(tree=target, metal_cpp=metal_cpp, fmt_include=fmt_include, fmt_note=fmt_note,
                         clang=compiler, json_include=json_include())
    files = metal_sources(target)
    say(f"type-checking {len(files)} Metal backend files of {target} with {jobs} jobs")
    report = check_tree(inputs, base.name, kind=kind, jobs=jobs, files=files)
    return report


def write_report(report: CheckReport, out_dir: Path | None = None) -> Path:
    out_dir = out_dir or reports_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"check-metal-{report.base}"
    (out_dir / f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(report.to_markdown())
    return out_dir / f"{stem}.md"


# ---------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-metal",
        help="type-check MLX's Metal backend on Linux (clang -fsyntax-only against stock metal-cpp)",
        description="Type-check every C++ file of mlx/backend/metal/ of the patched pinned tree (or --tree) "
        "with clang and libc++, against the metal-cpp headers of the stock mlx-metal wheel of the same "
        "version and stand-in Apple system headers. Exit 1 if any file fails.",
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"pinned base (default {PRIMARY_BASE})")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path,
                       help="MLX checkout or directory of the pinned tag (default MLX_FORK_SOURCE, else the "
                       "tag archive); the series is applied to a verified copy")
    where.add_argument("--tree", type=Path, help="check this MLX tree as it is (no verification, no patches)")
    p.add_argument("--pristine", action="store_true", help="check the verified pinned tree without the series")
    p.add_argument("--jobs", "-j", type=int, default=DEFAULT_JOBS, help=f"parallel compiles (default {DEFAULT_JOBS})")
    p.add_argument("--clang", help="clang++ to use (default: clang++-19, ..., or MLX_FORK_CLANG)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--no-report", action="store_true", help="do not write reports/check-metal-<base>.{json,md}")
    p.set_defaults(func=_cmd_check_metal)


def _cmd_check_metal(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    if args.tree is not None and args.pristine:
        raise MlxForkError("--pristine verifies the pinned tree; it cannot be combined with --tree")
    report = run_check(base, tree=args.tree, source=args.source, pristine=args.pristine,
                       jobs=args.jobs, clang=args.clang)
    if not args.no_report:
        say(f"report: {write_report(report)}")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
        for r in report.results:
            if not r.ok:
                print(f"\n--- {r.file}: compiler output ---\n{r.message}")
        print("not covered: " + "; ".join(report.blind_spots))
    return 0 if report.ok else 1
