"""`mlx-fork soak`: a serving-shaped workload on stock and patched MLX, built from mlx-lm.

The same two sides as `mlx-fork validate` (venvs.prepare_sides: stock PyPI wheels vs
the patched wheels from wheels/), plus the pinned mlx-lm wheel in both. For each K in
--threads and each side, a supervisor (supervisor.py) serves --requests requests from
worker processes running runner.py: K request threads, each with its own KV cache, on
mlx-lm's llama model with random weights and mlx-lm's generate_step. Then a short
single-thread perf A/B of prefill and decode tokens/s, sides alternating. The result
goes into the validation report of the base (summary.json's "soak", a section of
index.html/summary.md, soak.png), next to what `validate` wrote there.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bases import load_base
from ..digest import sha256_file
from ..errors import MlxForkError
from ..paths import PRIMARY_BASE, reports_dir, wheels_dir, work_dir
from ..proc import run, say
from ..stockwheels import stock_pins
from ..validate.stats import median
from .accounting import Ledger, summarize
from .plan import MIX, MlxLmPin, ModelShape, Plan, Request, mlx_lm_pin, streams_allowed
from .supervisor import Limits, supervise

RUNNER = Path(__file__).resolve().parent / "runner.py"
MAX_NEW_TOKENS = 64


@dataclass
class SoakOptions:
    base: str = PRIMARY_BASE
    requests: int = 100
    threads: tuple[int, ...] = (8,)
    streams: str = "own"
    seed: int = 1
    hang_s: float = 60.0
    max_restarts: int = 200
    minutes: float | None = None  # per side and K
    perf_rounds: int = 5
    cache_limit_mb: int = 32
    wheels: Path | None = None
    stock_both: bool = False
    mlx_lm_wheel: Path | None = None
    report_dir: Path | None = None
    work: Path | None = None
    fresh_venvs: bool = False


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "soak",
        help="serve an mlx-lm model from K threads on stock and patched MLX; a section of the validation report",
        description=(
            "Run a serving-shaped workload (mlx-lm's llama with random weights, generate_step from K request "
            "threads, sampled and greedy requests, cancellations, requests that fail on purpose) against the "
            "stock and the patched wheels, supervised: dead workers are restarted and counted, hangs detected. "
            "Adds a soak section to reports/<base>-<platform>/. Exit status 1 when the patched side lost a "
            "request, died, hung or produced a wrong token."
        ),
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"base under patches/ (default {PRIMARY_BASE})")
    p.add_argument("--requests", type=int, default=100, help="requests per side and thread count (default 100)")
    p.add_argument("--threads", type=int, action="append", default=None,
                   help="concurrent request threads K (repeatable, e.g. --threads 2 --threads 8; default 8)")
    p.add_argument("--streams", choices=("own", "shared"), default="own",
                   help="own: each thread its own generation stream; shared: one stream for all threads "
                        "(MLX 0.31.1 only; later releases make streams per thread)")
    p.add_argument("--seed", type=int, default=1, help="seed of the model weights and the request mix")
    p.add_argument("--hang-seconds", type=float, default=60.0, help="no progress this long is a hang (default 60)")
    p.add_argument("--max-restarts", type=int, default=200,
                   help="worker restarts per side and K before the rest is left unserved (default 200)")
    p.add_argument("--minutes", type=float, default=None,
                   help="stop starting workers after this many minutes per side and K (the rest is unserved)")
    p.add_argument("--perf-rounds", type=int, default=5,
                   help="rounds of the single-thread prefill/decode A/B (0: none; default 5)")
    p.add_argument("--cache-limit-mb", type=int, default=32, help="mx.set_cache_limit in the workers (default 32)")
    p.add_argument("--wheels", type=Path, default=None, help="directory with the patched wheels (default wheels/)")
    p.add_argument("--stock-both-sides", dest="stock_both", action="store_true",
                   help="stock wheels on the patched side too (checks the harness itself)")
    p.add_argument("--mlx-lm-wheel", type=Path, default=None,
                   help="the pinned mlx-lm wheel file (default: downloaded once into the work dir; checked "
                        "against its sha256 pin either way)")
    p.add_argument("--report-dir", type=Path, default=None, help="default: reports/<base>-<platform>")
    p.add_argument("--work", type=Path, default=None, help="scratch dir for venvs and logs (default: work dir)")
    p.add_argument("--fresh-venvs", action="store_true", help="recreate both venvs")
    p.set_defaults(func=_cmd_soak)


def _cmd_soak(args: argparse.Namespace) -> int:
    threads = tuple(args.threads or [8])
    if args.requests < 1:
        raise MlxForkError("--requests must be at least 1")
    if any(k < 1 for k in threads):
        raise MlxForkError("--threads must be at least 1")
    opts = SoakOptions(
        base=args.base, requests=args.requests, threads=threads, streams=args.streams, seed=args.seed,
        hang_s=args.hang_seconds, max_restarts=args.max_restarts, minutes=args.minutes,
        perf_rounds=args.perf_rounds, cache_limit_mb=args.cache_limit_mb, wheels=args.wheels,
        stock_both=args.stock_both, mlx_lm_wheel=args.mlx_lm_wheel, report_dir=args.report_dir,
        work=args.work, fresh_venvs=args.fresh_venvs,
    )
    soak, out_dir = run_soak(opts)
    say(f"report: {out_dir}/index.html")
    say(f"soak gate: {soak['gate']}" + (f" ({'; '.join(soak['gate_reasons'])})" if soak["gate_reasons"] else ""))
    return 1 if soak["gate"] == "fail" and not soak["stock_vs_stock"] else 0


# ---------------------------------------------------------------- mlx-lm wheel

def mlx_lm_wheel(work: Path, pin: MlxLmPin, given: Path | None) -> Path:
    """The pinned wheel: the given file, else the cached download (fetched once, then offline)."""
    if given is not None:
        path = given
        if not path.is_file():
            raise MlxForkError(f"--mlx-lm-wheel {path}: no such file")
    else:
        dest = work / "stock-wheels" / "mlx-lm" / pin.version
        path = dest / pin.wheel
        if not path.is_file():
            say(f"downloading mlx-lm=={pin.version} (no dependencies) from PyPI into {dest}")
            dest.mkdir(parents=True, exist_ok=True)
            run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
                 "--no-deps", "-d", str(dest), f"mlx-lm=={pin.version}"],
                step="download the mlx-lm wheel", log=work / "logs" / "mlx-lm-download.log")
            if not path.is_file():
                raise MlxForkError(f"pip did not leave {pin.wheel} in {dest}",
                                   hint="pass the wheel with --mlx-lm-wheel FILE")
    if path.name != pin.wheel or sha256_file(path) != pin.sha256:
        raise MlxForkError(f"{path.name} is not the pinned {pin.wheel} (sha256 {pin.sha256[:16]}...)",
                           hint="pass the pinned wheel with --mlx-lm-wheel, or delete the cached file and run again")
    return path


# ---------------------------------------------------------------- one side

def _config(opts: SoakOptions, plan: Plan, threads: int, references: Path | None) -> dict[str, Any]:
    return {
        "seed": opts.seed, "model": plan.model.to_json(), "weight_scale": 3.0,
        "references": str(references) if references else None, "reference_prompts": plan.reference_prompts(),
        "max_new_tokens": MAX_NEW_TOKENS, "cache_limit_mb": opts.cache_limit_mb, "streams": opts.streams,
        "threads": threads, "perf": {"prompt_len": 512, "new_tokens": 64, "repeats": 3},
    }


def _references(python: Path, name: str, cfg: dict[str, Any], cell: Path) -> Path:
    cell.mkdir(parents=True, exist_ok=True)
    cfg_path = cell / "reference-config.json"
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    out = cell / "references.json"
    proc = subprocess.run([str(python), str(RUNNER), "reference", "--config", str(cfg_path), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not out.is_file():
        raise MlxForkError(f"{name}: the single-thread reference generation failed (exit {proc.returncode})",
                           hint=(proc.stderr.strip().splitlines() or ["no output"])[-1])
    return out


def soak_side(python: Path, name: str, opts: SoakOptions, plan: Plan, requests: list[Request], threads: int,
              references: Path, cell: Path) -> dict[str, Any]:
    cfg_path = cell / f"config-k{threads}.json"
    cfg_path.write_text(json.dumps(_config(opts, plan, threads, references)), encoding="utf-8")
    ledger = Ledger(requests)
    queue_dir = cell / f"queues-k{threads}"
    queue_dir.mkdir(parents=True, exist_ok=True)

    def command(waiting: Sequence[Request], life: int) -> list[str]:
        path = queue_dir / f"requests-{life}.json"
        path.write_text(json.dumps([r.to_json() for r in waiting]), encoding="utf-8")
        # -X faulthandler: a worker killed by a signal names it on stderr ("Fatal Python error: ...").
        return [str(python), "-X", "faulthandler", str(RUNNER), "worker", "--config", str(cfg_path),
                "--requests", str(path)]

    deadline = time.monotonic() + 60 * opts.minutes if opts.minutes else None
    limits = Limits(hang_s=opts.hang_s, max_restarts=opts.max_restarts, deadline=deadline)
    started_at = time.time()
    wall = supervise(ledger, command, limits, cell / f"logs-k{threads}",
                     progress=lambda m: say(f"{name} K={threads}:{m}"))
    result = summarize(ledger, wall, started_at)
    result.update({"side": name, "threads": threads, "streams": opts.streams})
    return result


# ---------------------------------------------------------------- perf A/B

def perf_ab(sides: list[tuple[str, Path]], cfg_path: Path, rounds: int) -> dict[str, Any]:
    """Single-thread prefill and decode tokens/s per round, sides alternating; ratios patched/stock."""
    metrics = ("prefill_cpu", "decode_cpu", "prefill_wall", "decode_wall")
    values: dict[str, dict[str, list[float]]] = {s: {m: [] for m in metrics} for s, _ in sides}
    errors: list[str] = []
    for r in range(rounds):
        order = sides if r % 2 == 0 else list(reversed(sides))
        for name, python in order:
            proc = subprocess.run([str(python), str(RUNNER), "perf", "--config", str(cfg_path)],
                                  capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                errors.append(f"{name} round {r}: exit {proc.returncode}: "
                              + (proc.stderr.strip().splitlines() or [""])[-1][:200])
                continue
            data = json.loads(proc.stdout.strip().splitlines()[-1])
            for m in metrics:
                values[name][m].append(data[m])
        say(f"perf round {r + 1}/{rounds}: " + ", ".join(
            f"{n} prefill {values[n]['prefill_cpu'][-1]:.0f} decode {values[n]['decode_cpu'][-1]:.0f} tok/s(cpu)"
            for n, _ in sides if values[n]["prefill_cpu"]))
    out: dict[str, Any] = {"rounds": rounds, "errors": errors, "values": values, "ratios": {}}
    for m in metrics:
        pairs = list(zip(values["stock"][m], values["patched"][m]))
        ratios = [p / s for s, p in pairs if s > 0]
        out["ratios"][m] = {
            "per_round": [round(x, 4) for x in ratios],
            "median": round(median(ratios), 4) if ratios else None,
            "min": round(min(ratios), 4) if ratios else None,
            "max": round(max(ratios), 4) if ratios else None,
        }
    return out


# ---------------------------------------------------------------- the run

def gate(cells: list[dict[str, Any]], stock_vs_stock: bool) -> tuple[str, list[str]]:
    """pass when the patched side lost nothing, never died or hung and emitted no wrong token."""
    reasons = []
    for c in cells:
        if c["side"] != "patched":
            continue
        k = c["threads"]
        for key, what in (("deaths", "worker deaths"), ("hangs", "hangs"), ("wrong_tokens", "wrong tokens")):
            if c[key]:
                reasons.append(f"K={k}: {c[key]} {what}")
        for outcome in ("lost", "failed-unexpectedly", "unserved"):
            if c["counts"][outcome]:
                reasons.append(f"K={k}: {c['counts'][outcome]} requests {outcome}")
    return ("fail" if reasons else "pass"), reasons


def _same_workload(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("streams", "seed", "prompt_tokens", "new_tokens", "cache_limit_mb", "mix")
    return (a.get("mlx_lm", {}).get("sha256") == b["mlx_lm"]["sha256"] and a.get("model") == b["model"]
            and a.get("sides") == b["sides"] and all(a.get("workload", {}).get(k) == b["workload"][k] for k in keys))


def merge_previous(previous: dict[str, Any] | None, soak: dict[str, Any]) -> dict[str, Any]:
    """Keep the cells (K values) and perf of an earlier run of the same workload on the same wheels.

    So K=8 can run long and K=2 and K=16 short, in separate invocations, into one section.
    """
    if not previous or not _same_workload(previous, soak):
        return soak
    ks = {c["threads"] for c in soak["cells"]}
    kept = [c for c in previous.get("cells", []) if c["threads"] not in ks]
    merged = dict(soak, cells=sorted(kept + soak["cells"], key=lambda c: (c["threads"], c["side"] != "stock")))
    if soak.get("perf") is None and previous.get("perf") is not None:
        merged["perf"] = previous["perf"]
    merged["workload"] = dict(soak["workload"], threads=sorted({c["threads"] for c in merged["cells"]}))
    merged["seconds"] = round(previous.get("seconds", 0.0) + soak["seconds"], 1)
    merged["gate"], merged["gate_reasons"] = gate(merged["cells"], soak["stock_vs_stock"])
    return merged


def run_soak(opts: SoakOptions) -> tuple[dict[str, Any], Path]:
    from ..validate import report, venvs
    from ..validate.metal import metal_ladder
    from ..validate.patchinfo import load_patch_info, match_wheel

    base = load_base(opts.base)
    if opts.streams not in streams_allowed(base.version):
        raise MlxForkError(f"--streams {opts.streams} is not possible on MLX {base.version}: its streams belong "
                           "to the thread that makes them", hint="pass --streams own")
    pin = mlx_lm_pin(base.version)
    work = (opts.work or work_dir() / "soak") / base.name
    work.mkdir(parents=True, exist_ok=True)
    wheel = mlx_lm_wheel(work, pin, opts.mlx_lm_wheel)
    wheels = None if opts.stock_both else (opts.wheels or wheels_dir())
    pins = stock_pins(base)
    stock, patched, notes = venvs.prepare_sides(base.version, work, wheels, fresh=opts.fresh_venvs,
                                                stock_only=wheels is None, pins=pins, extra_wheels=[wheel])
    stock_vs_stock = stock.libmlx_sha256 == patched.libmlx_sha256
    for n in notes:
        say(f"note: {n}")
    say(f"stock: mlx {stock.mlx_version}; patched: mlx {patched.mlx_version}; mlx-lm {pin.version}")
    plan = Plan(seed=opts.seed, model=ModelShape())
    requests = plan.requests(opts.requests)
    sides = [("stock", stock.python), ("patched", patched.python)]
    started = time.monotonic()
    refs: dict[str, Path] = {}
    ref_meta: dict[str, dict[str, Any]] = {}
    for name, python in sides:
        say(f"{name}: single-thread greedy references ({plan.references} prompts x {MAX_NEW_TOKENS} tokens)")
        refs[name] = _references(python, name, _config(opts, plan, 1, None), work / name)
        meta = json.loads(refs[name].read_text(encoding="utf-8"))
        ref_meta[name] = {k: meta[k] for k in ("mlx", "mlx_lm", "parameters")}
    refs_equal = (json.loads(refs["stock"].read_text())["tokens"] == json.loads(refs["patched"].read_text())["tokens"])
    cells = []
    for i, k in enumerate(opts.threads):
        order = sides if i % 2 == 0 else list(reversed(sides))
        for name, python in order:
            say(f"{name}: {len(requests)} requests from {k} threads ({opts.streams} streams)")
            cell = soak_side(python, name, opts, plan, requests, k, refs[name], work / name)
            c = cell["counts"]
            say(f"{name} K={k}: completed {c['completed']}, cancelled {c['cancelled']}, failed as intended "
                f"{c['failed-as-intended']}, failed unexpectedly {c['failed-unexpectedly']}, lost {c['lost']}, "
                f"unserved {c['unserved']}; deaths {cell['deaths']} {cell['deaths_by']}, hangs {cell['hangs']}, "
                f"wrong tokens {cell['wrong_tokens']}; {cell['wall_s']} s")
            cells.append(cell)
    perf = None
    if opts.perf_rounds > 0:
        cfg_path = work / "perf-config.json"
        cfg_path.write_text(json.dumps(_config(opts, plan, 1, None)), encoding="utf-8")
        say(f"perf A/B: {opts.perf_rounds} rounds, single thread, prefill 512 tokens + decode 64 tokens")
        perf = perf_ab(sides, cfg_path, opts.perf_rounds)
    verdict, reasons = gate(cells, stock_vs_stock)
    soak = {
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(time.monotonic() - started, 1),
        "mlx_lm": {"version": pin.version, "wheel": pin.wheel, "sha256": pin.sha256, "why": pin.why},
        "model": {"class": "mlx_lm.models.llama.Model", **plan.model.to_json(), "weight_scale": 3.0,
                  "parameters": ref_meta["stock"]["parameters"]},
        "workload": {"requests": opts.requests, "threads": list(opts.threads), "streams": opts.streams,
                     "prompt_tokens": list(plan.prompt_range), "new_tokens": list(plan.new_tokens_range),
                     "cache_limit_mb": opts.cache_limit_mb, "hang_s": opts.hang_s,
                     "max_restarts": opts.max_restarts, "minutes": opts.minutes, "seed": opts.seed,
                     "mix": {k: round(w, 3) for k, w in MIX}},
        "references_equal": refs_equal,
        "stock_vs_stock": stock_vs_stock,
        "sides": {"stock": stock.mlx_version, "patched": patched.mlx_version},
        "cells": cells, "perf": perf, "gate": verdict, "gate_reasons": reasons, "notes": notes,
    }
    out_dir = opts.report_dir or reports_dir() / f"{base.name}-{venvs.platform_tag()}"
    summary_path = out_dir / "summary.json"
    wheel_patches = [] if stock_vs_stock else (patched.probe.get("provenance") or {}).get("patches")
    patches, series_note = match_wheel(load_patch_info(base), wheel_patches)
    if series_note:
        soak["notes"].append(series_note)
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        summary["notes"] = [n for n in summary.get("notes", []) if not n.startswith("plots not drawn")]
    else:
        sides_json = {}
        for s in (stock, patched):
            d = s.to_json()
            d.pop("python", None)
            d.pop("venv", None)
            sides_json[s.name] = d
        summary = {
            "schema": 1, "base": base.name, "version": base.version, "commit": base.commit,
            "platform": venvs.platform_tag(), "mode": "soak only", "generated": soak["generated"],
            "report_dir": str(out_dir), "stock_vs_stock": stock_vs_stock,
            "notes": ["only `mlx-fork soak` has run for this report; run `mlx-fork validate` for the other parts"],
            "sides": sides_json, "patches": [p.to_json() for p in patches],
            "metal": metal_ladder(base.name, reports_dir()),
        }
    summary["soak"] = merge_previous(summary.get("soak"), soak)
    summary["gates"] = report.gates(summary)
    report.write_report(summary, out_dir)
    return soak, out_dir
