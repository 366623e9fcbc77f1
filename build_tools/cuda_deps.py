"""Offline inputs of a linux-cuda build: pinned git exports, toolkit NVTX, PyPI library wheels.

MLX's CUDA backend fetches CCCL, NVTX, cudnn-frontend and CUTLASS at configure
time and links against cuBLASLt, NVRTC, cuDNN, NCCL and the CUDA driver. Here
each comes from a pinned local copy, so a CUDA build configures with no network:

  git-export    a pinned commit of an upstream repository, exported from a
                local clone or mirror (or cloned, where the network allows)
                into the download cache; each exported subtree is verified by
                its git tree id, the same proof `mlx-fork source` uses for MLX
  cuda-toolkit  headers that the CUDA toolkit itself ships (NVTX3), behind a
                small CMake shim that defines the targets MLX links against
  pypi-wheel    a [[libraries]] entry of base.toml: a wheel of the nvidia-*
                packages that the stock mlx-cuda wheel depends on, pinned by
                file name and sha256, whose headers and shared libraries are
                linked into one shim prefix (headers only for the libraries
                MLX uses, so the toolkit's own runtime headers always win)

The CUDA driver (libcuda.so.1) exists only where a driver is installed; the
build links against a generated stub with the same SONAME, which is what the
stock wheel records as NEEDED.

`mlx-fork deps` fills the cache; a build only reads it and, where
something is missing, names the command that fetches it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .bases import BasePin, Dependency, Library
from .digest import sha256_file
from .errors import MlxForkError
from .git import git, git_in
from .gittree import tree_id
from .proc import run, say
from .tools import env_tool

CUDA_TOOLKIT_ROOTS: tuple[Path, ...] = (Path("/usr/local/cuda"),)


def deps_cache(work: Path) -> Path:
    return work / "downloads" / "deps"


def export_dir(work: Path, dep: Dependency) -> Path:
    return deps_cache(work) / f"{dep.name}-{dep.version}-{dep.commit[:12]}"


def wheel_path(work: Path, lib: Library) -> Path:
    return deps_cache(work) / "wheels" / lib.wheel


# ---------------------------------------------------------------- git-export


def is_exported(work: Path, dep: Dependency) -> bool:
    """True when the cache holds this pin's export and its stamp names the pinned trees."""
    target = export_dir(work, dep)
    stamp = target / ".mlx-fork-export"
    return stamp.is_file() and stamp.read_text() == _export_stamp(dep)


def _export_stamp(dep: Dependency) -> str:
    return "".join(f"{e.path} {e.tree} {e.to}\n" for e in dep.exports)


def fetch_git_export(work: Path, dep: Dependency, repository: str) -> Path:
    """Export `dep`'s pinned commit from `repository` (a local clone/mirror or a URL) into the cache."""
    target = export_dir(work, dep)
    if is_exported(work, dep):
        return target
    deps_cache(work).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{dep.name}-", dir=deps_cache(work)) as tmp:
        git_dir = _local_git_dir(repository, dep, Path(tmp))
        commit = _git(git_dir, "rev-parse", "--verify", f"{dep.commit}^{{commit}}",
                      what=f"{dep.name}: pinned commit {dep.commit[:12]} ({dep.version})",
                      hint=f"{repository} does not contain it: give a clone that has tag {dep.tag or dep.version}")
        staging = Path(tmp) / "export"
        for entry in dep.exports:
            found = _git(git_dir, "rev-parse", f"{commit}:{entry.path}" if entry.path != "." else f"{commit}^{{tree}}",
                         what=f"{dep.name}: {entry.path} at {commit[:12]}")
            if found != entry.tree:
                raise MlxForkError(
                    f"{dep.name} {dep.version}: {entry.path} at {commit[:12]} is tree {found[:12]}, "
                    f"base.toml pins {entry.tree[:12]}",
                    hint="the repository's history differs from upstream's; use an upstream clone",
                )
            dest = staging / entry.to
            dest.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", entry.tree],
                                     capture_output=True, check=False)
            if archive.returncode != 0:
                raise MlxForkError(f"{dep.name}: git archive of {entry.path} failed",
                                   hint=archive.stderr.decode(errors="replace").strip()[-400:])
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
            # Verify the files on disk, not only git's word: the same tree hash `source` computes.
            computed = tree_id(dest).tree
            if computed != entry.tree:
                raise MlxForkError(f"{dep.name}: exported {entry.path} hashes to {computed[:12]}, "
                                   f"not the pinned {entry.tree[:12]}")
        (staging / ".mlx-fork-export").write_text(_export_stamp(dep))
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    say(f"deps: {dep.name} {dep.version} exported to {target}")
    return target


