"""Performance A/B: stock and patched measured alternately in one invocation.

Each round runs the benchmark program (runners/bench.py) once per side in a
fresh process, alternating which side goes first (ABBA...), so drifts in
machine load hit both sides alike. For every case the per-round ratio
patched/stock is computed; the report gives the median ratio and its spread
(min..max and interquartile range over rounds). Lower times are better, so a
ratio above 1 means patched is slower.

Gate: the median ratio of every single-thread case lies in [0.98, 1.02]
unless a patch documents a cost (header `Cost:`); the multi-thread case is
reported, not gated (the fixes add locking there by design).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .stats import median, quantile

BENCH = Path(__file__).resolve().parent / "runners" / "bench.py"
CASES: tuple[str, ...] = ("dispatch", "graph_eval", "matmul", "threads_streams")
SINGLE_THREAD: frozenset[str] = frozenset({"dispatch", "graph_eval", "matmul"})
GATE = (0.98, 1.02)

DESCRIPTIONS = {
    "dispatch": "small-op dispatch latency (eval of one tiny add)",
    "graph_eval": "eval of a mid-size graph (~200 elementwise ops + matmuls, 256x256)",
    "matmul": "512x512 float32 matmul",
    "threads_streams": "4 threads, each evaluating small graphs on its own CPU stream",
}


@dataclass
class CaseResult:
    case: str
    unit: str = ""
    stock: list[float] = field(default_factory=list)  # per-round medians (seconds per unit)
    patched: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round, patched/stock
    errors: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return median(self.ratios) if self.ratios else None

    def spread(self) -> dict[str, float] | None:
        if not self.ratios:
            return None
        return {"min": min(self.ratios), "p25": quantile(self.ratios, 0.25),
                "p75": quantile(self.ratios, 0.75), "max": max(self.ratios)}

    def gate(self, documented_cost: bool) -> str:
        """pass | fail | inconclusive | waived | not-gated (multi-thread) | no-data.

        The median ratio decides, unless the round-to-round noise is larger than the
        effect: a median outside the band whose interquartile range still reaches
        into the band is `inconclusive` (run more rounds on a quieter machine), not
        a pass. `waived`: slower, but a patch documents a cost.
        """
        if self.case not in SINGLE_THREAD:
            return "not-gated"
        r = self.ratio
        spread = self.spread()
        if r is None or spread is None:
            return "no-data"
        if GATE[0] <= r <= GATE[1]:
            return "pass"
        if documented_cost and r > GATE[1]:
            return "waived"
        if spread["p25"] <= GATE[1] and spread["p75"] >= GATE[0]:
            return "inconclusive"
        return "fail"

    def to_json(self, documented_cost: bool = False) -> dict:
        return {
            "case": self.case, "description": DESCRIPTIONS.get(self.case, ""), "unit": self.unit,
            "stock": self.stock, "patched": self.patched, "ratios": self.ratios,
            "ratio": self.ratio, "spread": self.spread(), "errors": self.errors,
            "single_thread": self.case in SINGLE_THREAD, "gate": self.gate(documented_cost),
        }

    @classmethod
    def from_json(cls, data: dict) -> CaseResult:
        return cls(data["case"], data.get("unit", ""), list(data.get("stock", [])), list(data.get("patched", [])),
                   list(data.get("ratios", [])), list(data.get("errors", [])))


def _bench_once(python: Path, cases: Sequence[str], scale: float, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONNOUSERSITE"] = "1"
    try:
        proc = subprocess.run([str(python), str(BENCH), "--cases", ",".join(cases), "--scale", str(scale)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {c: {"error": f"timed out after {timeout:.0f}s"} for c in cases}
    if proc.returncode != 0:
        why = f"exit status {proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1]
        return {c: {"error": why} for c in cases}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_ab(
    sides: Sequence[tuple[str, Path]],
    rounds: int,
    cases: Sequence[str] = CASES,
    scale: float = 1.0,
    timeout: float = 600.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[CaseResult]:
    """sides = [("stock", python), ("patched", python)]."""
    (a_name, a_py), (b_name, b_py) = sides
    results = {c: CaseResult(c) for c in cases}
    for r in range(rounds):
        order = [(a_name, a_py), (b_name, b_py)] if r % 2 == 0 else [(b_name, b_py), (a_name, a_py)]
        measured = {name: _bench_once(py, cases, scale, timeout) for name, py in order}
        for c in cases:
            s, p = measured[a_name].get(c, {}), measured[b_name].get(c, {})
            res = results[c]
            if "error" in s or "error" in p or "value" not in s or "value" not in p:
                res.errors.append(f"round {r}: stock {s.get('error', 'ok')}; patched {p.get('error', 'ok')}")
                continue
            res.unit = s.get("unit", "")
            res.stock.append(float(s["value"]))
            res.patched.append(float(p["value"]))
            res.ratios.append(float(p["value"]) / float(s["value"]))
        progress(f"perf round {r + 1}/{rounds}: " + ", ".join(
            f"{c} {results[c].ratios[-1]:.3f}" for c in cases if results[c].ratios))
    return [results[c] for c in cases]
