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
    timeout: float | None = None,
    inherit_env: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; with `log`, stream its output there and name the log on failure.

    `env` entries are added to the current environment (with `inherit_env=False`
    they are the whole environment); `input` is its stdin. A missing program or
    a run past `timeout` seconds is an MlxForkError, whatever `check` says.
    """
    argv = [str(c) for c in cmd]
    full_env = dict(os.environ) if inherit_env else {}
    if env:
        full_env.update(env)
    started = time.monotonic()
    try:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a", encoding="utf-8") as fh:
                fh.write(f"$ {' '.join(argv)}\n")
                fh.flush()
                proc = subprocess.run(argv, cwd=cwd, env=full_env, input=input, stdout=fh,
                                      stderr=subprocess.STDOUT, text=True, timeout=timeout)
            proc = subprocess.CompletedProcess(argv, proc.returncode, "", "")
        else:
            proc = subprocess.run(argv, cwd=cwd, env=full_env, input=input, capture_output=True, text=True,
                                  timeout=timeout)
    except FileNotFoundError as exc:
        raise MlxForkError(
            f"{step}: {argv[0]} not found", hint="run `mlx-fork doctor` for install commands"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise MlxForkError(f"{step}: {argv[0]} did not finish within {timeout:.0f}s",
                           hint=f"see {log}" if log is not None else None) from exc
    if check and proc.returncode != 0:
        elapsed = time.monotonic() - started
        where = f"see {log}" if log is not None else _tail(proc.stdout + proc.stderr)
        raise MlxForkError(
            f"{step} failed (exit {proc.returncode} after {elapsed:.0f}s): {' '.join(argv[:3])} ...",
            hint=where,
        )
    return proc


def version_line(cmd: Sequence[str | os.PathLike[str]], timeout: float = 60) -> str | None:
    """The first line a tool prints for `cmd` (e.g. `cc --version`): "" if it printed nothing, None if it did not run."""
    try:
        proc = run(cmd, step=f"{cmd[0]} version", check=False, timeout=timeout)
    except MlxForkError:
        return None
    except OSError:  # not executable
        return None
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def _tail(text: str, lines: int = 20) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"
