import json
from pathlib import Path

from build_tools.validate import report
from build_tools.validate.metal import metal_ladder

CHECK = {"base": "v0.9.0", "tree": "/somewhere/tree", "kind": "patched", "compiler": "clang++-19", "fmt": "fmt 12",
         "seconds": 3.0, "passed": 1, "failed": 1, "ok": False, "blind_spots": ["x86_64 type widths"],
         "results": [{"file": "mlx/backend/metal/a.cpp", "ok": True, "message": ""},
                     {"file": "mlx/backend/metal/eval.cpp", "ok": False, "message": "error: no viable conversion"}]}
SIM = {"base": "v0.9.0", "scenarios": [{"scenario": "failed_command_buffer", "fix": "deferred errors", "cells": {
    "patched": {"runs": 10, "failures": 0, "verdict": "green", "wilson95": [0.0, 0.28], "kinds": {}},
    "pristine": {"runs": 10, "failures": 10, "verdict": "red", "wilson95": [0.72, 1.0], "kinds": {"terminate": 10}}}}],
    "patches": {"0022-x.patch": {"simulated": True}, "0020-y.patch": {"simulated": False}}, "limits": ["no numerics"]}


def _render(metal: dict) -> str:
    return report.to_markdown("t", [report._metal_section(metal)], set())


def test_not_run_is_said(tmp_path: Path) -> None:
    metal = metal_ladder("v0.9.0", tmp_path)
    assert metal == {"check_metal": None, "simulate": None}
    text = _render(metal)
    assert "Type-check: not run" in text and "Simulated runtime: not run" in text


def test_recorded_results_are_shown_without_machine_paths(tmp_path: Path) -> None:
    (tmp_path / "check-metal-v0.9.0.json").write_text(json.dumps(CHECK))
    (tmp_path / "v0.9.0-metal-sim").mkdir()
    (tmp_path / "v0.9.0-metal-sim" / "metal-sim.json").write_text(json.dumps(SIM))
    metal = metal_ladder("v0.9.0", tmp_path)
    assert "/somewhere" not in json.dumps(metal)
    text = _render(metal)
    assert "1 files pass, 1 fail" in text and "error: no viable conversion" in text
    assert "| failed_command_buffer | deferred errors | red 10/10 [0.72, 1.00] | green 0/10 [0.00, 0.28] |" in text
    assert "(rung 3): 0022-x.patch" in text and "0020-y.patch" not in text
    assert "limit: no numerics" in text
