"""Crash-reproducer suite: scenarios, fresh-process runs, classification, counts.

Every scenario (scenarios/*.py) runs N times per side, each time in a fresh
interpreter of that side's venv with a timeout. A run is classified as:

  ok                the scenario finished and its result is right
  python-exception  the ordinary, catchable Python exception the scenario expects for its error
  unexpected-exception  any other Python exception (setup failure, an error a thread class must not raise)
  wrong-result      it finished but the values differ from a one-thread reference
  crash             killed by a signal (SIGSEGV, SIGABRT, SIGBUS, ...)
  hang              still running at the timeout (then killed)
  silent-exit       the process ended without reporting (e.g. exit() from a library)

Each scenario says which outcomes are acceptable; for the error classes a
catchable Python exception is the fix, for the threading classes only `ok` is.
A class is green on a side when every run had an acceptable outcome.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .stats import wilson

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
MARKER = "MLXFORK-RESULT "

OK = "ok"
PYEXC = "python-exception"
WRONG = "wrong-result"
CRASH = "crash"
HANG = "hang"
SILENT = "silent-exit"
UNEXPECTED = "unexpected-exception"
OUTCOMES: tuple[str, ...] = (OK, PYEXC, UNEXPECTED, WRONG, CRASH, HANG, SILENT)


@dataclass(frozen=True)
class Scenario:
    name: str  # file stem in scenarios/
    crash_class: str  # letter of the class in crash-classes.md, or "X*" for discovered ones
    title: str
    fix_theme: str
    acceptable: frozenset[str]
    timeout: float = 60.0  # seconds; a healthy run takes 1-3 s here
    path: Path | None = None  # default: scenarios/<name>.py
    platforms: tuple[str, ...] = ()  # sys.platform prefixes it applies to; empty = all
    # Backend wheels it applies to ("cpu", "metal", "cuda"); empty = all. The
    # GPU-only classes need the CUDA backend; E needs the CPU allocator, which
    # the CUDA build replaces with its own.
    backends: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return self.path or SCENARIO_DIR / f"{self.name}.py"


_ERRORS_OK = frozenset({OK, PYEXC})
_ONLY_OK = frozenset({OK})

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("lapack_error", "A", "LAPACK failure inside a CPU task (inv/solve of a singular matrix, eigh/svd of NaN)",
             "deferred errors", _ERRORS_OK),
    Scenario("random_threads", "B", "several threads use mx.random without explicit keys",
             "per-stream locks (global random key)", _ONLY_OK),
    # C and D: right values, or (0.31.2+) upstream's thread-ownership RuntimeError;
    # any other exception is unexpected (the scenarios mark only that one expected).
    Scenario("shared_eval", "C", "two threads mx.eval the same lazy array",
             "per-stream locks (graph evaluation)", _ERRORS_OK),
    Scenario("shared_input_streams", "D", "threads share a lazy input across their own streams",
             "per-stream locks", _ERRORS_OK),
    # RLIMIT_AS and /proc/self/status: Linux only (macOS does not enforce RLIMIT_AS).
    Scenario("oom_alloc", "E", "an allocation fails (address space capped below the array size)",
             "graceful out-of-memory", _ERRORS_OK, platforms=("linux",), backends=("cpu",)),
    Scenario("memory_limit", "F", "mx.set_memory_limit: an over-limit array (within RAM) still evaluates correctly",
             "graceful out-of-memory", _ERRORS_OK),
    # A healthy run (either outcome) exits in well under a second. Stock 0.31.1's
    # failure is a deadlock, not a slow run: xerbla's exit() on the CPU worker runs
    # the scheduler's destructor, which synchronizes the stream and so waits for the
    # very task that called exit() (seen in gdb); runs left for 100 s never moved on. 5 s is a wide margin over the healthy time and keeps
    # 200 stock runs (--thorough) near 17 minutes instead of 50.
    Scenario("xerbla_exit", "G", "reference LAPACK's xerbla reached (eig of a NaN matrix)",
             "deferred errors", _ERRORS_OK, timeout=5.0),
    Scenario("thread_random_exit", "H", "Python threads that used mx.random exit before the interpreter",
             "frontend thread-local state (0.32.x)", _ONLY_OK),
    # Discovered while writing the fixes (not in crash-classes.md): classes X1...
    Scenario("failed_array_reuse", "X1", "reading (or computing from) an array whose evaluation failed",
             "deferred errors (poisoned outputs)", _ERRORS_OK),
    # GPU-only classes, measured on an NVIDIA H200 (cuda-facts): K1...
    # A healthy run takes a few seconds; 30 s is a wide margin.
    Scenario("gpu_default_stream_threads", "K1", "threads evaluate at once on the default GPU stream, some synchronize",
             "CUDA thread safety (encoder commit)", _ONLY_OK, timeout=30.0, backends=("cuda",)),
    Scenario("gpu_oom_recovery", "K2", "a GPU allocation fails (200 GiB), then small GPU work",
             "graceful GPU out-of-memory", _ERRORS_OK, timeout=30.0, backends=("cuda",)),
    Scenario("gpu_oob_gather_exit", "K3", "an out-of-bounds gather faults the GPU; the program finishes and exits",
             "nothing reaches std::terminate", _ERRORS_OK, timeout=30.0, backends=("cuda",)),
    # K4 is the workload of the GPU A/B's gpu_threads_streams case, where stock
    # 0.31.1 segfaulted in every process.
    Scenario("gpu_stream_threads", "K4", "threads evaluate at once, each on its own GPU stream",
             "CUDA thread safety (concurrent eval)", _ONLY_OK, timeout=30.0, backends=("cuda",)),
)


def applies_here(scenario: Scenario, backend: str, platform: str | None = None) -> bool:
    """Does the scenario apply to this backend wheel ("cpu", "metal", "cuda") on this OS?"""
    import sys

    plat = platform or sys.platform
    on_platform = not scenario.platforms or any(plat.startswith(p) for p in scenario.platforms)
    return on_platform and (not scenario.backends or backend in scenario.backends)


def scenario_by_name(name: str) -> Scenario:
    for s in SCENARIOS:
        if s.name == name or s.crash_class == name:
            return s
    known = ", ".join(f"{s.crash_class}:{s.name}" for s in SCENARIOS)
    raise KeyError(f"unknown scenario {name!r} (known: {known})")


@dataclass
class RunResult:
    outcome: str
    detail: str = ""
    returncode: int | None = None
    signal: str | None = None
    seconds: float = 0.0
    stderr_tail: str = ""
    signature: str = ""  # the most telling stderr line


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


_TELLING = ("terminate called", "what():", "Fatal Python error", "Segmentation fault", "On entry to",
            "Error", "[scenario]")


def signature(stderr: str) -> str:
    """The most telling stderr line of a failed run (abort message, fatal error, last breadcrumb)."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    for key in _TELLING:
        hits = [ln for ln in lines if key in ln]
        if hits:
            return hits[-1] if key == "[scenario]" else hits[0]
    return lines[-1] if lines else ""


