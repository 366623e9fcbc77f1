"""Offline provisioning of MLX's FetchContent dependencies, and `mlx-fork doctor`.

Upstream MLX downloads its dependencies at configure time (FetchContent). Every
[[dependencies]] entry of a base.toml names an `offline` strategy; this module
turns those strategies into CMake arguments for one platform profile, so a
build needs no network:

  debian-json            nlohmann/json from the system (a shim dir laid out
                         like the release tarball: single_include/nlohmann)
  system-fmt             -DUSE_SYSTEM_FMT=ON (find_package(fmt))
  pypi-sdist             nanobind's PyPI sdist (it carries the CMake project);
                         only for the Python bindings (full packaging)
  debian-doctest         the system doctest package behind a shim that looks
                         like the doctest repository; only for the C++ tests
  user-dir               gguflib from a directory the user gives
                         (--gguflib PATH or MLX_FORK_GGUFLIB), else
                         MLX_BUILD_GGUF=OFF with its consequence printed
  stock-wheel-metal-cpp  metal-cpp from mlx/include/metal_cpp of the stock
                         mlx-metal wheel (the exact headers MLX shipped with)
  git-export             a pinned commit of an upstream repository, exported
                         from a local clone into the download cache and
                         verified by git tree ids (CCCL, cudnn-frontend, CUTLASS)
  cuda-toolkit           headers the CUDA toolkit ships (NVTX3) behind a shim
  online-only            fetched by CMake at configure time
  unsupported-platform   a dependency of a platform mlx-fork does not target

Shims are written under the build slot (`deps_dir`) so that compile lines
only mention paths relative to the build tree and ccache hits across slots.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .bases import BasePin, Dependency, load_base
from .cuda_deps import (
    cuda_prefix,
    cuda_toolkit_root,
    export_dir,
    fetch_git_export,
    fetch_library_wheel,
    is_exported,
    linker_flags,
    nvtx_cpp_version,
    nvtx_shim,
    stock_vendored_libs,
    toolkit_version,
    wheel_path,
)
from .errors import MlxForkError
from .git import checkout_head
from .paths import PRIMARY_BASE, work_dir
from .proc import say, version_line
from .profiles import PLATFORMS, Profile, get_profile, host_platform
from .stockwheels import fetch_stock_wheel
from .tools import cmake_program, find_env_tool, install_command

STRATEGIES: tuple[str, ...] = (
    "debian-json",
    "system-fmt",
    "pypi-sdist",
    "debian-doctest",
    "user-dir",
    "stock-wheel-metal-cpp",
    "git-export",
    "cuda-toolkit",
    "online-only",
    "unsupported-platform",
)

INCLUDE_ROOTS: tuple[Path, ...] = (
    Path("/usr/include"),
    Path("/usr/local/include"),
    Path("/opt/homebrew/include"),
)
CMAKE_PACKAGE_ROOTS: tuple[Path, ...] = (
    Path("/usr/lib/cmake"),
    Path("/usr/lib/x86_64-linux-gnu/cmake"),
    Path("/usr/lib/aarch64-linux-gnu/cmake"),
    Path("/usr/share/cmake"),
    Path("/usr/local/lib/cmake"),
    Path("/opt/homebrew/lib/cmake"),
)


@dataclass(frozen=True)
class DepsRequest:
    """What the build needs: the parts of MLX being built decide which deps matter."""

    python_bindings: bool = False  # nanobind
    tests: bool = False  # doctest
    gguflib: Path | None = None  # user-given gguf-tools checkout
    cuda_libraries: Path | None = None  # site-packages with nvidia-* installed, instead of the pinned wheels


@dataclass
class Provisioned:
    cmake_args: list[str] = field(default_factory=list)
    # name -> identity ("debian nlohmann-json 3.11.2"): goes into the build manifest.
    # Identities, not paths, so the label does not depend on where the work dir is.
    identities: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # consequences the user must hear about
    online: list[str] = field(default_factory=list)  # deps CMake will still download


# ---------------------------------------------------------------- lookups


def find_json_include() -> tuple[Path, str] | None:
    """The system nlohmann/json include dir and its version."""
    for root in INCLUDE_ROOTS:
        header = root / "nlohmann" / "json.hpp"
        if header.is_file():
            return root / "nlohmann", _json_version(root / "nlohmann")
    return None


def _json_version(nlohmann: Path) -> str:
    parts: dict[str, str] = {}
    for name in ("detail/abi_macros.hpp", "json.hpp"):
        path = nlohmann / name
        if not path.is_file():
            continue
        for key, value in re.findall(
            r"#define NLOHMANN_JSON_VERSION_(MAJOR|MINOR|PATCH) (\d+)", path.read_text(errors="replace")
        ):
            parts.setdefault(key, value)
    if len(parts) == 3:
        return f"{parts['MAJOR']}.{parts['MINOR']}.{parts['PATCH']}"
    return "unknown"


def find_cmake_package(name: str, version_file: str) -> tuple[Path, str] | None:
    """A CMake package config dir (e.g. fmt, doctest) and the version it declares."""
    for root in CMAKE_PACKAGE_ROOTS:
        directory = root / name
        path = directory / version_file
        if path.is_file():
            match = re.search(r'set\(PACKAGE_VERSION "([^"]+)"\)', path.read_text(errors="replace"))
            return directory, match.group(1) if match else "unknown"
    return None


def find_fmt() -> tuple[Path, str] | None:
    return find_cmake_package("fmt", "fmt-config-version.cmake")


def find_doctest() -> tuple[Path, str] | None:
    return find_cmake_package("doctest", "doctestConfigVersion.cmake")


def sdist_cache(work: Path) -> Path:
    return work / "downloads" / "sdist"


def find_nanobind_sdist(version: str, work: Path) -> Path | None:
    for path in sorted(sdist_cache(work).glob(f"nanobind-{version}.tar.gz")):
        return path
    return None


def download_nanobind_sdist(version: str, work: Path) -> Path:
    """The nanobind sdist from the package index (PEP 691 JSON), sha256-checked against the index.

    Not `pip download`: pip would build the sdist's metadata, which needs
    nanobind's build backend; we only want the file.
    """
    dest = sdist_cache(work)
    dest.mkdir(parents=True, exist_ok=True)
    filename = f"nanobind-{version}.tar.gz"
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    say(f"downloading {filename} from {index}")
    request = urllib.request.Request(f"{index}/nanobind/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            files = json.load(response)["files"]
        entry = next((f for f in files if f["filename"] == filename), None)
        if entry is None:
            raise MlxForkError(f"{index}/nanobind/ has no {filename}")
        url = urllib.parse.urljoin(f"{index}/nanobind/", entry["url"])
        with urllib.request.urlopen(url, timeout=300) as response:
            data = response.read()
    except (OSError, ValueError, KeyError) as exc:
        raise MlxForkError(
            f"could not download {filename}: {exc}",
            hint=f"download it by hand into {dest} (https://pypi.org/project/nanobind/{version}/#files)",
        ) from exc
    expected = entry.get("hashes", {}).get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise MlxForkError(f"{filename}: sha256 does not match the index ({expected})")
    target = dest / filename
    tmp = target.with_name(filename + ".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def _gguflib_from(user: Path | None) -> Path | None:
    if user is not None:
        return user
    env = os.environ.get("MLX_FORK_GGUFLIB")
    return Path(env) if env else None


# ---------------------------------------------------------------- strategies


def _write_symlink(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            link.unlink()
    link.symlink_to(target)


def _write_if_changed(path: Path, text: str) -> None:
    # Rewriting an identical file would bump its mtime and re-run CMake.
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _json(dep: Dependency, deps_dir: Path, out: Provisioned) -> None:
    found = find_json_include()
    if found is None:
        raise MlxForkError(
            "nlohmann/json headers not found (needed by every MLX build)",
            hint=install_hint("json"),
        )
    include, version = found
    shim = deps_dir / "json"
    _write_symlink(shim / "single_include" / "nlohmann", include)
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_JSON={shim}")
    out.identities[dep.name] = f"system nlohmann-json {version} (upstream pins {dep.version})"


def _fmt(dep: Dependency, deps_dir: Path, out: Provisioned) -> None:
    found = find_fmt()
    if found is None and not _on_macos():
        raise MlxForkError("fmt (CMake package) not found", hint=install_hint("fmt"))
    version = found[1] if found else "system"
    out.cmake_args.append("-DUSE_SYSTEM_FMT=ON")
    out.identities[dep.name] = f"system fmt {version} (upstream pins {dep.version})"


def _nanobind(dep: Dependency, deps_dir: Path, out: Provisioned, work: Path) -> None:
    sdist = find_nanobind_sdist(dep.version, work) or download_nanobind_sdist(dep.version, work)
    target = deps_dir / f"nanobind-{dep.version}"
    if not (target / "CMakeLists.txt").is_file():
        if target.exists():
            shutil.rmtree(target)
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/")[0]
            if hasattr(tarfile, "data_filter"):  # refuse absolute paths and links out of the dir
                tar.extractall(deps_dir, filter="data")
            else:  # pragma: no cover - Python < 3.10.12
                tar.extractall(deps_dir)
        (deps_dir / top).rename(target)
        if not (target / "CMakeLists.txt").is_file():
            raise MlxForkError(f"{sdist} has no top-level CMakeLists.txt; not a usable nanobind source")
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_NANOBIND={target}")
    out.identities[dep.name] = f"pypi sdist nanobind {dep.version}"


_DOCTEST_SHIM = """\
# Written by mlx-fork: the system doctest package, laid out like the doctest
# repository MLX's tests/CMakeLists.txt fetches (a `doctest` target and
# scripts/cmake/doctest.cmake).
cmake_minimum_required(VERSION 3.16)
project(doctest_shim LANGUAGES CXX)
find_package(doctest REQUIRED CONFIG PATHS "{config_dir}" NO_DEFAULT_PATH)
if(NOT TARGET doctest)
  add_library(doctest INTERFACE)
  target_link_libraries(doctest INTERFACE doctest::doctest)
