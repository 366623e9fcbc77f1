"""Queries of a wheel directory (wheels/): which wheels in it are ours, and which belong together.

Ours are the wheels mlx-fork built: their version carries a local label
(`0.31.1+fork.N.h...`, PEP 440), which no stock wheel has. wheels/ also holds
the mirrored stock `mlx` frontends, whose versions carry none. A frontend
belongs to a backend when both come from one (full) build: the same version,
label included.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

FRONTEND = "mlx"


@dataclass(frozen=True)
class WheelFile:
    path: Path
    dist: str  # canonical name: mlx (the frontend), mlx-cpu, mlx-metal, mlx-cuda-13
    version: Version
    python_tag: str  # first tag, e.g. cp312 or py3
    platform_tag: str  # last tag, e.g. manylinux_2_35_x86_64

    @property
    def patched(self) -> bool:
        """Ours: built by mlx-fork, so the version carries a local label."""
        return self.version.local is not None


def read_wheel_name(path: Path) -> WheelFile | None:
    """What a wheel's file name says; None for a name that is no valid wheel name."""
    try:
        name, version, _build, _tags = parse_wheel_filename(path.name)
    except (InvalidWheelFilename, InvalidVersion):
        return None
    parts = path.name[:-len(".whl")].split("-")
    return WheelFile(path, str(canonicalize_name(name)), version, parts[-3], parts[-1])


def wheel_files(directory: Path, *, recursive: bool = False) -> list[WheelFile]:
    """The wheels in `directory` (and below it, with `recursive`), newest first."""
    if not directory.is_dir():
        return []
    paths = directory.rglob("*.whl") if recursive else directory.glob("*.whl")
    found = [w for w in map(read_wheel_name, paths) if w is not None]
    found.sort(key=lambda w: (-w.path.stat().st_mtime, w.path.name))
    return found


def patched_wheels(directory: Path, release: str | None = None, *, recursive: bool = False) -> list[WheelFile]:
    """Our wheels in `directory`, of MLX `release` (e.g. 0.31.1) if given, newest first."""
    return [w for w in wheel_files(directory, recursive=recursive)
            if w.patched and (release is None or w.version.public == release)]


def frontends(directory: Path, version: str) -> list[WheelFile]:
    """The `mlx` frontend wheels of exactly `version` (label included) in `directory`, any Python."""
    return [w for w in wheel_files(directory) if w.dist == FRONTEND and str(w.version) == version]


def frontend_for_this_python(directory: Path, version: str) -> Path | None:
    """The `mlx` frontend wheel of `version` for the running Python (cpXY) in `directory`, if there is one."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(w.path for w in frontends(directory, version) if w.python_tag == tag)
    return found[0] if found else None


class NamedWheel(Protocol):
    @property
    def dist(self) -> str: ...

    @property
    def version(self) -> Version: ...


AnyWheel = TypeVar("AnyWheel", bound=NamedWheel)


def same_build_frontend(wheels: Iterable[AnyWheel], backend: NamedWheel) -> list[AnyWheel]:
    """The `mlx` frontend wheels of the build that made `backend` (a full build makes both; an overlay none)."""
    return [w for w in wheels if w.dist == FRONTEND and w.version == backend.version]