def classify(returncode: int | None, stdout: str, stderr: str, timed_out: bool, seconds: float = 0.0) -> RunResult:
    result = _classify(returncode, stdout, stderr, timed_out, seconds)
    result.signature = signature(stderr)
    return result


def _classify(returncode: int | None, stdout: str, stderr: str, timed_out: bool, seconds: float = 0.0) -> RunResult:
    """Turn what a finished (or killed) scenario process left into one outcome.

    Order matters: a signal beats a printed result (class H crashes *after*
    reporting), a timeout beats everything it killed.
    """
    tail = _tail(stderr)
    if timed_out:
        return RunResult(HANG, "no exit before the timeout", returncode, None, seconds, tail)
    assert returncode is not None
    if returncode < 0:
        name = _signal_name(-returncode)
        return RunResult(CRASH, f"killed by {name}", returncode, name, seconds, tail)
    payload = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            try:
                payload = json.loads(line[len(MARKER):])
            except json.JSONDecodeError:
                payload = {"outcome": WRONG, "detail": f"unparsable result line: {line[:200]}"}
    if payload is not None:
        outcome = str(payload.get("outcome", ""))
        detail = str(payload.get("detail", ""))
        if outcome == PYEXC and payload.get("expected") is False:
            outcome = UNEXPECTED
        if outcome not in (OK, PYEXC, WRONG, UNEXPECTED):
            return RunResult(WRONG, f"scenario reported unknown outcome {outcome!r}", returncode, None, seconds, tail)
        if returncode != 0:
            # Reported, then died with an error status (e.g. abort in an atexit
            # handler turned into an exit code by a wrapper): still not clean.
            return RunResult(CRASH, f"exit status {returncode} after reporting: {detail}", returncode, None, seconds, tail)
        return RunResult(outcome, detail, returncode, None, seconds, tail)
    if returncode > 128 and returncode - 128 in {s.value for s in signal.Signals}:
        name = _signal_name(returncode - 128)
        return RunResult(CRASH, f"exit status {returncode} ({name} via a shell)", returncode, name, seconds, tail)
    if "Traceback (most recent call last)" in stderr:
        return RunResult(UNEXPECTED, "uncaught: " + (tail.splitlines()[-1] if tail else ""), returncode, None, seconds, tail)
    return RunResult(SILENT, f"exited with status {returncode} without reporting a result", returncode, None, seconds, tail)


