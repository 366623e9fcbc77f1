"""What the report says about the patch series: names, backends, ladder rungs, documented costs."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bases import BasePin


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


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _from_headers(name: str, headers: dict[str, str]) -> PatchInfo:
    return PatchInfo(
        name=name,
        description=headers.get("Description", "").strip().splitlines()[0] if headers.get("Description") else "",
        backends=_split(headers.get("Backends", "")),
        verified=_split(headers.get("Verified", "")),
        cost=headers.get("Cost", "").strip(),
        public_headers=headers.get("Public-Headers", "").strip().lower() == "yes",
    )


_HEADER = re.compile(r"^([A-Z][A-Za-z-]*):\s?(.*)$")


def _scan_headers(path: Path) -> dict[str, str]:
    """Fallback reader: DEP-3 `Key: value` lines before the diff, continuation lines indented."""
    headers: dict[str, str] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("---") or line.startswith("diff --git"):
            break
        m = _HEADER.match(line)
        if m and m.group(1) not in ("From", "Date", "Subject"):
            current = m.group(1)
            headers[current] = m.group(2)
        elif current and line.startswith(" ") and line.strip():
            headers[current] += "\n" + line.strip()
        elif not line.strip():
            current = None
    return headers


def load_patch_info(base: BasePin) -> tuple[list[PatchInfo], str]:
    """(patches, note). Prefers build_tools.series; reads the files directly if it cannot."""
    try:
        from ..series import load_series

        series = load_series(base)
        return [_from_headers(p.name, dict(p.headers)) for p in series.patches], ""
    except Exception as exc:  # the series module is still young; never let the report die of it
        note = f"series not parsed by build_tools.series ({type(exc).__name__}: {exc}); headers read directly"
    infos: list[PatchInfo] = []
    series_file = base.directory / "series"
    if series_file.is_file():
        for line in series_file.read_text(encoding="utf-8").splitlines():
            name = line.split("#", 1)[0].strip()
            if name and (base.directory / name).is_file():
                infos.append(_from_headers(name, _scan_headers(base.directory / name)))
    return infos, note
