"""The static checks configured in pyproject.toml pass: mypy (strict) and ruff.

Both run from the test environment (`scripts/setup` installs them with the
`test` extra), from the checkout's root so that they read its pyproject.toml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed in {sys.executable}: run scripts/setup (the `test` extra has it)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_mypy_strict_is_clean() -> None:
    proc = _run_tool("mypy")  # files and strictness come from [tool.mypy]
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    proc = _run_tool("ruff", "check", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr
