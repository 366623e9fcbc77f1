"""Stage 5: prove a patched wheel is what it says, installed exactly as a user would.

In a fresh virtual environment, install the stock frontend `mlx==<version>` and
our backend `<dist>==<version>+<label>` with plain pip from wheels/ (as an index,
or with --find-links), import mlx.core, and check that
  - mx.__version__ is `<version>.0+<label>` (the loaded libmlx identifies itself; manifest.py says why .0),
  - the libmlx mapped into the process (/proc/self/maps; dyld's image list on macOS) is the installed one,
    and its sha256 is the one the manifest recorded,
  - mlx/lib/mlx-fork.json (provenance) matches the build manifest,
  - a small computation runs.
ABI gate: the dynamic symbols libmlx exports, stock vs patched; a removed
symbol fails (stock frontends and extensions may use it), additions are listed.
Header gate: a patch touching a header installed under mlx/include changes the
API the stock frontend was compiled against, so it forces full packaging.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import MlxForkError
from .libmlx_probe import parse_probe, probe_command
from .manifest import Manifest, compare_provenance
from .paths import wheels_dir, work_dir
from .proc import run, say
from .virtualenvs import create_venv
from .wheeldir import frontend_for_this_python, frontends, patched_wheels
from .wheelfile import wheel_info

# Without a GPU driver a CUDA backend cannot be imported (libmlx NEEDs
# libcuda.so.1). This probe reads what pip installed instead: the same files
# and versions, without loading libmlx.
FILES_PROBE = r"""
import hashlib, json, os, sys, sysconfig
from importlib import metadata

