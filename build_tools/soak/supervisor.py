"""The supervisor: runs worker processes until every request is answered, restarting the dead.

A worker is a command (the soak runner in a side's venv; any program printing the
runner's events in the tests) started with the requests not yet started. The
supervisor reads its events, keeps the ledger, kills a worker that makes no
progress (no event other than a heartbeat with the same token count) for
`hang_s` seconds, and starts a new worker for what is left, up to `max_restarts`
restarts or `deadline` (time.monotonic()); what is still waiting then is unserved.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .accounting import Ledger, describe_exit
from .plan import Request

# (requests, life index) -> the worker's argv
WorkerCommand = Callable[[Sequence[Request], int], list[str]]


@dataclass(frozen=True)
class Limits:
    hang_s: float = 60.0
    max_restarts: int = 200
    deadline: float | None = None  # time.monotonic() after which no new worker starts


def _reader(stream: IO[str], out: queue.Queue[str | None]) -> None:
    for line in stream:
        out.put(line)
    out.put(None)


PROGRESS_EVERY = 100  # answered requests between progress lines
MARKERS = ("Fatal Python error", "terminate called", "what():", "Error", "error")


_PATH = re.compile(r"""/[^\s"':]*/([^/\s"':]+)""")


def _tail(path: Path, lines: int = 3) -> str:
    """What a dead worker said, without machine paths: the first line naming the fatal error (with the
    innermost frame of the faulting thread, where faulthandler names one), else its last lines."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    said = " | ".join(text[-lines:])
    for marker in MARKERS:
        hits = [i for i, line in enumerate(text) if marker in line]
        if hits:
            said = text[hits[0]].strip()
            current = [i for i, line in enumerate(text) if line.startswith("Current thread")]
            if current and current[0] + 1 < len(text):
                said += " in " + text[current[0] + 1].strip()
            break
    return _PATH.sub(r"\1", said)[-400:]


def supervise(ledger: Ledger, command: WorkerCommand, limits: Limits, log_dir: Path,
              progress: Callable[[str], None] = lambda _m: None) -> float:
    """Serve every request of the ledger; returns the wall time (s). Fills ledger.lives."""
    log_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    restarts = -1
    while ledger.waiting():
        restarts += 1
        if restarts > limits.max_restarts:
            progress(f"  stopping: {limits.max_restarts} restarts used; {len(ledger.waiting())} requests unserved")
            break
        if limits.deadline is not None and time.monotonic() > limits.deadline:
            progress(f"  stopping: out of time; {len(ledger.waiting())} requests unserved")
            break
        life = ledger.new_life(time.time())
        argv = command(ledger.waiting(), life.index)
        err_path = log_dir / f"worker-{life.index}.stderr"
        with err_path.open("w", encoding="utf-8") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        events: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_reader, args=(proc.stdout, events), daemon=True).start()
        last_progress = time.monotonic()
        tokens = -1
        clean = False
        hung = False
        while True:
            try:
                line = events.get(timeout=0.5)
            except queue.Empty:
                line = ""
            if line is None:  # stdout closed: the worker is gone
                break
            if line:
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = {}
                kind = ev.get("ev")
                now = time.time()
                if kind == "start":
                    ledger.started(int(ev["id"]), life)
                    last_progress = time.monotonic()
                elif kind == "done":
                    ledger.done(int(ev["id"]), ev, now)
                    last_progress = time.monotonic()
                    answered = len(ledger.records) - len(ledger.waiting()) - len(ledger.in_flight)
                    if answered % PROGRESS_EVERY == 0:
                        progress(f"  {answered}/{len(ledger.records)} answered, {len(ledger.lives)} worker(s), "
                                 f"{time.time() - t_start:.0f} s")
                elif kind == "beat":
                    if int(ev.get("tokens", 0)) != tokens:
                        tokens = int(ev.get("tokens", 0))
                        last_progress = time.monotonic()
                elif kind in ("ready", "exit"):
                    clean = clean or kind == "exit"
                    last_progress = time.monotonic()
            if not hung and time.monotonic() - last_progress > limits.hang_s:
                hung = True
                proc.kill()  # what it printed before is still read, up to the end of its output
        rc = proc.wait()
        if hung:
            end = "hang"
        elif rc == 0 and clean and not ledger.in_flight:
            end = "clean"
        else:
            end = describe_exit(rc)
        lost = ledger.life_ended(life, end, time.time(), "" if end == "clean" else _tail(err_path))
        if end != "clean":
            progress(f"  worker {life.index}: {end} after {life.served} requests; {len(lost)} in flight lost, "
                     f"{len(ledger.waiting())} waiting")
    return time.time() - t_start
