"""mlx-fork soak without MLX: the request plan, the supervisor's accounting and process loop (with
stand-in workers), the classification, the gate and the report section."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from build_tools.errors import MlxForkError
from build_tools.soak import gate, mlx_lm_wheel
from build_tools.soak import report as soak_report
from build_tools.soak.accounting import Ledger, classify, describe_exit, summarize
from build_tools.soak.plan import MLX_LM_PINS, Plan, Request, mlx_lm_pin, streams_allowed
from build_tools.soak.supervisor import Limits, supervise
from build_tools.validate import report

# ---------------------------------------------------------------- plan

def test_plan_is_deterministic_and_in_range():
    plan = Plan(seed=3)
    a, b = plan.requests(300), plan.requests(300)
    assert a == b
    assert a != Plan(seed=4).requests(300)
    kinds = {r.kind for r in a}
    assert kinds == {"greedy", "sample", "cancel", "oom", "lapack"}
    refs = {r["ref"]: r for r in plan.reference_prompts()}
    for r in a:
        if r.kind in ("greedy", "sample", "cancel"):
            assert 128 <= r.prompt_len <= 512 and 16 <= r.max_tokens <= 64
        if r.kind == "greedy":
            assert r.temp == 0 and refs[r.ref]["prompt_seed"] == r.prompt_seed
            assert refs[r.ref]["prompt_len"] == r.prompt_len
        if r.kind == "cancel":
            assert 2 <= r.cancel_after < r.max_tokens
        if r.kind == "sample":
            assert r.temp > 0


def test_pins_and_streams():
    assert mlx_lm_pin("0.31.1").version == "0.31.2"
    assert mlx_lm_pin("0.32.1").version == "0.31.3"
    for pin in MLX_LM_PINS.values():
        assert len(pin.sha256) == 64 and pin.wheel.startswith(f"mlx_lm-{pin.version}-")
    with pytest.raises(MlxForkError, match="MLX_LM_PINS"):
        mlx_lm_pin("0.1.0")
    assert streams_allowed("0.31.1") == ("shared", "own")
    assert streams_allowed("0.31.1+fork.9") == ("shared", "own")
    assert streams_allowed("0.32.1") == ("own",)


def test_mlx_lm_wheel_checks_the_pin(tmp_path):
    pin = mlx_lm_pin("0.31.1")
    fake = tmp_path / pin.wheel
    fake.write_bytes(b"not the wheel")
    with pytest.raises(MlxForkError, match="not the pinned"):
        mlx_lm_wheel(tmp_path, pin, fake)
    with pytest.raises(MlxForkError, match="no such file"):
        mlx_lm_wheel(tmp_path, pin, tmp_path / "missing.whl")


# ---------------------------------------------------------------- classification and accounting

def test_classify():
    assert classify("greedy", "ok") == "completed"
    assert classify("sample", "ok") == "completed"
    assert classify("cancel", "cancelled") == "cancelled"
    assert classify("sample", "cancelled") == "failed-unexpectedly"
    assert classify("oom", "failed-as-intended") == "failed-as-intended"
    assert classify("lapack", "error") == "failed-unexpectedly"
    assert classify("lapack", "ok") == "failed-unexpectedly"
    assert classify("greedy", "error") == "failed-unexpectedly"
    assert describe_exit(-11) == "SIGSEGV" and describe_exit(-6) == "SIGABRT"
    assert describe_exit(3) == "exit 3" and describe_exit(0) == "exit 0"


def _done(outcome="ok", **fields):
    return {"ev": "done", "outcome": outcome, **fields}


def test_ledger_lost_waiting_and_summary():
    reqs = [Request(0, "greedy", 1, 200, 20, ref=0), Request(1, "sample", 2, 300, 30, 0.8),
            Request(2, "oom"), Request(3, "cancel", 3, 150, 40, 0.8, cancel_after=5), Request(4, "sample")]
    ledger = Ledger(reqs)
    life = ledger.new_life(100.0)
    for rid in (0, 1, 2):
        ledger.started(rid, life)
    ledger.done(0, _done(prompt_tokens=200, gen_tokens=20, prefill_s=1.0, decode_s=0.5, latency_s=1.5,
                         checked_tokens=20, wrong_tokens=2, first_wrong=7), 101.5)
    ledger.done(2, _done("failed-as-intended", detail="RuntimeError: out of memory"), 101.6)
    lost = ledger.life_ended(life, "SIGSEGV", 102.0, "Fatal Python error: Segmentation fault")
    assert lost == [1]
    assert [r.id for r in ledger.waiting()] == [3, 4]  # never started: served by the next worker
    life2 = ledger.new_life(103.0)
    ledger.started(3, life2)
    ledger.done(3, _done("cancelled", prompt_tokens=150, gen_tokens=5, prefill_s=0.5, decode_s=0.1, latency_s=0.6),
                104.0)
    ledger.life_ended(life2, "hang", 200.0)  # request 4 never started
    s = summarize(ledger, wall_s=100.0, started_at=100.0)
    assert s["counts"] == {"completed": 1, "cancelled": 1, "failed-as-intended": 1, "failed-unexpectedly": 0,
                           "lost": 1, "unserved": 1}
    assert s["deaths"] == 1 and s["deaths_by"] == {"SIGSEGV": 1} and s["hangs"] == 1 and s["workers"] == 2
    assert s["wrong_requests"] == 1 and s["wrong_tokens"] == 2 and s["greedy_checked"] == 1
    assert s["bad_requests"] == 1 and s["bad_rate"] == 0.25  # of the 4 served
    lo, hi = s["bad_rate_95"]
    assert 0 < lo < 0.25 < hi < 1
    assert s["prefill_tok_s"] == round(350 / 1.5, 3)
    assert s["decode_tok_s"] == round((19 + 4) / 0.6, 3)
    assert s["latency_p50_s"] == 1.5
    assert s["timeline"] == [1.5, 1.6, 4.0]
    assert s["death_stderr"] == ["Fatal Python error: Segmentation fault"]
    assert s["intended_by_kind"] == {"oom": 1}


# ---------------------------------------------------------------- the supervisor with stand-in workers

WORKER = textwrap.dedent("""
    import json, os, signal, sys, time
    reqs = json.load(open(sys.argv[1]))
    life = int(sys.argv[2])
    mode = sys.argv[3]
    def emit(**e):
        print(json.dumps(e), flush=True)
    emit(ev="ready")
    for i, r in enumerate(reqs):
        emit(ev="start", id=r["id"])
        if mode == "die" and life == 0 and i == 2:
            emit(ev="start", id=reqs[i + 1]["id"])  # a second thread had started one too
            sys.stderr.write("Fatal Python error: Segmentation fault\\n\\nCurrent thread 0x1 (most recent call "
                             "first):\\n  File \\"/some/venv/mlx_lm/generate.py\\", line 442 in generate_step\\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "hang" and life == 0 and i == 1:
            time.sleep(60)
        if mode == "die-always":
            os.kill(os.getpid(), signal.SIGABRT)
        outcome = "failed-as-intended" if r["kind"] == "oom" else "ok"
        emit(ev="done", id=r["id"], outcome=outcome, prompt_tokens=10, gen_tokens=4, prefill_s=0.01,
             decode_s=0.01, latency_s=0.02)
    emit(ev="exit")
""")


def _run(tmp_path: Path, mode: str, n: int = 6, limits: Limits | None = None) -> Ledger:
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    ledger = Ledger([Request(i, "oom" if i == 0 else "sample") for i in range(n)])

    def command(waiting, life):
        path = tmp_path / f"q{life}.json"
        path.write_text(json.dumps([r.to_json() for r in waiting]), encoding="utf-8")
        return [sys.executable, str(script), str(path), str(life), mode]

    supervise(ledger, command, limits or Limits(hang_s=10, max_restarts=5), tmp_path / "logs")
    return ledger


def test_supervisor_clean_run(tmp_path):
    ledger = _run(tmp_path, "clean")
    assert ledger.counts()["completed"] == 5 and ledger.counts()["failed-as-intended"] == 1
    assert [life.end for life in ledger.lives] == ["clean"]


def test_supervisor_restarts_a_dead_worker(tmp_path):
    ledger = _run(tmp_path, "die")
    assert [life.end for life in ledger.lives] == ["SIGSEGV", "clean"]
    assert ledger.lives[0].stderr_tail == ('Fatal Python error: Segmentation fault in File "generate.py", '
                                           "line 442 in generate_step")
    c = ledger.counts()
    assert c["lost"] == 2 and c["completed"] + c["failed-as-intended"] == 4 and c["unserved"] == 0
    assert {r.request.id for r in ledger.records.values() if r.outcome == "lost"} == {2, 3}


def test_supervisor_detects_a_hang(tmp_path):
    ledger = _run(tmp_path, "hang", limits=Limits(hang_s=1.0, max_restarts=5))
    assert [life.end for life in ledger.lives] == ["hang", "clean"]
    c = ledger.counts()
    assert c["lost"] == 1 and c["unserved"] == 0
    s = summarize(ledger, 1.0, 0.0)
    assert s["hangs"] == 1 and s["deaths"] == 0


def test_supervisor_gives_up_after_max_restarts(tmp_path):
    ledger = _run(tmp_path, "die-always", n=10, limits=Limits(hang_s=10, max_restarts=2))
    assert len(ledger.lives) == 3 and all(life.end == "SIGABRT" for life in ledger.lives)
    c = ledger.counts()
    assert c["lost"] == 3 and c["unserved"] == 7


# ---------------------------------------------------------------- gate and report

def _cell(side: str, **over) -> dict:
    cell = {
        "side": side, "threads": 8, "streams": "own", "requests": 100,
        "counts": {"completed": 80, "cancelled": 6, "failed-as-intended": 8, "failed-unexpectedly": 0, "lost": 6,
                   "unserved": 0},
        "bad_requests": 6, "bad_rate": 0.06, "bad_rate_95": [0.028, 0.125], "lost_rate_95": [0.028, 0.125],
        "workers": 4, "deaths": 3, "deaths_by": {"SIGSEGV": 3}, "hangs": 0, "greedy_checked": 40,
        "wrong_requests": 0, "wrong_tokens": 0, "checked_tokens": 1600, "prefill_tok_s": 900.0,
        "decode_tok_s": 60.0, "throughput_tok_s": 700.0, "latency_p50_s": 2.1, "latency_p99_s": 6.5,
        "wall_s": 120.0, "timeline": [1.0, 2.0, 3.5],
        "failure_details": {"RuntimeError: oom, active 123": 5, "RuntimeError: oom, active 456": 3},
        "unexpected_details": {}, "death_stderr": ["Fatal Python error: Segmentation fault"],
    }
    cell.update(over)
    return cell


def _soak(cells: list[dict]) -> dict:
    verdict, reasons = gate(cells, False)
    return {
        "generated": "2026-12-04T00:00:00Z", "seconds": 300.0,
        "mlx_lm": {"version": "0.31.2", "wheel": "mlx_lm-0.31.2-py3-none-any.whl", "sha256": "a9" * 32,
                   "why": "the newest that admits 0.31.1"},
        "model": {"class": "mlx_lm.models.llama.Model", "hidden_size": 128, "num_hidden_layers": 4,
                  "vocab_size": 8192, "parameters": 3_081_000},
        "workload": {"requests": 100, "threads": [8], "streams": "own", "prompt_tokens": [128, 512],
                     "new_tokens": [16, 64], "cache_limit_mb": 32, "hang_s": 60.0, "max_restarts": 200,
                     "minutes": None, "seed": 1, "mix": {"greedy": 0.44, "sample": 0.41}},
        "references_equal": True, "stock_vs_stock": False, "sides": {"stock": "0.31.1", "patched": "0.31.1+fork.9"},
        "cells": cells,
        "perf": {"rounds": 3, "errors": [], "ratios": {
            m: {"per_round": [0.99, 1.0, 1.01], "median": 1.0, "min": 0.99, "max": 1.01}
            for m in ("prefill_cpu", "decode_cpu", "prefill_wall", "decode_wall")}},
        "gate": verdict, "gate_reasons": reasons, "notes": [],
    }


def test_gate_looks_only_at_the_patched_side():
    clean = _cell("patched", deaths=0, deaths_by={}, bad_requests=0,
                  counts={"completed": 86, "cancelled": 6, "failed-as-intended": 8, "failed-unexpectedly": 0,
                          "lost": 0, "unserved": 0})
    assert gate([_cell("stock"), clean], False) == ("pass", [])
    verdict, reasons = gate([_cell("stock"), _cell("patched", wrong_tokens=3)], False)
    assert verdict == "fail"
    assert "K=8: 3 worker deaths" in reasons and "K=8: 6 requests lost" in reasons
    assert "K=8: 3 wrong tokens" in reasons


def test_report_has_a_soak_section(tmp_path):
    from tests.test_validate_report import recorded_summary

    summary = recorded_summary()
    summary["soak"] = _soak([_cell("stock"), _cell("patched")])
    summary["gates"] = report.gates(summary)
    assert summary["gates"]["soak"] == "fail"
    report.write_report(summary, tmp_path)
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "## Serving soak (mlx-lm)" in md
    assert "| stock | 8 | 100 | 80 | 6 | 8 | 0 | 6 | 0 | 6 (6.0%, 95% 2.8%-12.5%) | 3 (SIGSEGV 3) |" in md
    assert "| soak | fail |" in md
    assert "1.000 (min-max 0.990-1.010)" in md
    assert "stock K=8 failed as intended (8x): RuntimeError: oom, active N" in md
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Serving soak (mlx-lm)" in html
    assert json.loads((tmp_path / "summary.json").read_text())["soak"]["gate"] == "fail"
    if (tmp_path / "perf.png").exists():  # matplotlib installed: the soak plot is drawn and shown
        assert (tmp_path / soak_report.PLOT).is_file() and "soak.png" in html


def test_report_without_soak_is_unchanged():
    from tests.test_validate_report import recorded_summary

    summary = recorded_summary()
    summary["gates"] = report.gates(summary)
    assert "soak" not in summary["gates"]
    _, sections = report.build_document(summary)
    assert all(s.title != "Serving soak (mlx-lm)" for s in sections)


def test_a_later_run_of_other_ks_is_merged():
    from build_tools.soak import merge_previous

    first = _soak([_cell("stock"), _cell("patched")])
    k2 = [_cell("stock", threads=2), _cell("patched", threads=2)]
    second = dict(_soak(k2), perf=None)
    merged = merge_previous(first, second)
    assert [(c["side"], c["threads"]) for c in merged["cells"]] == [
        ("stock", 2), ("patched", 2), ("stock", 8), ("patched", 8)]
    assert merged["perf"] == first["perf"] and merged["workload"]["threads"] == [2, 8]
    assert merged["gate"] == "fail" and "K=8: 3 worker deaths" in merged["gate_reasons"]
    other = dict(second, model=dict(second["model"], hidden_size=256))
    assert merge_previous(first, other) is other  # another workload replaces the section
