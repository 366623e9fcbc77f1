"""What the report says about the patch series: names, backends, ladder rungs, documented costs.

Read through build_tools.series (the project's one DEP-3 parser). A series that
does not parse stops the validation: a report must not describe patches it
could not read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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

    def to_json(self) -> dict:
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
        ))
    return infos
