"""Platform profiles: what a build for one target looks like, as data.

A profile names the CMake switches of a backend, the stock backend wheel whose
non-libmlx contents an overlay wheel keeps, and the wheel platform tag. The
macOS profile is one profile per deployment target, matching the mlx-metal
wheels upstream ships (a libmlx built for 15.0 must not be dropped next to the
metallib of the 14.0 wheel: the kernels were compiled for that target).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field

from .errors import MlxForkError
from .manifest import BuildInputs

# Deployment targets upstream publishes mlx-metal wheels for (py3-none-macosx_<T>_arm64).
MACOS_TARGETS: tuple[str, ...] = ("14.0", "15.0", "26.0")
DEFAULT_MACOS_TARGET = "14.0"

PLATFORMS: tuple[str, ...] = ("linux-cpu", "macos-metal", "linux-cuda")
DEFAULT_CMAKE_MINIMUM: tuple[int, int] = (3, 24)

# Switches every profile shares: a shared libmlx (a static one "builds" and
# ships nothing), no tests/examples/benchmarks, no Python bindings (overlay
# packaging keeps the stock frontend).
COMMON_CMAKE_ARGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DMLX_BUILD_TESTS=OFF",
    "-DMLX_BUILD_EXAMPLES=OFF",
    "-DMLX_BUILD_BENCHMARKS=OFF",
    "-DMLX_BUILD_PYTHON_BINDINGS=OFF",
)


@dataclass(frozen=True)
class Profile:
    name: str  # linux-cpu | macos-metal | linux-cuda
    backend_dist: str  # stock backend distribution an overlay builds on
    platform_tag: str  # wheel platform tag of that backend wheel
    library: str  # libmlx file name inside mlx/lib
    cmake_args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)  # build environment (deployment target)
    deployment_target: str | None = None
    vendored_libs: str | None = None  # auditwheel's vendored-libs directory in the stock wheel
    # The oldest CMake that configures this profile (CUDA 13 needs CMake 4's CUDA20 dialect support).
    cmake_minimum: tuple[int, int] = DEFAULT_CMAKE_MINIMUM

    @property
    def is_macos(self) -> bool:
        return self.name == "macos-metal"

    @property
    def needs_gpu_driver(self) -> bool:
        """Does importing this backend need a GPU driver (libmlx NEEDs libcuda.so.1)?"""
        return self.name == "linux-cuda"


def host_platform() -> str:
    if sys.platform == "darwin":
        return "macos-metal"
    if sys.platform.startswith("linux"):
        return "linux-cpu"
    raise MlxForkError(
        f"no build profile for host {sys.platform}/{platform.machine()}",
        hint="mlx-fork builds on Linux x86_64 (CPU, CUDA) and macOS arm64 (Metal)",
    )


def linux_platform_tag(machine: str | None = None) -> str:
    """manylinux_2_35_<arch>, the tag of the stock Linux backend wheels (x86_64 and aarch64)."""
    machine = machine or platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())
    if arch not in ("x86_64", "aarch64"):
        raise MlxForkError(f"no stock MLX Linux wheels for {machine}", hint="upstream ships x86_64 and aarch64")
    return f"manylinux_2_35_{arch}"


def default_macos_target() -> str:
    """MACOSX_DEPLOYMENT_TARGET when set (CI selects the target that way), normalised to X.0."""
    env = os.environ.get("MACOSX_DEPLOYMENT_TARGET", "").strip()
    if not env:
        return DEFAULT_MACOS_TARGET
    major, _, minor = env.partition(".")
    return f"{major}.{minor or '0'}"


# The CUDA targets of upstream's release wheels (setup.py, backend stage), per base
# generation; "release" selects them. A validation build names one target ("90a").
CUDA_RELEASE_ARCHITECTURES: tuple[str, ...] = ("75-real", "80-real", "90a-real", "100a-real", "120a-real",
                                               "120-virtual")
# Upstream's release build skips the Hopper-only qmm_impl_sm90 kernels; so does ours,
# so a patched libmlx has exactly the stock wheel's kernel set.
CUDA_BUILD_ENV: dict[str, str] = {"MLX_DISABLE_SM90A_KERNELS": "1"}


def cuda_architectures(spec: str) -> tuple[str, ...]:
    """--cuda-arch: "release" (stock's list) or a ';'/','-separated list such as "90a"."""
    if spec == "release":
        return CUDA_RELEASE_ARCHITECTURES
    archs = tuple(a.strip() for a in spec.replace(",", ";").split(";") if a.strip())
    bad = [a for a in archs if not re_arch(a)]
    if not archs or bad:
        raise MlxForkError(f"--cuda-arch {spec!r}: not a CUDA architecture list",
                           hint="use 'release' (stock's targets) or e.g. 90a, or '80-real;90a-real'")
    return archs


def re_arch(arch: str) -> bool:
    import re

    return re.fullmatch(r"\d{2,3}[af]?(-real|-virtual)?", arch) is not None


CUDA_TOOLKITS: tuple[str, ...] = ("12", "13")


def default_cuda_toolkit() -> str:
    """MLX_FORK_CUDA (12 or 13), else 13: which stock mlx-cuda-<N> wheel a CUDA build overlays."""
    value = os.environ.get("MLX_FORK_CUDA", "13").strip()
    if value not in ("12", "13"):
        raise MlxForkError(f"MLX_FORK_CUDA={value!r}: upstream ships mlx-cuda-12 and mlx-cuda-13")
    return value


def macos_platform_tag(target: str) -> str:
    major, _, minor = target.partition(".")
    return f"macosx_{major}_{minor or '0'}_arm64"


def get_profile(name: str = "auto", macos_target: str | None = None, *, machine: str | None = None,
                cuda_arch: str = "release", cuda_toolkit: str | None = None) -> Profile:
    if name == "auto":
        name = host_platform()
    if name == "linux-cpu":
        return Profile(
            name=name,
            backend_dist="mlx-cpu",
            platform_tag=linux_platform_tag(machine),
            library="libmlx.so",
            cmake_args=COMMON_CMAKE_ARGS
            + ("-DMLX_BUILD_CPU=ON", "-DMLX_BUILD_METAL=OFF", "-DMLX_BUILD_CUDA=OFF"),
            vendored_libs="mlx_cpu.libs",
        )
    if name == "macos-metal":
        target = macos_target or default_macos_target()
        if target not in MACOS_TARGETS:
            raise MlxForkError(
                f"macOS deployment target {target} has no stock mlx-metal wheel",
                hint=f"use one of {', '.join(MACOS_TARGETS)}",
            )
        return Profile(
            name=name,
            backend_dist="mlx-metal",
            platform_tag=macos_platform_tag(target),
            library="libmlx.dylib",
            cmake_args=COMMON_CMAKE_ARGS
            + (
                "-DMLX_BUILD_CPU=ON",
                "-DMLX_BUILD_METAL=ON",
                "-DMLX_BUILD_CUDA=OFF",
                # JIT kernels would not use the stock metallib the overlay keeps.
                "-DMLX_METAL_JIT=OFF",
                "-DCMAKE_OSX_ARCHITECTURES=arm64",
                f"-DCMAKE_OSX_DEPLOYMENT_TARGET={target}",
            ),
            env={"MACOSX_DEPLOYMENT_TARGET": target},
            deployment_target=target,
        )
    if name == "linux-cuda":
        toolkit = cuda_toolkit or default_cuda_toolkit()
        if toolkit not in CUDA_TOOLKITS:
            raise MlxForkError(f"CUDA toolkit {toolkit!r}: upstream ships mlx-cuda-12 and mlx-cuda-13",
                               hint="use --cuda-toolkit 12 or 13")
        archs = cuda_architectures(cuda_arch)
        return Profile(
            name=name,
            backend_dist=f"mlx-cuda-{toolkit}",
            platform_tag=linux_platform_tag(machine),
            library="libmlx.so",
            cmake_args=COMMON_CMAKE_ARGS
            + ("-DMLX_BUILD_CPU=ON", "-DMLX_BUILD_METAL=OFF", "-DMLX_BUILD_CUDA=ON",
               f"-DMLX_CUDA_ARCHITECTURES={';'.join(archs)}",
               # The RPATH of the stock wheel: CUDA libraries from the nvidia-* wheels.
               "-DMLX_LOAD_CUDA_LIBS_FROM_PYTHON=ON"),
            env=dict(CUDA_BUILD_ENV),
            vendored_libs=f"mlx_cuda_{toolkit}.libs",
            cmake_minimum=(4, 0),
        )
    raise MlxForkError(f"unknown platform {name!r}", hint=f"use auto or one of {', '.join(PLATFORMS)}")


def profile_of_build(inputs: BuildInputs) -> Profile:
    """The profile a recorded build used, from its manifest (not from this machine's defaults).

    The deployment target is in the toolchain, the CUDA targets in the CMake flags and the
    toolkit in the stock wheel's name (mlx_cuda_<N>-...).
    """
    cuda_arch, toolkit = "release", None
    for arg in inputs.cmake_args:
        if arg.startswith("-DMLX_CUDA_ARCHITECTURES="):
            archs = arg.partition("=")[2]
            cuda_arch = "release" if tuple(archs.split(";")) == CUDA_RELEASE_ARCHITECTURES else archs
    if inputs.platform == "linux-cuda":
        toolkit = inputs.stock_wheel.name.split("-", 1)[0].rpartition("_")[2] or None
    return get_profile(inputs.platform, inputs.deployment_target, cuda_arch=cuda_arch, cuda_toolkit=toolkit)
