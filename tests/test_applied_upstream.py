"""`Applied-Upstream: vX.Y.Z` marks a patch whose bug upstream fixed its own way.

Such a patch neither applies nor reverse-applies on the newer tree; `patches
status` (and `rebase`) report it as already upstream from that release on, and
as a conflict before it or when the header does not start with a release.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEP3, Upstream, add_to_series, git, make_patch

from build_tools import patchqueue
from build_tools.cli import main
from build_tools.series import parse_patch


def _headers(applied_upstream: str) -> str:
    return DEP3.format(desc="our own fix of line five") + f"\nApplied-Upstream: {applied_upstream}"


def _own_way_patch(project: Path, upstream: Upstream, applied_upstream: str) -> Path:
    """Edits lines 2-4 of scheduler.cpp; v0.2.0 changes line 3 differently, so it conflicts there."""
    d = project / "patches" / "v0.1.0"
    edits = {"mlx/scheduler.cpp": ("line 2\n// scheduler line 3\n", "line 2 ours\n// scheduler line 3 ours\n")}
    p = make_patch(upstream, d, edits, "own fix", headers=_headers(applied_upstream), name="0001-own-fix.patch")
    add_to_series(d, p.name)
    return p


@pytest.mark.parametrize(
    ("header", "version", "expected"),
    [
        ("v0.2.0, https://github.com/ml-explore/mlx/pull/1", "0.2.0", "v0.2.0"),
        ("v0.2.0, https://github.com/ml-explore/mlx/pull/1", "0.3.1", "v0.2.0"),
        ("v0.2.0, https://github.com/ml-explore/mlx/pull/1", "0.1.9", None),
        ("0.2.0", "0.2.0", "v0.2.0"),
        ("partly in v0.2.0, https://github.com/ml-explore/mlx/pull/1", "0.2.0", None),
        ("v0.2.0", None, None),
    ],
)
def test_declared_upstream(project: Path, upstream: Upstream, header: str, version: str | None,
                           expected: str | None) -> None:
    patch = parse_patch(_own_way_patch(project, upstream, header))
    assert patchqueue.declared_upstream(patch, version) == expected


def test_status_reports_declared_fix_as_upstream(project: Path, upstream: Upstream, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _own_way_patch(project, upstream, "v0.2.0, https://github.com/ml-explore/mlx/pull/1")
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    assert main(["patches", "status", "--base", "v0.2.0", "--series", "v0.1.0", "--source", str(bare), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["upstream"]
    assert "Applied-Upstream: v0.2.0" in rows[0]["detail"]
    # On its own base it still applies.
    assert main(["patches", "status", "--base", "v0.1.0", "--source", str(bare), "--json"]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["applies"]


def test_status_without_release_in_header_is_a_conflict(project: Path, upstream: Upstream, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    _own_way_patch(project, upstream, "partly in v0.2.0")
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    assert main(["patches", "status", "--base", "v0.2.0", "--series", "v0.1.0", "--source", str(bare), "--json"]) == 1
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["conflict"]
