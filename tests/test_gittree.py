from pathlib import Path

from conftest import Upstream, git

from build_tools.gittree import hash_object, tree_id


def test_tree_id_matches_git_for_files_exec_bits_and_symlinks(upstream: Upstream, tmp_path: Path) -> None:
    # The upstream fixture has a nested dir, an executable script and a symlink.
    assert tree_id(upstream.repo).tree == upstream.v1_tree


def test_empty_directories_do_not_count(upstream: Upstream) -> None:
    (upstream.repo / "empty" / "nested").mkdir(parents=True)
    assert tree_id(upstream.repo).tree == upstream.v1_tree


def test_lost_exec_bit_changes_the_tree(upstream: Upstream) -> None:
    (upstream.repo / "tools" / "run.sh").chmod(0o644)
    assert tree_id(upstream.repo).tree != upstream.v1_tree


def test_blob_hash_is_gits(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_text("hello\n")
    assert hash_object("blob", b"hello\n") == git(tmp_path, "hash-object", str(f))
    assert hash_object("blob", b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