pkg = os.path.join(sysconfig.get_paths()["purelib"], "mlx")
installed = os.path.join(pkg, "lib", sys.argv[1])
prov_path = os.path.join(pkg, "lib", "mlx-fork.json")
print(json.dumps({
    "backend_version": metadata.version(sys.argv[2]),
    "installed": os.path.realpath(installed),
    "installed_sha256": hashlib.sha256(open(installed, "rb").read()).hexdigest() if os.path.exists(installed) else None,
    "provenance": json.load(open(prov_path)) if os.path.exists(prov_path) else None,
}))
"""

# What only a machine with the GPU and its driver can check; verify says so.
LEFT_FOR_A_GPU = "import mlx.core, the loaded-libmlx check and a computation on the GPU"


def cuda_driver_loadable() -> bool:
    """Is there a CUDA driver (libcuda.so.1) this process could load?"""
    import ctypes

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@dataclass
class VerifyResult:
    wheel: str
    version: str
    loaded_library: str
    checks: list[str] = field(default_factory=list)  # what was proven, one line each
    abi: AbiReport | None = None
    left_for_gpu: str | None = None  # checks that need a GPU and were not run here


# ---------------------------------------------------------------- ABI gate


def exported_symbols(library: Path) -> dict[str, str]:
    """Defined, exported dynamic symbols of a shared library -> nm type letter (ELF: nm -D; Mach-O: nm -gU)."""
    return _nm(library, defined=True)


def imported_symbols(library: Path) -> set[str]:
    """Undefined dynamic symbols: what a consumer (e.g. the frontend's core module) needs from its libraries."""
    return set(_nm(library, defined=False))


def _nm(library: Path, defined: bool) -> dict[str, str]:
    macho = library.suffix == ".dylib" or sys.platform == "darwin"
    if macho:
        cmd = ["nm", "-g", "-P", str(library)]
    else:
        cmd = ["nm", "-D", "--defined-only" if defined else "--undefined-only", "--format=posix", str(library)]
    proc = run(cmd, step=f"nm {library.name}", check=False)
    if proc.returncode != 0:
        raise MlxForkError(f"nm failed on {library}: {proc.stderr.strip()}", hint="install binutils")
    symbols: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        undefined = kind in ("U", "w", "v")
        if undefined != (not defined):
            continue
        if macho and name.startswith("_"):
            name = name[1:]  # Mach-O C symbols carry a leading underscore
        symbols[name] = kind
    return symbols


# Symbols of a dependency the build configured away (MLX_BUILD_GGUF=OFF drops the
# statically linked gguflib, whose C API stock libmlx happens to export).
CONFIGURED_AWAY: dict[str, str] = {
    "gguflib": r"^(gguf_\w+|from_half|to_half)$",
}
_WEAK = ("W", "V", "u")  # weak / unique: inline and template code every consumer emits itself


@dataclass(frozen=True)
class AbiReport:
    removed: list[str]  # gone and breaking: strong definitions, or imported by the stock frontend
    removed_weak: list[str]  # gone, weak or unique (toolchain-dependent instantiations), not imported
    removed_configured: list[str]  # gone because a dependency was configured away (stated consequence)
    added: list[str]

    @property
    def ok(self) -> bool:
        return not self.removed


def abi_diff(stock: dict[str, str] | set[str], patched: dict[str, str] | set[str],
             imported: set[str] | None = None, configured_away: list[str] | None = None) -> AbiReport:
    """Classify stock exports missing from the patched library.

    A removed symbol fails unless it is weak/unique (and the stock frontend does
    not import it), or belongs to a dependency the build disabled on purpose.
    """
    stock_kinds = stock if isinstance(stock, dict) else dict.fromkeys(stock, "T")
    imported = imported or set()
    patterns = [re.compile(CONFIGURED_AWAY[name]) for name in (configured_away or []) if name in CONFIGURED_AWAY]
    removed, weak, configured = [], [], []
    for name in sorted(set(stock_kinds) - set(patched)):
        if name in imported:
            removed.append(name)
        elif any(p.match(name) for p in patterns):
            configured.append(name)
        elif stock_kinds[name] in _WEAK:
            weak.append(name)
        else:
            removed.append(name)
    return AbiReport(removed, weak, configured, sorted(set(patched) - set(stock_kinds)))


def demangle(symbols: list[str]) -> list[str]:
    if not symbols or shutil.which("c++filt") is None:
        return symbols
    proc = run(["c++filt"], step="c++filt", check=False, input="\n".join(symbols))
    out = proc.stdout.splitlines()
    return out if len(out) == len(symbols) else symbols


def frontend_module(frontend_wheel: Path) -> str | None:
    with zipfile.ZipFile(frontend_wheel) as zf:
        for name in zf.namelist():
            if name.startswith("mlx/core.") and name.endswith((".so", ".pyd")):
                return name
    return None


def abi_gate(stock_wheel: Path, wheel: Path, library: str, frontend_wheel: Path | None = None,
             configured_away: list[str] | None = None) -> AbiReport:
    """Stock vs patched libmlx exports; with the stock frontend wheel, also what its core module imports."""
    member = f"mlx/lib/{library}"
    with tempfile.TemporaryDirectory() as tmp:
        stock_lib, our_lib = Path(tmp, "stock-" + library), Path(tmp, "patched-" + library)
        with zipfile.ZipFile(stock_wheel) as zf:
            stock_lib.write_bytes(zf.read(member))
        with zipfile.ZipFile(wheel) as zf:
            our_lib.write_bytes(zf.read(member))
        imported: set[str] = set()
        if frontend_wheel is not None:
            core = frontend_module(frontend_wheel)
            if core is not None:
                core_path = Path(tmp, Path(core).name)
                with zipfile.ZipFile(frontend_wheel) as zf:
                    core_path.write_bytes(zf.read(core))
                imported = imported_symbols(core_path)
        return abi_diff(exported_symbols(stock_lib), exported_symbols(our_lib), imported, configured_away)


# ---------------------------------------------------------------- install and probe


def pip_install(python: Path, requirements: list[str], *, index_url: str | None, find_links: list[Path],
                log: Path | None, extra_index: bool = False) -> None:
    cmd = [str(python), "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check"]
    if index_url:
        cmd += ["--index-url", index_url]
        if extra_index:
            cmd += ["--extra-index-url", "https://pypi.org/simple"]
    for link in find_links:
        cmd += ["--find-links", str(link)]
    # Isolate from site-wide pip configuration (extra indexes, find-links): the
    # point is to prove what *this* wheel directory provides. TLS settings stay.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
    env["PIP_CONFIG_FILE"] = os.devnull
    proc = run(cmd + requirements, step="pip install in the fresh venv", env=env, inherit_env=False, log=log,
               check=False)
    detail = f"see {log}" if log is not None else (proc.stdout + proc.stderr).strip()[-1500:]
    if proc.returncode != 0:
        raise MlxForkError(f"pip install in the fresh venv failed (exit {proc.returncode})", hint=detail)


def probe(python: Path, library: str) -> dict[str, Any]:
    """What the fresh venv loads (libmlx_probe.py), run isolated from an empty directory."""
    with tempfile.TemporaryDirectory() as empty:
        proc = run(probe_command(python, isolated=True, library=library), step="import mlx.core in the fresh venv",
                   cwd=Path(empty))
    try:
        return parse_probe(proc.stdout)
    except ValueError as exc:
        raise MlxForkError(str(exc)) from None


def verify_wheel(
    wheel: Path,
    manifest: Manifest,
    *,
    library: str,
    wheel_dir: Path,
    via: str = "index",
    stock_wheel: Path | None = None,
    frontend_wheel: Path | None = None,
    configured_away: list[str] | None = None,
    log: Path | None = None,
    keep_venv: Path | None = None,
    abi_must_pass: bool = True,
    needs_gpu_driver: bool = False,
) -> VerifyResult:
    """Install `wheel` (which lives in `wheel_dir`) beside the stock frontend and prove it is loaded.

    `needs_gpu_driver` (a CUDA backend): where no driver is loadable, the import
    and everything after it are left for a GPU machine (and the result says so);
    the installed files, their versions and sha256, the provenance and the ABI
    gate are still checked.
    """
    info = wheel_info(wheel)
    version = manifest.version
    if str(info.version) != version:
        raise MlxForkError(f"{wheel.name} has version {info.version}, the manifest says {version}")
    result = VerifyResult(wheel.name, version, "")
    # Full packaging publishes its own labelled frontend; an overlay runs under the stock one.
    own_frontend = any(frontends(wheel_dir, version))
    requirements = [f"mlx=={version if own_frontend else manifest.base_version}", f"{info.name}=={version}"]
    tmp = Path(tempfile.mkdtemp(prefix="mlx-fork-verify-", dir=work_dir() if work_dir().is_dir() else None))
    try:
        env_dir = keep_venv or tmp / "venv"
        say(f"verify: fresh venv, pip install {' '.join(requirements)} (via {via})")
        python = create_venv(env_dir, with_pip=True)
        if via == "index":
            simple = wheel_dir / "simple"
            if not (simple / "index.html").is_file():
                raise MlxForkError(f"{simple} has no index", hint="mlx-fork index")
            # The frontend comes from the index too when it was mirrored there; else PyPI.
            has_frontend = any(frontends(wheel_dir, manifest.base_version))
            pip_install(python, requirements, index_url=simple.resolve().as_uri(), find_links=[], log=log,
                        extra_index=not has_frontend)
        elif via == "find-links":
            pip_install(python, requirements, index_url="https://pypi.org/simple", find_links=[wheel_dir], log=log)
        else:
            raise MlxForkError(f"unknown install route {via!r}")
        if needs_gpu_driver and not cuda_driver_loadable():
            found = probe_files(python, library, info.name)
            result.left_for_gpu = LEFT_FOR_A_GPU
            problems = check_installed_files(found, manifest, info.name, result)
        else:
            found = probe(python, library)
            problems = check_imported(found, manifest, result)
        if stock_wheel is not None:
            frontend = frontend_wheel or frontend_for_this_python(wheel_dir, version if own_frontend
                                                             else manifest.base_version)
            problems += check_abi(abi_gate(stock_wheel, wheel, library, frontend, configured_away),
                                  frontend, abi_must_pass, result)
        if problems:
            raise MlxForkError(
                f"verify failed for {wheel.name}:\n  " + "\n  ".join(problems),
                hint=f"pip log: {log}" if log else None,
            )
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_files(python: Path, library: str, dist: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as empty:
        proc = run([str(python), "-I", "-c", FILES_PROBE, library, dist],
                   step="read the installed files in the fresh venv", cwd=Path(empty))
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def check_installed_files(found: dict[str, Any], manifest: Manifest, dist: str, result: VerifyResult) -> list[str]:
    """The driver-less checks: installed backend version, libmlx sha256, provenance."""
    problems: list[str] = []
    if found["backend_version"] != manifest.version:
        problems.append(f"installed {dist} is {found['backend_version']}, expected {manifest.version}")
    else:
        result.checks.append(f"installed {dist} == {manifest.version} (not imported: no GPU driver here)")
    problems += _check_sha_and_provenance(found, manifest, result)
    return problems


def _check_sha_and_provenance(found: dict[str, Any], manifest: Manifest, result: VerifyResult) -> list[str]:
    problems: list[str] = []
    expected_sha = manifest.outputs.get("libmlx_sha256")
    if expected_sha and found["installed_sha256"] != expected_sha:
        problems.append(f"installed libmlx sha256 {found['installed_sha256']} != manifest {expected_sha}")
    elif expected_sha:
        result.checks.append("installed libmlx sha256 matches the manifest")
    if found["provenance"] is None:
        problems.append("mlx/lib/mlx-fork.json is not installed")
    else:
        diff = compare_provenance(manifest.to_json(), found["provenance"])
        problems += [f"provenance {d}" for d in diff]
        if not diff:
            result.checks.append("provenance mlx/lib/mlx-fork.json matches the build manifest")
    return problems


def check_imported(found: dict[str, Any], manifest: Manifest, result: VerifyResult) -> list[str]:
    """The checks of a probe that imported mlx.core: version, loaded library, files, a computation."""
    problems: list[str] = []
    # libmlx reports the run-time form of the version (manifest.py explains the ".0").
    if found["version"] != manifest.runtime_version:
        problems.append(f"mx.__version__ is {found['version']!r}, expected {manifest.runtime_version!r}")
    else:
        result.checks.append(f"mx.__version__ == {manifest.runtime_version}")
    if not found["loaded"]:
        problems.append("no libmlx mapped into the process")
    elif found["loaded"] != found["installed"]:
        problems.append(f"loaded {found['loaded']}, but the installed library is {found['installed']}")
    else:
        result.loaded_library = found["loaded"]
        result.checks.append(f"loaded libmlx is the installed one ({found['loaded']})")
    problems += _check_sha_and_provenance(found, manifest, result)
    if found["value"] != 15.0:
        problems.append(f"(a*2+1).sum() gave {found['value']}, expected 15.0")
    else:
        result.checks.append(f"computation ran on {found['default_device']}")
    return problems


def check_abi(report: AbiReport, frontend: Path | None, abi_must_pass: bool, result: VerifyResult) -> list[str]:
    result.abi = report
    if report.removed and not abi_must_pass:
        result.checks.append(
            f"ABI report only (full packaging rebuilds the frontend): {len(report.removed)} stock "
            f"export(s) removed, {len(report.added)} added")
        return []
    if report.removed:
        shown = demangle(report.removed[:20])
        return [
            f"ABI gate: {len(report.removed)} exported symbol(s) of stock libmlx are gone "
            "(strong definitions, or imported by the stock frontend): " + "; ".join(shown)
        ]
    checked = f"the frontend {frontend.name} imports" if frontend else "(no frontend wheel to check) "
    result.checks.append(
        f"ABI gate: no stock export removed that {checked} or that is a strong definition "
        f"({len(report.added)} added, {len(report.removed_weak)} weak/unique instantiations differ, "
        f"{len(report.removed_configured)} configured away)"
    )
    return []


# ---------------------------------------------------------------- CLI


def abi_summary(report: AbiReport) -> str:
    lines = [f"removed (breaking): {len(report.removed)}"]
    lines += [f"  - {s}" for s in demangle(report.removed)]
    lines.append(f"removed, configured away (a stated build consequence): {len(report.removed_configured)}")
    lines += [f"  - {s}" for s in demangle(report.removed_configured)]
    lines.append(f"removed, weak/unique instantiations not imported by the stock frontend: {len(report.removed_weak)}")
    lines += [f"  - {s}" for s in demangle(report.removed_weak)]
    lines.append(f"added: {len(report.added)}")
    lines += [f"  + {s}" for s in demangle(report.added)]
    return "\n".join(lines) + "\n"


def manifest_store(directory: Path) -> Path:
    return directory / "manifests"


def manifest_for(directory: Path, wheel: Path) -> Path:
    return manifest_store(directory) / (wheel.name + ".json")


def latest_wheel(directory: Path) -> Path:
    """The newest of our wheels (wheeldir.py) in `directory`."""
    ours = patched_wheels(directory)
    if not ours:
        raise MlxForkError(f"no patched wheel in {directory}", hint="mlx-fork build")
    return ours[0].path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "verify",
        help="install a patched wheel in a fresh venv as a user would and prove it is the one loaded",
        description="Fresh venv; pip install the stock frontend and the patched backend from wheels/; check "
        "mx.__version__, the loaded libmlx path (/proc/self/maps), the provenance file against the build "
        "manifest, and the ABI gate (stock vs patched exported symbols).",
    )
    parser.add_argument("--wheel", type=Path, default=None,
                        help="the patched backend wheel (default: newest patched wheel in --dir)")
    parser.add_argument("--dir", type=Path, default=None, help="wheel directory (default: wheels/)")
    parser.add_argument("--via", choices=("index", "find-links"), default="index",
                        help="install through wheels/simple (index) or --find-links wheels/ (PyPI for the rest)")
    parser.add_argument("--no-abi", action="store_true", help="skip the ABI gate")
    parser.add_argument("--abi-details", action="store_true", help="list every added/removed symbol")
    parser.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .bases import load_base
    from .profiles import profile_of_build
    from .stockwheels import fetch_stock_wheel

    directory = (args.dir or wheels_dir()).resolve()
    wheel = (args.wheel or latest_wheel(directory)).resolve()
    manifest_path = manifest_for(wheel.parent, wheel)
    if not manifest_path.is_file():
        raise MlxForkError(f"no build manifest for {wheel.name} at {manifest_path}",
                           hint="verify checks a wheel against the manifest `mlx-fork build` recorded")
    manifest = Manifest.read(manifest_path)
    profile = profile_of_build(manifest.inputs)
    stock = None
    if not args.no_abi:
        stock = fetch_stock_wheel(load_base(manifest.inputs.base.name), profile)
    configured = [name for name, ident in manifest.inputs.dependencies.items() if ident.startswith("disabled")]
    result = verify_wheel(wheel, manifest, library=profile.library, wheel_dir=wheel.parent, via=args.via,
                          stock_wheel=stock, configured_away=configured, needs_gpu_driver=profile.needs_gpu_driver)
    print(f"verified {result.wheel}")
    for line in result.checks:
        print(f"  ok  {line}")
    if result.left_for_gpu:
        print(f"  not run here (no GPU driver): {result.left_for_gpu}")
    if result.abi is not None:
        print()
        print(abi_summary(result.abi) if args.abi_details else
              f"ABI: {len(result.abi.added)} added, {len(result.abi.removed_weak)} weak instantiations differ, "
              f"{len(result.abi.removed_configured)} configured away (--abi-details lists them)")
    return 0
