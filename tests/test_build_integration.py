"""The main job on real MLX source: build v0.31.1 and pass verify (needs MLX_FORK_SOURCE; minutes).

The work directory is MLX_FORK_WORK (or the default cache) rather than a
temporary one, so the build slot and ccache stay warm between runs; wheels go
to a temporary directory. Set MLX_FORK_BUILD_LOCK on shared machines.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from build_tools.bases import load_base
from build_tools.build import BuildOptions, build
from build_tools.paths import work_dir
from build_tools.profiles import get_profile
from build_tools.series import load_series
from build_tools.verify import verify_wheel

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def _linux_only() -> None:
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the integration build test runs the linux-cpu profile")


def _check(result, wheels: Path, patches: int) -> None:
    manifest = result.manifest
    assert manifest.label.startswith(f"fork.{patches}.h")
    backend = [w for w in result.wheels if w.name.startswith("mlx_cpu-")]
    assert len(backend) == 1 and backend[0].is_file()
    with zipfile.ZipFile(backend[0]) as zf:
        provenance = json.loads(zf.read("mlx/lib/mlx-fork.json"))
    assert provenance["inputs"] == manifest.inputs
    assert (wheels / "simple" / "mlx-cpu" / "index.html").is_file()
    assert (wheels / "manifests" / (backend[0].name + ".json")).is_file()
    # Installable the other documented way too: --find-links wheels/ (frontend from PyPI or the mirror).
    checked = verify_wheel(backend[0], manifest, library="libmlx.so", wheel_dir=wheels, via="find-links")
    assert any(line.startswith("mx.__version__ == 0.31.1.0+fork.") for line in checked.checks)


def test_empty_series_builds_and_verifies(mlx_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _linux_only()
    project = tmp_path / "project"
    base_dir = project / "patches" / "v0.31.1"
    base_dir.mkdir(parents=True)
    shutil.copyfile(ROOT / "patches" / "v0.31.1" / "base.toml", base_dir / "base.toml")
    (base_dir / "series").write_text("# empty series: a stock rebuild with the fork label\n")
    monkeypatch.setenv("MLX_FORK_ROOT", str(project))
    base = load_base("v0.31.1", project / "patches")
    wheels = tmp_path / "wheels"
    opts = BuildOptions(base=base, profile=get_profile("linux-cpu"), source=mlx_source,
                        work=work_dir() / "integration-empty", wheels=wheels)
    result = build(opts)
    _check(result, wheels, patches=0)
    assert result.manifest.inputs["patches"] == []


def test_real_series_builds_and_verifies(mlx_source: Path, tmp_path: Path) -> None:
    _linux_only()
    base = load_base("v0.31.1", ROOT / "patches")
    series = load_series(base)
    wheels = tmp_path / "wheels"
    # The user's own work dir: a series that changes installed headers is built by upstream
    # setup.py, whose ccache settings only hit for the same absolute source path (the slot).
    opts = BuildOptions(base=base, profile=get_profile("linux-cpu"), source=mlx_source,
                        work=work_dir(), wheels=wheels)
    result = build(opts)
    _check(result, wheels, patches=len(series.patches))
    assert [p["name"] for p in result.manifest.inputs["patches"]] == [p.name for p in series.patches]
