"""Stage 3 and the main job: `mlx-fork build` and `mlx-fork compile`.

`mlx-fork build` chains source -> series -> compile -> package -> verify and
puts the result in wheels/ (with its manifest and a refreshed index):

  1. source    verified pristine copy of the pinned tree (source.py)
  2. series    the series applied to a fresh copy, failing closed (patchqueue.py)
  3. sync      the patched tree copied into the slot's src/ file by file, only
               where bytes differ: unchanged files keep their timestamps, so
               Ninja (and ccache) rebuild only what the series changed
  4. compile   CMake (platform profile + offline deps) and `ninja mlx`, with
               progress on stderr and the full output in the slot's logs/
  5. package   overlay (default) or full wheels, written to a temporary dir
  6. verify    fresh venv, installed as a user would, label/provenance/ABI checked
  7. publish   wheels moved into wheels/, manifest saved, index rewritten

A build slot is <work>/<base>/<platform>/ with src/, build/, deps/, logs/ and
manifest.json. A failure names its step and log, and nothing reaches wheels/.

`mlx-fork compile` is step 4 alone, for a tree that is already patched.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import package, patchqueue, source, stockwheels, verify
from .bases import BasePin, load_base
from .compile import LOCK_WAIT, cmake_args_for, compile_tree, format_seconds, sync_tree
from .deps import DepsRequest, Provisioned, provision
from .digest import sha256_file
from .errors import MlxForkError
from .index import write_index
from .installed_headers import full_mode_reasons, installed_headers_touched
from .manifest import BaseRef, BuildInputs, FileRef, Manifest, normalize_cmake_args, runtime_version
from .paths import PRIMARY_BASE, wheels_dir, work_dir
from .proc import say, version_line
from .profiles import MACOS_TARGETS, PLATFORMS, Profile, get_profile
from .series import Series, load_series
from .tools import cmake_program


@dataclass
class BuildOptions:
    base: BasePin
    profile: Profile
    source: Path | None = None
    full: bool = False
    gguflib: Path | None = None
    cuda_libraries: Path | None = None
    cmake_defines: tuple[str, ...] = ()
    jobs: int | None = None
    verify: bool = True
    via: str = "index"
    work: Path = field(default_factory=work_dir)
    wheels: Path = field(default_factory=wheels_dir)
    mirror_frontend: bool = True


@dataclass
class BuildResult:
    wheels: list[Path]
    manifest: Manifest
    slot: Path
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildStages:
    """The stages `build()` chains, as values: a test passes stand-ins for the slow ones.

    Each field has the signature of the function named in `default()`.
    """

    prepare_source: Callable[[BasePin, Path | None, Path], source.PristineTree]
    apply_series: Callable[[Series, Path, Path], None]
    fetch_stock_wheel: Callable[[BasePin, Profile, Path], Path]
    provision: Callable[..., Provisioned]
    toolchain: Callable[[Profile], dict[str, str | None]]
    compile_tree: Callable[..., Path]
    overlay_wheel: Callable[..., Path]
    full_wheels: Callable[..., list[Path]]
    fetch_frontend_wheels: Callable[[BasePin, Profile, Path], list[Path]]
    verify_wheel: Callable[..., verify.VerifyResult]

    @classmethod
    def default(cls) -> BuildStages:
        return cls(
            prepare_source=source.prepare_source,
            apply_series=patchqueue.apply_series,
            fetch_stock_wheel=stockwheels.fetch_stock_wheel,
            provision=provision,
            toolchain=toolchain,
            compile_tree=compile_tree,
            overlay_wheel=package.overlay_wheel,
            full_wheels=package.full_wheels,
            fetch_frontend_wheels=stockwheels.fetch_frontend_wheels,
            verify_wheel=verify.verify_wheel,
        )


@contextlib.contextmanager
def slot_lock(slot: Path) -> Iterator[None]:
    """One build per slot at a time: two would rewrite each other's src/ and build/."""
    slot.mkdir(parents=True, exist_ok=True)
    with open(slot / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MlxForkError(
                f"another mlx-fork build is using {slot}",
                hint="wait for it, or give this build its own MLX_FORK_WORK",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def slot_dir(work: Path, base: BasePin, profile: Profile) -> Path:
    name = profile.name if profile.deployment_target is None else f"{profile.name}-{profile.deployment_target}"
    return work / base.name / name


# ---------------------------------------------------------------- toolchain


def _first_line(cmd: list[str]) -> str:
    line = version_line(cmd)
    return "not found" if line is None else line or "unknown"


def _cmake_version(profile: Profile) -> str:
    try:
        return _first_line([cmake_program(profile.cmake_minimum), "--version"])
    except MlxForkError:
        return "not found"


def toolchain(profile: Profile) -> dict[str, str | None]:
    """Versions of everything that shapes the compiled library (recorded and hashed)."""
    cxx = os.environ.get("CXX", "c++")
    cc = os.environ.get("CC", "cc")
    info: dict[str, str | None] = {
        "cxx": _first_line([cxx, "--version"]),
        "cc": _first_line([cc, "--version"]),
        "cmake": _cmake_version(profile),
        "ninja": _first_line(["ninja", "--version"]),
        "machine": platform.machine(),
        "sdk": None,
        "deployment_target": profile.deployment_target,
    }
    if profile.is_macos:
        info["sdk"] = _first_line(["xcrun", "--show-sdk-version"]) if sys.platform == "darwin" else "not on macOS"
        info["xcode"] = _first_line(["xcodebuild", "-version"]) if sys.platform == "darwin" else None
    return info


# ---------------------------------------------------------------- the main job


STAGING_PREFIX = ".staging-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_staging(wheels: Path) -> list[Path]:
    """Remove staging directories that a killed build left in `wheels`.

    A build stages its wheels in `.staging-<pid>-*` and removes it itself, also on
    SIGTERM and Ctrl-C; only SIGKILL (or a crash) leaves one behind. A directory
    whose process is gone, or one without a pid (older mlx-fork), is stale; one
    whose process still runs belongs to a concurrent build and stays.
    """
    removed = []
    for path in sorted(wheels.glob(STAGING_PREFIX + "*")):
        pid_text = path.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        say(f"package: removed {path.name}, left in {wheels} by an interrupted build")
        removed.append(path)
    return removed


def build(opts: BuildOptions, stages: BuildStages | None = None) -> BuildResult:
    """The main job (see the module docstring); `stages` None: the real ones."""
    slot = slot_dir(opts.work, opts.base, opts.profile)
    created = [d for d in (slot.parent, slot) if not d.exists()]
    with slot_lock(slot):
        try:
            return _build(opts, stages or BuildStages.default())
        except BaseException:
            # Still under the lock, so no other build is using the slot.
            discard_unused_slot(slot, created)
            raise


def discard_unused_slot(slot: Path, created: list[Path]) -> None:
    """Remove the folders a refused build created (`created`: the slot and its base folder, those
    that did not exist before), if nothing was written there but the lock file and an empty logs/.

    A build refused before it started (a source at another commit, a profile this host cannot
    build) would otherwise leave an empty slot for that base under the work dir. Anything else in
    the slot (a log of a failed step, a source tree, a build tree) is kept.
    """
    if slot not in created:
        return
    logs = slot / "logs"
    if any(p.name not in (".lock", "logs") for p in slot.iterdir()) or (logs.is_dir() and any(logs.iterdir())):
        return
    try:
        (slot / ".lock").unlink(missing_ok=True)
        if logs.is_dir():
            logs.rmdir()
        for folder in reversed(created):  # the slot, then its base folder
            folder.rmdir()
    except OSError:  # another build just started here: its folder stays
        pass


def check_host(profile: Profile) -> None:
    """Refuse a profile this host cannot compile (the macOS build needs Xcode's Metal compiler)."""
    if profile.is_macos and sys.platform != "darwin":
        raise MlxForkError(
            "the macos-metal profile compiles Metal kernels and needs macOS with Xcode",
            hint="build it on a Mac (or the CI macOS jobs); on Linux use --platform linux-cpu",
        )
    if profile.name.startswith("linux") and not sys.platform.startswith("linux"):
        raise MlxForkError(f"the {profile.name} profile builds on Linux", hint="use --platform auto")


def _build(opts: BuildOptions, stages: BuildStages) -> BuildResult:
    base, profile, work = opts.base, opts.profile, opts.work
    check_host(profile)
    slot = slot_dir(work, base, profile)
    logs = slot / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    waited = [LOCK_WAIT[0]]

    def lap(name: str) -> None:
        # Time spent queueing for the build lock is reported as its own entry.
        nonlocal clock
        now = time.monotonic()
        queued = LOCK_WAIT[0] - waited[0]
        waited[0] = LOCK_WAIT[0]
        seconds[name] = round(now - clock - queued, 1)
        if queued:
            seconds["lock-wait"] = round(seconds.get("lock-wait", 0.0) + queued, 1)
        clock = now

    say(f"build: MLX {base.tag} for {profile.name} in {slot}")
    # 1. source
    say("source: preparing a verified pristine tree")
    pristine = stages.prepare_source(base, opts.source, work)
    lap("source")
    # 2. series
    series = load_series(base)
    say(f"series: applying {len(series.patches)} patch(es)")
    patched = slot / "patched"
    stages.apply_series(series, pristine.path, patched)
    lap("series")
    # 3. sync into the persistent source dir
    report = sync_tree(patched, slot / "src")
    shutil.rmtree(patched, ignore_errors=True)
    say(f"sync: {len(report.copied)} file(s) changed, {len(report.removed)} removed since the last build")
    lap("sync")
    touched = installed_headers_touched(list(series.patches))
    reasons = full_mode_reasons(list(series.patches))
    if profile.name == "linux-cuda":
        # The CUDA backend ships as an overlay of the stock mlx-cuda wheel under the stock
        # frontend (no offline frontend build for CUDA yet): the ABI gate against the stock
        # library and what the stock frontend imports decides instead of the header rule.
        if opts.full:
            raise MlxForkError("--full is not available for linux-cuda",
                               hint="build without --full: the backend overlays the stock mlx-cuda wheel")
        if reasons:
            say(f"package: linux-cuda overlays the stock frontend although {'; '.join(reasons)}; "
                "the ABI gate checks the stock frontend's imports")
        full = False
    else:
        full = opts.full or bool(reasons)
        if reasons and not opts.full:
            say(f"package: full mode forced: {'; '.join(reasons)}")
    for patch in series.patches:
        if patch.name in touched and not patch.public_headers:
            say(f"warning: {patch.name} changes installed headers but says Public-Headers: no")
    # Stock wheel first: its hash is an input, and macOS takes metal-cpp from it.
    stock = stages.fetch_stock_wheel(base, profile, work)
    deps = stages.provision(
        base, profile, slot / "deps",
        DepsRequest(python_bindings=full, tests=False, gguflib=opts.gguflib, cuda_libraries=opts.cuda_libraries),
        work=work, stock_wheel=stock if profile.is_macos or profile.name == "linux-cuda" else None,
    )
    for note in deps.notes:
        say(f"note: {note}")
    inputs = BuildInputs(
        base=BaseRef(name=base.name, version=base.version, tag=base.tag, commit=base.commit, tree=base.tree),
        patches=[FileRef(p.name, p.sha256) for p in series.patches],
        platform=profile.name,
        packaging="full" if full else "overlay",
        cmake_args=normalize_cmake_args([*profile.cmake_args, *deps.cmake_args, *(f"-D{d}" for d in opts.cmake_defines)]),
        dependencies=dict(deps.identities),
        toolchain=stages.toolchain(profile),
        stock_wheel=FileRef(stock.name, sha256_file(stock)),
        # macOS: the deployment target is in the toolchain
        build_env=dict(profile.env) if profile.env and not profile.is_macos else None,
    )
    manifest = Manifest(inputs=inputs, info={
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source_origin": pristine.origin,
        "host": platform.platform(),
    })
    say(f"label: {manifest.label} (version {manifest.version})")
    lap("provision")
    # 4. compile (full packaging compiles through upstream setup.py instead)
    cmake_args = cmake_args_for(base, profile, deps, manifest.runtime_version, opts.cmake_defines)
    library = None
    if not full:
        library = stages.compile_tree(slot / "src", slot / "build", cmake_args, logs, work=work, profile=profile,
                               jobs=opts.jobs)
        lap("compile")
    manifest.write(slot / "manifest.json")
    # 5. package into a temporary directory next to wheels/ (same filesystem: moves are renames)
    opts.wheels.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(opts.wheels)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=opts.wheels))
    try:
        if full:
            built = stages.full_wheels(base, slot / "src", profile, manifest, cmake_args, staging, logs / "package.log",
                                work=work, jobs=opts.jobs)
            backend = next(w for w in built if not w.name.startswith("mlx-"))
            fresh = package.add_provenance(backend, profile, manifest, staging)
            built = [fresh if w == backend else w for w in built]
            backend = fresh
        else:
            assert library is not None
            cuda_libs = (slot / "deps" / "cuda-libs" / "lib",) if profile.name == "linux-cuda" else ()
            backend = stages.overlay_wheel(stock, library, profile, manifest, staging, log=logs / "package.log",
                                    library_dirs=cuda_libs)
            built = [backend]
        manifest.write(slot / "manifest.json")
        lap("package")
        # 6. verify against the staging dir laid out like wheels/ (wheels + index)
        frontends: list[Path] = []
        if opts.mirror_frontend and not full:
            frontends = stages.fetch_frontend_wheels(base, profile, work)
            for wheel in frontends:
                shutil.copyfile(wheel, staging / wheel.name)
        if opts.verify:
            write_index(staging)
            configured = [name for name, ident in deps.identities.items() if ident.startswith("disabled")]
            result = stages.verify_wheel(backend, manifest, library=profile.library, wheel_dir=staging, via=opts.via,
                                  stock_wheel=stock, configured_away=configured, log=logs / "verify.log",
                                  abi_must_pass=not full, needs_gpu_driver=profile.needs_gpu_driver)
            for line in result.checks:
                say(f"verify: ok: {line}")
            if result.left_for_gpu:
                say(f"verify: left for a machine with the GPU and its driver: {result.left_for_gpu}")
            if result.abi is not None:
                (logs / "abi.txt").write_text(verify.abi_summary(result.abi))
                say(f"verify: ABI report in {logs / 'abi.txt'}")
            lap("verify")
        # 7. publish
        published = []
        for wheel in built + [staging / w.name for w in frontends]:
            target = opts.wheels / wheel.name
            wheel.replace(target)
            published.append(target)
        for wheel in built:
            manifest.write(verify.manifest_for(opts.wheels, opts.wheels / wheel.name))
        write_index(opts.wheels)
        lap("publish")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult([opts.wheels / w.name for w in built], manifest, slot, seconds)


