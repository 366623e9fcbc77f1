"""Gates and report rendering from recorded (synthetic) results: no MLX, no venvs."""

from __future__ import annotations

import copy
import json

import pytest

from build_tools.validate import perf, report
from build_tools.validate.crash import CRASH, HANG, OK, PYEXC, WRONG, ClassTally, RunResult
from build_tools.validate.perf import CaseResult


def tally(scenario: str, cls: str, side: str, outcomes: dict[str, int], acceptable=(OK,)) -> dict:
    t = ClassTally(scenario, cls, side, acceptable=tuple(acceptable))
    for outcome, n in outcomes.items():
        for _ in range(n):
            t.add(RunResult(outcome, f"{outcome} detail", signature=f"{outcome} sig"))
    return t.to_json()


def recorded_summary() -> dict:
    scenarios = [
        {"name": "lapack_error", "class": "A", "title": "LAPACK failure", "fix_theme": "deferred errors",
         "acceptable": [OK, PYEXC], "timeout": 60},
        {"name": "random_threads", "class": "B", "title": "threads use mx.random", "fix_theme": "locks",
         "acceptable": [OK], "timeout": 60},
        {"name": "xerbla_exit", "class": "G", "title": "xerbla", "fix_theme": "deferred errors",
         "acceptable": [OK, PYEXC], "timeout": 15},
    ]
    tallies = [
        tally("lapack_error", "A", "stock", {CRASH: 20}, (OK, PYEXC)),
        tally("lapack_error", "A", "patched", {PYEXC: 20}, (OK, PYEXC)),
        tally("random_threads", "B", "stock", {CRASH: 19, WRONG: 1}),
        tally("random_threads", "B", "patched", {CRASH: 2, OK: 18}),
        tally("xerbla_exit", "G", "stock", {HANG: 20}, (OK, PYEXC)),
        tally("xerbla_exit", "G", "patched", {PYEXC: 20}, (OK, PYEXC)),
    ]
    perf_cases = [
        CaseResult("dispatch", "s/op", [1e-5] * 5, [1.01e-5] * 5, [1.01, 1.0, 1.005, 1.01, 1.0]),
        CaseResult("graph_eval", "s/graph", [0.1] * 5, [0.1] * 5, [0.99, 1.0, 1.0, 1.01, 1.0]),
        CaseResult("matmul", "s/matmul", [0.05] * 5, [0.05] * 5, [1.0, 1.0, 0.995, 1.0, 1.0]),
        CaseResult("threads_streams", "s/eval", [2e-4] * 5, [2.6e-4] * 5, [1.3] * 5),
    ]
    side = {"wheels": ["mlx_cpu-0.31.1+fork.1-py3-none-manylinux_2_35_x86_64.whl"],
            "probe": {"mlx_version": "0.31.1+fork.1", "mlx_cpu": "0.31.1+fork.1", "numpy": "2.4.6",
                      "libmlx_sha256": "ab" * 32, "gguf": False}, "name": "patched"}
    stock = copy.deepcopy(side)
    stock.update(name="stock", wheels=["mlx_cpu-0.31.1-py3-none-manylinux_2_35_x86_64.whl"])
    stock["probe"].update(mlx_version="0.31.1", mlx_cpu="0.31.1", libmlx_sha256="cd" * 32, gguf=True)
    summary = {
        "schema": 1, "base": "v0.31.1", "version": "0.31.1", "commit": "ce45c52505c8158ea48d2a54e8caae05efd86bfe",
        "platform": "linux-x86_64", "mode": "default", "generated": "2026-11-22T00:00:00Z", "seconds": 600.0,
        "report_dir": "reports/v0.31.1-linux-x86_64", "stock_vs_stock": False, "notes": [],
        "sides": {"stock": stock, "patched": side},
        "patches": [{"name": "0001-cpu-deferred-errors.patch", "description": "Deliver CPU task errors to Python",
                     "backends": ["cpu"], "verified": ["applies", "cpu-reproducer"], "cost": ""}],
        "crash": {"runs": 20, "scenarios": scenarios, "tallies": tallies},
        "checks": {"comparison": {"summary": {"fixed": 1}, "rows": [
            {"test": "test_backported.TestDeferredErrors.test_async_eval_error_in_synchronize",
             "stock": "crash", "patched": "pass", "status": "fixed", "note": ""}]}},
        "suite": {
            "capability_skips": {"test_load.TestLoad.test_save_and_load_gguf*": "GGUF not built on patched"},
            "stock": {"counts": {"pass": 640, "skip": 40}, "seconds": 120.0, "crashed_in": None},
            "patched": {"counts": {"pass": 640, "skip": 40}, "seconds": 121.0, "crashed_in": None},
            "comparison": {"summary": {"same": 680}, "parity": True, "rows": [], "skipped": [
                {"test": "test_conv.TestConv.test_torch_conv_1D", "stock": "skip", "patched": "skip",
                 "status": "same", "note": "requires Torch"}]},
        },
        "perf": {"rounds": 5, "gate": [0.98, 1.02], "documented_cost": False, "costs": {},
                 "cases": [c.to_json(False) for c in perf_cases]},
        "cxx": {"status": "not-done", "reason": "not implemented"},
    }
    summary["gates"] = report.gates(summary)
    return summary


