"""`mlx-fork patches ...`: lint, status, apply, rebase and export of a base's series."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import patchqueue
from .bases import load_base
from .errors import MlxForkError
from .paths import PRIMARY_BASE, reports_dir, work_dir
from .proc import say
from .series import lint_series_dir, load_series
from .source import prepare_source


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    patches = sub.add_parser("patches", help="lint, status, apply, rebase or export the patch series")
    cmds = patches.add_subparsers(dest="patches_command", metavar="ACTION")
    cmds.required = True

    def common(p: argparse.ArgumentParser, source: bool = True) -> None:
        p.add_argument("--base", default=PRIMARY_BASE, help=f"pinned base (default {PRIMARY_BASE})")
        if source:
            p.add_argument("--source", type=Path,
                           help="MLX git checkout or plain source directory (default MLX_FORK_SOURCE, else download)")
            p.add_argument("--work-dir", type=Path, help="scratch directory (default MLX_FORK_WORK)")

    p = cmds.add_parser("lint", help="validate series files and DEP-3 headers")
    p.add_argument("--base", action="append", help="base to lint (default: all bases)")
    p.set_defaults(func=_lint)

    p = cmds.add_parser("status", help="classify each patch: applies / already upstream / conflicts")
    common(p)
    p.add_argument("--series", metavar="BASE",
                   help="classify this base's series instead (e.g. v0.31.1's series against --base v0.32.1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_status)

    p = cmds.add_parser("apply", help="apply the series to a pristine tree (no fuzz; fails closed)")
    common(p)
    p.add_argument("--dest", type=Path,
                   help="where to write the patched tree (default WORK/BASE/patched); "
                   "a git repository with one commit per patch")
    p.set_defaults(func=_apply)

    p = cmds.add_parser("rebase", help="port a series to another base and report the result")
    p.add_argument("--from", dest="from_base", default=PRIMARY_BASE, help="base whose series is ported")
    p.add_argument("--to", dest="to_base", required=True, help="target base (needs patches/<to>/base.toml)")
    p.add_argument("--source", type=Path, help="MLX source holding the target base (git repository or plain directory)")
    p.add_argument("--work-dir", type=Path)
    p.add_argument("--report", type=Path, help="report path without suffix (default reports/rebase-FROM-to-TO)")
    p.add_argument("--dry-run", action="store_true", help="only report; do not write the target series")
    p.add_argument("--force", action="store_true", help="replace a target series that already lists patches")
    p.set_defaults(func=_rebase)

    p = cmds.add_parser("export", help="regenerate patch files from a git branch (one commit per patch)")
    p.add_argument("--base", default=PRIMARY_BASE)
    p.add_argument("--branch", required=True, help="branch whose commits after the pinned tree are the series")
    p.add_argument("--repo", type=Path, default=Path("."), help="git repository holding the branch (default .)")
    p.set_defaults(func=_export)


def _lint(args: argparse.Namespace) -> int:
    from .bases import available_bases

    names = args.base or available_bases()
    if not names:
        raise MlxForkError("no bases found under patches/")
    failed = 0
    for name in names:
        base = load_base(name)
        problems = lint_series_dir(base.directory)
        count = len(load_series(base).patches) if not problems else "?"
        if problems:
            failed += 1
            for problem in problems:
                print(f"{name}/{problem}")
        else:
            print(f"{name}: ok ({count} patches)")
    return 1 if failed else 0


def _status(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    series = load_series(load_base(args.series) if args.series else base)
    work = args.work_dir or work_dir()
    pristine = prepare_source(base, args.source, work)
    results = patchqueue.status(series, pristine.path, work / base.name, version=base.version)
    if args.json:
        print(patchqueue.status_json(results))
    else:
        print(f"series {series.base} against MLX {base.tag} ({base.commit[:12]}):")
        if not results:
            print("  (the series is empty)")
        width = max([len(r.patch) for r in results] + [5])
        if results:
            print(f"  {'#':>3}  {'patch':<{width}}  {'status':<9} detail")
        for i, r in enumerate(results, start=1):
            print(f"  {i:>3}  {r.patch:<{width}}  {r.status:<9} {r.detail}")
    return 1 if any(r.status == patchqueue.CONFLICT for r in results) else 0


def _apply(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    series = load_series(base)
    work = args.work_dir or work_dir()
    pristine = prepare_source(base, args.source, work)
    dest = args.dest or work / base.name / "patched"
    say(f"applying {len(series.patches)} patches to {base.tag} in {dest}")
    patchqueue.apply_series(series, pristine.path, dest)
    for patch in series.patches:
        say(f"  applied {patch.name}")
    print(dest)
    return 0


def _rebase(args: argparse.Namespace) -> int:
    source_base = load_base(args.from_base)
    target = load_base(args.to_base)
    series = load_series(source_base)
    work = args.work_dir or work_dir()
    pristine = prepare_source(target, args.source, work)
    result = patchqueue.rebase(series, target, pristine.path, work / target.name, write=not args.dry_run, force=args.force)
    stem = args.report or reports_dir() / f"rebase-{source_base.name}-to-{target.name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    # Base names contain dots, so suffixes are appended, never substituted.
    markdown, as_json = Path(f"{stem}.md"), Path(f"{stem}.json")
    markdown.write_text(result.to_markdown(), encoding="utf-8")
    as_json.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(result.to_markdown())
    say(f"report written to {markdown} and {as_json.name}")
    if not args.dry_run:
        say(f"wrote {len(result.written)} patches and the series into {target.directory}")
    return 1 if any(s.status == patchqueue.CONFLICT for s in result.statuses) else 0


def _export(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    names = patchqueue.export(args.repo, args.branch, base)
    for name in names:
        print(name)
    say(f"wrote {len(names)} patches and the series of {base.name} from branch {args.branch}")
    return 0
