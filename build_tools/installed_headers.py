"""The installed-headers rule: which patches cannot ship as an overlay under the stock frontend.

MLX installs its headers under mlx/include (CMake: mlx/**/*.h, minus one). The
stock frontend wheel was compiled against them, so a patch that changes one
changes the API the frontend was built for; a patch to the Python bindings
(python/) ships only in a frontend wheel built from the patched tree. Either
forces full packaging. `patches lint` holds the `Public-Headers:` header to the
same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # series.py uses is_installed_header: a run-time import would be a cycle
    from .series import Patch

# The one mlx/**/*.h header CMake does not install.
NOT_INSTALLED = "mlx/backend/metal/kernels.h"


def is_installed_header(path: str) -> bool:
    """True for headers MLX installs under include/ (CMake: mlx/**/*.h, minus one)."""
    return path.startswith("mlx/") and path.endswith(".h") and path != NOT_INSTALLED


def installed_headers_touched(patches: Sequence[Patch]) -> dict[str, list[str]]:
    """patch name -> installed headers (mlx/include/mlx/...) it changes."""
    touched: dict[str, list[str]] = {}
    for patch in patches:
        headers = [p for p in patch.touched_paths if is_installed_header(p)]
        if headers:
            touched[patch.name] = headers
    return touched


def full_mode_reasons(patches: Sequence[Patch]) -> list[str]:
    """Why these patches cannot ship as an overlay under the stock frontend (empty: they can)."""
    reasons = [f"{name} changes installed headers ({', '.join(h)})"
               for name, h in installed_headers_touched(patches).items()]
    for patch in patches:
        bindings = [f for f in patch.touched_paths if f.startswith("python/")]
        if bindings:
            reasons.append(f"{patch.name} changes the Python bindings ({', '.join(bindings)})")
    return reasons
