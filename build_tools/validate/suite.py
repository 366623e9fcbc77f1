"""Upstream Python suite (python/tests of the pinned tree) on both sides, compared test by test.

Each side runs the suite in its own copy of python/tests with a small runner
(runners/unittest_jsonl.py) that records every test's outcome as it happens.
Parity gate: no test that passes on stock fails, errors or goes missing on
patched, and the skipped tests (with their reasons) are the same on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MlxForkError

RUNNER = Path(__file__).resolve().parent / "runners" / "unittest_jsonl.py"

PASSING = frozenset({"pass", "expected-failure"})
BROKEN = frozenset({"fail", "error", "crash", "hang", "missing", "unexpected-success"})

# Capabilities a side may lack (probe key -> word that marks a test needing it, reason). The tests
# are found in the pinned tree's sources (methods whose code mentions the word), so the list follows
# each base instead of being hard-coded: e.g. v0.31.1 also uses gguf in test_non_contiguous.
CAPABILITIES: dict[str, tuple[str, str]] = {
    "gguf": ("gguf", "GGUF support not built (MLX_BUILD_GGUF=OFF: no offline gguflib) on {sides}"),
}


def tests_mentioning(tests_dir: Path, word: str) -> list[str]:
    """Ids (module.Class.method) of test methods whose source mentions `word` (case-insensitive)."""
    import ast

    ids: list[str] = []
    for path in sorted(tests_dir.glob("test*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    body = "\n".join(lines[item.lineno - 1:item.end_lineno])
                    if word.lower() in body.lower():
                        ids.append(f"{path.stem}.{node.name}.{item.name}")
    return ids


@dataclass
class TestOutcome:
    __test__ = False  # not a pytest test class
    outcome: str  # pass | fail | error | skip | expected-failure | unexpected-success | crash
    message: str = ""
    seconds: float = 0.0


@dataclass
class SuiteRun:
    side: str
    results: dict[str, TestOutcome] = field(default_factory=dict)
    total: int | None = None  # tests discovered
    finished: bool = False  # the runner reached its end
    crashed_in: str | None = None  # test running when the process died
    returncode: int | None = None
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.outcome for r in self.results.values()))

    def to_json(self) -> dict[str, Any]:
        return {
            "side": self.side, "total": self.total, "finished": self.finished, "crashed_in": self.crashed_in,
            "returncode": self.returncode, "seconds": round(self.seconds, 1), "counts": self.counts(),
            "results": {k: {"outcome": v.outcome, "message": v.message[-1500:], "seconds": v.seconds}
                        for k, v in sorted(self.results.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteRun:
        run = cls(side=data["side"], total=data.get("total"), finished=bool(data.get("finished")),
                  crashed_in=data.get("crashed_in"), returncode=data.get("returncode"),
                  seconds=float(data.get("seconds", 0.0)))
        for k, v in data.get("results", {}).items():
            run.results[k] = TestOutcome(v["outcome"], v.get("message", ""), float(v.get("seconds", 0.0)))
        return run


def parse_jsonl(text: str, side: str, returncode: int | None = None, timed_out: bool = False) -> SuiteRun:
    """Rebuild a run from the runner's event lines; a dangling start is the test that crashed."""
    run = SuiteRun(side=side, returncode=returncode)
    open_test: str | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        kind = event.get("event")
        if kind == "begin":
            run.total = event.get("total")
        elif kind == "start":
            open_test = event["id"]
        elif kind == "end":
            run.results[event["id"]] = TestOutcome(event["outcome"], event.get("message", ""),
                                                   float(event.get("seconds", 0.0)))
            if event["id"] == open_test:
                open_test = None
        elif kind == "finish":
            run.finished = True
    if open_test is not None and not run.finished:
        run.crashed_in = open_test
        if timed_out:
            run.results[open_test] = TestOutcome("hang", "still running at the suite timeout (killed)")
        else:
            why = f"process ended during this test (exit status {returncode})"
            run.results[open_test] = TestOutcome("crash", why)
    return run


def capability_skips(probes: dict[str, dict[str, Any]], tests_dir: Path) -> dict[str, str]:
    """Test id -> reason, for capabilities missing on any side; applied to both sides alike."""
    skips: dict[str, str] = {}
    for key, (word, reason) in CAPABILITIES.items():
        lacking = sorted(side for side, probe in probes.items() if not probe.get(key, False))
        if lacking:
            for test_id in tests_mentioning(tests_dir, word):
                skips[test_id] = reason.format(sides=" and ".join(lacking))
    return skips


def copy_tests(tree: Path, dest: Path) -> Path:
    src = tree / "python" / "tests"
    if not (src / "mlx_tests.py").is_file():
        raise MlxForkError(f"{src} is not MLX's python/tests (no mlx_tests.py)")
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    return dest


def run_suite(python: Path, side: str, tests_dir: Path, out: Path, skips: dict[str, str],
              timeout: float = 3600.0, log: Path | None = None, only: str | None = None) -> SuiteRun:
    """Run the suite in `tests_dir` with the side's interpreter; never raises for test failures."""
    skip_file = out.with_suffix(".skips.json")
    skip_file.write_text(json.dumps(skips, indent=1), encoding="utf-8")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update({"PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONFAULTHANDLER": "1"})
    started = time.monotonic()
    log_fh = log.open("w", encoding="utf-8") if log else subprocess.DEVNULL
    try:
        cmd = [str(python), str(RUNNER), str(out), "--skip", str(skip_file)]
        if only:
            cmd += ["--only", only]
        proc = subprocess.Popen(cmd,
                                cwd=tests_dir, env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            timed_out = True
    finally:
        if log:
            log_fh.close()  # type: ignore[union-attr]
    text = out.read_text(encoding="utf-8") if out.exists() else ""
    run = parse_jsonl(text, side, rc, timed_out)
    run.seconds = time.monotonic() - started
    return run


@dataclass
class Row:
    test: str
    stock: str
    patched: str
    status: str  # same | regression | fixed | skip-mismatch | changed
    note: str = ""


@dataclass
class Comparison:
    rows: list[Row]

    def by_status(self, status: str) -> list[Row]:
        return [r for r in self.rows if r.status == status]

    @property
    def regressions(self) -> list[Row]:
        return self.by_status("regression")

    @property
    def parity(self) -> bool:
        return not self.regressions and not self.by_status("skip-mismatch")

    def summary(self) -> dict[str, int]:
        return dict(Counter(r.status for r in self.rows))


def compare(stock: SuiteRun, patched: SuiteRun) -> Comparison:
    rows: list[Row] = []
    for test in sorted(set(stock.results) | set(patched.results)):
        s = stock.results.get(test, TestOutcome("missing"))
        p = patched.results.get(test, TestOutcome("missing"))
        if s.outcome in PASSING and p.outcome in BROKEN:
            status, note = "regression", _first_line(p.message)
        elif s.outcome == "skip" or p.outcome == "skip":
            same = s.outcome == p.outcome and s.message == p.message
            status = "same" if same else "skip-mismatch"
            note = s.message if same else f"stock: {s.outcome} {s.message!r}; patched: {p.outcome} {p.message!r}"
        elif s.outcome == p.outcome:
            status, note = "same", ""
        elif s.outcome in BROKEN and p.outcome in PASSING:
            status, note = "fixed", _first_line(s.message)
        else:
            status, note = "changed", f"{s.outcome} -> {p.outcome}"
        rows.append(Row(test, s.outcome, p.outcome, status, note))
    return Comparison(rows)


def _first_line(message: str) -> str:
    lines = [ln for ln in message.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""