def run_once(python: Path, scenario: Scenario, run_index: int, timeout: float | None = None,
             env: dict[str, str] | None = None) -> RunResult:
    """One fresh interpreter running one scenario, killed (whole process group) at the timeout."""
    limit = timeout if timeout is not None else scenario.timeout
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.update({
        "MLXFORK_RUN_INDEX": str(run_index),
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONFAULTHANDLER": "1",  # a native crash leaves a Python stack in stderr
    })
    full_env.pop("PYTHONPATH", None)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlxfork-scn-") as cwd:
        proc = subprocess.Popen(
            [str(python), str(scenario.script)], cwd=cwd, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
            start_new_session=True,  # so a hang can be killed with all its children
        )
        try:
            out, err = proc.communicate(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            timed_out = True
    return classify(proc.returncode, out, err, timed_out, time.monotonic() - started)


@dataclass
class ClassTally:
    """Runs of one scenario on one side."""

    scenario: str
    crash_class: str
    side: str
    counts: dict[str, int] = field(default_factory=lambda: {o: 0 for o in OUTCOMES})
    examples: dict[str, dict] = field(default_factory=dict)  # first run of each outcome
    acceptable: tuple[str, ...] = (OK,)

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    @property
    def bad(self) -> int:
        return sum(n for o, n in self.counts.items() if o not in self.acceptable)

    @property
    def green(self) -> bool:
        return self.runs > 0 and self.bad == 0

    def rate(self, outcome: str | None = None) -> tuple[int, int, float, float]:
        """(k, n, lo, hi): count of `outcome` (default: unacceptable runs) with its 95% Wilson bounds."""
        k = self.bad if outcome is None else self.counts.get(outcome, 0)
        lo, hi = wilson(k, self.runs)
        return (k, self.runs, lo, hi)

    def add(self, result: RunResult) -> None:
        self.counts[result.outcome] = self.counts.get(result.outcome, 0) + 1
        if result.outcome not in self.examples:
            self.examples[result.outcome] = asdict(result)

    def to_json(self) -> dict:
        k, n, lo, hi = self.rate()
        return {
            "scenario": self.scenario,
            "class": self.crash_class,
            "side": self.side,
            "runs": n,
            "counts": dict(self.counts),
            "acceptable": list(self.acceptable),
            "bad": k,
            "bad_rate": k / n if n else None,
            "bad_rate_95": [lo, hi],
            "verdict": "green" if self.green else "red",
            "examples": self.examples,
        }

    @classmethod
    def from_json(cls, data: dict) -> ClassTally:
        counts = {o: 0 for o in OUTCOMES}
        counts.update({str(k): int(v) for k, v in data["counts"].items()})
        return cls(
            scenario=data["scenario"], crash_class=data["class"], side=data["side"], counts=counts,
            examples=dict(data.get("examples", {})), acceptable=tuple(data.get("acceptable", [OK])),
        )


def run_suite(
    sides: Sequence[tuple[str, Path]],
    scenarios: Sequence[Scenario],
    runs: int,
    progress: Callable[[str], None] = lambda _m: None,
    jobs: int = 1,
) -> list[ClassTally]:
    """Run every scenario `runs` times on every side, alternating sides run by run
    so that machine load drifts affect both sides alike.

    `jobs` > 1 runs that many fresh processes at once (in the same alternating
    order), for machines with many cores; each run is still its own process.
    """
    from concurrent.futures import ThreadPoolExecutor

    tallies: list[ClassTally] = []
    for scenario in scenarios:
        per_side = {name: ClassTally(scenario.name, scenario.crash_class, name, acceptable=tuple(sorted(scenario.acceptable)))
                    for name, _ in sides}
        started = time.monotonic()
        order = [(i, name, python) for i in range(runs) for name, python in sides]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda job: run_once(job[2], scenario, job[0]), order))
        for (_, name, _), result in zip(order, results):
            per_side[name].add(result)
        summary = "; ".join(
            f"{name} {t.bad}/{t.runs} bad ({_short_counts(t)})" for name, t in per_side.items()
        )
        progress(f"class {scenario.crash_class} {scenario.name}: {summary} [{time.monotonic() - started:.0f}s]")
        tallies.extend(per_side.values())
    return tallies


def _short_counts(t: ClassTally) -> str:
    return ", ".join(f"{o} {n}" for o, n in t.counts.items() if n) or "no runs"