# ---------------------------------------------------------------- CLI


def _add_platform_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default=PRIMARY_BASE, help=f"pinned upstream base (default {PRIMARY_BASE})")
    parser.add_argument("--platform", default="auto", choices=("auto",) + PLATFORMS,
                        help="build profile (default: the host's)")
    parser.add_argument("--macos-target", default=None, choices=MACOS_TARGETS,
                        help="macOS deployment target (one build per stock mlx-metal wheel; default 14.0)")
    parser.add_argument("--gguflib", type=Path, default=None,
                        help="gguf-tools checkout for MLX_BUILD_GGUF=ON (or MLX_FORK_GGUFLIB); default: GGUF off")
    parser.add_argument("--cuda-arch", default="release",
                        help="linux-cuda targets: 'release' (stock's list, default) or e.g. '90a' for a fast "
                        "validation build; part of the label")
    parser.add_argument("--cuda-libraries", type=Path, default=None, metavar="SITE_PACKAGES",
                        help="linux-cuda: use the nvidia-* packages installed in this site-packages instead of "
                        "the pinned wheels (the manifest records their versions)")
    parser.add_argument("--cmake-define", dest="cmake_defines", action="append", default=[], metavar="VAR=VALUE",
                        help="an extra CMake cache entry (e.g. LAPACK_INCLUDE_DIRS=DIR where lapacke.h is not "
                        "in /usr/include); recorded in the manifest and the label")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel compile jobs (ninja -j)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "build",
        help="the main job: source -> series -> compile -> package -> verify -> wheels/",
        description="Build patched MLX wheels: verified pristine source, the patch series applied, CMake + "
        "Ninja (+ccache) with the platform profile and offline dependencies, overlay (or --full) packaging, "
        "verification in a fresh venv, then wheels/ and its index. Logs: <work>/<base>/<platform>/logs/.",
    )
    _add_platform_args(parser)
    parser.add_argument("--source", type=Path, default=None,
                        help="MLX checkout or plain directory (default: MLX_FORK_SOURCE, else the tag archive)")
    parser.add_argument("--full", action="store_true",
                        help="build frontend and backend wheels from source (upstream setup.py stages)")
    parser.add_argument("--no-verify", action="store_true", help="skip the fresh-venv verification")
    parser.add_argument("--via", choices=("index", "find-links"), default="index",
                        help="how verify installs: through wheels/simple or with --find-links")
    parser.set_defaults(func=_cmd_build)

    comp = sub.add_parser(
        "compile",
        help="configure and build libmlx from an already patched tree (CMake + Ninja only)",
        description="Run only the compile step on a patched MLX tree: offline dependency provisioning, CMake "
        "with the platform profile, ninja mlx. Prints the library path.",
    )
    _add_platform_args(comp)
    comp.add_argument("--tree", type=Path, required=True, help="patched MLX source tree")
    comp.add_argument("--build-dir", type=Path, required=True, help="CMake build directory")
    comp.add_argument("--deps-dir", type=Path, default=None,
                      help="where dependency shims are written (default: <build-dir>/../deps, as in a build slot)")
    comp.add_argument("--version", dest="mlx_version", default=None,
                      help="MLX_VERSION compiled into libmlx (default: <base version>.0+local)")
    comp.set_defaults(func=_cmd_compile)