def _local_git_dir(repository: str, dep: Dependency, tmp: Path) -> Path:
    path = Path(repository).expanduser()
    if path.exists():
        proc = git(path, "rev-parse", "--absolute-git-dir", check=False)
        if proc.returncode != 0:
            raise MlxForkError(f"{dep.name}: {path} is not a git repository",
                               hint=f"give a clone of {dep.repository}")
        return Path(proc.stdout.strip())
    if "://" not in repository:
        raise MlxForkError(f"{dep.name}: {repository} does not exist",
                           hint=f"give a local clone of {dep.repository}, or its URL")
    say(f"deps: cloning {repository} ({dep.tag or dep.version}) for {dep.name}")
    clone = tmp / "clone.git"
    ref = dep.tag or dep.version
    run(["git", "clone", "--bare", "--depth", "1", "--branch", ref, repository, clone], step=f"git clone {dep.name}")
    return clone


def _git(git_dir: Path, *args: str, what: str, hint: str = "") -> str:
    proc = git_in(git_dir, *args, check=False)
    if proc.returncode != 0:
        raise MlxForkError(f"{what}: not found", hint=hint or proc.stderr.strip()[-300:])
    return proc.stdout.strip()


# ---------------------------------------------------------------- pypi-wheel


def fetch_library_wheel(work: Path, lib: Library, wheel_dir: Path | None = None) -> Path:
    """The pinned wheel in the cache: copied from `wheel_dir`, else downloaded by pip; sha256 checked."""
    target = wheel_path(work, lib)
    if target.is_file() and sha256_file(target) == lib.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if wheel_dir is not None and (wheel_dir / lib.wheel).is_file():
        shutil.copyfile(wheel_dir / lib.wheel, target)
    else:
        say(f"deps: downloading {lib.wheel}")
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            run([*env_tool("pip"), "download", "--no-deps", "--only-binary=:all:", "--dest", tmp,
                 _requirement(lib), *(f"--platform={t}" for t in _wheel_platforms(lib.wheel)),
                 "--python-version", "3"], step=f"pip download {lib.package}")
            got = Path(tmp) / lib.wheel
            if not got.is_file():
                raise MlxForkError(f"pip did not deliver {lib.wheel}",
                                   hint=f"download it by hand into {target.parent}")
            got.replace(target)
    actual = sha256_file(target)
    if actual != lib.sha256:
        target.unlink()
        raise MlxForkError(f"{lib.wheel}: sha256 {actual[:16]}... is not the pinned {lib.sha256[:16]}...")
    return target


def _requirement(lib: Library) -> str:
    return f"{lib.package}=={lib.version}"


def _wheel_platforms(filename: str) -> list[str]:
    # name-version-py-abi-platform.whl; the platform part may hold several tags joined by '.'.
    return filename[:-len(".whl")].split("-")[-1].split(".")


def extracted_wheel(work: Path, lib: Library) -> Path:
    """The pinned wheel unpacked once into the cache (read-only use)."""
    wheel = wheel_path(work, lib)
    target = deps_cache(work) / "unpacked" / wheel.stem
    stamp = target / ".mlx-fork-sha256"
    if stamp.is_file() and stamp.read_text() == lib.sha256:
        return target
    if target.exists():
        shutil.rmtree(target)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    stamp.write_text(lib.sha256)
    return target


# ---------------------------------------------------------------- the CUDA prefix


@dataclass(frozen=True)
class CudaPrefix:
    include: Path
    lib: Path
    cmake_args: tuple[str, ...]
    identities: dict[str, str]


def stock_vendored_libs(stock_wheel: Path, libs_dir: str, deps_dir: Path) -> tuple[list[str], str]:
    """Link against the stock wheel's own BLAS/LAPACK (`mlx_cuda_13.libs`): CMake args and an identity.

    Our libmlx then NEEDs exactly the vendored libraries the stock wheel ships
    beside it (the same SONAMEs as the stock libmlx), whatever BLAS the build
    machine has or lacks. Unversioned names let FindBLAS/FindLAPACK find them;
    -rpath-link lets the linker resolve their own vendored dependencies (gfortran).
    """
    target = deps_dir / "stock-blas"
    lib = target / "lib"
    stamp = target / ".mlx-fork-stock"
    if not (stamp.is_file() and stamp.read_text() == stock_wheel.name):
        if target.exists():
            shutil.rmtree(target)
        lib.mkdir(parents=True)
        with zipfile.ZipFile(stock_wheel) as zf:
            members = [n for n in zf.namelist() if n.startswith(f"{libs_dir}/") and not n.endswith("/")]
            if not members:
                raise MlxForkError(f"{stock_wheel.name} has no {libs_dir}/: not the stock backend wheel?")
            for name in members:
                (lib / Path(name).name).write_bytes(zf.read(name))
        for path in sorted(lib.iterdir()):
            for stem in ("libblas", "liblapack"):
                if path.name.startswith(f"{stem}-") and ".so" in path.name:
                    (lib / f"{stem}.so").symlink_to(path.name)
        stamp.write_text(stock_wheel.name)
    if not (lib / "libblas.so").exists() or not (lib / "liblapack.so").exists():
        raise MlxForkError(f"{stock_wheel.name}: {libs_dir}/ has no libblas/liblapack to link against")
    # BLA_VENDOR=Generic: FindBLAS would take a system OpenBLAS before a reference libblas.
    args = ["-DBLA_VENDOR=Generic", f"-DCMAKE_LIBRARY_PATH={lib}"]
    return args, f"the stock wheel's vendored BLAS/LAPACK ({stock_wheel.name}:{libs_dir})"


def linker_flags(rpath_link: Path) -> list[str]:
    """-rpath-link: the linker resolves the vendored libraries' own dependencies (gfortran)."""
    flag = f"-Wl,-rpath-link,{rpath_link}"
    return [f"-DCMAKE_SHARED_LINKER_FLAGS={flag}", f"-DCMAKE_EXE_LINKER_FLAGS={flag}"]


def cuda_toolkit_root() -> Path:
    nvcc = shutil.which("nvcc")
    candidates = [Path(nvcc).resolve().parent.parent] if nvcc else []
    candidates += list(CUDA_TOOLKIT_ROOTS)
    for root in candidates:
        if (root / "include" / "cuda_runtime.h").is_file():
            return root
    raise MlxForkError("CUDA toolkit not found (no nvcc on PATH, no /usr/local/cuda)",
                       hint="install the CUDA 13 toolkit (nvcc) and put its bin/ on PATH")


def toolkit_version(root: Path) -> str:
    nvcc = root / "bin" / "nvcc"
    proc = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True)
    match = re.search(r"release (\d+\.\d+), V([\d.]+)", proc.stdout)
    return match.group(2) if match else "unknown"


_NVTX_SHIM = """\
# Written by mlx-fork: the NVTX3 targets of NVIDIA/NVTX's c/CMakeLists.txt,
# over the NVTX3 headers the CUDA toolkit ships ({include}/nvtx3).
cmake_minimum_required(VERSION 3.24)
project(nvtx3_shim LANGUAGES C CXX)
add_library(nvtx3-c INTERFACE)
target_include_directories(nvtx3-c INTERFACE "{include}")
target_link_libraries(nvtx3-c INTERFACE ${{CMAKE_DL_LIBS}})
add_library(nvtx3-cpp INTERFACE)
target_link_libraries(nvtx3-cpp INTERFACE nvtx3-c)
"""


def nvtx_shim(deps_dir: Path, toolkit: Path) -> Path:
    include = toolkit / "include"
    if not (include / "nvtx3" / "nvtx3.hpp").is_file():
        raise MlxForkError(f"{include}/nvtx3/nvtx3.hpp not found: this CUDA toolkit ships no NVTX3 headers")
    shim = deps_dir / "nvtx3"
    text = _NVTX_SHIM.format(include=include)
    path = shim / "c" / "CMakeLists.txt"
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return shim


def nvtx_cpp_version(toolkit: Path) -> str:
    text = (toolkit / "include" / "nvtx3" / "nvtx3.hpp").read_text(errors="replace")
    major = re.search(r"#define NVTX3_CPP_VERSION_MAJOR (\d+)", text)
    minor = re.search(r"#define NVTX3_CPP_VERSION_MINOR (\d+)", text)
    return f"{major.group(1)}.{minor.group(1)}" if major and minor else "unknown"


def driver_symbols(stock_wheel: Path | None) -> list[str]:
    """The CUDA driver functions (cu*) the stock libmlx imports: what the stub must define."""
    if stock_wheel is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "libmlx.so"
        with zipfile.ZipFile(stock_wheel) as zf:
            lib.write_bytes(zf.read("mlx/lib/libmlx.so"))
        proc = subprocess.run(["nm", "-D", "--undefined-only", str(lib)], capture_output=True, text=True)
    names = {line.split()[-1].split("@")[0] for line in proc.stdout.splitlines() if line.strip()}
    return sorted(n for n in names if re.fullmatch(r"cu[A-Z]\w*", n))


