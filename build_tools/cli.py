"""The `mlx-fork` command line: one subcommand per pipeline stage.

Each stage module exposes `register(subparsers)`, which adds its subcommand(s)
and sets `func` (taking the parsed namespace, returning an exit code) as the
parser default. This file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from . import __version__
from .errors import MlxForkError

# Order is the order of `mlx-fork --help`, which follows the pipeline.
STAGE_MODULES: tuple[str, ...] = (
    "build_tools.base_add",
    "build_tools.source",
    "build_tools.series_cli",
    "build_tools.deps",
    "build_tools.build",
    "build_tools.package",
    "build_tools.index",
    "build_tools.verify",
    "build_tools.validate",
    "build_tools.soak",
    "build_tools.check_metal",
    "build_tools.simulate",
    "build_tools.stack",
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-fork",
        description="Build, package and validate a patched MLX from pinned upstream source and a patch series.",
    )
    parser.add_argument("--version", action="version", version=f"mlx-fork {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in STAGE_MODULES:
        # Every stage is imported and registered, or the CLI fails here: a stage
        # that cannot be imported must not just vanish from `mlx-fork --help`.
        module = importlib.import_module(name)
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so `finally` blocks
    # remove half-written staging directories and partial trees.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        return int(args.func(args) or 0)
    except MlxForkError as exc:
        print(f"mlx-fork {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
