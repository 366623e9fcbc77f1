"""apply -> export with no edit gives back every real patch file byte for byte (needs MLX_FORK_SOURCE)."""

import shutil
from pathlib import Path

import pytest

from build_tools.bases import available_bases, load_base
from build_tools.cli import main
from build_tools.errors import MlxForkError
from build_tools.paths import patches_dir
from build_tools.source import prepare_source

pytestmark = pytest.mark.integration
BASES = available_bases()  # every pinned base under patches/


@pytest.mark.parametrize("base_name", BASES)
def test_export_of_an_unedited_queue_is_byte_identical(
    base_name: str, mlx_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Export writes into patches/<base>, so the round trip runs on a copy of patches/.
    project = tmp_path / "project"
    shutil.copytree(patches_dir(), project / "patches")
    monkeypatch.setenv("MLX_FORK_ROOT", str(project))
    monkeypatch.setenv("MLX_FORK_WORK", str(tmp_path / "work"))
    base = load_base(base_name)
    try:
        prepare_source(base, mlx_source, tmp_path / "work")
    except MlxForkError as exc:
        if "is at" in exc.message and "not the pinned" in exc.message:
            pytest.skip(f"MLX_FORK_SOURCE is a checkout of another commit ({exc.message}); "
                        "point it at a bare clone or mirror to test every base")
        raise
    before = {p.name: p.read_bytes() for p in base.directory.iterdir() if p.is_file()}
    queue = tmp_path / "queue"
    assert main(["patches", "apply", "--base", base_name, "--source", str(mlx_source), "--dest", str(queue)]) == 0
    assert main(["patches", "export", "--base", base_name, "--branch", "patch-queue", "--repo", str(queue)]) == 0
    after = {p.name: p.read_bytes() for p in base.directory.iterdir() if p.is_file()}
    assert sorted(after) == sorted(before)
    changed = [name for name in sorted(before) if after[name] != before[name]]
    assert changed == [], f"export rewrote unchanged patches of {base_name}: {changed}"
