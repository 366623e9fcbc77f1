"""Fresh virtual environments: verify's install check, validate's two sides, full packaging's setup.py tools."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

from .errors import MlxForkError


def venv_python(path: Path) -> Path:
    """The interpreter of the virtual environment at `path` (not resolved: that would leave the venv)."""
    return path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def create_venv(path: Path, *, with_pip: bool) -> Path:
    """A new virtual environment at `path` (replacing what is there); returns its interpreter.

    `with_pip=False` needs no ensurepip in the base interpreter (many Linux
    images lack it): the caller's pip then installs into the venv (`pip --python`).
    """
    try:
        venv.EnvBuilder(with_pip=with_pip, clear=True, symlinks=True).create(path)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise MlxForkError(
            f"cannot create a virtual environment at {path}: {exc}",
            hint="on Debian/Ubuntu: apt-get install python3-venv" if with_pip else None,
        ) from exc
    return venv_python(path)
