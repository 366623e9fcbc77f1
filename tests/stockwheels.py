"""Real stock MLX wheels for packaging tests: downloaded once from PyPI, cached outside the repository.

Cache: $MLX_FORK_TEST_CACHE, else ~/.cache/mlx-fork-tests. Every file is checked
against the sha256 pinned in patches/<base>/base.toml before a test uses it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    env = os.environ.get("MLX_FORK_TEST_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "mlx-fork-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def pinned_sha256(base: str, filename: str) -> str:
    data = tomllib.loads((ROOT / "patches" / base / "base.toml").read_text())
    for wheel in data.get("stock_wheels", []):
        if wheel["filename"] == filename:
            return wheel["sha256"]
    raise AssertionError(f"{filename} is not pinned in patches/{base}/base.toml")


def stock_wheel(base: str, dist: str, version: str, platform_tag: str) -> Path:
    filename = f"{dist.replace('-', '_')}-{version}-py3-none-{platform_tag}.whl"
    path = cache_dir() / filename
    if not path.is_file():
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                 "--platform", platform_tag, "-d", tmp, f"{dist}=={version}"],
                capture_output=True, text=True,
            )
            assert proc.returncode == 0, f"pip download {dist}=={version} failed:\n{proc.stderr[-2000:]}"
            Path(tmp, filename).replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == pinned_sha256(base, filename), f"{path} does not match its pinned sha256"
    return path
