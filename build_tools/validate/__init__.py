"""Stage 6, validate: evidence that a patched MLX is worth shipping.

`mlx-fork validate --base B` builds two venvs that differ only in the MLX wheels
(stock PyPI vs patched from wheels/) and runs, on both:
  1. the crash-reproducer suite (crash.py, scenarios/): N fresh-process runs per class,
     classified, with 95% Wilson bounds, red/green per class per side;
  2. backported upstream checks (checks.py, backported/);
  3. the upstream Python suite of the pinned tree, compared test by test (suite.py);
  4. a performance A/B, sides alternating (perf.py, runners/bench.py);
  5. the upstream C++ doctest suite, built from the pristine and the patched tree (cxx.py);
and writes reports/<base>-<platform>/{index.html, summary.md, summary.json, perf.png}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bases import BasePin, load_base
from ..errors import MlxForkError
from ..paths import PRIMARY_BASE, reports_dir, source_from_env, wheels_dir, work_dir
from ..proc import say
from ..soak.report import PLOT as _SOAK_PLOT  # noqa: F401  (registers the soak section of `mlx-fork soak`)
from .metal import metal_ladder

if TYPE_CHECKING:  # types only: the parts import their modules when they run
    from ..source import PristineTree
    from .patchinfo import PatchInfo
    from .venvs import Side

MODE_RUNS = {"quick": 5, "default": 20, "thorough": 200}
MODE_PERF_ROUNDS = {"quick": 3, "default": 7, "thorough": 15}
MODE_PERF_SCALE = {"quick": 0.5, "default": 1.0, "thorough": 1.0}
PARTS = ("crash", "checks", "suite", "perf", "cxx")


@dataclass
class ValidateOptions:
    base: str = PRIMARY_BASE
    source: Path | None = None
    mode: str = "default"  # quick | default | thorough
    runs: int | None = None  # crash runs per class per side (None: by mode)
    perf_rounds: int | None = None
    wheels: Path | None = None  # None: the project's wheels/
    wheels_explicit: bool = False  # --wheels given: a missing patched wheel is an error
    stock_both: bool = False  # compare stock with stock (harness self-test)
    libmlx: Path | None = None  # dev check: stock wheels + this libmlx on the patched side
    report_dir: Path | None = None
    work: Path | None = None
    fresh_venvs: bool = False
    skip: frozenset[str] = field(default_factory=frozenset)
    scenarios: tuple[str, ...] = ()  # names/letters; empty = all
    platform: str = "auto"  # auto (the host's CPU/Metal wheels) | linux-cuda
    cuda_libraries: Path | None = None  # site-packages with the nvidia-* packages (linux-cuda)
    jobs: int = 1  # crash runs at once

    @property
    def crash_runs(self) -> int:
        return self.runs if self.runs is not None else MODE_RUNS[self.mode]

    @property
    def rounds(self) -> int:
        return self.perf_rounds if self.perf_rounds is not None else MODE_PERF_ROUNDS[self.mode]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="compare stock and patched MLX: crash reproducers, upstream suite parity, perf A/B, report",
        description=(
            "Create two venvs (stock PyPI wheels vs the patched wheels) and run on both the crash-reproducer "
            "suite, backported upstream checks, the upstream Python test suite (compared test by test) and a "
            "performance A/B; write reports/<base>-<platform>/. Exit status 1 when a gate fails."
        ),
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"base under patches/ (default {PRIMARY_BASE})")
    p.add_argument("--source", type=Path, default=None,
                   help="MLX checkout or directory of the pinned tree, for the upstream suite "
                        "(default: MLX_FORK_SOURCE, else the tag archive)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help=f"CI mode: {MODE_RUNS['quick']} runs per class, short perf A/B; "
                           "the upstream suite only with --source/MLX_FORK_SOURCE")
    mode.add_argument("--thorough", dest="mode", action="store_const", const="thorough",
                      help=f"{MODE_RUNS['thorough']} runs per class per side, {MODE_PERF_ROUNDS['thorough']} perf rounds")
    p.set_defaults(mode="default")
    p.add_argument("--runs", type=int, default=None, help="crash runs per class per side (overrides the mode)")
    p.add_argument("--perf-rounds", type=int, default=None, help="perf A/B rounds (overrides the mode)")
    p.add_argument("--wheels", type=Path, default=None,
                   help="directory with the patched mlx-cpu wheel (default: wheels/ of this checkout)")
    p.add_argument("--stock-both-sides", dest="stock_both", action="store_true",
                   help="use the stock wheels on the patched side too (checks the harness itself)")
    p.add_argument("--libmlx", type=Path, default=None,
                   help="development check: patched side = stock wheels with this libmlx copied in "
                        "(same version; not an installable build, the report says so)")
    p.add_argument("--report-dir", type=Path, default=None, help="default: reports/<base>-<platform>")
    p.add_argument("--work", type=Path, default=None, help="scratch dir for venvs and raw results (default: work dir)")
    p.add_argument("--fresh-venvs", action="store_true", help="recreate both venvs")
    p.add_argument("--render-only", action="store_true",
                   help="only re-render index.html/summary.md/plots from the report dir's summary.json")
    p.add_argument("--skip", action="append", default=[], choices=PARTS, help="leave out a part (repeatable)")
    p.add_argument("--scenario", action="append", default=[], help="run only this crash class/scenario (repeatable)")
    p.add_argument("--platform", default="auto", choices=("auto", "linux-cuda"),
                   help="linux-cuda: the mlx-cuda-13 wheels, on a machine with an NVIDIA GPU (default: the host's)")
    p.add_argument("--cuda-libraries", type=Path, default=None, metavar="SITE_PACKAGES",
                   help="linux-cuda: take the nvidia-* libraries (and numpy) from this site-packages, for both "
                        "sides (a machine with no package index)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="crash runs at once (fresh processes; default 1)")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args: argparse.Namespace) -> int:
    if args.render_only:
        return _render_only(args)
    if args.runs is not None and args.runs < 1:
        raise MlxForkError("--runs must be at least 1")
    opts = ValidateOptions(
        base=args.base, source=args.source, mode=args.mode, runs=args.runs, perf_rounds=args.perf_rounds,
        wheels=args.wheels, wheels_explicit=args.wheels is not None, stock_both=args.stock_both, libmlx=args.libmlx,
        report_dir=args.report_dir, work=args.work, fresh_venvs=args.fresh_venvs,
        skip=frozenset(args.skip), scenarios=tuple(args.scenario),
        platform=args.platform, cuda_libraries=args.cuda_libraries, jobs=args.jobs,
    )
    for name in opts.scenarios:  # a mistyped class is an error before any venv is built
        from . import crash

        try:
            crash.scenario_by_name(name)
        except KeyError as exc:
            raise MlxForkError(str(exc.args[0]), hint="--scenario takes a class letter or a scenario name") from None
    summary = validate(opts)
    gates = summary["gates"]
    failed = [k for k, v in gates.items() if v == "fail"]
    say(f"report: {summary['report_dir']}/index.html")
    say("gates: " + ", ".join(f"{k} {v}" for k, v in gates.items()))
    if summary.get("errors"):
        say("parts that FAILED to run: " + "; ".join(summary["errors"]))
        return 1
    if failed and not summary["stock_vs_stock"]:
        say("FAILED gates: " + ", ".join(failed))
        return 1
    return 0


def _render_only(args: argparse.Namespace) -> int:
    from . import report, venvs

    out_dir = args.report_dir or reports_dir() / f"{args.base}-{venvs.platform_tag()}"
    path = out_dir / "summary.json"
    if not path.is_file():
        raise MlxForkError(f"no {path} to render", hint="run `mlx-fork validate` first")
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary["notes"] = [n for n in summary.get("notes", []) if not n.startswith("plots not drawn")]
    summary["metal"] = metal_ladder(summary["base"], reports_dir())
    summary["gates"] = report.gates(summary)
    report.write_report(summary, out_dir)
    say(f"re-rendered {out_dir}/index.html; gates: " + ", ".join(f"{k} {v}" for k, v in summary["gates"].items()))
    return 0


def validate(opts: ValidateOptions) -> dict[str, Any]:
    """Run every part that is not skipped and write the report; returns summary.json's content."""
    from . import crash, perf, report, suite, venvs
    from .checks import run_checks
    from .patchinfo import load_patch_info, match_wheel

    started = time.monotonic()
    base = load_base(opts.base)
    plat = venvs.platform_tag() + ("-cuda" if opts.platform == "linux-cuda" else "")
    work = (opts.work or work_dir() / "validate") / (base.name + ("-cuda" if opts.platform == "linux-cuda" else ""))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = opts.report_dir or reports_dir() / f"{base.name}-{plat}"
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    patches = load_patch_info(base)
    notes: list[str] = []
    wheels = None
    if opts.libmlx is not None and not opts.libmlx.is_file():
        raise MlxForkError(f"--libmlx {opts.libmlx}: no such file")
    if opts.libmlx is not None and (opts.stock_both or opts.wheels_explicit):
        raise MlxForkError("--libmlx replaces the library in the stock wheels: do not combine it with "
                           "--wheels or --stock-both-sides")
    if not opts.stock_both and opts.libmlx is None:
        wheels = opts.wheels or wheels_dir()
        if not opts.wheels_explicit:
            try:
                venvs.find_patched_wheels(wheels, base.version, venvs.backend_dist(opts.platform))
            except MlxForkError as exc:
                notes.append(f"no patched wheel found ({exc.message}); falling back to stock on both sides")
                wheels = None
    stock, patched, side_notes = venvs.prepare_sides(
        base.version, work, wheels, fresh=opts.fresh_venvs, stock_only=wheels is None, pins=_stock_pins(base),
        libmlx=opts.libmlx, platform_name=opts.platform, cuda_site=opts.cuda_libraries)
    notes.extend(side_notes)
    stock_vs_stock = stock.libmlx_sha256 == patched.libmlx_sha256
    for n in notes:
        say(f"note: {n}")
    say(f"stock: mlx {stock.mlx_version}; patched: mlx {patched.mlx_version} ({', '.join(patched.wheels)})")
    sides = [("stock", stock.python), ("patched", patched.python)]
    wheel_patches = None if stock_vs_stock else (patched.probe.get("provenance") or {}).get("patches")
    if stock_vs_stock:
        wheel_patches = []
    patches, series_note = match_wheel(patches, wheel_patches)
    if series_note:
        notes.append(series_note)
    built_patches = [p for p in patches if p.in_wheel is not False]  # what the patched side runs

    summary: dict[str, Any] = {
        "schema": 1,
        "base": base.name, "version": base.version, "commit": base.commit, "platform": plat,
        "mode": opts.mode, "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "report_dir": str(out_dir), "stock_vs_stock": stock_vs_stock, "notes": notes,
        "sides": {"stock": stock.to_json(), "patched": patched.to_json()},
        "patches": [p.to_json() for p in patches],
        "metal": metal_ladder(base.name, reports_dir()),
    }
    previous = out_dir / "summary.json"  # a soak section written by `mlx-fork soak` is kept
    if previous.is_file():
        try:
            soak = json.loads(previous.read_text(encoding="utf-8")).get("soak")
        except ValueError:
            soak = None
        if soak is not None:
            summary["soak"] = soak
    # Never leak machine paths into a report that may be shared.
    for side in summary["sides"].values():
        side.pop("python", None)
        side.pop("venv", None)

    # 1. crash reproducers
    if "crash" in opts.skip:
        summary["crash"] = {"skipped": "--skip crash"}
    else:
        chosen = [crash.scenario_by_name(n) for n in opts.scenarios] if opts.scenarios else list(crash.SCENARIOS)
        backend = venvs.backend_kind(opts.platform)
        not_here = [s for s in chosen if not crash.applies_here(s, backend)]
        chosen = [s for s in chosen if crash.applies_here(s, backend)]
        for s in not_here:
            notes.append(f"crash class {s.crash_class} ({s.name}) does not apply to the {backend} backend here")
        say(f"crash reproducers: {len(chosen)} classes x {opts.crash_runs} runs x 2 sides")
        tallies = crash.run_suite(sides, chosen, opts.crash_runs, progress=say, jobs=opts.jobs)
        summary["crash"] = {
            "runs": opts.crash_runs,
            "scenarios": [{"name": s.name, "class": s.crash_class, "title": s.title, "fix_theme": s.fix_theme,
                           "acceptable": sorted(s.acceptable), "timeout": s.timeout} for s in chosen],
            "tallies": [t.to_json() for t in tallies],
        }

    _checkpoint(summary, out_dir)

    # 2. backported checks
    if "checks" in opts.skip:
        summary["checks"] = {"skipped": "--skip checks"}
    else:
        say("backported upstream checks")
        runs = run_checks(sides, work / "checks", progress=say)
        cmp = suite.compare(runs["stock"], runs["patched"])
        summary["checks"] = {
            "stock": runs["stock"].to_json(), "patched": runs["patched"].to_json(),
            "comparison": {"summary": cmp.summary(), "rows": [r.__dict__ for r in cmp.rows]},
        }

    _checkpoint(summary, out_dir)

    # 3. upstream Python suite (needs the pinned tree)
    tree, tree_note = _pinned_tree(opts, base, work)
    if "suite" in opts.skip:
        summary["suite"] = {"skipped": "--skip suite"}
    elif tree is None:
        summary["suite"] = {"skipped": tree_note}
    else:
        summary["suite"] = _guarded("upstream suite", summary,
                                    lambda: _run_upstream_suite(tree, work, stock, patched, data_dir))

    _checkpoint(summary, out_dir)

    # 4. performance A/B
    if "perf" in opts.skip:
        summary["perf"] = {"skipped": "--skip perf"}
    else:
        say(f"performance A/B: {opts.rounds} alternating rounds")
        perf_cases = perf.GPU_CASES if opts.platform == "linux-cuda" else perf.CASES
        cases = perf.run_ab(sides, opts.rounds, cases=perf_cases, scale=MODE_PERF_SCALE[opts.mode], progress=say)
        costs = {p.name: p.cost for p in built_patches if p.cost}
        # A slowdown is waived only for a case some patch's Cost names.
        documented = {c.case for c in cases if perf.cost_names_case(costs.values(), c.case)}
        summary["perf"] = {
            "rounds": opts.rounds, "gate": list(perf.GATE), "documented_cost": sorted(documented),
            "costs": costs,
            "cases": [c.to_json(c.case in documented) for c in cases],
        }

    _checkpoint(summary, out_dir)

    # 5. C++ doctest suite (heavy: a libmlx + tests build)
    if "cxx" in opts.skip:
        summary["cxx"] = {"status": "skipped", "reason": "--skip cxx"}
    elif opts.mode == "quick":
        summary["cxx"] = {"status": "skipped", "reason": "quick mode (the C++ tests need a full MLX build)"}
    elif tree is None:
        summary["cxx"] = {"status": "skipped", "reason": tree_note}
    else:
        summary["cxx"] = _guarded("C++ suite", summary,
                                  lambda: _run_cxx_suite(base, tree, work, stock, patched, patches, data_dir,
                                                         patched_is_stock=stock_vs_stock,
                                                         wheel_patches=wheel_patches))


    summary["gates"] = report.gates(summary)
    summary["seconds"] = round(time.monotonic() - started, 1)
    (data_dir / "summary-full.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    report.write_report(summary, out_dir)
    return summary


def _checkpoint(summary: dict[str, Any], out_dir: Path) -> None:
    """A provisional report with the parts finished so far (marked in-progress), rewritten at the end."""
    from . import report

    partial = dict(summary, in_progress=True, notes=list(summary["notes"]))
    partial["gates"] = report.gates(partial)
    report.write_report(partial, out_dir, plots=False)


def _guarded(part: str, summary: dict[str, Any], fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one part; a failure to run it is recorded (and fails the run) instead of losing the report."""
    try:
        return fn()
    except MlxForkError as exc:
        say(f"{part} could not run: {exc}")
        summary.setdefault("errors", []).append(f"{part}: {exc.message}")
        return {"skipped": f"could not run: {exc.message}", "status": "error", "reason": exc.message}


def _stock_pins(base: BasePin) -> dict[str, str]:
    """sha256 pins of stock wheels from base.toml ([[stock_wheels]])."""
    from ..stockwheels import stock_pins

    return stock_pins(base)


def _pinned_tree(opts: ValidateOptions, base: BasePin, work: Path) -> tuple[PristineTree | None, str]:
    """(verified pristine tree or None, why not). Quick mode never downloads."""
    from ..source import prepare_source

    if {"suite", "cxx"} <= opts.skip:
        return None, "not needed"
    source = opts.source or source_from_env()
    if source is None and opts.mode == "quick":
        return None, "quick mode without --source or MLX_FORK_SOURCE (no download in CI quick mode)"
    try:
        return prepare_source(base, source, work.parent), ""
    except MlxForkError as exc:
        return None, f"pinned tree not available: {exc.message}"


def _run_upstream_suite(tree: PristineTree, work: Path, stock: Side, patched: Side, data_dir: Path) -> dict[str, Any]:
    from . import suite

    skips = suite.capability_skips({"stock": stock.probe, "patched": patched.probe}, tree.path / "python" / "tests")
    runs = {}
    for side in (stock, patched):
        tests = suite.copy_tests(tree.path, work / f"tests-{side.name}")
        say(f"upstream Python suite on {side.name} (about 2 min on 2 idle cores)")
        run = suite.run_suite(side.python, side.name, tests, work / f"suite-{side.name}.jsonl", skips,
                              log=work / "logs" / f"suite-{side.name}.log")
        say(f"  {side.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(run.counts().items()))
            + (f"; CRASHED in {run.crashed_in}" if run.crashed_in else ""))
        (data_dir / f"suite-{side.name}.json").write_text(json.dumps(run.to_json(), indent=1), encoding="utf-8")
        runs[side.name] = run
    cmp = suite.compare(runs["stock"], runs["patched"])
    return {
        "tree": {"commit": tree.commit},
        "capability_skips": skips,
        "stock": {k: v for k, v in runs["stock"].to_json().items() if k != "results"},
        "patched": {k: v for k, v in runs["patched"].to_json().items() if k != "results"},
        "comparison": {
            "summary": cmp.summary(), "parity": cmp.parity,
            "rows": [r.__dict__ for r in cmp.rows if r.status != "same"],
            "skipped": [r.__dict__ for r in cmp.rows if r.stock == "skip" and r.status == "same"],
        },
    }


def _run_cxx_suite(base: BasePin, tree: PristineTree, work: Path, stock: Side, patched: Side,
                   patches: list[PatchInfo], data_dir: Path,
                   patched_is_stock: bool = False, wheel_patches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the doctest binary from the pristine and the patched tree; run each against its side's libmlx."""
    from ..compile import sync_tree
    from ..patchqueue import patched_tree
    from ..series import load_series
    from . import cxx, suite

    binaries: dict[str, Path] = {}
    # The patched tree's tests only make sense with a library built from that tree (headers may differ),
    # so the tree must be the one the patched wheel was built from.
    if patched_is_stock or wheel_patches == []:
        build_patched = False  # stock, or a rebuild with an empty series: the pristine tree
    elif wheel_patches is None:
        build_patched = bool(patches)  # no provenance (--libmlx): assume the current series
    elif len(wheel_patches) == len(patches) and all(p.in_wheel for p in patches):
        build_patched = True
    else:
        return {"status": "not-run",
                "reason": "the patched wheel holds a different series than patches/ (see notes): "
                          "its tree cannot be rebuilt for the C++ tests"}
    try:
        # Stable source dirs whose unchanged files keep their mtimes: rebuilds stay incremental.
        sync_tree(tree.path, work / "cxx-src-stock")
        binaries["stock"] = cxx.build_tests(base, work / "cxx-src-stock", work, "stock")
        if build_patched:
            queue = patched_tree(load_series(base), tree.path, work / "cxx-trees")
            sync_tree(queue, work / "cxx-src-patched")
            binaries["patched"] = cxx.build_tests(base, work / "cxx-src-patched", work, "patched")
        else:
            binaries["patched"] = binaries["stock"]
    except MlxForkError as exc:
        say(f"C++ tests not built: {exc}")
        return {"status": "not-run", "reason": f"build failed: {exc.message}", "hint": exc.hint or ""}
    excludes = cxx.capability_excludes({"stock": stock.probe, "patched": patched.probe})
    runs = {}
    for side in (stock, patched):
        say(f"C++ doctest suite against the {side.name} libmlx")
        run = cxx.run_tests(binaries[side.name], cxx.side_lib_dir(side.venv), side.name, work / f"cxx-{side.name}.xml",
                            exclude=list(excludes))
        say(f"  {side.name}: " + ", ".join(f"{k} {v}" for k, v in sorted(run.counts().items())))
        (data_dir / f"cxx-{side.name}.json").write_text(json.dumps(run.to_json(), indent=1), encoding="utf-8")
        runs[side.name] = run
    cmp = suite.compare(runs["stock"], runs["patched"])
    return {
        "status": "done",
        "gate": ("pass" if cmp.parity else "fail"),
        "note": ("doctest binaries built from the pristine tree (stock side) and the patched tree (patched side), "
                 "each run with the libmlx its side installed"
                 + ("" if build_patched else "; the patched side runs stock MLX or the series is empty, so both "
                                             "sides use the one pristine build")),
        "capability_skips": excludes,
        "stock": {k: v for k, v in runs["stock"].to_json().items() if k != "results"},
        "patched": {k: v for k, v in runs["patched"].to_json().items() if k != "results"},
        "comparison": {"summary": cmp.summary(), "parity": cmp.parity,
                       "rows": [r.__dict__ for r in cmp.rows if r.status != "same"]},
    }
