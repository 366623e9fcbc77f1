"""The soak section of the validation report and its plot (soak.png), from summary["soak"] alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..validate.report import EXTRA_PARTS, Section, Table

PLOT = "soak.png"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _bad(c: dict[str, Any]) -> str:
    lo, hi = c["bad_rate_95"]
    return f"{c['bad_requests']} ({_pct(c['bad_rate'])}, 95% {_pct(lo)}-{_pct(hi)})"


def _ratio(r: dict[str, Any] | None) -> str:
    if not r or r.get("median") is None:
        return "-"
    return f"{r['median']:.3f} (min-max {r['min']:.3f}-{r['max']:.3f})"


def _grouped(details: dict[str, int]) -> dict[str, int]:
    """Messages that differ only in numbers (sizes, addresses) counted together."""
    out: dict[str, int] = {}
    for text, count in details.items():
        key = re.sub(r"\d+", "N", text)
        out[key] = out.get(key, 0) + count
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def section(soak: dict[str, Any]) -> Section:
    sec = Section("Serving soak (mlx-lm)")
    m, w, lm = soak["model"], soak["workload"], soak["mlx_lm"]
    sec.blocks.append(
        f"mlx-lm {lm['version']} ({lm['wheel']}, sha256 {lm['sha256'][:16]}; {lm['why']}). Model: "
        f"{m['class']} with random weights, {m['parameters']:,} parameters (hidden {m['hidden_size']}, "
        f"{m['num_hidden_layers']} layers, vocab {m['vocab_size']}). Generation: mlx_lm.generate.generate_step "
        f"(prefill, then decode pipelined with mx.async_eval); mlx-lm is imported without its package __init__ "
        "(its converter and loader need transformers and huggingface_hub, which are not installed): generate.py "
        "gets stand-ins for the three names it imports from them, which generate_step does not use. "
        f"Requests per side and K as in the table, prompts "
        f"{w['prompt_tokens'][0]}-{w['prompt_tokens'][1]} tokens, {w['new_tokens'][0]}-{w['new_tokens'][1]} new "
        f"tokens, {w['streams']} streams ("
        + ("each thread loads its own copy of generate.py, so has its own generation_stream"
           if w["streams"] == "own" else "all threads on mlx-lm's one generation_stream")
        + f"), each request thread its own KV cache, mx.clear_cache() after every "
        f"request, cache limit {w['cache_limit_mb']} MiB. Mix: "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in w["mix"].items())
        + ". Greedy tokens are compared exactly with a single-thread reference made by the same side; sampled "
        "requests draw mx.random from several threads; oom/lapack requests must raise in Python (a 1 TiB "
        "allocation; inv of a singular matrix on the CPU stream) while the server carries on. A supervisor "
        f"restarts a dead worker and counts it; no progress for {w['hang_s']:.0f} s is a hang. Lost: in flight "
        "when its worker died or hung. Unserved: never started because the run stopped "
        f"(after {w['max_restarts']} restarts"
        + (f" or {w['minutes']} minutes" if w.get("minutes") else "") + ").")
    if soak.get("stock_vs_stock"):
        sec.blocks.append("**Stock vs stock:** both sides load the same libmlx.")
    if soak.get("notes"):
        sec.blocks.append([f"note: {n}" for n in soak["notes"]])
    if not soak.get("references_equal", True):
        sec.blocks.append("Note: the single-thread references of the two sides differ (each side is checked "
                          "against its own).")
    rows, classes = [], []
    for c in soak["cells"]:
        n = c["counts"]
        rows.append([
            c["side"], str(c["threads"]), str(c["requests"]), str(n["completed"]), str(n["cancelled"]),
            str(n["failed-as-intended"]) + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(
                c["intended_by_kind"].items())) + ")" if c.get("intended_by_kind") else ""),
            str(n["failed-unexpectedly"]), str(n["lost"]), str(n["unserved"]),
            _bad(c), f"{c['deaths']}" + (" (" + ", ".join(f"{k} {v}" for k, v in c["deaths_by"].items()) + ")"
                                         if c["deaths_by"] else ""),
            str(c["hangs"]), f"{c['wrong_tokens']} in {c['wrong_requests']}/{c['greedy_checked']}",
            _num(c["prefill_tok_s"]), _num(c["decode_tok_s"]), _num(c["throughput_tok_s"]),
            f"{_num(c['latency_p50_s'], 2)} / {_num(c['latency_p99_s'], 2)}", _num(c["wall_s"]),
        ])
        clean = not (c["deaths"] or c["hangs"] or c["wrong_tokens"] or c["bad_requests"] or n["unserved"])
        classes.append("good" if clean else ("bad" if c["side"] == "patched" else "warn"))
    sec.blocks.append(Table(
        ["side", "K", "requests", "completed", "cancelled", "failed as intended", "failed unexpectedly", "lost",
         "unserved", "lost + unexpected (rate, 95% Wilson)", "worker deaths", "hangs",
         "wrong tokens (in greedy requests)", "prefill tok/s", "decode tok/s", "all tokens/s (wall)",
         "latency p50 / p99 s", "run s"], rows, classes))
    sec.blocks.append("prefill tok/s: prompt tokens over the time to the first token, summed over requests; decode "
                      "tok/s: later tokens over their time, summed over requests (each request's own rate under "
                      "the concurrency); all tokens/s: every token generated or prefilled over the run's wall time. "
                      "Latency over completed requests.")
    details = []
    for c in soak["cells"]:
        for text in c.get("death_stderr", [])[:2]:
            if text:
                details.append(f"{c['side']} K={c['threads']} worker death: {text}")
        for text, count in _grouped(c.get("unexpected_details", {})).items():
            details.append(f"{c['side']} K={c['threads']} failed unexpectedly ({count}x): {text}")
        for text, count in list(_grouped(c.get("failure_details", {})).items())[:2]:
            details.append(f"{c['side']} K={c['threads']} failed as intended ({count}x): {text}")
    if details:
        sec.blocks.append(details)
    perf = soak.get("perf")
    if perf:
        r = perf["ratios"]
        sec.blocks.append(
            f"Perf on real work: {perf['rounds']} rounds, sides alternating, one thread, a 512-token prefill and "
            "64 decoded tokens per process (best of 3 after a warm-up). Ratio = patched/stock tokens/s per round "
            "(above 1: patched faster), median with min-max over rounds. CPU time is the steadier measure on a "
            "shared machine; wall time is what a user waits.")
        sec.blocks.append(Table(["measure", "prefill ratio", "decode ratio"], [
            ["tokens per CPU second", _ratio(r.get("prefill_cpu")), _ratio(r.get("decode_cpu"))],
            ["tokens per wall second", _ratio(r.get("prefill_wall")), _ratio(r.get("decode_wall"))],
        ]))
        if perf.get("errors"):
            sec.blocks.append([f"perf error: {e}" for e in perf["errors"]])
    verdict = soak.get("gate", "-")
    sec.blocks.append(f"Gate (patched side: no request lost, failed unexpectedly or unserved, no worker death, no "
                      f"hang, no wrong token): **{verdict}**"
                      + (" (" + "; ".join(soak.get("gate_reasons", [])) + ")" if soak.get("gate_reasons") else "")
                      + ".")
    sec.blocks.append(("img", PLOT, "requests answered over time, per side and K"))
    return sec


def write_plot(soak: dict[str, Any], out_dir: Path, plt: Any) -> set[str]:
    """soak.png: requests answered (completed, cancelled, failed as intended) over time."""
    cells = [c for c in soak.get("cells", []) if c.get("timeline") is not None]
    if not cells:
        return set()
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = {"stock": "#cc6677", "patched": "#117733"}
    styles = ["-", "--", ":", "-."]
    ks = sorted({c["threads"] for c in cells})
    for c in cells:
        xs = c["timeline"]
        ys = list(range(1, len(xs) + 1))
        ax.step([0.0] + xs, [0] + ys, where="post", color=colors.get(c["side"], "#4477aa"),
                ls=styles[ks.index(c["threads"]) % len(styles)],
                label=f"{c['side']} K={c['threads']} ({c['deaths']} deaths)")
    ax.set_xlabel("seconds since the side's run started")
    ax.set_ylabel("requests answered")
    ax.set_title("Serving soak: requests answered over time")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out_dir / PLOT, dpi=110)
    plt.close(fig)
    return {PLOT}


EXTRA_PARTS["soak"] = (section, write_plot)
