"""Performance A/B: stock and patched measured alternately in one invocation.

Each round runs every case once per side, each in a fresh process of the
benchmark program (runners/bench.py), alternating which side goes first from
case to case and round to round, so drifts in machine load hit both sides
alike. Each process reports the fastest of several batches, as wall time and
as process CPU time (all threads). For every case the per-round ratio
patched/stock is computed; the report gives the median ratio and its spread
(min..max and interquartile range over rounds). Lower times are better, so a
ratio above 1 means patched is slower.

Gate: the median CPU-time ratio of every single-thread case lies in
[0.98, 1.02] unless a patch documents a cost (header `Cost:`). CPU time is
gated because on a shared machine wall time mostly measures the neighbours
(measured here: wall-time A/A ratios of stock against itself swing by
+-20% while CPU time stays within a few percent); wall ratios are reported
beside it. The multi-thread case is reported, not gated (the fixes add
locking there by design).
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
CASES: tuple[str, ...] = ("dispatch", "graph_eval", "matmul", "decode", "threads_streams")
# On a GPU backend the default device is the GPU: the same cases measure GPU
# dispatch, plus threads on their own GPU streams.
GPU_CASES: tuple[str, ...] = CASES + ("gpu_threads_streams",)
SINGLE_THREAD: frozenset[str] = frozenset({"dispatch", "graph_eval", "matmul", "decode"})
GATE = (0.98, 1.02)

DESCRIPTIONS = {
    "dispatch": "small-op dispatch latency (eval of one tiny add)",
    "graph_eval": "eval of a mid-size graph (~200 elementwise ops + matmuls, 256x256)",
    "matmul": "512x512 float32 matmul",
    "threads_streams": "4 threads, each evaluating small graphs on its own CPU stream",
    "decode": "token-by-token greedy decode of a small transformer (4 layers, 512 wide) with a KV cache",
    "gpu_threads_streams": "4 threads, each evaluating small graphs on its own GPU stream",
}


@dataclass
class CaseResult:
    case: str
    unit: str = ""
    stock: list[float] = field(default_factory=list)  # per round: CPU seconds per unit (best batch)
    patched: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)  # per round, patched/stock CPU time
    errors: list[str] = field(default_factory=list)
    stock_wall: list[float] = field(default_factory=list)  # per round: wall seconds per unit
    patched_wall: list[float] = field(default_factory=list)
    wall_ratios: list[float] = field(default_factory=list)

    @property
    def wall_ratio(self) -> float | None:
        return median(self.wall_ratios) if self.wall_ratios else None

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
            "stock_wall": self.stock_wall, "patched_wall": self.patched_wall, "wall_ratios": self.wall_ratios,
            "wall_ratio": self.wall_ratio,
            "single_thread": self.case in SINGLE_THREAD, "gate": self.gate(documented_cost),
        }

    @classmethod
    def from_json(cls, data: dict) -> CaseResult:
        return cls(data["case"], data.get("unit", ""), list(data.get("stock", [])), list(data.get("patched", [])),
                   list(data.get("ratios", [])), list(data.get("errors", [])), list(data.get("stock_wall", [])),
                   list(data.get("patched_wall", [])), list(data.get("wall_ratios", [])))


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
        for i, c in enumerate(cases):
            first_a = (r + i) % 2 == 0
            order = [(a_name, a_py), (b_name, b_py)] if first_a else [(b_name, b_py), (a_name, a_py)]
            measured = {name: _bench_once(py, [c], scale, timeout).get(c, {}) for name, py in order}
            s, p = measured[a_name], measured[b_name]
            res = results[c]
            if any("error" in m or "cpu" not in m or "wall" not in m for m in (s, p)):
                res.errors.append(f"round {r}: stock {s.get('error', 'ok')}; patched {p.get('error', 'ok')}")
                continue
            res.unit = s.get("unit", "")
            res.stock.append(float(s["cpu"]))
            res.patched.append(float(p["cpu"]))
            res.ratios.append(float(p["cpu"]) / float(s["cpu"]))
            res.stock_wall.append(float(s["wall"]))
            res.patched_wall.append(float(p["wall"]))
            res.wall_ratios.append(float(p["wall"]) / float(s["wall"]))
        progress(f"perf round {r + 1}/{rounds} (cpu ratio / wall ratio): " + ", ".join(
            f"{c} {results[c].ratios[-1]:.3f}/{results[c].wall_ratios[-1]:.3f}" for c in cases if results[c].ratios))
    return [results[c] for c in cases]
