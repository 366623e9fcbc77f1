"""Upstream-suite capture (the JSON-lines unittest runner), parsing and the parity comparison."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

from build_tools.validate import checks
from build_tools.validate.suite import (
    Comparison,
    SuiteRun,
    TestOutcome,
    capability_skips,
    compare,
    parse_jsonl,
    run_suite,
)

FAKE_TESTS = textwrap.dedent('''
    import os
    import unittest

    class TestThings(unittest.TestCase):
        def test_pass(self):
            pass

        def test_fail(self):
            self.assertEqual(1, 2)

        def test_error(self):
            raise KeyError("boom")

        @unittest.skip("requires PyTorch")
        def test_skip(self):
            pass

        @unittest.expectedFailure
        def test_xfail(self):
            self.fail("known")

        def test_subtest_fails(self):
            for i in range(3):
                with self.subTest(i=i):
                    self.assertLess(i, 2)

        def test_gguf_roundtrip(self):
            raise RuntimeError("gguf not built")

    @unittest.skip("GPU only")
    class TestGpu(unittest.TestCase):
        def test_kernel(self):
            pass
''')


def _run(tmp_path: Path, body: str, skips: dict[str, str] | None = None, only: str | None = None) -> SuiteRun:
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "test_fake.py").write_text(body, encoding="utf-8")
    return run_suite(Path(sys.executable), "stock", tests, tmp_path / "out.jsonl", skips or {}, timeout=60, only=only)


def test_runner_records_every_outcome(tmp_path):
    run = _run(tmp_path, FAKE_TESTS, skips={"test_fake.TestThings.test_gguf*": "GGUF not built on patched"})
    got = {k.split(".")[-1]: v.outcome for k, v in run.results.items()}
    assert got == {
        "test_pass": "pass", "test_fail": "fail", "test_error": "error", "test_skip": "skip",
        "test_xfail": "expected-failure", "test_subtest_fails": "fail", "test_gguf_roundtrip": "skip",
        "test_kernel": "skip",
    }
    assert run.finished and run.crashed_in is None and run.total == 8
    assert run.results["test_fake.TestThings.test_gguf_roundtrip"].message == "GGUF not built on patched"
    assert "KeyError" in run.results["test_fake.TestThings.test_error"].message
    assert run.results["test_fake.TestGpu.test_kernel"].message == "GPU only"


def test_runner_only_runs_the_selected_test(tmp_path):
    run = _run(tmp_path, FAKE_TESTS, only="*.test_pass")
    assert list(run.results) == ["test_fake.TestThings.test_pass"]


def test_a_crashing_test_is_named_and_earlier_results_survive(tmp_path):
    body = textwrap.dedent('''
        import os, unittest
        class TestA(unittest.TestCase):
            def test_1_fine(self):
                pass
            def test_2_abort(self):
                os.abort()
            def test_3_never(self):
                pass
    ''')
    run = _run(tmp_path, body)
    assert run.results["test_fake.TestA.test_1_fine"].outcome == "pass"
    assert run.crashed_in == "test_fake.TestA.test_2_abort"
    assert run.results[run.crashed_in].outcome == "crash"
    assert "test_fake.TestA.test_3_never" not in run.results
    assert not run.finished and run.returncode == -6


def test_parse_marks_a_test_running_at_the_timeout_as_a_hang():
    text = "\n".join(json.dumps(e) for e in [
        {"event": "begin", "total": 2},
        {"event": "start", "id": "t.A.test_ok"}, {"event": "end", "id": "t.A.test_ok", "outcome": "pass"},
        {"event": "start", "id": "t.A.test_slow"},
    ]) + '\n{"event": "end", "id": "t.A.te'  # a line cut short
    run = parse_jsonl(text, "patched", returncode=-9, timed_out=True)
    assert run.results["t.A.test_slow"].outcome == "hang"
    assert run.results["t.A.test_ok"].outcome == "pass"
    assert run.total == 2


def _side(side: str, outcomes: dict[str, str | tuple[str, str]]) -> SuiteRun:
    run = SuiteRun(side=side)
    for k, v in outcomes.items():
        outcome, msg = (v, "") if isinstance(v, str) else v
        run.results[k] = TestOutcome(outcome, msg)
    return run


def test_comparison_finds_regressions_fixes_and_skip_mismatches():
    stock = _side("stock", {
        "a": "pass", "b": "pass", "c": "fail", "d": ("skip", "requires PyTorch"), "e": ("skip", "x"),
        "f": "pass", "g": "error", "h": "pass",
    })
    patched = _side("patched", {
        "a": "pass", "b": "error", "c": "pass", "d": ("skip", "requires PyTorch"), "e": "pass",
        "g": "fail", "h": "crash",
    })
    cmp = compare(stock, patched)
    status = {r.test: r.status for r in cmp.rows}
    assert status == {"a": "same", "b": "regression", "c": "fixed", "d": "same", "e": "skip-mismatch",
                      "f": "regression", "g": "changed", "h": "regression"}
    assert {r.test for r in cmp.regressions} == {"b", "f", "h"}
    assert not cmp.parity
    assert cmp.summary()["regression"] == 3


def test_identical_runs_have_parity_even_with_failures_on_both_sides():
    outcomes = {"a": "pass", "b": "fail", "c": ("skip", "requires PyTorch")}
    cmp = compare(_side("stock", outcomes), _side("patched", outcomes))
    assert cmp.parity and isinstance(cmp, Comparison)


def test_capability_skips_follow_the_tests_that_use_the_capability(tmp_path):
    (tmp_path / "test_load.py").write_text(textwrap.dedent('''
        import unittest
        class TestLoad(unittest.TestCase):
            def test_save_and_load_gguf(self):
                mx.save_gguf("a.gguf", {})
            def test_non_contiguous(self):
                mx.save_safetensors("a.safetensors", {})
                mx.save_gguf("a.gguf", {})
            def test_npy(self):
                mx.save("a.npy", x)
    '''), encoding="utf-8")
    assert capability_skips({"stock": {"gguf": True}, "patched": {"gguf": True}}, tmp_path) == {}
    skips = capability_skips({"stock": {"gguf": True}, "patched": {"gguf": False}}, tmp_path)
    assert sorted(skips) == ["test_load.TestLoad.test_non_contiguous", "test_load.TestLoad.test_save_and_load_gguf"]
    reason = skips["test_load.TestLoad.test_non_contiguous"]
    assert "patched" in reason and "stock" not in reason


def test_suite_run_round_trips_through_json():
    run = _side("stock", {"a": "pass", "b": ("fail", "AssertionError")})
    run.crashed_in = None
    again = SuiteRun.from_json(json.loads(json.dumps(run.to_json())))
    assert again.to_json() == run.to_json()


def test_backported_checks_are_listed_without_importing_mlx():
    ids = checks.check_ids()
    assert "test_backported.TestDeferredErrors.test_async_eval_error_in_synchronize" in ids
    assert "test_backported.TestThreads.test_concurrent_transforms" in ids
    assert len(ids) == len(set(ids)) >= 4
