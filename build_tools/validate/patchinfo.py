"""What the report says about the patch series: names, backends, ladder rungs, documented costs.

Read through build_tools.series (the project's one DEP-3 parser). A series that
does not parse stops the validation: a report must not describe patches it
could not read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..bases import BasePin
from ..errors import MlxForkError


@dataclass(frozen=True)
class PatchInfo:
    name: str
    description: str
    backends: tuple[str, ...]
    verified: tuple[str, ...]
    cost: str  # the patch's own statement of a performance cost ("" = none claimed)
    public_headers: bool = False
    sha256: str = ""
    in_wheel: bool | None = None  # in the patched side's build (from its provenance); None = unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_patch_info(base: BasePin) -> list[PatchInfo]:
    from ..series import load_series

    try:
        series = load_series(base)
    except MlxForkError as exc:
        raise MlxForkError(f"cannot describe the patch series of {base.name}: {exc.message}",
                           hint=exc.hint or "run `mlx-fork patches lint`") from exc
    infos = []
    for p in series.patches:
        description = p.headers.get("Description", "").strip()
        infos.append(PatchInfo(
            name=p.name,
            description=description.splitlines()[0] if description else p.subject,
            backends=tuple(p.backends),
            verified=tuple(p.verified),
            cost=p.headers.get("Cost", "").strip(),
            public_headers=bool(p.public_headers),
            sha256=p.sha256,
        ))
    return infos


def match_wheel(series: list[PatchInfo], wheel_patches: list[dict[str, Any]] | None) -> tuple[list[PatchInfo], str]:
    """Mark which series patches the patched build contains; a note when build and series differ.

    `wheel_patches`: [{"name", "sha256"}] from the wheel's provenance (None: no provenance,
    e.g. stock wheels or a bare --libmlx).
    """
    from dataclasses import replace

    if wheel_patches is None:
        return series, ""
    built: set[tuple[str, str]] = {(w.get("name", ""), w.get("sha256", "")) for w in wheel_patches}
    marked = [replace(p, in_wheel=(p.name, p.sha256) in built) for p in series]
    known = {(p.name, p.sha256) for p in series}
    extra = sorted(n for n, sha in built if (n, sha) not in known)
    if all(p.in_wheel for p in marked) and not extra:
        return marked, ""
    missing = [p.name for p in marked if not p.in_wheel]
    parts = []
    if missing:
        parts.append(f"not in the patched build: {', '.join(missing)}")
    if extra:
        parts.append(f"in the build but not (or changed) in the series: {', '.join(extra)}")
    return marked, ("the patched wheel was built from a different series than patches/ holds now ("
                    + "; ".join(parts) + ")")