def test_gates_on_recorded_results():
    s = recorded_summary()
    assert s["gates"] == {"crash": "pass", "parity": "pass", "checks": "pass", "perf": "pass", "cxx": "not-done"}
    changes = [report.crash_change(st, pt) for _, st, pt in report.crash_pairs(s["crash"])]
    assert changes == ["fixed", "still red", "fixed"]


def test_a_green_patched_side_is_only_fixed_with_enough_runs():
    few_bad = tally("random_threads", "B", "stock", {CRASH: 2, OK: 3})
    clean = tally("random_threads", "B", "patched", {OK: 5})
    assert report.crash_change(few_bad, clean) == "fixed? (not significant)"
    many_bad = tally("random_threads", "B", "stock", {CRASH: 20})
    assert report.crash_change(many_bad, tally("random_threads", "B", "patched", {OK: 20})) == "fixed"


def test_a_class_green_on_stock_and_red_on_patched_fails_the_crash_gate():
    s = recorded_summary()
    s["crash"]["tallies"][0] = tally("lapack_error", "A", "stock", {PYEXC: 20}, (OK, PYEXC))
    s["crash"]["tallies"][1] = tally("lapack_error", "A", "patched", {PYEXC: 19, HANG: 1}, (OK, PYEXC))
    assert report.gates(s)["crash"] == "fail"


def test_parity_checks_and_perf_gates_fail_on_their_own_evidence():
    s = recorded_summary()
    s["suite"]["comparison"]["parity"] = False
    s["checks"]["comparison"]["rows"][0].update(stock="pass", patched="crash", status="regression")
    s["perf"]["cases"][0] = CaseResult("dispatch", "s/op", [1.0] * 3, [1.1] * 3, [1.1, 1.09, 1.12]).to_json(False)
    g = report.gates(s)
    assert (g["parity"], g["checks"], g["perf"]) == ("fail", "fail", "fail")


def test_perf_gate_verdicts():
    def case(ratios, name="dispatch"):
        return CaseResult(name, "s", [1.0] * len(ratios), list(ratios), list(ratios))
    assert case([1.0, 1.01, 0.99]).gate(False) == "pass"
    assert case([1.05, 1.06, 1.04]).gate(False) == "fail"
    assert case([1.05, 1.06, 1.04]).gate(True) == "waived"
    assert case([0.90, 0.91, 0.92]).gate(True) == "fail"  # faster than the band is not waived

    assert case([0.9, 1.0, 1.06, 1.2, 1.05]).gate(False) == "inconclusive"
    assert case([1.5, 1.6], name="threads_streams").gate(False) == "not-gated"
    assert CaseResult("matmul").gate(False) == "no-data"


def test_only_a_cost_that_names_the_case_waives_its_slowdown() -> None:
    costs = ["an uncontended mutex per eval (about 20 ns)", "measured: perf case dispatch +5%\n and graph_eval unchanged"]
    assert perf.cost_names_case(costs, "dispatch")
    assert not perf.cost_names_case(costs, "decode") and not perf.cost_names_case(costs, "graph_eval")
    assert perf.cost_names_case(["tiny add (perf case\n dispatch) +5%"], "dispatch")  # a header wraps lines

def test_report_files_render_the_recorded_results(tmp_path):
    s = recorded_summary()
    files = report.write_report(s, tmp_path, plots=False)
    names = {f.name for f in files}
    assert {"summary.json", "summary.md", "index.html"} <= names
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| A | LAPACK failure |" in md and "fixed" in md and "still red" in md
    assert "20/20 (100.0%, 95% 83.9%-100.0%)" in md  # stock class A, Wilson bounds shown
    assert "0001-cpu-deferred-errors.patch" in md and "applies, cpu-reproducer" in md
    assert "requires Torch" in md and "GGUF not built on patched" in md
    assert "| dispatch |" in md and "1.005" in md
    html_text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert html_text.startswith("<!doctype html>") and "<tr class='good'>" in html_text
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["gates"]["parity"] == "pass"


def test_stock_vs_stock_runs_are_labelled_as_such(tmp_path):
    s = recorded_summary()
    s["stock_vs_stock"] = True
    report.write_report(s, tmp_path, plots=False)
    assert "**Stock vs stock:**" in (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "<b>Stock vs stock:</b>" in (tmp_path / "index.html").read_text(encoding="utf-8")


def test_skipped_parts_say_why(tmp_path):
    s = recorded_summary()
    s["suite"] = {"skipped": "quick mode without --source"}
    s["perf"] = {"skipped": "--skip perf"}
    s["gates"] = report.gates(s)
    assert (s["gates"]["parity"], s["gates"]["perf"]) == ("not-run", "not-run")
    report.write_report(s, tmp_path, plots=False)
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "Not run: quick mode without --source." in md and "Not run: --skip perf." in md


def test_plots_are_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    files = report.write_report(recorded_summary(), tmp_path)
    for name in ("perf.png", "crash.png"):
        assert tmp_path / name in files
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![patched/stock ratio" in (tmp_path / "summary.md").read_text(encoding="utf-8")
