"""The compile toolkit: a patched tree into a build dir, CMake + Ninja, progress, the build lock.

Shared by `mlx-fork build` (build.py), the full packaging's setup.py stages
(package.py), the C++ test binaries of `validate` (validate/cxx.py), the
simulated Metal runtime (simulate.py) and benchmarks/build_speed.py.

  sync       a tree copied into a persistent source dir file by file, only where
             bytes differ: unchanged files keep their timestamps, so Ninja (and
             ccache) rebuild only what changed
  configure  CMake, skipped while the build dir was configured with the same arguments
  ninja      Ninja's [n/m] lines as progress on stderr, the full output in a log
  lock       MLX_FORK_BUILD_LOCK serialises heavy compiles on a shared machine
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .bases import BasePin
from .deps import Provisioned
from .errors import MlxForkError
from .proc import run, say
from .profiles import Profile
from .tools import cmake_program

NINJA_TARGET = "mlx"
_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
# Not part of the MLX tree: the pristine marker and the queue repository.
_SYNC_IGNORE = {".git", ".mlx-fork-pristine.json"}


# ---------------------------------------------------------------- tree sync


@dataclass(frozen=True)
class SyncReport:
    copied: list[str]
    removed: list[str]


def sync_tree(src: Path, dest: Path) -> SyncReport:
    """Make `dest` hold exactly the files of `src`, touching only files whose bytes differ."""
    copied: list[str] = []
    removed: list[str] = []
    dest.mkdir(parents=True, exist_ok=True)
    wanted: set[str] = set()
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in _SYNC_IGNORE or Path(root) != src]
        rel_root = Path(root).relative_to(src)
        for name in dirs:
            path = Path(root) / name
            if path.is_symlink():  # os.walk lists symlinks to dirs as dirs
                files.append(name)
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
        for name in files:
            if rel_root == Path(".") and name in _SYNC_IGNORE:
                continue
            rel = str(rel_root / name)
            wanted.add(rel)
            s, d = Path(root) / name, dest / rel
            if s.is_symlink():
                target = os.readlink(s)
                if d.is_symlink() and os.readlink(d) == target:
                    continue
                _remove(d)
                d.parent.mkdir(parents=True, exist_ok=True)
                d.symlink_to(target)
                copied.append(rel)
                continue
            if d.is_file() and not d.is_symlink() and _same_file(s, d):
                continue
            _remove(d)
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(s, d)  # new mtime: the build sees the change
            shutil.copymode(s, d)
            copied.append(rel)
    for root, dirs, files in os.walk(dest, topdown=False):
        rel_root = Path(root).relative_to(dest)
        for name in files + [d for d in dirs if (Path(root) / d).is_symlink()]:
            rel = str(rel_root / name)
            if rel not in wanted:
                (Path(root) / name).unlink()
                removed.append(rel)
        if Path(root) != dest and not any(Path(root).iterdir()):
            Path(root).rmdir()
    return SyncReport(sorted(copied), sorted(removed))


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


# ---------------------------------------------------------------- compile


# Seconds spent waiting for MLX_FORK_BUILD_LOCK in this process (reported apart from compile time).
LOCK_WAIT: list[float] = [0.0]


@contextlib.contextmanager
def build_lock() -> Iterator[None]:
    """Hold MLX_FORK_BUILD_LOCK (a lock file) while compiling, when set.

    Machines shared by several builds use it to run one heavy compile at a time
    (an fcntl lock: the same lock `flock(1)` takes on that file).
    """
    path = os.environ.get("MLX_FORK_BUILD_LOCK")
    if not path:
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"compile: waiting for the build lock {path}")
            waited = time.monotonic()
            fcntl.flock(fh, fcntl.LOCK_EX)
            waited = time.monotonic() - waited
            LOCK_WAIT[0] += waited
            say(f"compile: got the build lock after {format_seconds(waited)}")
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ccache_env(work: Path) -> dict[str, str]:
    """ccache settings that let identical sources in different slots share hits."""
    env: dict[str, str] = {}
    if shutil.which("ccache") is None:
        return env
    env.setdefault("CCACHE_BASEDIR", os.environ.get("CCACHE_BASEDIR", str(work)))
    env.setdefault("CCACHE_NOHASHDIR", os.environ.get("CCACHE_NOHASHDIR", "1"))
    return env


def configure(tree: Path, build: Path, cmake_args: list[str], log: Path, env: dict[str, str],
              cmake: str = "cmake") -> bool:
    """Run CMake unless the build dir was configured with exactly these arguments. True if it ran."""
    stamp = build / "mlx-fork-configure.txt"
    wanted = "\n".join([str(tree.resolve())] + cmake_args) + "\n"
    if (build / "build.ninja").is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return False
    build.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    # Cache entries outlive the arguments that set them (a -DUSE_SYSTEM_FMT=ON dropped
    # from the arguments stays ON): configure from a fresh cache. Objects are kept, and
    # Ninja rebuilds only those whose compile lines changed.
    (build / "CMakeCache.txt").unlink(missing_ok=True)
    run([cmake, "-G", "Ninja", "-S", tree, "-B", build, *cmake_args], step="configure (cmake)", env=env, log=log)
    stamp.write_text(wanted)
    return True


def run_with_progress(cmd: list[str], *, step: str, log: Path, env: dict[str, str], cwd: Path | None = None,
                      locked: bool = True) -> int:
    """Run a compile command under the build lock, output to `log`, Ninja's [n/m] lines as progress on stderr.

    Returns the number of build edges Ninja reported (0 if it printed none).
    """
    full_env = {**os.environ, **env, "NINJA_STATUS": "[%f/%t] "}
    last_report = 0.0
    done = total = 0
    log.parent.mkdir(parents=True, exist_ok=True)
    lock = build_lock() if locked else contextlib.nullcontext()
    with log.open("a", encoding="utf-8") as fh, lock:
        started = time.monotonic()  # after the lock: report compile time, not queueing time
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
        except FileNotFoundError as exc:
            raise MlxForkError(f"{step}: {cmd[0]} not found", hint="run `mlx-fork doctor`") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            match = _PROGRESS.match(line)
            if match:
                done, total = int(match.group(1)), int(match.group(2))
                now = time.monotonic()
                if now - last_report >= 10 or done == total:
                    last_report = now
                    say(f"{step}: [{done}/{total}] {100 * done // max(total, 1)}% "
                        f"{format_seconds(now - started)} {line.split('] ', 1)[-1].strip()[:70]}")
        rc = proc.wait()
    if rc != 0:
        raise MlxForkError(f"{step} failed (exit {rc}) after {format_seconds(time.monotonic() - started)}",
                           hint=f"see {log} (search for 'FAILED:' or 'error')")
    return total if done else 0


def ninja(build: Path, target: str, log: Path, env: dict[str, str], jobs: int | None = None) -> int:
    """`ninja target` with a progress line on stderr every few seconds; returns the edges run."""
    cmd = ["ninja", "-C", str(build), target]
    if jobs:
        cmd[1:1] = ["-j", str(jobs)]
    return run_with_progress(cmd, step=f"compile (ninja {target})", log=log, env=env)


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def cmake_args_for(base: BasePin, profile: Profile, deps: Provisioned, version: str,
                   defines: tuple[str, ...] = ()) -> list[str]:
    return [*profile.cmake_args, *deps.cmake_args, *(f"-D{d}" for d in defines), f"-DMLX_VERSION={version}"]


def compile_tree(tree: Path, build: Path, cmake_args: list[str], logs: Path, *, work: Path,
                 profile: Profile, jobs: int | None = None) -> Path:
    """Configure (if needed) and build libmlx; returns the library path."""
    env = {**ccache_env(work), **profile.env}
    say(f"configure: {build} ({'reusing' if (build / 'build.ninja').exists() else 'new'} build dir)")
    configure(tree, build, cmake_args, logs / "configure.log", env, cmake_program(profile.cmake_minimum))
    ninja(build, NINJA_TARGET, logs / "compile.log", env, jobs)
    library = build / profile.library
    if not library.is_file():
        raise MlxForkError(f"compile finished but {library} is missing",
                           hint="BUILD_SHARED_LIBS=ON must be set (a static libmlx ships nothing)")
    return library
