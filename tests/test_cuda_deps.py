"""linux-cuda inputs: pinned git exports, the library-wheel prefix, the NVTX shim, the profile (no GPU, no network)."""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import git

from build_tools import cuda_deps, deps
from build_tools.bases import BasePin, Dependency, Export, Library, load_base
from build_tools.errors import MlxForkError
from build_tools.profiles import CUDA_RELEASE_ARCHITECTURES, get_profile

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def upstream_lib(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with include/lib.h and tests/; returns (repo, commit, tree of include/)."""
    repo = tmp_path / "lib.git"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "include").mkdir()
    (repo / "include" / "lib.h").write_text("#pragma once\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "t.cpp").write_text("int main() {}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1.0")
    return repo, git(repo, "rev-parse", "HEAD"), git(repo, "rev-parse", "HEAD:include")


def git_dep(commit: str, tree: str, repository: str = "https://example.invalid/lib") -> Dependency:
    return Dependency("lib", "1.0", f"{repository}@v1.0", ("linux-cuda",), "git-export", "", repository, commit,
                      "v1.0", (Export("include", "include", tree),))


def base_with(tmp_path: Path, *dependencies: Dependency, libraries: tuple[Library, ...] = ()) -> BasePin:
    return BasePin("v9.9.9", "9.9.9", "v9.9.9", "a" * 40, "b" * 40, "https://example.invalid/a.tar.gz",
                   "mlx-9.9.9", "stage", tuple(dependencies), tmp_path, libraries)


def test_git_export_takes_only_the_pinned_subtree_and_verifies_it(tmp_path: Path, upstream_lib) -> None:
    repo, commit, tree = upstream_lib
    dep = git_dep(commit, tree)
    work = tmp_path / "work"
    assert not cuda_deps.is_exported(work, dep)
    target = cuda_deps.fetch_git_export(work, dep, str(repo))
    assert (target / "include" / "lib.h").read_text() == "#pragma once\n"
    assert not (target / "tests").exists()
    assert cuda_deps.is_exported(work, dep)
    out = deps.Provisioned()
    deps._git_export(dep, out, work)
    assert out.cmake_args == [f"-DFETCHCONTENT_SOURCE_DIR_LIB={target}"]
    assert commit[:12] in out.identities["lib"]


def test_git_export_refuses_a_tree_that_is_not_the_pin(tmp_path: Path, upstream_lib) -> None:
    repo, commit, _ = upstream_lib
    with pytest.raises(MlxForkError, match=r"base.toml pins 000000000000"):
        cuda_deps.fetch_git_export(tmp_path / "work", git_dep(commit, "0" * 40), str(repo))
    assert not list((tmp_path / "work" / "downloads" / "deps").glob("lib-*"))  # nothing half-written


def test_git_export_names_the_missing_commit(tmp_path: Path, upstream_lib) -> None:
    repo, _, tree = upstream_lib
    with pytest.raises(MlxForkError, match="pinned commit 1111111111"):
        cuda_deps.fetch_git_export(tmp_path / "work", git_dep("1" * 40, tree), str(repo))


def test_a_build_without_the_export_says_how_to_fetch_it(tmp_path: Path, upstream_lib) -> None:
    _, commit, tree = upstream_lib
    with pytest.raises(MlxForkError) as err:
        deps._git_export(git_dep(commit, tree), deps.Provisioned(), tmp_path / "work")
    assert "mlx-fork deps --platform linux-cuda --from lib=" in str(err.value.hint)


def make_library_wheel(directory: Path) -> Library:
    wheel = directory / "nvidia_fake-13.0-py3-none-manylinux_2_27_x86_64.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("nvidia/cu13/include/cublasLt.h", "// cublasLt\n")
        zf.writestr("nvidia/cu13/include/cuda_runtime.h", "// not ours to ship\n")
        zf.writestr("nvidia/cu13/lib/libcublasLt.so.13", b"\x7fELF")
        zf.writestr("nvidia/nccl/include/nccl_device/core.h", "// nested\n")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return Library("cublas", "nvidia-fake", "13.0", wheel.name, sha, ("linux-cuda",),
                   ("nvidia/cu13/include/cublas*.h", "nvidia/nccl/include/**/*.h"),
                   ("nvidia/cu13/lib/libcublasLt.so.13",))


def test_library_prefix_links_only_the_pinned_headers_and_libraries(tmp_path: Path) -> None:
    library = make_library_wheel(tmp_path / "dl")
    work = tmp_path / "work"
    cuda_deps.fetch_library_wheel(work, library, tmp_path / "dl")
    prefix = cuda_deps.cuda_prefix(base_with(tmp_path, libraries=(library,)), tmp_path / "deps", work)
    assert (prefix.include / "cublasLt.h").read_text() == "// cublasLt\n"
    assert (prefix.include / "nccl_device" / "core.h").is_file()
    assert not (prefix.include / "cuda_runtime.h").exists()  # the toolkit's runtime headers must win
    assert (prefix.lib / "libcublasLt.so").resolve() == (prefix.lib / "libcublasLt.so.13").resolve()
    assert f"-DCUDA_cublasLt_LIBRARY={prefix.lib / 'libcublasLt.so'}" in prefix.cmake_args
    soname = subprocess.run(["objdump", "-p", str(prefix.lib / "libcuda.so")], capture_output=True, text=True)
    assert "SONAME               libcuda.so.1" in soname.stdout
    assert prefix.identities["cublas"].startswith("pypi nvidia-fake 13.0")
    # No cuFFT pinned (v0.31.1): no CUDA::cufft target requested.
    assert not any(a.startswith("-DCUDA_cufft_LIBRARY=") for a in prefix.cmake_args)


def test_a_pinned_cufft_gives_cmake_its_imported_target(tmp_path: Path) -> None:
    # v0.32 links CUDA::cufft; the toolkit here has no cuFFT, the pinned wheel does.
    cublas = make_library_wheel(tmp_path / "dl")
    wheel = tmp_path / "dl" / "nvidia_cufft_fake-12.5-py3-none-manylinux_2_27_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("nvidia/cu13/include/cufft.h", "// cufft\n")
        zf.writestr("nvidia/cu13/lib/libcufft.so.12", b"\x7fELF")
    cufft = Library("cufft", "nvidia-cufft-fake", "12.5", wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest(),
                    ("linux-cuda",), ("nvidia/cu13/include/cufft*.h",), ("nvidia/cu13/lib/libcufft.so.12",))
    work = tmp_path / "work"
    for library in (cublas, cufft):
        cuda_deps.fetch_library_wheel(work, library, tmp_path / "dl")
    prefix = cuda_deps.cuda_prefix(base_with(tmp_path, libraries=(cublas, cufft)), tmp_path / "deps", work)
    assert f"-DCUDA_cufft_LIBRARY={prefix.lib / 'libcufft.so'}" in prefix.cmake_args


def test_a_library_wheel_with_another_sha256_is_refused(tmp_path: Path) -> None:
    library = make_library_wheel(tmp_path / "dl")
    with pytest.raises(MlxForkError, match="is not the pinned"):
        cuda_deps.fetch_library_wheel(tmp_path / "work", replace(library, sha256="0" * 64), tmp_path / "dl")
    assert not cuda_deps.wheel_path(tmp_path / "work", library).exists()


def test_missing_library_wheels_name_the_fetch_command(tmp_path: Path) -> None:
    library = make_library_wheel(tmp_path / "dl")
    with pytest.raises(MlxForkError) as err:
        cuda_deps.cuda_prefix(base_with(tmp_path, libraries=(library,)), tmp_path / "deps", tmp_path / "work")
    assert err.value.hint == "mlx-fork deps --base v9.9.9 --platform linux-cuda"


def test_nvtx_shim_defines_the_targets_mlx_links(tmp_path: Path) -> None:
    toolkit = tmp_path / "cuda"
    (toolkit / "include" / "nvtx3").mkdir(parents=True)
    (toolkit / "include" / "nvtx3" / "nvtx3.hpp").write_text(
        "#define NVTX3_CPP_VERSION_MAJOR 1\n#define NVTX3_CPP_VERSION_MINOR 0\n")
    shim = cuda_deps.nvtx_shim(tmp_path / "deps", toolkit)
    text = (shim / "c" / "CMakeLists.txt").read_text()
    assert "add_library(nvtx3-cpp INTERFACE)" in text and str(toolkit / "include") in text
    assert cuda_deps.nvtx_cpp_version(toolkit) == "1.0"


def test_cuda_profile_architectures_are_part_of_the_cmake_args() -> None:
    release = get_profile("linux-cuda")
    assert f"-DMLX_CUDA_ARCHITECTURES={';'.join(CUDA_RELEASE_ARCHITECTURES)}" in release.cmake_args
    fast = get_profile("linux-cuda", cuda_arch="90a")
    assert "-DMLX_CUDA_ARCHITECTURES=90a" in fast.cmake_args
    assert release.env == fast.env == {"MLX_DISABLE_SM90A_KERNELS": "1"}  # stock's kernel set
    assert release.cmake_minimum == (4, 0)
    with pytest.raises(MlxForkError, match="not a CUDA architecture list"):
        get_profile("linux-cuda", cuda_arch="hopper")


@pytest.mark.parametrize("base_name", ["v0.31.1", "v0.32.1"])
def test_real_bases_pin_every_cuda_input(base_name: str) -> None:
    base = load_base(base_name, ROOT / "patches")
    cuda = {d.name: d for d in base.dependencies if "linux-cuda" in d.platforms}
    assert {"cccl", "nvtx3", "cudnn", "cutlass"} <= set(cuda)
    assert all(cuda[n].offline == "git-export" and cuda[n].exports for n in ("cccl", "cudnn", "cutlass"))
    assert cuda["nvtx3"].offline == "cuda-toolkit"
    assert {lib.package for lib in base.libraries} >= {"nvidia-cublas", "nvidia-cuda-nvrtc", "nvidia-cudnn-cu13",
                                                       "nvidia-nccl-cu13"}
    assert all(len(lib.sha256) == 64 for lib in base.libraries)


def test_cuda_links_without_as_needed_and_against_the_stock_blas(tmp_path: Path) -> None:
    stock = tmp_path / "mlx_cuda_13-9.9.9-py3-none-manylinux_2_35_x86_64.whl"
    with zipfile.ZipFile(stock, "w") as zf:
        zf.writestr("mlx_cuda_13.libs/libblas-bd8a282c.so.3.10.0", b"\x7fELF")
        zf.writestr("mlx_cuda_13.libs/liblapack-86b2c207.so.3.10.0", b"\x7fELF")
        zf.writestr("mlx_cuda_13.libs/libgfortran-f7379c93.so.5.0.0", b"\x7fELF")
    args, identity = cuda_deps.stock_vendored_libs(stock, "mlx_cuda_13.libs", tmp_path / "deps")
    lib = tmp_path / "deps" / "stock-blas" / "lib"
    assert args == ["-DBLA_VENDOR=Generic", f"-DCMAKE_LIBRARY_PATH={lib}"]
    assert (lib / "liblapack.so").resolve().name == "liblapack-86b2c207.so.3.10.0"
    assert stock.name in identity
    assert cuda_deps.linker_flags(lib)[0] == f"-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath-link,{lib}"


def test_driver_stub_defines_what_libmlx_calls_so_as_needed_keeps_it(tmp_path: Path) -> None:
    stub = cuda_deps.driver_stub(tmp_path / "lib", ["cuGraphCreate", "cuInit"])
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(stub)], capture_output=True, text=True).stdout
    assert " T cuGraphCreate" in symbols and " T cuInit" in symbols
    user = tmp_path / "user.c"
    user.write_text("int cuInit(void); int call(void) { return cuInit(); }\n")
    out = tmp_path / "libuser.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wl,--as-needed", "-o", str(out), str(user),
                    f"-L{tmp_path / 'lib'}", "-lcuda"], check=True)
    needed = subprocess.run(["objdump", "-p", str(out)], capture_output=True, text=True).stdout
    assert "NEEDED               libcuda.so.1" in needed
