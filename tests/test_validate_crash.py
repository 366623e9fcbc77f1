"""Crash-reproducer classification: parsing of what a run leaves, real fresh-process runs, tallies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from build_tools.validate import crash
from build_tools.validate.crash import (CRASH, HANG, MARKER, OK, PYEXC, SILENT, UNEXPECTED, WRONG, ClassTally,
                                        RunResult, Scenario, classify)


def line(outcome: str, detail: str = "") -> str:
    return MARKER + json.dumps({"outcome": outcome, "detail": detail}) + "\n"


def test_reported_outcomes_are_taken_from_the_result_line():
    assert classify(0, "noise\n" + line(OK), "", False).outcome == OK
    r = classify(0, line(PYEXC, "RuntimeError: singular"), "", False)
    assert (r.outcome, r.detail) == (PYEXC, "RuntimeError: singular")
    assert classify(0, line(WRONG, "max diff 3"), "", False).outcome == WRONG


def test_a_signal_beats_a_printed_result():
    # class H reports ok and then aborts at interpreter exit
    r = classify(-6, line(OK), "terminate called without an active exception\n", False)
    assert r.outcome == CRASH and r.signal == "SIGABRT"
    assert r.signature == "terminate called without an active exception"


def test_timeout_is_a_hang_whatever_else_happened():
    assert classify(-9, line(OK), "", True).outcome == HANG


def test_exit_without_result_is_silent_unless_a_traceback_or_shell_signal_explains_it():
    assert classify(0, "", "", False).outcome == SILENT
    assert classify(3, "", "", False).outcome == SILENT
    r = classify(1, "", "Traceback (most recent call last):\n  ...\nImportError: no mlx\n", False)
    assert r.outcome == UNEXPECTED and "ImportError" in r.detail


def test_only_the_exception_a_scenario_expects_counts_as_python_exception():
    expected = MARKER + json.dumps({"outcome": PYEXC, "detail": "RuntimeError: x", "expected": True}) + "\n"
    unexpected = MARKER + json.dumps({"outcome": PYEXC, "detail": "RuntimeError: no Stream", "expected": False})
    assert classify(0, expected, "", False).outcome == PYEXC
    assert classify(0, unexpected + "\n", "", False).outcome == UNEXPECTED
    t = ClassTally("shared_eval", "C", "patched", acceptable=(OK, PYEXC))
    t.add(classify(0, unexpected, "", False))
    assert not t.green
    r = classify(139, "", "", False)
    assert r.outcome == CRASH and r.signal == "SIGSEGV"


def test_odd_result_lines_never_count_as_ok():
    assert classify(0, MARKER + "{not json\n", "", False).outcome == WRONG
    assert classify(0, line("fine"), "", False).outcome == WRONG
    assert classify(2, line(OK), "", False).outcome == CRASH


def _scenario(tmp_path: Path, body: str, timeout: float = 20.0) -> Scenario:
    script = tmp_path / "scn.py"
    script.write_text(body, encoding="utf-8")
    return Scenario("fake", "Z", "fake", "none", frozenset({OK, PYEXC}), timeout=timeout, path=script)


@pytest.mark.parametrize(
    "body,outcome",
    [
        ("import os\nos.abort()\n", CRASH),
        ("import os\nos._exit(0)\n", SILENT),
        ("import time\ntime.sleep(60)\n", HANG),
        (f"print({line(OK)!r}, end='')\n", OK),
        ("raise SystemExit(0)\n", SILENT),
    ],
)
def test_fresh_process_runs_are_classified(tmp_path, body, outcome):
    scn = _scenario(tmp_path, body, timeout=3.0)
    assert crash.run_once(Path(sys.executable), scn, 0).outcome == outcome


def test_run_index_reaches_the_scenario_and_hangs_kill_the_process_group(tmp_path):
    body = (
        "import os, subprocess, sys, json\n"
        f"marker = {MARKER!r}\n"
        "if os.environ['MLXFORK_RUN_INDEX'] == '1':\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "    import time; time.sleep(60)\n"
        "print(marker + json.dumps({'outcome': 'ok', 'detail': os.environ['MLXFORK_RUN_INDEX']}))\n"
    )
    scn = _scenario(tmp_path, body, timeout=2.0)
    assert crash.run_once(Path(sys.executable), scn, 0).detail == "0"
    assert crash.run_once(Path(sys.executable), scn, 1).outcome == HANG


@pytest.mark.parametrize("jobs", [1, 3])
def test_suite_alternates_sides_and_tallies_with_bounds(tmp_path, jobs):
    body = (
        "import os, json\n"
        f"marker = {MARKER!r}\n"
        "i = int(os.environ['MLXFORK_RUN_INDEX'])\n"
        "if i % 2: os.abort()\n"
        "print(marker + json.dumps({'outcome': 'ok'}))\n"
    )
    scn = _scenario(tmp_path, body)
    py = Path(sys.executable)
    tallies = crash.run_suite([("stock", py), ("patched", py)], [scn], runs=4, jobs=jobs)
    assert [t.side for t in tallies] == ["stock", "patched"]
    for t in tallies:
        assert t.runs == 4 and t.counts[OK] == 2 and t.counts[CRASH] == 2
        assert not t.green
        k, n, lo, hi = t.rate()
        assert (k, n) == (2, 4) and 0 < lo < 0.5 < hi < 1


def test_tally_verdict_uses_the_acceptable_outcomes_and_round_trips():
    t = ClassTally("lapack_error", "A", "patched", acceptable=(OK, PYEXC))
    for outcome in (PYEXC, PYEXC, OK):
        t.add(RunResult(outcome, "x"))
    assert t.green and t.bad == 0 and t.rate()[3] < 1.0
    t.add(RunResult(HANG, "no exit"))
    assert not t.green and t.bad == 1
    again = ClassTally.from_json(json.loads(json.dumps(t.to_json())))
    assert again.to_json() == t.to_json()
    assert t.to_json()["verdict"] == "red"


def test_every_crash_class_has_a_scenario_program_that_compiles():
    classes = [s.crash_class for s in crash.SCENARIOS]
    assert len(classes) == len(set(classes)) and set("ABCDEFGH") <= set(classes)
    for s in crash.SCENARIOS:
        source = s.script.read_text(encoding="utf-8")
        compile(source, str(s.script), "exec")
        assert "from _harness import" in source, s.name
        assert s.acceptable <= set(crash.OUTCOMES)
    assert crash.scenario_by_name("G").name == "xerbla_exit"
    oom = crash.scenario_by_name("E")
    assert crash.applies_here(oom, "cpu", "linux") and not crash.applies_here(oom, "cpu", "darwin")
    # The CUDA build has its own allocator: E is a CPU-backend class; K* need the CUDA backend.
    assert not crash.applies_here(oom, "cuda", "linux")
    gpu_only = [s for s in crash.SCENARIOS if s.crash_class.startswith("K")]
    assert gpu_only and all(crash.applies_here(s, "cuda", "linux") for s in gpu_only)
    assert not any(crash.applies_here(s, "cpu", "linux") or crash.applies_here(s, "metal", "darwin") for s in gpu_only)
    with pytest.raises(KeyError):
        crash.scenario_by_name("nope")


def test_thread_classes_accept_only_upstreams_stream_ownership_error() -> None:
    # C and D on MLX >= 0.31.2 raise upstream's thread-ownership error by design; that
    # (and only that) exception counts as the expected outcome, any other is unexpected.
    sys.path.insert(0, str(crash.SCENARIO_DIR))
    try:
        import _harness
    finally:
        sys.path.remove(str(crash.SCENARIO_DIR))
    assert _harness.is_stream_ownership_error("thread 1: RuntimeError: There is no Stream(cpu, 0) in current thread.")
    assert not _harness.is_stream_ownership_error("RuntimeError: [eval] something else")
    for letter in ("C", "D"):
        scenario = crash.scenario_by_name(letter)
        assert PYEXC in scenario.acceptable
        source = scenario.script.read_text()
        assert "expected=is_stream_ownership_error(" in source and "expected=True" not in source
    other = crash.classify(0, MARKER + json.dumps({"outcome": PYEXC, "detail": "RuntimeError: boom", "expected": False}) + "\n", "", False)
    assert other.outcome == UNEXPECTED