endif()
"""


def _doctest(dep: Dependency, deps_dir: Path, out: Provisioned) -> None:
    found = find_doctest()
    if found is None:
        raise MlxForkError("doctest (CMake package) not found; needed for MLX_BUILD_TESTS=ON",
                           hint=install_hint("doctest"))
    config_dir, version = found
    shim = deps_dir / "doctest"
    _write_if_changed(shim / "CMakeLists.txt", _DOCTEST_SHIM.format(config_dir=config_dir))
    for name in ("doctest.cmake", "doctestAddTests.cmake"):
        _write_symlink(shim / "scripts" / "cmake" / name, config_dir / name)
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_DOCTEST={shim}")
    out.identities[dep.name] = f"system doctest {version} (upstream pins {dep.version})"


def _gguflib(dep: Dependency, out: Provisioned, user: Path | None) -> None:
    path = _gguflib_from(user)
    if path is None:
        out.cmake_args.append("-DMLX_BUILD_GGUF=OFF")
        out.identities[dep.name] = "disabled (MLX_BUILD_GGUF=OFF)"
        out.notes.append(f"gguflib: no --gguflib/MLX_FORK_GGUFLIB given: {dep.consequence}")
        return
    path = path.expanduser().resolve()
    if not (path / "gguflib.c").is_file():
        raise MlxForkError(
            f"--gguflib {path} is not a gguf-tools checkout (no gguflib.c)",
            hint=f"git clone {dep.upstream.split('@')[0]} && git -C gguf-tools checkout {dep.version}",
        )
    out.cmake_args += ["-DMLX_BUILD_GGUF=ON", f"-DFETCHCONTENT_SOURCE_DIR_GGUFLIB={path}"]
    commit = checkout_head(path)
    if commit and commit != dep.version:
        out.notes.append(f"gguflib: {path} is at {commit}, upstream pins {dep.version}")
    out.identities[dep.name] = f"user dir gguf-tools {commit or 'unknown commit'}"


def extract_metal_cpp(stock_wheel: Path, dest: Path) -> Path:
    """mlx/include/metal_cpp of a stock mlx-metal wheel -> dest (a FetchContent source dir)."""
    prefix = "mlx/include/metal_cpp/"
    with zipfile.ZipFile(stock_wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not members:
            raise MlxForkError(f"{stock_wheel.name} has no {prefix}: not an mlx-metal wheel?")
        if dest.exists():
            shutil.rmtree(dest)
        for name in members:
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
    return dest


def metal_cpp_dir(base: BasePin, work: Path) -> Path:
    """metal-cpp exactly as MLX `base` was built with, for the Metal checks on Linux (cached in the work dir).

    From the stock mlx-metal wheel of `base`; extracted beside the final folder
    and renamed into place, so a present folder is always complete.
    """
    dest = work / "metal-cpp" / base.version
    if (dest / "Metal" / "Metal.hpp").is_file():
        return dest
    wheel = fetch_stock_wheel(base, get_profile("macos-metal"), work)
    staging = dest.with_name(f"{base.version}.partial")
    extract_metal_cpp(wheel, staging)
    if dest.exists():
        shutil.rmtree(dest)
    staging.rename(dest)
    return dest


def _metal_cpp(dep: Dependency, deps_dir: Path, out: Provisioned, stock_wheel: Path | None) -> None:
    if stock_wheel is None:
        raise MlxForkError("metal-cpp comes from the stock mlx-metal wheel, which was not given")
    dest = extract_metal_cpp(stock_wheel, deps_dir / "metal_cpp")
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_METAL_CPP={dest}")
    out.identities[dep.name] = f"metal-cpp {dep.version} from {stock_wheel.name}"


def _git_export(dep: Dependency, out: Provisioned, work: Path) -> None:
    if not is_exported(work, dep):
        raise MlxForkError(
            f"{dep.name} {dep.version} is not in the download cache",
            hint=f"mlx-fork deps --platform linux-cuda --from {dep.name}=<clone of {dep.repository}>",
        )
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_{dep.name.upper()}={export_dir(work, dep)}")
    out.identities[dep.name] = f"git {dep.repository} {dep.tag or dep.version} {dep.commit[:12]}"


def _cuda_toolkit(dep: Dependency, deps_dir: Path, out: Provisioned) -> None:
    toolkit = cuda_toolkit_root()
    shim = nvtx_shim(deps_dir, toolkit)
    out.cmake_args.append(f"-DFETCHCONTENT_SOURCE_DIR_{dep.name.upper()}={shim}")
    found = nvtx_cpp_version(toolkit)
    out.identities[dep.name] = f"CUDA toolkit {toolkit_version(toolkit)} nvtx3 headers (C++ API {found})"
    out.notes.append(f"{dep.name}: upstream pins NVTX {dep.version}; the CUDA toolkit's NVTX3 headers "
                     f"(C++ API {found}) are used instead: {dep.consequence}")


def provision(
    base: BasePin,
    profile: Profile,
    deps_dir: Path,
    request: DepsRequest = DepsRequest(),
    *,
    work: Path | None = None,
    stock_wheel: Path | None = None,
) -> Provisioned:
    """CMake arguments that supply every dependency of `base` for `profile` offline."""
    work = work or work_dir()
    deps_dir.mkdir(parents=True, exist_ok=True)
    out = Provisioned()
    for dep in base.dependencies:
        if dep.offline not in STRATEGIES:
            raise MlxForkError(
                f"{base.name}/base.toml: dependency {dep.name} has unknown offline strategy {dep.offline!r}",
                hint=f"known strategies: {', '.join(STRATEGIES)}",
            )
        if profile.name not in dep.platforms:
            continue
        if dep.offline == "debian-json":
            _json(dep, deps_dir, out)
        elif dep.offline == "system-fmt":
            _fmt(dep, deps_dir, out)
        elif dep.offline == "pypi-sdist":
            if request.python_bindings:
                _nanobind(dep, deps_dir, out, work)
        elif dep.offline == "debian-doctest":
            if request.tests:
                _doctest(dep, deps_dir, out)
        elif dep.offline == "user-dir":
            _gguflib(dep, out, request.gguflib)
        elif dep.offline == "stock-wheel-metal-cpp":
            _metal_cpp(dep, deps_dir, out, stock_wheel)
        elif dep.offline == "git-export":
            _git_export(dep, out, work)
        elif dep.offline == "cuda-toolkit":
            _cuda_toolkit(dep, deps_dir, out)
        elif dep.offline == "online-only":
            out.online.append(dep.name)
            out.identities[dep.name] = f"downloaded by CMake: {dep.upstream}"
            out.notes.append(f"{dep.name} {dep.version}: {dep.consequence}")
        # unsupported-platform: never part of a profile mlx-fork builds.
    if profile.name == "linux-cuda":
        prefix = cuda_prefix(base, deps_dir, work, request.cuda_libraries, stock_wheel)
        out.cmake_args += prefix.cmake_args
        out.identities.update(prefix.identities)
        if stock_wheel is not None and profile.vendored_libs:
            blas_args, identity = stock_vendored_libs(stock_wheel, profile.vendored_libs, deps_dir)
            out.cmake_args += blas_args + linker_flags(deps_dir / "stock-blas" / "lib")
            out.identities["blas_lapack"] = identity
    # Everything local: forbid CMake from reaching out, so a missing pin fails
    # at configure time instead of silently downloading something else.
    disconnected = "OFF" if out.online else "ON"
    out.cmake_args.append(f"-DFETCHCONTENT_FULLY_DISCONNECTED={disconnected}")
    return out


# ---------------------------------------------------------------- doctor


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""  # exact command(s) that install what is missing
    required: bool = True


def _on_macos() -> bool:
    return sys.platform == "darwin"


_APT = {
    "compiler": "build-essential",
    "cmake": "cmake",
    "ninja": "ninja-build",
    "ccache": "ccache",
    "blas": "libblas-dev liblapack-dev liblapacke-dev",
    "json": "nlohmann-json3-dev",
    "fmt": "libfmt-dev",
    "doctest": "doctest-dev",
    "patchelf": "patchelf",
}
_BREW = {"cmake": "cmake", "ninja": "ninja", "ccache": "ccache", "json": "nlohmann-json", "fmt": "fmt",
         "doctest": "doctest"}


def install_hint(what: str, macos: bool | None = None) -> str:
    macos = _on_macos() if macos is None else macos
    if macos:
        if what == "compiler" or what == "xcode":
            return "xcode-select --install"
        if what in _BREW:
            return f"brew install {_BREW[what]}"
        return ""
    if what in _APT:
        return f"sudo apt-get install -y {_APT[what]}"
    return ""


def _tool_version(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    line = version_line(cmd, timeout=30)
    return None if line is None else line or "present"


def _version_tuple(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return ()
    return tuple(int(g) for g in match.groups() if g is not None)


def _cmake_check(profile: Profile, macos: bool) -> Check:
    # The same lookup the compile step uses (PATH, else beside this interpreter).
    wanted = ".".join(str(v) for v in profile.cmake_minimum)
    fix = f"{sys.executable} -m pip install 'cmake>={wanted}'"
    try:
        program = cmake_program(profile.cmake_minimum)
    except MlxForkError:
        found = _tool_version(["cmake", "--version"])
        return Check(f"CMake >= {wanted}", False, f"{found} (too old)" if found else "not found",
                     fix if profile.cmake_minimum > (3, 24) else install_hint("cmake", macos) + f" (or: {fix})")
    return Check(f"CMake >= {wanted}", True, f"{program}: {_tool_version([program, '--version'])}")


def cuda_checks(base: BasePin, profile: Profile, work: Path) -> list[Check]:
    """The CUDA toolkit and every pinned CUDA input in the download cache (what `mlx-fork deps` provides)."""
    checks: list[Check] = []
    fetch = f"mlx-fork deps --base {base.name} --platform linux-cuda"
    try:
        toolkit = cuda_toolkit_root()
        checks.append(Check("CUDA toolkit (nvcc)", True, f"{toolkit} ({toolkit_version(toolkit)})"))
    except MlxForkError as exc:
        checks.append(Check("CUDA toolkit (nvcc)", False, str(exc), "install the CUDA 13 toolkit (cuda-nvcc-13)"))
        toolkit = None
    for dep in base.dependencies:
        if profile.name not in dep.platforms:
            continue
        if dep.offline == "git-export":
            ok = is_exported(work, dep)
            checks.append(Check(f"{dep.name} {dep.version} ({dep.tag} {dep.commit[:12]})", ok,
                                str(export_dir(work, dep)) if ok else "not in the download cache",
                                f"{fetch} --from {dep.name}=<clone of {dep.repository}>"))
        elif dep.offline == "cuda-toolkit":
            ok = toolkit is not None and (toolkit / "include" / "nvtx3" / "nvtx3.hpp").is_file()
            detail = (f"toolkit nvtx3 headers, C++ API {nvtx_cpp_version(toolkit)} (upstream pins {dep.version})"
                      if ok and toolkit is not None else "the toolkit has no include/nvtx3")
            checks.append(Check(f"{dep.name} (from the CUDA toolkit)", ok, detail, "install the full CUDA toolkit"))
    for library in base.libraries:
        if profile.name not in library.platforms:
            continue
        path = wheel_path(work, library)
        ok = path.is_file()
        checks.append(Check(f"{library.package} {library.version}", ok, str(path) if ok else "not downloaded",
                            fetch))
    return checks


def doctor_checks(base: BasePin, profile: Profile, work: Path) -> list[Check]:
    macos = profile.is_macos
    checks: list[Check] = []
    cxx = os.environ.get("CXX", "c++")
    version = _tool_version([cxx, "--version"])
    checks.append(Check("C++ compiler", version is not None, version or f"{cxx} not found",
                        install_hint("compiler", macos)))
    checks.append(_cmake_check(profile, macos))
    ninja = _tool_version(["ninja", "--version"])
    checks.append(Check("Ninja", ninja is not None, ninja or "not found", install_hint("ninja", macos)))
    ccache = _tool_version(["ccache", "--version"])
    checks.append(Check("ccache", ccache is not None, ccache or "not found (rebuilds will be slow)",
                        install_hint("ccache", macos), required=False))
    if macos:
        xcode = _tool_version(["xcrun", "--show-sdk-version"])
        checks.append(Check("Xcode / macOS SDK", xcode is not None, f"SDK {xcode}" if xcode else "not found",
                            "xcode-select --install  (the Metal compiler needs full Xcode: "
                            "sudo xcode-select -s /Applications/Xcode.app)"))
        metal = _tool_version(["xcrun", "-sdk", "macosx", "--find", "metal"])
        checks.append(Check("Metal compiler", metal is not None, metal or "xcrun cannot find metal",
                            "xcodebuild -downloadComponent MetalToolchain"))
    else:
        lib_dirs = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
        blas = any(Path(d, "libblas.so").exists() for d in lib_dirs)
        lapack = any(Path(d, "liblapack.so").exists() for d in lib_dirs)
        lapacke = any(root.joinpath("lapacke.h").is_file() for root in INCLUDE_ROOTS) or any(
            root.joinpath("x86_64-linux-gnu", "lapacke.h").is_file() for root in INCLUDE_ROOTS)
        checks.append(Check("BLAS/LAPACK (+LAPACKE headers)", blas and lapack and lapacke,
                            f"blas={'yes' if blas else 'no'} lapack={'yes' if lapack else 'no'} "
                            f"lapacke.h={'yes' if lapacke else 'no'}", install_hint("blas", macos)))
        patchelf = _tool_version(["patchelf", "--version"])
        checks.append(Check("patchelf (overlay wheels)", patchelf is not None, patchelf or "not found",
                            install_hint("patchelf", macos)))
    json_found = find_json_include()
    checks.append(Check("nlohmann/json", json_found is not None,
                        f"{json_found[0]} ({json_found[1]})" if json_found else "not found",
                        install_hint("json", macos)))
    fmt = find_fmt()
    checks.append(Check("fmt", fmt is not None, f"{fmt[0]} ({fmt[1]})" if fmt else "not found",
                        install_hint("fmt", macos)))
    doctest = find_doctest()
    checks.append(Check("doctest (C++ tests only)", doctest is not None,
                        f"{doctest[0]} ({doctest[1]})" if doctest else "not found",
                        install_hint("doctest", macos), required=False))
    if profile.name == "linux-cuda":
        checks += cuda_checks(base, profile, work)
    for dep in base.dependencies:
        if dep.offline == "pypi-sdist":
            sdist = find_nanobind_sdist(dep.version, work)
            checks.append(Check(f"nanobind {dep.version} sdist (--full only)", sdist is not None,
                                str(sdist) if sdist else f"not in {sdist_cache(work)}",
                                f"(downloaded by `mlx-fork build --full`) or put nanobind-{dep.version}.tar.gz "
                                f"from https://pypi.org/project/nanobind/{dep.version}/#files into {sdist_cache(work)}",
                                required=False))
        if dep.offline == "user-dir":
            path = _gguflib_from(None)
            ok = path is not None and (path / "gguflib.c").is_file()
            checks.append(Check("gguflib (optional)", ok,
                                str(path) if ok else f"not given: MLX_BUILD_GGUF=OFF. {dep.consequence}",
                                f"git clone {dep.upstream.split('@')[0]} gguf-tools && "
                                f"git -C gguf-tools checkout {dep.version} && export MLX_FORK_GGUFLIB=$PWD/gguf-tools",
                                required=False))
    # Looked up exactly as the packaging stage runs them (build_tools.tools), so
    # doctor cannot pass a tool that the build then fails to find.
    for tool in ("wheel", "delocate-wheel" if macos else "auditwheel"):
        found = find_env_tool(tool)
        checks.append(Check(f"python: {tool}", found is not None,
                            f"installed ({' '.join(found)})" if found else f"not installed beside {sys.executable}",
                            install_command(tool), required=tool != "wheel"))
    return checks


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "doctor",
        help="check the toolchain and offline dependencies; print install commands for what is missing",
        description="Check compiler, CMake, Ninja, ccache, BLAS/LAPACK, json, fmt, doctest, the nanobind "
        "sdist and (macOS) Xcode for a build profile, and print the exact commands that install what is missing.",
    )
    parser.add_argument("--base", default=PRIMARY_BASE)
    parser.add_argument("--platform", default="auto", choices=("auto",) + PLATFORMS)
    parser.add_argument("--cuda-arch", default="release", help=argparse.SUPPRESS)
    parser.set_defaults(func=_cmd_doctor)
    _register_fetch(sub)


def _register_fetch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "deps",
        help="fetch a base's pinned dependencies for a platform into the download cache (offline builds)",
        description="Export every git-export dependency of a base from a local clone (or its upstream URL) and "
        "download the pinned library wheels, verifying git tree ids and sha256. Builds then configure with no "
        "network; `mlx-fork doctor` reports what is cached.",
    )
    parser.add_argument("--base", default=PRIMARY_BASE)
    parser.add_argument("--platform", default="linux-cuda", choices=PLATFORMS)
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="NAME=PATH|URL",
                        help="where a git-export dependency comes from (a local clone or mirror, or a URL); "
                        "default: its upstream repository")
    parser.add_argument("--wheels-from", type=Path, default=None, metavar="DIR",
                        help="a directory holding the pinned library wheels (else pip downloads them)")
    parser.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    work = work_dir()
    sources: dict[str, str] = {}
    known = {d.name for d in base.dependencies if d.offline == "git-export"}
    for spec in args.sources:
        name, sep, where = spec.partition("=")
        if not sep or name not in known:
            raise MlxForkError(f"--from {spec!r}: expected NAME=PATH with NAME one of {', '.join(sorted(known))}")
        sources[name] = where
    for dep in base.dependencies:
        if dep.offline != "git-export" or args.platform not in dep.platforms:
            continue
        path = fetch_git_export(work, dep, sources.get(dep.name, dep.repository))
        print(f"{dep.name} {dep.version}: {path}")
    for library in base.libraries:
        if args.platform not in library.platforms:
            continue
        path = fetch_library_wheel(work, library, args.wheels_from)
        print(f"{library.name} {library.version}: {path}")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    profile = get_profile(args.platform)
    checks = doctor_checks(base, profile, work_dir())
    width = max(len(c.name) for c in checks)
    print(f"mlx-fork doctor: base {base.name}, platform {profile.name} (host: {host_platform()})")
    missing_required: list[Check] = []
    for check in checks:
        mark = "ok  " if check.ok else ("MISS" if check.required else "warn")
        print(f"  [{mark}] {check.name:<{width}}  {check.detail}")
        if not check.ok and check.required:
            missing_required.append(check)
    fixes = [c.fix for c in checks if not c.ok and c.fix]
    if fixes:
        print("\nTo install what is missing:")
        for fix in dict.fromkeys(fixes):
            print(f"  {fix}")
    if missing_required:
        print(f"\n{len(missing_required)} required item(s) missing", file=sys.stderr)
        return 1
    print("\nall required tools and dependencies found")
    return 0
