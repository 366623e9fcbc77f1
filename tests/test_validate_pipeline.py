"""`mlx-fork validate` wired end to end on fake sides (this interpreter, fake scenarios, fake benchmarks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from build_tools.cli import main
from build_tools.validate import crash, perf, venvs
from build_tools.validate.crash import MARKER, OK, PYEXC, Scenario


def _fake_side(name: str, sha: str) -> venvs.Side:
    return venvs.Side(name, Path(sys.executable), Path(sys.prefix), (f"mlx_cpu-0.31.1+{name}.whl",),
                      {"mlx_version": "0.31.1", "libmlx_sha256": sha, "gguf": True})


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    ok = tmp_path / "ok.py"
    ok.write_text(f"print({MARKER!r} + '{{\"outcome\": \"ok\"}}')\n", encoding="utf-8")
    aborts = tmp_path / "aborts.py"
    aborts.write_text("import os\nos.abort()\n", encoding="utf-8")
    scenarios = (
        Scenario("fine", "A", "always fine", "none", frozenset({OK, PYEXC}), timeout=20, path=ok),
        Scenario("broken", "B", "always aborts", "none", frozenset({OK}), timeout=20, path=aborts),
    )
    monkeypatch.setattr(crash, "SCENARIOS", scenarios)
    state = {"same": True}

    def sides(version, work, wheels, fresh=False, stock_only=False, pins=None, libmlx=None, platform_name="auto",
              cuda_site=None):
        stock = _fake_side("stock", "a" * 64)
        patched = _fake_side("patched", "a" * 64 if state["same"] else "b" * 64)
        return stock, patched, []

    monkeypatch.setattr(venvs, "prepare_sides", sides)
    monkeypatch.setattr(perf, "_bench_once",
                        lambda py, cases, scale, timeout: {c: {"unit": "s", "cpu": 1.0, "wall": 1.0} for c in cases})
    monkeypatch.setenv("MLX_FORK_WORK", str(tmp_path / "work"))
    return tmp_path, state


def _validate(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    report = tmp_path / "report"
    rc = main(["validate", "--base", "v0.31.1", "--stock-both-sides", "--runs", "2", "--perf-rounds", "2",
               "--skip", "checks", "--skip", "suite", "--skip", "cxx", "--report-dir", str(report), *extra])
    return rc, json.loads((report / "summary.json").read_text(encoding="utf-8"))


def test_validate_writes_a_report_with_every_part(fake_world):
    tmp_path, _ = fake_world
    rc, summary = _validate(tmp_path)
    assert rc == 0
    assert summary["stock_vs_stock"] is True
    verdicts = {(t["class"], t["side"]): t["verdict"] for t in summary["crash"]["tallies"]}
    assert verdicts == {("A", "stock"): "green", ("A", "patched"): "green",
                        ("B", "stock"): "red", ("B", "patched"): "red"}
    assert summary["gates"]["crash"] == "pass" and summary["gates"]["perf"] == "pass"
    assert summary["suite"] == {"skipped": "--skip suite"}
    for name in ("index.html", "summary.md", "summary.json"):
        assert (tmp_path / "report" / name).is_file()
    assert "python" not in summary["sides"]["stock"]  # no machine paths in the report
    (tmp_path / "report" / "index.html").unlink()
    assert main(["validate", "--render-only", "--report-dir", str(tmp_path / "report")]) == 0
    assert "always aborts" in (tmp_path / "report" / "index.html").read_text(encoding="utf-8")


def test_a_class_that_regresses_on_a_real_comparison_exits_1(fake_world, monkeypatch):
    tmp_path, _ = fake_world
    patched_python = tmp_path / "patched-python"
    patched_python.symlink_to(sys.executable)
    flaky = tmp_path / "flaky.py"
    flaky.write_text(
        "import os, sys\n"
        "if sys.executable.endswith('patched-python'):\n"
        "    os.abort()\n"
        f"print({MARKER!r} + '{{\"outcome\": \"ok\"}}')\n", encoding="utf-8")
    monkeypatch.setattr(crash, "SCENARIOS", (
        Scenario("flaky", "A", "aborts on patched only", "none", frozenset({OK}), timeout=20, path=flaky),))

    def sides(version, work, wheels, fresh=False, stock_only=False, pins=None, libmlx=None, platform_name="auto",
              cuda_site=None):
        patched = _fake_side("patched", "b" * 64)
        patched = venvs.Side("patched", patched_python, patched.venv, patched.wheels, patched.probe)
        return _fake_side("stock", "a" * 64), patched, []

    monkeypatch.setattr(venvs, "prepare_sides", sides)
    rc, summary = _validate(tmp_path)
    assert summary["stock_vs_stock"] is False
    assert summary["gates"]["crash"] == "fail"
    assert rc == 1
    md = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert "REGRESSED" in md


def test_libmlx_must_exist_and_is_not_combined_with_wheels(fake_world, capsys):
    tmp_path, _ = fake_world
    assert main(["validate", "--libmlx", str(tmp_path / "nope.so"), "--report-dir", str(tmp_path / "r")]) == 1
    assert "no such file" in capsys.readouterr().err
    lib = tmp_path / "libmlx.so"
    lib.write_bytes(b"\x7fELF")
    assert main(["validate", "--libmlx", str(lib), "--wheels", str(tmp_path), "--report-dir", str(tmp_path / "r")]) == 1
    assert "do not combine" in capsys.readouterr().err