def _defines(values: list[str]) -> tuple[str, ...]:
    for value in values:
        name, sep, _ = value.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?", name):
            raise MlxForkError(f"--cmake-define {value!r}: expected VAR=VALUE")
    return tuple(values)


def _cmd_build(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    profile = get_profile(args.platform, args.macos_target, cuda_arch=args.cuda_arch)
    opts = BuildOptions(base=base, profile=profile, source=args.source, full=args.full, gguflib=args.gguflib,
                        cuda_libraries=args.cuda_libraries, cmake_defines=_defines(args.cmake_defines),
                        jobs=args.jobs, verify=not args.no_verify, via=args.via)
    started = time.monotonic()
    result = build(opts)
    say(f"build: done in {format_seconds(time.monotonic() - started)} "
        f"({', '.join(f'{k} {v:.0f}s' for k, v in result.seconds.items())})")
    for wheel in result.wheels:
        print(wheel)
    index = (opts.wheels / "simple").resolve().as_uri()
    version = result.manifest.version
    frontend = version if result.manifest.inputs.packaging == "full" else base.version
    print(f"\ninstall:  pip install --find-links {opts.wheels} mlx=={frontend} "
          f"\"{profile.backend_dist}=={version}\"", file=sys.stderr)
    print(f"      or:  pip install --index-url {index} mlx=={frontend} "
          f"\"{profile.backend_dist}=={version}\"", file=sys.stderr)
    return 0


def _cmd_compile(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    profile = get_profile(args.platform, args.macos_target, cuda_arch=args.cuda_arch)
    check_host(profile)
    build_dir = args.build_dir.resolve()
    # Same layout as a build slot (<dir>/build + <dir>/deps): identical compile lines, so
    # ccache (with CCACHE_BASEDIR) shares hits with `mlx-fork build`.
    deps_dir = (args.deps_dir or build_dir.parent / "deps").resolve()
    stock = None
    if profile.is_macos or profile.name == "linux-cuda":
        stock = stockwheels.fetch_stock_wheel(base, profile)
    deps = provision(base, profile, deps_dir, DepsRequest(gguflib=args.gguflib, cuda_libraries=args.cuda_libraries),
                     stock_wheel=stock)
    for note in deps.notes:
        say(f"note: {note}")
    version = args.mlx_version or runtime_version(base.version, "local")
    library = compile_tree(args.tree.resolve(), build_dir,
                           cmake_args_for(base, profile, deps, version, _defines(args.cmake_defines)),
                           build_dir / "mlx-fork-logs", work=work_dir(), profile=profile, jobs=args.jobs)
    say(f"compile: logs in {build_dir / 'mlx-fork-logs'}")
    print(library)
    return 0
