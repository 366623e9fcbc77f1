"""Stage 1: a verified, pristine copy of the pinned MLX tree.

Sources, in order of preference: `--source PATH` (a git checkout or repository,
or a plain directory such as an extracted archive), `MLX_FORK_SOURCE`, or the
upstream tag archive. The copy is written to the work directory and checked
against the pin: for a git source, the pinned commit must be the one checked
out; every copy is then hashed as a git tree and compared with the pinned tree
id. The user's source is only read, never modified.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from .bases import BasePin, load_base
from .errors import MlxForkError
from .git import git, git_dir, git_output
from .gittree import tree_id
from .paths import PRIMARY_BASE, source_from_env, work_dir
from .proc import say

# Written beside the copy, never inside it: the copy is exactly the pinned tree.
RECORD_NAME = "pristine.json"


@dataclass(frozen=True)
class PristineTree:
    base: str
    path: Path  # the verified copy; never modified
    origin: str  # where it came from, for logs and provenance
    commit: str
    tree: str
    files: int

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def pristine_dir(base: BasePin, work: Path) -> Path:
    return work / base.name / "pristine"


def prepare_source(base: BasePin, source: Path | None, work: Path | None = None) -> PristineTree:
    """Write a fresh verified pristine copy of `base` and return it.

    `source` None means MLX_FORK_SOURCE, else the upstream archive. The copy is
    made anew each time (a git export takes well under a second), so a stale
    or edited copy can never be mistaken for the pin.
    """
    work = work or work_dir()
    source = source or source_from_env()
    dest = pristine_dir(base, work)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="pristine-", dir=dest.parent))
    try:
        tree_root = staging / "tree"
        if source is None:
            origin = _copy_from_archive(base, tree_root, staging)
        else:
            origin = _copy_from_path(base, source, tree_root)
        summary = tree_id(tree_root)
        if summary.tree != base.tree:
            raise MlxForkError(
                f"{origin}: the files are not the pinned tree of MLX {base.tag}: "
                f"expected git tree {base.tree}, found {summary.tree} ({summary.files} files)",
                hint="extra files (build directories, caches), edited files or lost executable "
                "bits all change the tree id; use a clean checkout or the release archive",
            )
        pristine = PristineTree(base.name, dest, origin, base.commit, summary.tree, summary.files)
        if dest.exists():
            shutil.rmtree(dest)
        tree_root.rename(dest)
        (dest.parent / RECORD_NAME).write_text(json.dumps(pristine.to_json(), indent=2) + "\n")
        return pristine
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_from_path(base: BasePin, source: Path, dest: Path) -> str:
    source = source.expanduser()
    if not source.exists():
        raise MlxForkError(f"source {source} does not exist")
    if not os.access(source, os.R_OK | os.X_OK) or not source.is_dir():
        raise MlxForkError(f"source {source} is not a readable directory")
    if git_dir(source) is not None:
        return _copy_from_git(base, source, dest)
    say(f"copying plain directory {source} (no .git: verified by git tree hash)")
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    return f"directory {source}"


def _copy_from_git(base: BasePin, source: Path, dest: Path) -> str:
    bare = git_output(source, "rev-parse", "--is-bare-repository") == "true"
    if bare:
        # A bare repository or mirror: take the pinned commit if it holds it.
        found = git(source, "cat-file", "-e", f"{base.commit}^{{commit}}", check=False)
        if found.returncode != 0:
            raise MlxForkError(
                f"git repository {source} does not contain commit {base.commit} ({base.tag})",
                hint="fetch the tag: git fetch --tags",
            )
        commit = base.commit
    else:
        commit = git_output(source, "rev-parse", "HEAD")
        if commit != base.commit:
            described = git(source, "describe", "--tags", "--always", commit, check=False).stdout.strip()
            raise MlxForkError(
                f"git checkout {source} is at {commit} ({described}), "
                f"not the pinned {base.tag} commit {base.commit}",
                hint=f"git -C {source} checkout {base.tag}",
            )
        dirty = git_output(source, "status", "--porcelain", "--untracked-files=no")
        if dirty:
            say(f"{source} has local modifications; they are ignored (the pinned commit is copied)")
    tree = git_output(source, "rev-parse", f"{commit}^{{tree}}")
    if tree != base.tree:
        raise MlxForkError(f"commit {commit} has tree {tree}, but the pin says {base.tree}")
    # Export the commit through a throw-away index, so the user's index and
    # working tree are never touched and no .gitattributes export rule applies.
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        worktree = f"--work-tree={dest.resolve()}"
        git_output(source, worktree, "read-tree", commit, env=env)
        git_output(source, worktree, "checkout-index", "--all", env=env)
    say(f"exported {base.tag} ({commit[:12]}) from git repository {source}")
    return f"git {source} @ {commit}"


def _copy_from_archive(base: BasePin, dest: Path, staging: Path) -> str:
    archive = staging / "source.tar.gz"
    say(f"no --source given and MLX_FORK_SOURCE unset: downloading {base.archive_url}")
    try:
        with urllib.request.urlopen(base.archive_url, timeout=60) as response, archive.open("wb") as fh:
            shutil.copyfileobj(response, fh)
    except OSError as exc:
        raise MlxForkError(
            f"could not download {base.archive_url}: {exc}",
            hint="pass --source PATH (a git checkout of MLX or an extracted release archive)",
        ) from exc
    return extract_archive(archive, base.archive_prefix, dest)


def extract_archive(archive: Path, prefix: str, dest: Path) -> str:
    """Extract a tag archive's top-level `prefix` directory to `dest`."""
    unpack = dest.parent / "unpack"
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(unpack, filter="data")
            else:  # pragma: no cover - Python without PEP 706
                tar.extractall(unpack)
    except (tarfile.TarError, OSError) as exc:
        raise MlxForkError(f"{archive}: not a readable tar archive: {exc}") from exc
    top = unpack / prefix
    if not top.is_dir():
        found = ", ".join(sorted(p.name for p in unpack.iterdir())) or "nothing"
        raise MlxForkError(f"{archive}: expected top-level directory {prefix}/, found {found}")
    top.rename(dest)
    return f"archive {archive.name}"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "source",
        help="make a verified pristine copy of a pinned MLX tree",
        description="Copy the pinned MLX tree from --source (git checkout or plain directory), "
        "MLX_FORK_SOURCE, or the upstream archive into the work directory, and prove it is "
        "the pinned commit/tree. Prints the path of the copy.",
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"pinned base (default {PRIMARY_BASE})")
    p.add_argument("--source", type=Path, help="MLX git checkout or plain source directory")
    p.add_argument("--work-dir", type=Path, help="scratch directory (default MLX_FORK_WORK or ~/.cache/mlx-fork)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_source)


def _cmd_source(args: argparse.Namespace) -> int:
    base = load_base(args.base)
    pristine = prepare_source(base, args.source, args.work_dir)
    if args.json:
        print(json.dumps(pristine.to_json(), indent=2))
    else:
        say(f"{base.tag}: verified commit {pristine.commit[:12]}, tree {pristine.tree[:12]}, "
            f"{pristine.files} files ({pristine.origin})")
        print(pristine.path)
    return 0
