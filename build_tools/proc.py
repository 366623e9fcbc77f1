"""Running external tools: argument lists only, output to a log, failures that say where to look."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import MlxForkError


def say(message: str) -> None:
    """Progress for the user, on stderr so stdout stays composable (tables, --json)."""
    print(f"mlx-fork: {message}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    step: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; with `log`, stream its output there and name the log on failure.

    `env` entries are added to the current environment; `input` is its stdin.
    """
    argv = [str(c) for c in cmd]
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    started = time.monotonic()
    try:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"$ {' '.join(argv)}\n")
                fh.flush()
                proc = subprocess.run(
                    argv, cwd=cwd, env=full_env, input=input, stdout=fh, stderr=subprocess.STDOUT, text=True
                )
            proc = subprocess.CompletedProcess(argv, proc.returncode, "", "")
        else:
            proc = subprocess.run(argv, cwd=cwd, env=full_env, input=input, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise MlxForkError(
            f"{step}: {argv[0]} not found", hint="run `mlx-fork doctor` for install commands"
        ) from exc
    if check and proc.returncode != 0:
        elapsed = time.monotonic() - started
        where = f"see {log}" if log is not None else _tail(proc.stdout + proc.stderr)
        raise MlxForkError(
            f"{step} failed (exit {proc.returncode} after {elapsed:.0f}s): {' '.join(argv[:3])} ...",
            hint=where,
        )
    return proc


def _tail(text: str, lines: int = 20) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"
