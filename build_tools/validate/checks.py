"""Backported upstream checks (backported/test_backported.py), one process per test per side."""

from __future__ import annotations

import ast
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .suite import SuiteRun, run_suite

CHECKS_FILE = Path(__file__).resolve().parent / "backported" / "test_backported.py"


def check_ids(path: Path = CHECKS_FILE) -> list[str]:
    """Test ids (module.Class.test) found statically, so listing needs no MLX."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    ids: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    ids.append(f"{path.stem}.{node.name}.{item.name}")
    return ids


def run_checks(
    sides: Sequence[tuple[str, Path]],
    out_dir: Path,
    timeout: float = 180.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, SuiteRun]:
    """Every check in a fresh process on every side; returns one merged SuiteRun per side."""
    merged = {name: SuiteRun(side=name, total=0, finished=True) for name, _ in sides}
    out_dir.mkdir(parents=True, exist_ok=True)
    for test_id in check_ids():
        for name, python in sides:
            with tempfile.TemporaryDirectory(prefix="mlxfork-chk-") as tmp:
                shutil.copy2(CHECKS_FILE, Path(tmp) / CHECKS_FILE.name)
                out = out_dir / f"{name}-{test_id.rsplit('.', 1)[-1]}.jsonl"
                run = _run_one(python, name, Path(tmp), out, test_id, timeout)
            merged[name].results.update(run.results)
            merged[name].total = (merged[name].total or 0) + 1
            merged[name].seconds += run.seconds
            if test_id not in run.results:  # never started (e.g. import failure)
                from .suite import TestOutcome
                merged[name].results[test_id] = TestOutcome("error", f"did not run (exit status {run.returncode})")
        progress(f"check {test_id}: " + ", ".join(
            f"{name} {merged[name].results[test_id].outcome}" for name, _ in sides))
    return merged


def _run_one(python: Path, side: str, tests_dir: Path, out: Path, test_id: str, timeout: float) -> SuiteRun:
    return run_suite(python, side, tests_dir, out, skips={}, timeout=timeout, only=test_id)
