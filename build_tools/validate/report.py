"""The report: summary.json (data), summary.md and index.html (the same content), PNG plots.

Everything is rendered from the summary dict alone, so a recorded summary can be
re-rendered (and is, in the tests) without MLX. Markdown and HTML come from one
small document model (sections of paragraphs, lists, tables, images).
"""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, NOT_RUN, NOT_DONE = "pass", "fail", "not-run", "not-done"

# Parts another command adds to a report (`mlx-fork soak`: "soak"), registered by their module:
# summary key -> (its section from summary[key], its plots: (summary[key], out_dir, pyplot) -> files written).
EXTRA_PARTS: dict[str, tuple[Callable[[Any], Section], Callable[[Any, Path, Any], set[str]]]] = {}


# ---------------------------------------------------------------- gates

def gates(summary: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    crash = summary.get("crash", {})
    if "tallies" in crash:
        out["crash"] = FAIL if crash_rows_regressed(crash) else PASS
    else:
        out["crash"] = NOT_RUN
    suite = summary.get("suite", {})
    out["parity"] = (PASS if suite["comparison"]["parity"] else FAIL) if "comparison" in suite else NOT_RUN
    checks = summary.get("checks", {})
    if "comparison" in checks:
        rows = checks["comparison"]["rows"]
        out["checks"] = FAIL if any(r["status"] == "regression" for r in rows) else PASS
    else:
        out["checks"] = NOT_RUN
    perf = summary.get("perf", {})
    if "cases" in perf:
        verdicts = [c["gate"] for c in perf["cases"] if c.get("single_thread")]
        if any(v == "fail" for v in verdicts):
            out["perf"] = FAIL
        elif verdicts and all(v in ("pass", "waived") for v in verdicts):
            out["perf"] = PASS
        elif any(v == "inconclusive" for v in verdicts):
            out["perf"] = "inconclusive"
        else:
            out["perf"] = NOT_RUN
    else:
        out["perf"] = NOT_RUN
    cxx = summary.get("cxx", {})
    out["cxx"] = cxx.get("gate", NOT_RUN) if cxx.get("status") == "done" else (
        NOT_DONE if cxx.get("status") == "not-done" else NOT_RUN)
    if "soak" in summary:  # written by `mlx-fork soak`
        out["soak"] = summary["soak"].get("gate", NOT_RUN)
    return out


def crash_pairs(crash: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]]:
    """(scenario, stock tally, patched tally) in scenario order."""
    by = {(t["scenario"], t["side"]): t for t in crash.get("tallies", [])}
    return [(s, by.get((s["name"], "stock")), by.get((s["name"], "patched"))) for s in crash.get("scenarios", [])]


def crash_change(stock: dict[str, Any] | None, patched: dict[str, Any] | None) -> str:
    """fixed | fixed? (not significant) | still red | not reproduced | REGRESSED.

    A single bad run on patched where stock had none is a regression (a crash is never
    noise). "fixed" needs the evidence: stock's bad-run rate lower bound above patched's
    upper bound (95% Wilson); fewer runs than that give "fixed? (not significant)".
    """
    if not stock or not patched:
        return "incomplete"
    s, p = stock["verdict"], patched["verdict"]
    if (s, p) == ("red", "green"):
        return "fixed" if stock["bad_rate_95"][0] > patched["bad_rate_95"][1] else "fixed? (not significant)"
    return {("red", "red"): "still red", ("green", "green"): "not reproduced",
            ("green", "red"): "REGRESSED"}[(s, p)]


def crash_rows_regressed(crash: dict[str, Any]) -> bool:
    return any(crash_change(s, p) == "REGRESSED" for _, s, p in crash_pairs(crash))


# ---------------------------------------------------------------- document model

@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    classes: list[str] = field(default_factory=list)  # per-row css class ("" | good | bad | warn)


@dataclass
class Section:
    title: str
    blocks: list[Any] = field(default_factory=list[Any])  # str (paragraph) | list[str] (bullets) | Table | ("img", file, alt)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _rate(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    lo, hi = t["bad_rate_95"]
    return f"{t['bad']}/{t['runs']} ({_pct(t['bad_rate'])}, 95% {_pct(lo)}-{_pct(hi)})"


