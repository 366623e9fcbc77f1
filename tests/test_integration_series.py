"""source, status and apply on the real pinned MLX trees (needs MLX_FORK_SOURCE)."""

import subprocess
from pathlib import Path

import pytest

from build_tools import patchqueue
from build_tools.bases import available_bases, load_base
from build_tools.errors import MlxForkError
from build_tools.gittree import tree_id
from build_tools.series import lint_series_dir, load_series
from build_tools.source import prepare_source

pytestmark = pytest.mark.integration
BASES = available_bases()  # every pinned base under patches/


def _pristine(base_name: str, mlx_source: Path, work: Path):
    base = load_base(base_name)
    try:
        return base, prepare_source(base, mlx_source, work)
    except MlxForkError as exc:
        if "is at" in exc.message and "not the pinned" in exc.message:
            pytest.skip(f"MLX_FORK_SOURCE is a checkout of another commit ({exc.message}); "
                        "point it at a bare clone or mirror to test every base")
        raise


@pytest.mark.parametrize("base_name", BASES)
def test_source_verifies_the_real_tree(base_name: str, mlx_source: Path, tmp_path: Path) -> None:
    base, pristine = _pristine(base_name, mlx_source, tmp_path)
    assert tree_id(pristine.path).tree == base.tree
    assert (pristine.path / "mlx" / "version.h").is_file()


@pytest.mark.parametrize("base_name", BASES)
def test_series_lints_and_applies_to_the_real_tree(base_name: str, mlx_source: Path, tmp_path: Path) -> None:
    base, pristine = _pristine(base_name, mlx_source, tmp_path)
    assert lint_series_dir(base.directory) == []
    series = load_series(base)
    statuses = patchqueue.status(series, pristine.path, tmp_path / "status")
    assert [s.status for s in statuses] == [patchqueue.APPLIES] * len(series.patches), statuses
    dest = tmp_path / "patched"
    patchqueue.apply_series(series, pristine.path, dest)
    commits = subprocess.run(["git", "-C", str(dest), "rev-list", "--count", "pristine..HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert int(commits) == len(series.patches)
