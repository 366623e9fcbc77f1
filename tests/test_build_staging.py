"""Half-written staging directories in wheels/: cleaned after a killed build, never a live one's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from build_tools.build import STAGING_PREFIX, remove_stale_staging


def test_removes_staging_of_dead_and_pidless_builds_keeps_live_ones(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{STAGING_PREFIX}{dead.pid}-abc"
    legacy = tmp_path / f"{STAGING_PREFIX}535aleln"
    live = tmp_path / f"{STAGING_PREFIX}{os.getpid()}-xyz"
    for d in (stale, legacy, live):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "half.whl").write_bytes(b"partial")
    wheel = tmp_path / "mlx_cpu-0.31.1+fork.1.h0-py3-none-any.whl"
    wheel.write_bytes(b"done")
    assert sorted(p.name for p in remove_stale_staging(tmp_path)) == sorted([stale.name, legacy.name])
    assert live.is_dir() and wheel.is_file() and not stale.exists() and not legacy.exists()


def test_sigterm_unwinds_so_finally_blocks_run(tmp_path: Path) -> None:
    # What `build` relies on: mlx-fork's main turns SIGTERM into KeyboardInterrupt,
    # so its `finally: shutil.rmtree(staging)` runs and the exit status is 130.
    marker = tmp_path / "cleaned"
    script = (
        "import sys, time, pathlib\n"
        "from build_tools import cli\n"
        "def slow(args):\n"
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(30)\n"
        "    finally:\n"
        f"        pathlib.Path({str(marker)!r}).write_text('yes')\n"
        "from build_tools import series_cli\n"
        "series_cli._lint = slow\n"
        "sys.exit(cli.main(['patches', 'lint']))\n"
    )
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert marker.read_text() == "yes"
    assert "interrupted" in err