def _breakdown(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    return ", ".join(f"{k} {v}" for k, v in t["counts"].items() if v) or "no runs"


def build_document(summary: dict[str, Any]) -> tuple[str, list[Section]]:
    title = f"mlx-fork validation: MLX {summary['base']} on {summary['platform']}"
    secs: list[Section] = []
    sides = summary["sides"]

    head = Section("Overview")
    head.blocks.append(
        f"Generated {summary['generated']} in {summary.get('mode', '?')} mode"
        f" ({summary.get('seconds', '?')} s). Base {summary['base']} (commit {summary['commit'][:12]})."
    )
    head.blocks.append(Table(
        ["side", "mlx (runtime)", "mlx-cpu", "numpy", "libmlx sha256", "wheels"],
        [[name, s["probe"].get("mlx_version", "?"), str(s["probe"].get("mlx_cpu")), str(s["probe"].get("numpy")),
          s["probe"].get("libmlx_sha256", "")[:16], ", ".join(s.get("wheels", []))] for name, s in sides.items()],
    ))
    if summary.get("in_progress"):
        head.blocks.append("**In progress:** this report is provisional; parts not listed yet are still running.")
    if summary.get("stock_vs_stock"):
        head.blocks.append("**Stock vs stock:** both sides load the same libmlx; this run checks the harness "
                           "and measures noise, it says nothing about a patch. Gates are informational.")
    if summary.get("errors"):
        head.blocks.append("**Parts that failed to run** (the run exits 1):")
        head.blocks.append(list(summary["errors"]))
    if summary.get("notes"):
        head.blocks.append([f"note: {n}" for n in summary["notes"]])
    g = summary.get("gates", {})
    head.blocks.append(Table(["gate", "result", "meaning"], [
        ["crash", g.get("crash", "-"), "no crash class green on stock turns red on patched"],
        ["parity", g.get("parity", "-"), "no upstream test passing on stock fails/errors on patched; same skips"],
        ["checks", g.get("checks", "-"), "no backported check passing on stock fails on patched"],
        ["perf", g.get("perf", "-"), "single-thread patched/stock median CPU-time ratios within 0.98-1.02 "
         "(slower is waived when a patch documents a Cost); "
         "inconclusive when the round-to-round spread is wider than the effect"],
        ["cxx", g.get("cxx", "-"), "upstream C++ doctest suite"],
    ] + ([["soak", g["soak"], "serving soak: the patched side loses no request, never dies or hangs, no wrong token"]]
         if "soak" in g else []),
        [_cls(g.get(k)) for k in ("crash", "parity", "checks", "perf", "cxx")]
        + ([_cls(g["soak"])] if "soak" in g else [])))
    secs.append(head)

    pat = Section("Patch series")
    if summary.get("patches"):
        in_wheel = {True: "yes", False: "NO", None: "unknown"}
        pat.blocks.append(Table(["patch", "description", "backends", "verified (ladder rungs)", "documented cost",
                                 "in the patched build"],
                                [[p["name"], p["description"], ", ".join(p["backends"]), ", ".join(p["verified"]) or "-",
                                  " ".join(p["cost"].split()) or "-", in_wheel[p.get("in_wheel")]]
                                 for p in summary["patches"]]))
    else:
        pat.blocks.append("The series is empty: the patched side is stock MLX built from source (or the stock wheels).")
    secs.append(pat)

    secs.append(_crash_section(summary.get("crash", {})))
    secs.append(_checks_section(summary.get("checks", {})))
    secs.append(_suite_section(summary.get("suite", {})))
    secs.append(_perf_section(summary.get("perf", {})))
    secs.append(_cxx_section(summary.get("cxx", {})))
    for key, (make_section, _plot) in EXTRA_PARTS.items():
        if key in summary:
            secs.append(make_section(summary[key]))
    secs.append(_metal_section(summary.get("metal", {})))
    return title, secs


def _metal_section(metal: dict[str, Any]) -> Section:
    sec = Section("Metal verification ladder (Linux)")
    sec.blocks.append("No Metal here: rung 2 type-checks the Metal backend's host code with clang against the stock "
                      "wheel's metal-cpp headers (`mlx-fork check-metal`); rung 3 runs it against a simulated Metal "
                      "runtime (`mlx-fork simulate`). Rung 4 (Apple silicon) runs in CI on a self-hosted Mac.")
    check = metal.get("check_metal")
    if check is None:
        sec.blocks.append("Type-check: not run for this base (no reports/check-metal-<base>.json).")
    else:
        sec.blocks.append(f"Type-check ({check.get('kind')} tree, {check.get('compiler')}, {check.get('fmt')}): "
                          f"{check.get('passed')} files pass, {check.get('failed')} fail ({check.get('seconds')} s).")
        if check.get("failures"):
            sec.blocks.append(Table(["file", "compiler message"], [[f["file"], f["message"]] for f in check["failures"]],
                                    ["bad"] * len(check["failures"])))
        if check.get("blind_spots"):
            sec.blocks.append([f"not covered: {b}" for b in check["blind_spots"]])
    sim = metal.get("simulate")
    if sim is None:
        sec.blocks.append("Simulated runtime: not run for this base (no reports/<base>-metal-sim/metal-sim.json).")
        return sec
    order = ["pristine", "patched", "pristine+thread", "patched+thread", "pristine-nocapture", "patched-nocapture"]
    seen = {t for s in sim["scenarios"] for t in s["cells"]}
    trees = [t for t in order if t in seen] + sorted(seen - set(order))
    rows, classes = [], []
    for s in sim["scenarios"]:
        cells = []
        for t in trees:
            c = s["cells"].get(t)
            if not c:
                cells.append("-")
                continue
            lo, hi = c.get("wilson95") or (None, None)
            bounds = f" [{lo:.2f}, {hi:.2f}]" if lo is not None else ""
            cells.append(f"{c['verdict']} {c['failures']}/{c['runs']}{bounds}")
        rows.append([s["scenario"], s["fix"], *cells])
        # simulate computes it per scenario (a sanitized scenario compares its +thread columns)
        classes.append("good" if s.get("red_to_green") else "")
    sec.blocks.append("Simulated lifecycle scenarios: failed runs / runs [95% Wilson bounds of the failure rate]. "
                      "'nocapture' trees plant a use-after-release bug (eval.cpp's buffer capture removed) to show "
                      "the buffer-lifetime fixes catch that class.")
    sec.blocks.append(Table(["scenario", "fix", *trees], rows, classes))
    earned = [name for name, p in (sim.get("patches") or {}).items() if p.get("simulated")]
    sec.blocks.append("Patches whose scenario is red on pristine and green on patched (rung 3): "
                      + (", ".join(earned) or "none"))
    if sim.get("limits"):
        sec.blocks.append([f"limit: {x}" for x in sim["limits"]])
    return sec


def _cls(verdict: str | None) -> str:
    return {"pass": "good", "fail": "bad", "green": "good", "red": "bad", "fixed": "good",
            "REGRESSED": "bad", "regression": "bad"}.get(
        verdict or "", "warn" if verdict in ("not-run", "not-done", "inconclusive", "skip-mismatch") else "")


def _crash_section(crash: dict[str, Any]) -> Section:
    sec = Section("Crash reproducers")
    if "tallies" not in crash:
        sec.blocks.append(f"Not run: {crash.get('skipped', 'unknown reason')}.")
        return sec
    sec.blocks.append(
        f"Each class ran {crash['runs']} times per side, every run in a fresh process with a timeout. "
        "A run is ok, python-exception, wrong-result (vs a one-thread reference), crash (signal), hang (timeout) "
        "or silent-exit (ended without reporting). 'bad' counts runs whose outcome is not acceptable for the class "
        "(for error classes a catchable Python exception is the fix); a class is green when no run was bad. "
        "Rates carry 95% Wilson bounds.")
    rows, classes = [], []
    for s, st, pt in crash_pairs(crash):
        change = crash_change(st, pt)
        rows.append([f"{s['class']}", s["title"], ", ".join(s["acceptable"]),
                     f"{(st or {}).get('verdict', '-')}: {_rate(st)}", _breakdown(st),
                     f"{(pt or {}).get('verdict', '-')}: {_rate(pt)}", _breakdown(pt), change])
        classes.append({"fixed": "good", "REGRESSED": "bad", "still red": "warn"}.get(change, ""))
    sec.blocks.append(Table(["class", "scenario", "acceptable", "stock bad runs", "stock outcomes",
                             "patched bad runs", "patched outcomes", "change"], rows, classes))
    sec.blocks.append(("img", "crash.png", "bad-run rate per class with 95% Wilson bounds"))
    examples = []
    for s, st, pt in crash_pairs(crash):
        for side, t in (("stock", st), ("patched", pt)):
            for outcome, ex in (t or {}).get("examples", {}).items():
                if outcome != "ok":
                    examples.append(f"{s['class']} {side} {outcome}: {ex.get('detail', '')}"
                                    + (f" | stderr: {ex['signature']}" if ex.get("signature") else ""))
    if examples:
        sec.blocks.append("First run of each non-ok outcome:")
        sec.blocks.append(examples)
    return sec


def _checks_section(checks: dict[str, Any]) -> Section:
    sec = Section("Backported upstream checks")
    if "comparison" not in checks:
        sec.blocks.append(f"Not run: {checks.get('skipped', 'unknown reason')}.")
        return sec
    sec.blocks.append("Ideas of upstream tests newer than the base (v0.32.1 test_threads.py, main's "
                      "test_async_eval_error_in_synchronize), written for each base's API; one process per test.")
    rows = checks["comparison"]["rows"]
    sec.blocks.append(Table(["check", "stock", "patched", "status"],
                            [[r["test"].split(".", 1)[-1], r["stock"], r["patched"], r["status"]] for r in rows],
                            [_cls(r["status"]) for r in rows]))
    return sec


def _suite_section(suite: dict[str, Any]) -> Section:
    sec = Section("Upstream Python suite parity")
    if "comparison" not in suite:
        sec.blocks.append(f"Not run: {suite.get('skipped', 'unknown reason')}.")
        return sec
    comp = suite["comparison"]
    rows = []
    for side in ("stock", "patched"):
        s = suite[side]
        counts = s["counts"]
        rows.append([side, str(sum(counts.values())), *(str(counts.get(k, 0)) for k in
                     ("pass", "fail", "error", "skip", "expected-failure", "crash", "hang")),
                     f"{s['seconds']} s", s.get("crashed_in") or "-"])
    sec.blocks.append(Table(["side", "tests", "pass", "fail", "error", "skip", "xfail", "crash", "hang", "time",
                             "crashed in"], rows))
    summ = comp["summary"]
    sec.blocks.append("Comparison: " + ", ".join(f"{k} {v}" for k, v in sorted(summ.items()))
                      + f". Parity: {'yes' if comp['parity'] else 'NO'}.")
    if comp["rows"]:
        sec.blocks.append(Table(["test", "stock", "patched", "status", "note"],
                                [[r["test"], r["stock"], r["patched"], r["status"], r["note"][:200]] for r in comp["rows"]],
                                [_cls(r["status"]) for r in comp["rows"]]))
    if suite.get("capability_skips"):
        sec.blocks.append("Skipped on both sides because a side lacks the capability:")
        sec.blocks.append([f"{k}: {v}" for k, v in suite["capability_skips"].items()])
    reasons = Counter(r["note"] for r in comp.get("skipped", []))
    if reasons:
        sec.blocks.append("Tests that cannot run here (skipped identically on both sides), by reason:")
        sec.blocks.append(Table(["reason", "tests"], [[k or "(no reason given)", str(v)] for k, v in reasons.most_common()]))
    return sec


def _cxx_section(c: dict[str, Any]) -> Section:
    sec = Section("Upstream C++ suite (doctest)")
    if c.get("status") != "done":
        sec.blocks.append(f"Status: {c.get('status', 'not run')}. {c.get('reason', '')} {c.get('hint', '')}".strip())
        return sec
    sec.blocks.append(c.get("note", ""))
    rows = []
    for side in ("stock", "patched"):
        counts = c[side]["counts"]
        rows.append([side, str(sum(counts.values())), *(str(counts.get(k, 0)) for k in ("pass", "fail", "error", "crash")),
                     f"{c[side]['seconds']} s"])
    sec.blocks.append(Table(["side", "test cases", "pass", "fail", "error", "crash", "time"], rows))
    comp = c["comparison"]
    sec.blocks.append("Comparison: " + ", ".join(f"{k} {v}" for k, v in sorted(comp["summary"].items()))
                      + f". Parity: {'yes' if comp['parity'] else 'NO'}.")
    if comp["rows"]:
        sec.blocks.append(Table(["test", "stock", "patched", "status", "note"],
                                [[r["test"], r["stock"], r["patched"], r["status"], r["note"][:200]] for r in comp["rows"]],
                                [_cls(r["status"]) for r in comp["rows"]]))
    if c.get("capability_skips"):
        sec.blocks.append("Test cases excluded on both sides because a side lacks the capability:")
        sec.blocks.append([f"{k}: {v}" for k, v in c["capability_skips"].items()])
    return sec


def _perf_section(perf: dict[str, Any]) -> Section:
    sec = Section("Performance A/B")
    if "cases" not in perf:
        sec.blocks.append(f"Not run: {perf.get('skipped', 'unknown reason')}.")
        return sec
    sec.blocks.append(
        f"{perf['rounds']} rounds; each round runs every case once per side in fresh processes, alternating "
        "which side goes first. Values are the best batch's process CPU time per unit (all threads; lower is "
        "better) and its wall time; ratio = patched/stock per round, median over rounds with min-max and "
        "interquartile spread. The gate uses the CPU-time ratio of the single-thread cases "
        f"({perf['gate'][0]}-{perf['gate'][1]}): on a shared machine wall time mostly measures the neighbours.")
    if perf.get("costs"):
        sec.blocks.append([f"{k}: documented cost: {' '.join(v.split())}" for k, v in perf["costs"].items()])
    rows, classes = [], []
    for c in perf["cases"]:
        sp = c.get("spread") or {}
        wr = c.get("wall_ratio")
        rows.append([c["case"], c["description"], c["unit"], _num(_median_of(c["stock"])), _num(_median_of(c["patched"])),
                     "-" if c["ratio"] is None else f"{c['ratio']:.3f}",
                     f"{sp['min']:.3f}-{sp['max']:.3f}" if sp else "-",
                     f"{sp['p25']:.3f}-{sp['p75']:.3f}" if sp else "-",
                     f"{_num(_median_of(c.get('stock_wall', [])))} / {_num(_median_of(c.get('patched_wall', [])))}",
                     "-" if wr is None else f"{wr:.3f}", c["gate"],
                     "; ".join(c.get("errors", []))[:200] or "-"])
        classes.append(_cls(c["gate"]))
    sec.blocks.append(Table(["case", "what", "unit", "stock cpu", "patched cpu", "cpu ratio", "min-max", "IQR",
                             "wall stock / patched", "wall ratio", "gate", "errors"], rows, classes))
    sec.blocks.append(("img", "perf.png", "patched/stock ratio per round and median, with the gate band"))
    return sec


def _median_of(values: list[float]) -> float | None:
    """The upper median (no interpolation), None for no values."""
    return sorted(values)[len(values) // 2] if values else None


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x / 1e-9:.3g} ns"


# ---------------------------------------------------------------- renderers

def to_markdown(title: str, sections: list[Section], images: set[str]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, list):
                out += [f"- {item}" for item in b] + [""]
            elif isinstance(b, Table):
                out.append("| " + " | ".join(b.headers) + " |")
                out.append("|" + "---|" * len(b.headers))
                for r in b.rows:
                    out.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
                out.append("")
            elif isinstance(b, tuple) and b[0] == "img" and b[1] in images:
                out += [f"![{b[2]}]({b[1]})", ""]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;vertical-align:top}th{background:#f3f3f3}
tr.good td{background:#e6f4e6}tr.bad td{background:#fbe3e3}tr.warn td{background:#fff6dc}img{max-width:100%}"""


def to_html(title: str, sections: list[Section], images: set[str]) -> str:
    e = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{e(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{e(sec.title)}</h2>")
        for b in sec.blocks:
            if isinstance(b, str):
                text = e(b)
                while "**" in text:  # the one markdown emphasis the model uses
                    text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
                out.append(f"<p>{text}</p>")
            elif isinstance(b, list):
                out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b) + "</ul>")
            elif isinstance(b, Table):
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.headers) + "</tr>")
                for i, r in enumerate(b.rows):
                    cls = b.classes[i] if i < len(b.classes) else ""
                    out.append(f"<tr class='{cls}'>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>")
                out.append("</table>")
            elif isinstance(b, tuple) and b[0] == "img" and b[1] in images:
                out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------- plots

