"""Shared helpers for crash-reproducer scenarios.

Each scenario is a small program run in a fresh interpreter of the side under
test. It ends by printing one line `MLXFORK-RESULT {json}` on stdout; the
parent classifies the run from that line, the exit status and the clock. A run
that never prints it (abort, hang, exit() from a library) is classified by the
parent, which is the point: those are the failures a `try` cannot see.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable

MARKER = "MLXFORK-RESULT "


def run_index() -> int:
    return int(os.environ.get("MLXFORK_RUN_INDEX", "0"))


def report(outcome: str, detail: str = "", **extra: object) -> None:
    """Print the one result line. outcome: ok | python-exception | wrong-result."""
    payload: dict[str, object] = {"outcome": outcome, "detail": detail[:500]}
    payload.update(extra)
    sys.stdout.write(MARKER + json.dumps(payload, sort_keys=True) + "\n")
    sys.stdout.flush()


def progress(message: str) -> None:
    """A breadcrumb on stderr: the last one names where a crash or hang happened."""
    sys.stderr.write(f"[scenario] {message}\n")
    sys.stderr.flush()


def main(body: Callable[[], None]) -> None:
    """Run body(); an exception escaping it is an unexpected python-exception."""
    try:
        body()
    except Exception as exc:  # the scenario's own checks decide what is expected
        traceback.print_exc()
        report("python-exception", f"{type(exc).__name__}: {exc}", expected=False)


def run_threads(worker: Callable[[int], None], count: int) -> None:
    """Start `count` threads running worker(0) .. worker(count - 1) at once and wait for all of them."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# MLX 0.31.2 and later make streams thread-local: evaluating a graph built on
# another thread's stream raises this instead of racing (upstream's fix of
# classes C and D, a semantics change). MLX 0.31.1 never raises it.
STREAM_OWNERSHIP_ERROR = "There is no Stream("


def is_stream_ownership_error(text: str) -> bool:
    return STREAM_OWNERSHIP_ERROR in text and "in current thread" in text
