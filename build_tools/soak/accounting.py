"""The supervisor's books: what happened to every request and every worker process.

Pure Python (no MLX), fed with the worker's events, so the tests can drive it.

A request ends as exactly one of
  completed            generated all its tokens (a greedy one may still have wrong tokens: counted apart)
  cancelled            the client went away after a few tokens and the server stopped cleanly
  failed-as-intended   a request built to fail (an allocation beyond memory, a LAPACK error) raised in
                       Python and the server carried on
  failed-unexpectedly  a Python error in a normal request, or a request built to fail that did not
  lost                 in flight when its worker died or hung: the client never got an answer
  unserved             never started, because the run stopped (too many restarts or out of time)
Requests waiting in a worker's queue when it dies are not lost: the restarted worker serves them.
"""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..validate.stats import quantile, wilson
from .plan import INTENDED_FAILURES, Request

OUTCOMES = ("completed", "cancelled", "failed-as-intended", "failed-unexpectedly", "lost", "unserved")


def classify(kind: str, outcome: str) -> str:
    """A worker's outcome for a request of this kind, as one of OUTCOMES."""
    if kind in INTENDED_FAILURES:
        return "failed-as-intended" if outcome == "failed-as-intended" else "failed-unexpectedly"
    if outcome == "ok":
        return "completed"
    if outcome == "cancelled" and kind == "cancel":
        return "cancelled"
    return "failed-unexpectedly"


def describe_exit(returncode: int) -> str:
    """'SIGSEGV' for a death by signal, 'exit 3' for a non-zero status, 'exit 0'."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


@dataclass
class Life:
    """One worker process."""

    index: int
    started: float
    ended: float | None = None
    end: str = ""  # "clean" | "hang" | describe_exit(...) of a death
    served: int = 0
    stderr_tail: str = ""

    @property
    def died(self) -> bool:
        return self.end not in ("", "clean", "hang")


@dataclass
class Record:
    request: Request
    outcome: str = "unserved"
    life: int | None = None
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict[str, Any])
    finished_at: float | None = None


class Ledger:
    def __init__(self, requests: list[Request]):
        self.records: dict[int, Record] = {r.id: Record(r) for r in requests}
        self.in_flight: dict[int, int] = {}  # request id -> life
        self.lives: list[Life] = []

    # -- events
    def new_life(self, now: float) -> Life:
        life = Life(len(self.lives), now)
        self.lives.append(life)
        return life

    def started(self, request_id: int, life: Life) -> None:
        rec = self.records[request_id]
        rec.life = life.index
        self.in_flight[request_id] = life.index

    def done(self, request_id: int, event: dict[str, Any], now: float) -> None:
        rec = self.records[request_id]
        self.in_flight.pop(request_id, None)
        rec.outcome = classify(rec.request.kind, str(event.get("outcome")))
        rec.detail = str(event.get("detail", ""))
        rec.fields = {k: v for k, v in event.items() if k not in ("ev", "id", "outcome", "detail", "t")}
        rec.finished_at = now
        if rec.life is not None:
            self.lives[rec.life].served += 1

    def life_ended(self, life: Life, end: str, now: float, stderr_tail: str = "") -> list[int]:
        """Close a worker: its requests in flight are lost. Returns their ids."""
        life.ended = now
        life.end = end
        life.stderr_tail = stderr_tail
        lost = [rid for rid, li in self.in_flight.items() if li == life.index]
        for rid in lost:
            rec = self.records[rid]
            rec.outcome = "lost"
            rec.detail = f"worker {life.index} {end}"
            rec.finished_at = now
            del self.in_flight[rid]
        return lost

    # -- queries
    def waiting(self) -> list[Request]:
        """Requests never started (in id order): what a new worker is given."""
        return [r.request for r in self.records.values() if r.outcome == "unserved" and r.life is None]

    def counts(self) -> dict[str, int]:
        c = Counter(r.outcome for r in self.records.values())
        return {k: c.get(k, 0) for k in OUTCOMES}


def _rate(x: float, n: float) -> float | None:
    return round(x / n, 3) if n > 0 else None


def summarize(ledger: Ledger, wall_s: float, started_at: float) -> dict[str, Any]:
    """The per-side numbers of the report (JSON-ready)."""
    recs = list(ledger.records.values())
    counts = ledger.counts()
    total = len(recs)
    deaths = [life for life in ledger.lives if life.died]
    hangs = [life for life in ledger.lives if life.end == "hang"]
    greedy = [r for r in recs if r.outcome == "completed" and "wrong_tokens" in r.fields]
    wrong = [r for r in greedy if r.fields["wrong_tokens"] > 0]
    full = [r for r in recs if r.outcome == "completed"]
    gen = [r for r in recs if r.outcome in ("completed", "cancelled")]
    prompt_tokens = sum(r.fields.get("prompt_tokens", 0) for r in gen)
    prefill_s = sum(r.fields.get("prefill_s", 0.0) for r in gen)
    decode_tokens = sum(max(0, r.fields.get("gen_tokens", 0) - 1) for r in gen)
    decode_s = sum(r.fields.get("decode_s", 0.0) for r in gen)
    latencies = [r.fields["latency_s"] for r in full if "latency_s" in r.fields]
    bad = counts["lost"] + counts["failed-unexpectedly"]
    served = total - counts["unserved"]
    timeline = sorted(round(r.finished_at - started_at, 3) for r in recs
                      if r.finished_at is not None and r.outcome in ("completed", "cancelled", "failed-as-intended"))
    return {
        "requests": total,
        "counts": counts,
        "bad_requests": bad,  # lost + failed unexpectedly
        "bad_rate": _rate(bad, served),
        "bad_rate_95": list(wilson(bad, served)) if served else [0.0, 1.0],
        "lost_rate_95": list(wilson(counts["lost"], served)) if served else [0.0, 1.0],
        "workers": len(ledger.lives),
        "deaths": len(deaths),
        "deaths_by": dict(Counter(life.end for life in deaths)),
        "hangs": len(hangs),
        "greedy_checked": len(greedy),
        "wrong_requests": len(wrong),
        "wrong_tokens": sum(r.fields["wrong_tokens"] for r in wrong),
        "checked_tokens": sum(r.fields.get("checked_tokens", 0) for r in greedy),
        "prefill_tok_s": _rate(prompt_tokens, prefill_s),
        "decode_tok_s": _rate(decode_tokens, decode_s),
        "throughput_tok_s": _rate(prompt_tokens + decode_tokens, wall_s),
        "latency_p50_s": round(quantile(latencies, 0.5), 3) if latencies else None,
        "latency_p99_s": round(quantile(latencies, 0.99), 3) if latencies else None,
        "wall_s": round(wall_s, 1),
        "timeline": timeline,
        "failure_details": dict(Counter(r.detail for r in recs if r.outcome == "failed-as-intended").most_common(8)),
        "intended_by_kind": dict(Counter(r.request.kind for r in recs if r.outcome == "failed-as-intended")),
        "unexpected_details": dict(Counter(r.detail for r in recs
                                           if r.outcome == "failed-unexpectedly").most_common(4)),
        "death_stderr": [life.stderr_tail for life in deaths[:3]],
    }