def write_plots(summary: dict[str, Any], out_dir: Path) -> tuple[set[str], str]:
    """perf.png and crash.png with matplotlib (the `validate` extra). Returns (files written, note)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return set(), "plots not drawn: matplotlib is not installed (pip install 'mlx-fork[validate]')"
    written: set[str] = set()
    perf = summary.get("perf", {})
    cases = [c for c in perf.get("cases", []) if c.get("ratios")]
    if cases:
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.7 * len(cases)))
        lo, hi = perf.get("gate", [0.98, 1.02])
        ax.axvspan(lo, hi, color="#d8f0d8", label=f"gate {lo}-{hi}")
        ax.axvline(1.0, color="#888", lw=0.8)
        # Log scale, clipped to 0.8-1.25 around the band so the gate stays readable;
        # rounds outside are drawn at the edge as arrows.
        left, right = 0.8, 1.25
        for i, c in enumerate(cases):
            inside = [r for r in c["ratios"] if left <= r <= right]
            ax.scatter(inside, [i] * len(inside), s=14, color="#4477aa", alpha=0.7,
                       label="per round" if i == 0 else None)
            for r in c["ratios"]:
                if r < left or r > right:
                    ax.scatter([left if r < left else right], [i], marker="<" if r < left else ">", s=30,
                               color="#4477aa")
            ax.scatter([min(max(c["ratio"], left), right)], [i], marker="|", s=400, color="#cc3311",
                       label="median" if i == 0 else None)
            if c.get("wall_ratio") is not None:
                ax.scatter([min(max(c["wall_ratio"], left), right)], [i - 0.2], marker="|", s=120, color="#999999",
                           label="median wall-time ratio" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_xlim(left, right)
        ax.set_xticks([0.8, 0.9, 0.98, 1.02, 1.1, 1.25], ["0.8", "0.9", "0.98", "1.02", "1.1", "1.25"])
        ax.minorticks_off()
        ax.set_yticks(range(len(cases)), [c["case"] for c in cases])
        ax.set_xlabel("patched / stock CPU time per round (lower is faster)")
        ax.set_title(f"Performance A/B, {summary['base']} {summary['platform']}")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "perf.png", dpi=110)
        plt.close(fig)
        written.add("perf.png")
    pairs = [(s, st, pt) for s, st, pt in crash_pairs(summary.get("crash", {})) if st and pt]
    if pairs:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        width = 0.38
        for j, (side, color) in enumerate((("stock", "#cc6677"), ("patched", "#117733"))):
            xs: list[float] = []
            ys: list[float] = []
            errs: list[list[float]] = [[], []]
            for i, (_, st, pt) in enumerate(pairs):
                t = st if side == "stock" else pt
                rate = t["bad_rate"] or 0.0
                xs.append(i + (j - 0.5) * width)
                ys.append(rate)
                errs[0].append(rate - t["bad_rate_95"][0])
                errs[1].append(t["bad_rate_95"][1] - rate)
            ax.bar(xs, ys, width, yerr=errs, capsize=3, color=color, label=side)
        ax.set_xticks(range(len(pairs)), [s["class"] for s, _, _ in pairs])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("bad-run rate (95% Wilson)")
        ax.set_title("Crash reproducers: runs with an unacceptable outcome")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / "crash.png", dpi=110)
        plt.close(fig)
        written.add("crash.png")
    for key, (_section, plot) in EXTRA_PARTS.items():
        if key in summary:
            written |= plot(summary[key], out_dir, plt)
    return written, ""


def write_report(summary: dict[str, Any], out_dir: Path, plots: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    images, note = write_plots(summary, out_dir) if plots else (set(), "plots not drawn")
    if note:
        summary.setdefault("notes", []).append(note)
    title, sections = build_document(summary)
    files = [out_dir / "summary.json", out_dir / "summary.md", out_dir / "index.html"]
    files[0].write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
    files[1].write_text(to_markdown(title, sections, images), encoding="utf-8")
    files[2].write_text(to_html(title, sections, images), encoding="utf-8")
    return files + [out_dir / i for i in sorted(images)]
