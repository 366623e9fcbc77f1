from pathlib import Path

import pytest
from conftest import DEP3, Upstream, add_to_series, make_patch

from build_tools.bases import load_base
from build_tools.errors import MlxForkError
from build_tools.series import lint_series_dir, load_series, parse_patch, read_series_names


def _series_dir(project: Path) -> Path:
    return project / "patches" / "v0.1.0"


def test_headers_and_hunks_are_parsed(project: Path, upstream: Upstream) -> None:
    d = _series_dir(project)
    p = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 10\n", "line 10 patched\n")}, "fix scheduler")
    patch = parse_patch(p)
    assert patch.subject == "fix scheduler"
    assert patch.headers["Origin"] == "vendor"
    assert patch.backends == ["cpu"] and patch.verified == ["applies"] and not patch.public_headers
    assert patch.files[0].path == "mlx/scheduler.cpp" and patch.files[0].hunks == (7,)
    assert len(patch.sha256) == 64


def test_series_comments_and_order(project: Path, upstream: Upstream) -> None:
    d = _series_dir(project)
    a = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 10\n", "line 10 a\n")}, "a one")
    b = make_patch(upstream, d, {"mlx/array.cpp": ("line 5\n", "line 5 b\n")}, "b two")
    (d / "series").write_text(f"# leading comment\n{b.name}  # trailing comment\n\n{a.name} -p1\n")
    names, leading = read_series_names(d / "series")
    assert names == [b.name, a.name] and leading == ["# leading comment"]
    assert [p.name for p in load_series(load_base("v0.1.0")).patches] == [b.name, a.name]
    assert lint_series_dir(d) == []


@pytest.mark.parametrize(
    "line, message",
    [("x.patch -p0", "unsupported options"), ("sub/x.patch", "not a .patch file name"),
     ("notes.txt", "not a .patch file name")],
)
def test_malformed_series_lines(project: Path, line: str, message: str) -> None:
    d = _series_dir(project)
    (d / "series").write_text(line + "\n")
    with pytest.raises(MlxForkError, match=message):
        read_series_names(d / "series")
    assert message in str(lint_series_dir(d)[0])


def test_duplicate_and_missing_patch(project: Path) -> None:
    d = _series_dir(project)
    (d / "series").write_text("0001-a.patch\n0001-a.patch\n")
    with pytest.raises(MlxForkError, match="listed twice"):
        read_series_names(d / "series")
    (d / "series").write_text("0001-missing.patch\n")
    problems = lint_series_dir(d)
    assert len(problems) == 1 and "missing" in problems[0].message


def test_unlisted_patch_file_is_reported(project: Path, upstream: Upstream) -> None:
    d = _series_dir(project)
    make_patch(upstream, d, {"mlx/array.cpp": ("line 5\n", "line 5 b\n")}, "stray")
    assert any("not listed" in p.message for p in lint_series_dir(d))


def test_unknown_verified_rung_and_bad_values(project: Path, upstream: Upstream) -> None:
    d = _series_dir(project)
    headers = (DEP3.format(desc="bad")
               .replace("Verified: applies", "Verified: applies, ran-on-my-laptop")
               .replace("Backends: cpu", "Backends: cpu, tpu")
               .replace("Last-Update: 2026-11-01", "Last-Update: yesterday")
               .replace("Public-Headers: no", "Public-Headers: maybe"))
    p = make_patch(upstream, d, {"mlx/array.cpp": ("line 5\n", "line 5 b\n")}, "bad headers", headers=headers)
    add_to_series(d, p.name)
    messages = " | ".join(x.message for x in lint_series_dir(d))
    assert "unknown rung 'ran-on-my-laptop'" in messages
    assert "unknown backend 'tpu'" in messages
    assert "not YYYY-MM-DD" in messages
    assert "must be yes or no" in messages


def test_missing_headers_and_untruthful_public_headers(project: Path, upstream: Upstream) -> None:
    d = _series_dir(project)
    headers = DEP3.format(desc="header change").replace("Origin: vendor\n", "")
    p = make_patch(upstream, d, {"mlx/array.h": ("struct array {};", "struct array { int x; };")}, "touch header",
                   headers=headers)
    add_to_series(d, p.name)
    messages = [x.message for x in lint_series_dir(d)]
    assert "missing header Origin:" in messages
    assert any("changes installed headers: mlx/array.h" in m for m in messages)


def test_not_a_format_patch(project: Path) -> None:
    d = _series_dir(project)
    (d / "0001-plain.patch").write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    add_to_series(d, "0001-plain.patch")
    assert "not git format-patch output" in lint_series_dir(d)[0].message