def driver_stub(lib_dir: Path, symbols: list[str]) -> Path:
    """libcuda.so with SONAME libcuda.so.1, defining the driver functions libmlx calls.

    Defined, not just named: a linker run with --as-needed (Ubuntu's default) drops a
    library that provides none of the undefined symbols, and libmlx would then not
    NEED libcuda.so.1 (seen: "undefined symbol: cuGraphCreate" at import). The real
    driver replaces the stub at run time.
    """
    stub = lib_dir / "libcuda.so"
    source = lib_dir / "libcuda-stub.c"
    text = "/* Stand-ins for the CUDA driver API; the installed driver is loaded at run time. */\n" + "".join(
        f"int {name}(void) {{ return 999; }}\n" for name in symbols)
    if not (stub.is_file() and source.is_file() and source.read_text() == text):
        lib_dir.mkdir(parents=True, exist_ok=True)
        source.write_text(text)
        run(["cc", "-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o", stub, source], step="CUDA driver stub")
    _link(lib_dir / "libcuda.so.1", stub)  # the SONAME, for ldd's check of the packaged library
    return stub


def installed_version(site: Path, package: str) -> str | None:
    """The version of `package` installed in the site-packages directory `site` (from its .dist-info)."""
    stem = re.sub(r"[-_.]+", "_", package).lower()
    for info in sorted(site.glob("*.dist-info")):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        if re.sub(r"[-_.]+", "_", name).lower() == stem:
            return version
    return None


def cuda_prefix(base: BasePin, deps_dir: Path, work: Path, site: Path | None = None,
                stock_wheel: Path | None = None) -> CudaPrefix:
    """Link the pinned library wheels' headers and libraries into deps_dir/cuda-libs.

    `site`: a site-packages directory with the nvidia-* packages installed, used
    instead of the pinned wheels (a machine with no package index, such as a GPU
    box whose image ships them); the manifest records the versions found there.
    """
    prefix = deps_dir / "cuda-libs"
    include, lib = prefix / "include", prefix / "lib"
    identities: dict[str, str] = {}
    missing = [lib_.wheel for lib_ in base.libraries if not wheel_path(work, lib_).is_file()]
    if missing and site is None:
        raise MlxForkError(f"CUDA library wheels not in the cache: {', '.join(missing)}",
                           hint=f"mlx-fork deps --base {base.name} --platform linux-cuda")
    for library in base.libraries:
        if site is not None:
            found_version = installed_version(site, library.package)
            if found_version is None:
                raise MlxForkError(f"{library.package} is not installed in {site}",
                                   hint=f"pip install {library.package} there, or drop --cuda-libraries")
            root = site
            identities[library.name] = f"installed {library.package} {found_version} (pinned {library.version})"
        else:
            root = extracted_wheel(work, library)
            identities[library.name] = f"pypi {library.package} {library.version} ({library.sha256[:12]})"
        for pattern in library.headers:
            matches = sorted(root.glob(pattern))
            if not matches:
                raise MlxForkError(f"{library.wheel} has no {pattern}")
            for found in matches:
                if found.is_file():
                    _link(include / found.relative_to(root / _prefix_of(pattern)), found)
        for pattern in library.shared:
            matches = sorted(root.glob(pattern))
            if not matches:
                raise MlxForkError(f"{library.wheel} has no {pattern}")
            for found in matches:
                _link(lib / found.name, found)
                unversioned = lib / (found.name.split(".so")[0] + ".so")
                _link(unversioned, found)
    stub = driver_stub(lib, driver_symbols(stock_wheel))
    identities["cuda_driver"] = "stub libcuda.so.1 (the real driver is loaded at run time)"
    # FindCUDAToolkit's imported targets (CUDA::cufft from v0.32 on) for the
    # libraries the base pins; the toolkit here ships none of them.
    toolkit_targets = tuple(f"-DCUDA_{name}_LIBRARY={lib / f'lib{name}.so'}"
                            for name in ("cufft",) if (lib / f"lib{name}.so").exists())
    args = (
        *toolkit_targets,
        f"-DCUDA_cublasLt_LIBRARY={lib / 'libcublasLt.so'}",
        f"-DCUDA_nvrtc_LIBRARY={lib / 'libnvrtc.so'}",
        f"-DCUDA_cuda_driver_LIBRARY={stub}",
        f"-DCUDNN_INCLUDE_PATH={include}",
        f"-DCUDNN_LIBRARY_PATH={lib}",
        f"-DNCCL_INCLUDE_DIR={include}",
        f"-DNCCL_LIB_DIR={lib}",
        # Only library headers live here, so the toolkit's runtime headers always win.
        f"-DCMAKE_CXX_FLAGS=-I{include}",
        f"-DCMAKE_CUDA_FLAGS=-I{include}",
    )
    return CudaPrefix(include, lib, args, identities)


def _prefix_of(pattern: str) -> str:
    # "nvidia/cu13/include/cublasLt.h" -> "nvidia/cu13/include": headers keep their path below include/.
    parts = pattern.split("/")
    return "/".join(parts[: parts.index("include") + 1]) if "include" in parts else str(Path(pattern).parent)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(link.readlink()) == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)

