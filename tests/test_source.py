import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import Upstream, git

from build_tools.bases import load_base
from build_tools.cli import main
from build_tools.errors import MlxForkError
from build_tools.gittree import tree_id
from build_tools.source import extract_archive, prepare_source


def test_git_checkout_at_pinned_commit_is_copied_and_verified(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    pristine = prepare_source(load_base("v0.1.0"), upstream.repo)
    assert pristine.commit == upstream.v1_commit
    assert tree_id(pristine.path).tree == upstream.v1_tree
    assert (pristine.path.parent / "pristine.json").is_file()
    assert (pristine.path / "tools" / "run.sh").stat().st_mode & 0o100
    assert (pristine.path / "docs" / "latest").is_symlink()


def test_wrong_commit_names_both_commits(project: Path, upstream: Upstream) -> None:
    with pytest.raises(MlxForkError) as err:
        prepare_source(load_base("v0.2.0"), upstream.repo)  # checkout is at v0.1.0
    assert upstream.v1_commit in str(err.value) and upstream.v2_commit in str(err.value)
    assert "checkout v0.2.0" in str(err.value)


def test_local_modifications_are_ignored_and_never_touched(project: Path, upstream: Upstream) -> None:
    sched = upstream.repo / "mlx" / "scheduler.cpp"
    sched.write_text("local edit\n")
    status_before = git(upstream.repo, "status", "--porcelain")
    pristine = prepare_source(load_base("v0.1.0"), upstream.repo)
    assert (pristine.path / "mlx" / "scheduler.cpp").read_text().startswith("// scheduler line 1")
    assert sched.read_text() == "local edit\n"
    assert git(upstream.repo, "status", "--porcelain") == status_before


def test_bare_repository_holding_the_commit_works(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    for base in ("v0.1.0", "v0.2.0"):
        assert prepare_source(load_base(base), bare).files > 0


def test_plain_directory_verified_by_tree_hash(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(upstream.repo, plain, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    pristine = prepare_source(load_base("v0.1.0"), plain)
    assert pristine.origin.startswith("directory")


def test_corrupted_plain_directory_fails_with_expected_and_found(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(upstream.repo, plain, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    (plain / "mlx" / "array.cpp").write_text("corrupted\n")
    with pytest.raises(MlxForkError) as err:
        prepare_source(load_base("v0.1.0"), plain)
    assert upstream.v1_tree in str(err.value) and "found" in str(err.value)
    assert not (Path(project).parent / "work" / "v0.1.0" / "pristine").exists()


def test_missing_and_unreadable_sources(project: Path, tmp_path: Path) -> None:
    with pytest.raises(MlxForkError, match="does not exist"):
        prepare_source(load_base("v0.1.0"), tmp_path / "nope")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(MlxForkError, match="not a readable directory"):
        prepare_source(load_base("v0.1.0"), a_file)


def test_mlx_fork_source_env_is_used(project: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLX_FORK_SOURCE", str(upstream.repo))
    assert prepare_source(load_base("v0.1.0"), None).commit == upstream.v1_commit


def test_archive_extraction_checks_the_prefix(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(upstream.repo / "mlx", arcname="wrong-prefix/mlx")
    with pytest.raises(MlxForkError, match=r"expected top-level directory mlx-0.1.0/"):
        extract_archive(archive, "mlx-0.1.0", tmp_path / "out" / "tree")


def test_cli_source_prints_the_copy(project: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["source", "--base", "v0.1.0", "--source", str(upstream.repo)]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out).is_dir() and Path(out).name == "pristine"
    assert main(["source", "--base", "v0.9.9"]) == 1
