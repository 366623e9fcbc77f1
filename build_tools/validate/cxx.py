"""Upstream C++ doctest suite: built from each side's tree, run against each side's libmlx.

stock    the doctest binary built from the pristine pinned tree
patched  the doctest binary built from the patched tree (the same build as stock
         when the series is empty)
The binary links libmlx dynamically (BUILD_SHARED_LIBS=ON) through a RUNPATH,
so LD_LIBRARY_PATH pointing at a side's installed `mlx/lib` makes each binary
exercise exactly the library that side ships. Building per tree keeps the test
code and the headers it was compiled against matched with the library, also
when patches change public headers. The pristine build is reused across runs.

Outcomes come from doctest's JUnit reporter; a binary killed by a signal
leaves no XML and is recorded as one crashed pseudo-test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..bases import BasePin
from ..errors import MlxForkError
from ..proc import run, say
from .suite import SuiteRun, TestOutcome

NINJA_TARGET = "tests"


def build_tests(base: BasePin, tree: Path, work: Path, name: str) -> Path:
    """Configure + build the doctest binary of `tree` in work/cxx-build-<name> (heavy: holds MLX_FORK_BUILD_LOCK if set)."""
    from ..compile import ccache_env, cmake_args_for, configure, ninja
    from ..deps import DepsRequest, provision
    from ..profiles import get_profile

    profile = get_profile("linux-cpu")
    deps = provision(base, profile, work / "cxx-deps", DepsRequest(tests=True), work=work)
    args = [a for a in cmake_args_for(base, profile, deps, base.version)
            if not a.startswith("-DMLX_BUILD_TESTS=")] + ["-DMLX_BUILD_TESTS=ON"]
    build = work / f"cxx-build-{name}"
    env = {**ccache_env(work), **profile.env}
    logs = work / "logs"
    say(f"C++ tests ({name} tree): configure {build}")
    configure(tree, build, args, logs / f"cxx-configure-{name}.log", env)
    if _up_to_date(build, env):
        say(f"C++ tests ({name} tree): up to date")
    else:
        say(f"C++ tests ({name} tree): ninja tests (libmlx + the doctest binary; about 10 min cold on 2 cores)")
        ninja(build, NINJA_TARGET, logs / f"cxx-compile-{name}.log", env, jobs=min(2, os.cpu_count() or 1))
    binary = build / "tests" / "tests"
    if not binary.is_file():
        raise MlxForkError(f"C++ test build finished but {binary} is missing")
    return binary


def _up_to_date(build: Path, env: dict[str, str]) -> bool:
    """True when ninja has nothing to do: no need to queue for the shared build lock."""
    try:
        proc = run(["ninja", "-C", build, "-n", NINJA_TARGET], step="ninja -n", env=env, check=False)
    except MlxForkError:  # no ninja
        return False
    return proc.returncode == 0 and "no work to do" in proc.stdout


def side_lib_dir(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages/mlx/lib"))
    if not found:
        raise MlxForkError(f"no mlx/lib in {venv}")
    return found[0]


def parse_junit(text: str, side: str) -> SuiteRun:
    run = SuiteRun(side=side, finished=True)
    root = ET.fromstring(text)
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        file = case.get("classname", "")
        key = f"{Path(file).name}::{name}" if file else name
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        if error is not None:
            out = TestOutcome("error", (error.get("message") or "") + "\n" + (error.text or ""))
        elif failure is not None:
            out = TestOutcome("fail", (failure.get("message") or "") + "\n" + (failure.text or ""))
        elif skipped is not None:
            out = TestOutcome("skip", skipped.get("message") or "")
        else:
            out = TestOutcome("pass")
        out.seconds = float(case.get("time", "0") or 0)
        if key in run.results and run.results[key].outcome != "pass":
            continue  # doctest repeats a case per subcase; keep the first failure
        run.results[key] = out
    run.total = len(run.results)
    return run


# Capabilities a side may lack -> doctest test-case name filter and reason (as suite.CAPABILITIES).
CAPABILITY_FILTERS: dict[str, tuple[str, str]] = {
    "gguf": ("*gguf*", "GGUF support not built (MLX_BUILD_GGUF=OFF: no offline gguflib) on {sides}"),
}


def capability_excludes(probes: dict[str, dict[str, Any]]) -> dict[str, str]:
    """doctest name filter -> reason, for capabilities missing on any side; excluded on both sides alike."""
    out: dict[str, str] = {}
    for key, (pattern, reason) in CAPABILITY_FILTERS.items():
        lacking = sorted(side for side, probe in probes.items() if not probe.get(key, False))
        if lacking:
            out[pattern] = reason.format(sides=" and ".join(lacking))
    return out


def run_tests(binary: Path, lib_dir: Path, side: str, out_xml: Path, timeout: float = 900.0,
              exclude: list[str] | None = None) -> SuiteRun:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(lib_dir) + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    started = time.monotonic()
    out_xml.unlink(missing_ok=True)
    cmd = [str(binary), "--reporters=junit", f"--out={out_xml}", "--no-path-filenames"]
    if exclude:
        cmd.append("--test-case-exclude=" + ",".join(exclude))
    proc = subprocess.Popen(cmd,
                            cwd=binary.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    timed_out = False
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        timed_out = True
    text = out_xml.read_text(encoding="utf-8", errors="replace") if out_xml.exists() else ""
    try:
        run = parse_junit(text, side) if text.strip() else None
    except ET.ParseError:
        run = None
    if run is None or proc.returncode < 0 or timed_out:
        run = run or SuiteRun(side=side)
        what = "hang" if timed_out else "crash"
        why = "timed out" if timed_out else f"exit status {proc.returncode}: {(err or '').strip()[-300:]}"
        run.results["<doctest binary>"] = TestOutcome(what, why)
        run.finished = False
    run.returncode = proc.returncode
    run.seconds = time.monotonic() - started
    return run
