"""Where the project's inputs and outputs live.

The tool runs from a checkout of this repository: patches/ holds the series and
wheels/ receives the output. Scratch work (pristine copies, build trees,
downloaded stock wheels) goes to a work directory outside the checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIMARY_BASE = "v0.31.1"


def project_root() -> Path:
    """The checkout this package belongs to, else the current directory."""
    env = os.environ.get("MLX_FORK_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "patches").is_dir():
        return here
    return Path.cwd().resolve()


def patches_dir() -> Path:
    return project_root() / "patches"


def wheels_dir() -> Path:
    return project_root() / "wheels"


def reports_dir() -> Path:
    return project_root() / "reports"


def work_dir() -> Path:
    """Scratch space for pristine trees, build trees and caches (MLX_FORK_WORK)."""
    env = os.environ.get("MLX_FORK_WORK")
    if env:
        return Path(env).resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mlx-fork"


def source_from_env() -> Path | None:
    env = os.environ.get("MLX_FORK_SOURCE")
    return Path(env) if env else None
