"""git, run through proc.run: how mlx-fork calls it and what it asks of a repository."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from .errors import MlxForkError
from .proc import run


def git(repo: Path, *args: str, check: bool = True, env: Mapping[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`git -C repo args...`; with `check`, a failure is an MlxForkError quoting git's stderr.

    `env` entries are added to the environment; `input` is git's stdin.
    """
    proc = run(["git", "-C", str(repo), *args], step=f"git {args[0]}", env=env, check=False, input=input)
    if check and proc.returncode != 0:
        raise MlxForkError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.strip()}")
    return proc


def git_in(git_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`git --git-dir git_dir args...`: a repository's git directory (bare or a checkout's .git), no work tree."""
    proc = run(["git", "--git-dir", str(git_dir), *args], step=f"git {args[0]}", check=False)
    if check and proc.returncode != 0:
        raise MlxForkError(f"git {' '.join(args)} failed in {git_dir}: {proc.stderr.strip()}")
    return proc


def git_output(repo: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """What `git -C repo args...` prints, stripped; MlxForkError if it fails."""
    return git(repo, *args, env=env).stdout.strip()


def git_dir(path: Path) -> str | None:
    """The git directory of the repository at `path`: a bare one, or a checkout whose top level is `path`.

    None otherwise: a plain directory that merely sits inside some other
    repository is not a checkout.
    """
    found = git(path, "rev-parse", "--absolute-git-dir", check=False)
    if found.returncode != 0:
        return None
    top = git(path, "rev-parse", "--is-bare-repository", "--show-toplevel", check=False).stdout.split()
    if top and top[0] == "true":
        return found.stdout.strip()
    if len(top) > 1 and Path(top[1]).resolve() == path.resolve():
        return found.stdout.strip()
    return None


def checkout_head(path: Path) -> str | None:
    """HEAD of the checkout at `path`; None for a plain directory (even one inside another checkout)."""
    top = git(path, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != path.resolve():
        return None
    head = git(path, "rev-parse", "HEAD", check=False)
    return head.stdout.strip() if head.returncode == 0 else None
