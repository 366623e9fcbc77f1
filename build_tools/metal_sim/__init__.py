"""The simulated Metal runtime (ladder rung 3): build libmetalsim and find its toolchain.

The fake is our own C++/assembly code next to this file (see SEMANTICS.md for the
Metal semantics it encodes). It is built with clang 19 and libc++, because MLX's
Metal backend only compiles with libc++ (Apple's standard library) on Linux, and
with Apple's blocks extension (-fblocks + libBlocksRuntime) because metal-cpp
passes completion handlers as blocks.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MlxForkError
from ..proc import run

HERE = Path(__file__).resolve().parent
INCLUDE_DIR = HERE / "include"  # metal_sim.h: the fake's own control API
# The stand-in Apple headers are check-metal's (build_tools/metal_stubs/), with the one
# difference they state (objc/runtime.h: BOOL on x86-64) selected by MLX_FORK_METAL_SIM.
APPLE_STUBS_DIR = HERE.parent / "metal_stubs"
INCLUDE_ARGS = (f"-I{INCLUDE_DIR}", f"-I{APPLE_STUBS_DIR}", "-DMLX_FORK_METAL_SIM=1")
SOURCES = ("runtime.cpp", "foundation.cpp", "metal.cpp", "trampolines.S")
# Debian packages that provide the toolchain (also installed by .ci).
APT_PACKAGES = ("clang-19", "libc++-19-dev", "libc++abi-19-dev", "libblocksruntime-dev")

CXXFLAGS = ("-std=gnu++20", "-stdlib=libc++", "-fblocks", "-fPIC", "-g")


@dataclass(frozen=True)
class Toolchain:
    cc: str
    cxx: str

    def link_flags(self) -> list[str]:
        return ["-stdlib=libc++", "-fblocks", "-lBlocksRuntime", "-lpthread"]


def find_toolchain() -> Toolchain:
    """clang 19 with libc++ and the blocks runtime, or an error saying what to install."""
    cxx = shutil.which("clang++-19")
    cc = shutil.which("clang-19")
    if not cxx or not cc:
        raise MlxForkError(
            "clang 19 not found (clang++-19)",
            hint=f"apt-get install {' '.join(APT_PACKAGES)}",
        )
    probe = (
        "#include <Block.h>\n#include <vector>\n"
        "int main(){ void (^b)(void) = ^{}; void* c = Block_copy(b); Block_release(c);"
        " std::vector<int> v{1}; return v[0] - 1; }\n"
    )
    with tempfile.TemporaryDirectory(prefix="metalsim-probe-") as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text(probe)
        proc = run([cxx, *CXXFLAGS, src, "-o", Path(tmp) / "probe", "-lBlocksRuntime"],
                   step="compile a blocks probe", check=False)
    if proc.returncode != 0:
        raise MlxForkError(
            "clang++-19 cannot build a libc++ + blocks program",
            hint=f"apt-get install {' '.join(APT_PACKAGES)}\n{proc.stderr.strip()[-600:]}",
        )
    return Toolchain(cc=cc, cxx=cxx)


def build_runtime(
    dest: Path, toolchain: Toolchain | None = None, *, sanitize: str | None = None, opt: str = "-O1"
) -> Path:
    """Compile libmetalsim.so into `dest` (one clang call; a few seconds) and return its path."""
    tc = toolchain or find_toolchain()
    dest.mkdir(parents=True, exist_ok=True)
    lib = dest / "libmetalsim.so"
    cmd = [
        tc.cxx,
        *CXXFLAGS,
        opt,
        "-shared",
        *INCLUDE_ARGS,
        *[str(HERE / s) for s in SOURCES],
        "-o",
        str(lib),
        "-Wl,-z,defs",
        "-Wl,-soname,libmetalsim.so",
        *tc.link_flags(),
    ]
    if sanitize:
        # The sanitizer runtime is linked into the executable, not into shared libraries.
        cmd.remove("-Wl,-z,defs")
        cmd.insert(1, f"-fsanitize={sanitize}")
    proc = run(cmd, step="build libmetalsim", check=False)
    if proc.returncode != 0:
        raise MlxForkError("building libmetalsim failed", hint=proc.stderr.strip()[-2000:])
    return lib
