"""Shared fixtures: small upstream-like git repositories and a throw-away project.

Nothing here needs MLX source; tests that do use `mlx_source` and skip when
MLX_FORK_SOURCE is unset.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from build_tools.manifest import BuildInputs

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Upstream Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": os.environ.get("HOME", "/"),
}

DEP3 = """Description: {desc}
Origin: vendor
Bug: https://github.com/ml-explore/mlx/issues/1
Forwarded: not-needed
Author: Fork Dev <fork@example.com>
Last-Update: 2026-11-01
Backends: cpu
Retire-When: upstream fixes issue 1
Public-Headers: no
Verified: applies"""


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    assert proc.returncode == 0, f"git {args}: {proc.stderr}"
    return proc.stdout.strip()


SCHEDULER_V1 = "".join(f"// scheduler line {i}\n" for i in range(1, 31))
SCHEDULER_V2 = SCHEDULER_V1.replace("// scheduler line 3\n", "// scheduler line 3 (fixed upstream)\n")


@dataclass
class Upstream:
    repo: Path
    v1_commit: str
    v1_tree: str
    v2_commit: str
    v2_tree: str


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    """A tiny 'MLX': v0.1.0, then v0.2.0 which fixes line 3 of scheduler.cpp upstream."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "--initial-branch=main")
    (repo / "mlx").mkdir()
    (repo / "mlx" / "scheduler.cpp").write_text(SCHEDULER_V1)
    (repo / "mlx" / "array.h").write_text("#pragma once\nstruct array {};\n")
    (repo / "mlx" / "array.cpp").write_text("".join(f"// array line {i}\n" for i in range(1, 21)))
    (repo / "tools").mkdir()
    script = repo / "tools" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (repo / "docs").mkdir()
    (repo / "docs" / "latest").symlink_to("../mlx")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v0.1.0")
    git(repo, "tag", "v0.1.0")
    v1 = git(repo, "rev-parse", "HEAD")
    v1_tree = git(repo, "rev-parse", "HEAD^{tree}")
    (repo / "mlx" / "scheduler.cpp").write_text(SCHEDULER_V2)
    (repo / "mlx" / "array.cpp").write_text("// new upstream header\n" + (repo / "mlx" / "array.cpp").read_text())
    git(repo, "commit", "-qam", "v0.2.0")
    git(repo, "tag", "v0.2.0")
    v2 = git(repo, "rev-parse", "HEAD")
    v2_tree = git(repo, "rev-parse", "HEAD^{tree}")
    git(repo, "checkout", "-q", "v0.1.0")
    return Upstream(repo, v1, v1_tree, v2, v2_tree)


def write_base(project: Path, name: str, version: str, commit: str, tree: str) -> Path:
    directory = project / "patches" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "base.toml").write_text(
        f"""[base]
version = "{version}"
tag = "{name}"
commit = "{commit}"
tree = "{tree}"
archive_url = "https://example.invalid/{name}.tar.gz"
archive_prefix = "mlx-{version}"
build_stage_env = "stage"
"""
    )
    (directory / "series").write_text(f"# series for {name}\n")
    return directory


@pytest.fixture
def project(tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project checkout with bases v0.1.0 and v0.2.0 (empty series) and its own work dir."""
    root = tmp_path / "project"
    write_base(root, "v0.1.0", "0.1.0", upstream.v1_commit, upstream.v1_tree)
    write_base(root, "v0.2.0", "0.2.0", upstream.v2_commit, upstream.v2_tree)
    monkeypatch.setenv("MLX_FORK_ROOT", str(root))
    monkeypatch.setenv("MLX_FORK_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("MLX_FORK_SOURCE", raising=False)
    return root


def make_patch(upstream: Upstream, out_dir: Path, edits: dict[str, tuple[str, str]], subject: str,
               headers: str | None = None, name: str | None = None, at: str = "v0.1.0",
               abbrev: int | None = None) -> Path:
    """Commit `edits` ({path: (old, new)} text replacements) on top of `at`; write it as a format-patch file.

    Index lines name objects in full, or abbreviated to `abbrev` digits.
    """
    work = out_dir.parent / f"edit-{subject.replace(' ', '-')}"
    git(upstream.repo, "worktree", "add", "-q", "--detach", str(work), at)
    for path, (old, new) in edits.items():
        f = work / path
        text = f.read_text() if f.exists() else ""
        assert old in text, f"{old!r} not in {path}"
        f.write_text(text.replace(old, new, 1))
    git(work, "add", "-A")
    body = headers if headers is not None else DEP3.format(desc=subject)
    git(work, "commit", "-qm", f"{subject}\n\n{body}")
    out_dir.mkdir(parents=True, exist_ok=True)
    index = "--full-index" if abbrev is None else f"--abbrev={abbrev}"
    produced = git(work, "format-patch", "-1", "--zero-commit", "--no-signature", "-N", index, "-o", str(out_dir))
    patch = Path(produced.splitlines()[-1])
    if name:
        patch = patch.rename(out_dir / name)
    git(upstream.repo, "worktree", "remove", "--force", str(work))
    return patch


def add_to_series(directory: Path, *names: str) -> None:
    with (directory / "series").open("a") as fh:
        for n in names:
            fh.write(n + "\n")


@pytest.fixture
def mlx_source() -> Path:
    """The real MLX source for integration tests (MLX_FORK_SOURCE)."""
    value = os.environ.get("MLX_FORK_SOURCE")
    if not value:
        pytest.skip("MLX_FORK_SOURCE is unset: integration tests need an MLX git checkout or mirror (see README)")
    path = Path(value)
    if not path.exists():
        pytest.skip(f"MLX_FORK_SOURCE={value} does not exist")
    return path


def build_inputs(**over: object) -> BuildInputs:
    """The inputs of a made-up build (one patch, linux-cpu overlay); `over` replaces top-level fields."""
    data: dict[str, object] = {
        "base": {"name": "v0.31.1", "version": "0.31.1", "tag": "v0.31.1", "commit": "c" * 40, "tree": "t" * 40},
        "patches": [{"name": "0001-a.patch", "sha256": "1" * 64}],
        "platform": "linux-cpu",
        "packaging": "overlay",
        "cmake_args": ["-DBUILD_SHARED_LIBS=ON"],
        "dependencies": {"json": "system nlohmann-json 3.11.2"},
        "toolchain": {"cxx": "c++ 12.2.0", "sdk": None, "deployment_target": None},
        "stock_wheel": {"filename": "mlx_cpu.whl", "sha256": "2" * 64},
    }
    data.update(over)
    return BuildInputs.from_json(data)
