#!/usr/bin/env python3
"""Build speed of `mlx-fork build` against a bare `ninja mlx` of the same tree.

Measures, for one base on the linux-cpu profile:
  1. bare:    configure a pristine copy with the same CMake arguments, then time `ninja mlx`
              alone (no ccache: CCACHE_DISABLE=1), as the yardstick;
  2. cold:    `mlx-fork build` in an empty work directory, no ccache: everything from source
              export to a verified wheel, to compare with (1) (target: <= 1.10x);
  3. no-op:   the same `mlx-fork build` again, nothing changed (target: <= 20 s);
  4. edit:    a one-line patch to a .cpp file is added, built once, then edited and rebuilt
              with ccache on (target: <= 60 s for the rebuild after the edit).
Results go to stdout as a table and to --json. Run on a quiet machine: on a shared one,
set MLX_FORK_BUILD_LOCK so the compiles queue instead of competing, and expect noise.

  python benchmarks/build_speed.py --source /path/to/mlx [--base v0.31.1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from build_tools.bases import load_base  # noqa: E402
from build_tools.compile import build_lock, cmake_args_for  # noqa: E402
from build_tools.deps import provision  # noqa: E402
from build_tools.git import git  # noqa: E402
from build_tools.paths import work_dir  # noqa: E402
from build_tools.proc import run  # noqa: E402
from build_tools.profiles import get_profile  # noqa: E402
from build_tools.source import prepare_source  # noqa: E402

EDIT_FILE = "mlx/backend/cpu/encoder.cpp"


def timed(cmd: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> float:
    """Wall time of `cmd`, minus the time an `mlx-fork build` reports queueing for MLX_FORK_BUILD_LOCK."""
    started = time.monotonic()
    proc = run(cmd, step=cmd[0], env=env, inherit_env=False, cwd=cwd, check=False)
    elapsed = time.monotonic() - started
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)} (see {log})")
    waited = re.search(r"lock-wait (\d+)s", proc.stderr)
    return elapsed - (float(waited.group(1)) if waited else 0.0)


def make_patch(pristine: Path, scratch: Path, marker: str) -> str:
    """A format-patch adding one comment line to EDIT_FILE, with the DEP-3 headers lint wants."""
    repo = scratch / f"edit-{marker}"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    target = repo / EDIT_FILE
    target.parent.mkdir(parents=True)
    shutil.copyfile(pristine / EDIT_FILE, target)
    identity = ("-c", "user.name=Bench", "-c", "user.email=bench@example.com")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, *identity, "commit", "-qm", "base")
    # Real code, not a comment: a comment-only change is a ccache hit after preprocessing.
    target.write_text(target.read_text()
                      + f"\nnamespace mlx::core::cpu {{ int benchmark_edit_{marker}() {{ return {len(marker)}; }} }}\n")
    body = ("Benchmark edit\n\nDescription: benchmark edit\nOrigin: vendor\nForwarded: not-needed\n"
            "Author: Bench <bench@example.com>\nLast-Update: 2026-01-01\nBackends: cpu\n"
            "Retire-When: never\nPublic-Headers: no\nVerified: applies\n")
    git(repo, *identity, "commit", "-qam", body)
    return git(repo, "format-patch", "-1", "--stdout", "--zero-commit", "--no-signature").stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--base", default="v0.31.1")
    parser.add_argument("--scratch", type=Path, default=None, help="scratch dir (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-cold", action="store_true", help="only the no-op and edit measurements")
    args = parser.parse_args()

    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="mlx-fork-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    log = scratch / "bench.log"
    base = load_base(args.base, ROOT / "patches")
    profile = get_profile("linux-cpu")
    results: dict[str, float] = {}
    cold_env = {**os.environ, "CCACHE_DISABLE": "1"}
    # A project copy whose series this script may edit; the real series is not touched.
    project = scratch / "project"
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(ROOT / "patches" / args.base, project / "patches" / args.base)
    (project / "patches" / args.base / "series").write_text("# benchmark series\n")
    for old in (project / "patches" / args.base).glob("*.patch"):
        old.unlink()
    tool_env = {**os.environ, "MLX_FORK_ROOT": str(project)}
    mlx_fork = [sys.executable, "-m", "build_tools"]

    if not args.skip_cold:
        # 1. bare ninja of the same (pristine == empty-series) tree with the same arguments.
        bare = scratch / "bare"
        shutil.rmtree(bare, ignore_errors=True)
        pristine = prepare_source(base, args.source, scratch / "bare-work")
        shutil.copytree(pristine.path, bare / "src", symlinks=True)
        deps = provision(base, profile, bare / "deps")
        cmake = ["cmake", "-G", "Ninja", "-S", str(bare / "src"), "-B", str(bare / "build"),
                 *cmake_args_for(base, profile, deps, f"{base.version}+bench")]
        results["bare_configure_s"] = timed(cmake, cold_env, log)
        with build_lock():
            results["bare_ninja_s"] = timed(["ninja", "-C", str(bare / "build"), "mlx"], cold_env, log)
        # 2. cold mlx-fork build: empty work dir, no ccache.
        cold_work = scratch / "cold-work"
        shutil.rmtree(cold_work, ignore_errors=True)
        # Downloads are not compile time: seed the stock-wheel cache when one exists.
        if (work_dir() / "stock").is_dir():
            shutil.copytree(work_dir() / "stock", cold_work / "stock")
        env = {**tool_env, **cold_env, "MLX_FORK_WORK": str(cold_work)}
        results["cold_build_s"] = timed([*mlx_fork, "build", "--base", args.base, "--source", str(args.source)],
                                        env, log, cwd=project)
        results["cold_ratio"] = results["cold_build_s"] / results["bare_ninja_s"]

    # 3. no-op rebuild (ccache on, warm work dir).
    warm_work = scratch / "warm-work"
    if (work_dir() / "stock").is_dir() and not (warm_work / "stock").exists():
        shutil.copytree(work_dir() / "stock", warm_work / "stock")
    env = {**tool_env, "MLX_FORK_WORK": str(warm_work)}
    build_cmd = [*mlx_fork, "build", "--base", args.base, "--source", str(args.source)]
    results["warm_first_build_s"] = timed(build_cmd, env, log, cwd=project)
    results["noop_rebuild_s"] = timed(build_cmd, env, log, cwd=project)

    # 4. add a one-line patch, build; edit the patch, rebuild.
    series_dir = project / "patches" / args.base
    pristine_tree = warm_work / args.base / "pristine"
    (series_dir / "0001-benchmark-edit.patch").write_text(make_patch(pristine_tree, scratch, "one"))
    (series_dir / "series").write_text("# benchmark series\n0001-benchmark-edit.patch\n")
    results["add_patch_rebuild_s"] = timed(build_cmd, env, log, cwd=project)
    (series_dir / "0001-benchmark-edit.patch").write_text(make_patch(pristine_tree, scratch, "two"))
    results["edit_patch_rebuild_s"] = timed(build_cmd, env, log, cwd=project)

    print(f"{'measurement':28} {'value':>10}")
    for key, value in results.items():
        unit = "x" if key.endswith("ratio") else "s"
        print(f"{key:28} {value:10.2f}{unit}")
    print(f"\nlog: {log}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
