"""The Metal verification ladder in the validation report.

Rung 2 (`mlx-fork check-metal`) and rung 3 (`mlx-fork simulate`) write their own
results under reports/; the report shows what they recorded for this base, or
says that they were not run. Machine paths are dropped, as everywhere in a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def metal_ladder(base: str, reports: Path) -> dict[str, Any]:
    """{"check_metal": {...} | None, "simulate": {...} | None} for `base`, as small report data."""
    check = _load(reports / f"check-metal-{base}.json")
    sim = _load(reports / f"{base}-metal-sim" / "metal-sim.json")
    out: dict[str, Any] = {"check_metal": None, "simulate": None}
    if check is not None:
        out["check_metal"] = {
            "kind": check.get("kind"), "compiler": check.get("compiler"), "fmt": check.get("fmt"),
            "passed": check.get("passed"), "failed": check.get("failed"), "seconds": check.get("seconds"),
            "failures": [{"file": r["file"], "message": r.get("message", "")[:400]}
                         for r in check.get("results", []) if not r.get("ok")],
            "blind_spots": check.get("blind_spots", []),
        }
    if sim is not None:
        rows = []
        for s in sim.get("scenarios", []):
            cells = {tree: {k: c.get(k) for k in ("runs", "failures", "verdict", "wilson95", "kinds")}
                     for tree, c in s.get("cells", {}).items()}
            rows.append({"scenario": s.get("scenario"), "fix": s.get("fix"), "cells": cells})
        out["simulate"] = {"scenarios": rows, "patches": sim.get("patches"), "limits": sim.get("limits", [])}
    return out
