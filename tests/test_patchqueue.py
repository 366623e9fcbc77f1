import json
import subprocess
from pathlib import Path

import pytest
from conftest import SCHEDULER_V1, Upstream, add_to_series, git, make_patch

from build_tools import patchqueue
from build_tools.bases import load_base
from build_tools.cli import main
from build_tools.errors import MlxForkError
from build_tools.series import load_series
from build_tools.source import prepare_source


def _pristine(base: str, upstream: Upstream, tmp_path: Path) -> Path:
    bare = tmp_path / "mirror.git"
    if not bare.exists():
        git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    return prepare_source(load_base(base), bare).path


@pytest.fixture
def three_patches(project: Path, upstream: Upstream) -> Path:
    """v0.1.0 series: one upstream fixes in v0.2.0, one that conflicts there, one that carries."""
    d = project / "patches" / "v0.1.0"
    p1 = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 3\n", "line 3 (fixed upstream)\n")}, "fix line three",
                    name="0001-fix-line-three.patch")
    p2 = make_patch(upstream, d, {"mlx/array.cpp": ("// array line 1\n", "// array line 1 ours\n")}, "array top",
                    name="0002-array-top.patch")
    p3 = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 20\n", "line 20 ours\n")}, "scheduler twenty",
                    name="0003-scheduler-twenty.patch")
    add_to_series(d, p1.name, p2.name, p3.name)
    return d


def test_status_all_apply_on_own_base(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    base = load_base("v0.1.0")
    results = patchqueue.status(load_series(base), _pristine("v0.1.0", upstream, tmp_path), tmp_path / "s")
    assert [r.status for r in results] == ["applies"] * 3


def test_status_on_newer_base_classifies_upstream_and_conflict(three_patches: Path, upstream: Upstream, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    code = main(["patches", "status", "--base", "v0.2.0", "--series", "v0.1.0", "--source", str(bare), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [r["status"] for r in rows] == ["upstream", "conflict", "applies"]
    assert rows[1]["file"] == "mlx/array.cpp" and rows[1]["hunk"] == 1
    assert "mlx/array.cpp hunk 1" in rows[1]["detail"]


def test_apply_commits_each_patch_and_keeps_headers(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    dest = tmp_path / "patched"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    log = git(dest, "log", "--format=%s", "pristine..HEAD").splitlines()
    assert log == ["scheduler twenty", "array top", "fix line three"]
    assert "Retire-When: upstream fixes issue 1" in git(dest, "log", "-1", "--format=%B")
    assert "line 20 ours" in (dest / "mlx" / "scheduler.cpp").read_text()



def test_patched_tree_is_made_once_per_series(three_patches: Path, upstream: Upstream, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    series = load_series(load_base("v0.1.0"))
    pristine = _pristine("v0.1.0", upstream, tmp_path)
    tree = patchqueue.patched_tree(series, pristine, tmp_path / "trees")
    assert tree.name == f"patched-{patchqueue.series_digest(series)}"
    assert "line 20 ours" in (tree / "mlx" / "scheduler.cpp").read_text()

    def no_second_apply(*args: object, **kwargs: object) -> None:
        raise AssertionError("applied again")

    monkeypatch.setattr(patchqueue, "apply_series", no_second_apply)
    assert patchqueue.patched_tree(series, pristine, tmp_path / "trees") == tree

def test_apply_fails_closed_naming_patch_and_hunk(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    d = project / "patches" / "v0.1.0"
    good = make_patch(upstream, d, {"mlx/array.cpp": ("line 2\n", "line 2 ok\n")}, "good one")
    # Made against v0.2.0's scheduler.cpp, whose context (line 3) differs from v0.1.0's:
    # `patch` would apply it with fuzz; git apply must refuse it.
    fuzzy = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 5\n", "line 5 fuzzy\n")}, "needs fuzz", at="v0.2.0")
    add_to_series(d, good.name, fuzzy.name)
    dest = tmp_path / "patched"
    with pytest.raises(MlxForkError) as err:
        patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    assert f"patch 2/2 {fuzzy.name} does not apply" in str(err.value)
    assert "mlx/scheduler.cpp hunk 1" in str(err.value)
    assert not dest.exists() and not dest.with_name("patched.partial").exists()
    # GNU patch would have accepted it with fuzz: the check is really stricter than fuzzing.
    trial = tmp_path / "fuzz"
    trial.mkdir()
    (trial / "scheduler.cpp").write_text(SCHEDULER_V1)
    body = fuzzy.read_text().replace("a/mlx/scheduler.cpp", "a/scheduler.cpp")
    body = body.replace("b/mlx/scheduler.cpp", "b/scheduler.cpp")
    gnu = subprocess.run(["patch", "-p1", "--dry-run", "-F2"], input=body, cwd=trial, capture_output=True, text=True)
    if gnu.returncode == 0:
        assert "fuzz" in gnu.stdout


def test_apply_refuses_patch_already_upstream(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    d = project / "patches" / "v0.2.0"
    src = project / "patches" / "v0.1.0"
    p = make_patch(upstream, src, {"mlx/scheduler.cpp": ("line 3\n", "line 3 (fixed upstream)\n")}, "fix line three")
    p.rename(d / p.name)
    add_to_series(d, p.name)
    with pytest.raises(MlxForkError, match="already upstream"):
        patchqueue.apply_series(load_series(load_base("v0.2.0")), _pristine("v0.2.0", upstream, tmp_path), tmp_path / "x")


def test_export_round_trip_is_byte_identical(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    # The fixture's patches were each made against the pristine tree; the first
    # export rewrites them on top of each other (index lines change). From then
    # on, apply + export must reproduce the files byte for byte.
    pristine = _pristine("v0.1.0", upstream, tmp_path)
    patchqueue.apply_series(load_series(load_base("v0.1.0")), pristine, tmp_path / "q1")
    patchqueue.export(tmp_path / "q1", "patch-queue", load_base("v0.1.0"))
    before = {p.name: p.read_bytes() for p in three_patches.glob("*.patch")}
    series_before = (three_patches / "series").read_text()
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), pristine, dest)
    assert main(["patches", "export", "--base", "v0.1.0", "--branch", "patch-queue", "--repo", str(dest)]) == 0
    assert {p.name: p.read_bytes() for p in three_patches.glob("*.patch")} == before
    assert (three_patches / "series").read_text() == series_before


@pytest.fixture
def abbreviated_patches(project: Path, upstream: Upstream) -> Path:
    """v0.1.0 series of two patches on separate files with 9-digit index lines, as the v0.31.1 CPU patches have."""
    d = project / "patches" / "v0.1.0"
    p1 = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 3\n", "line 3 ours\n")}, "scheduler three",
                    name="0001-scheduler-three.patch", abbrev=9)
    p2 = make_patch(upstream, d, {"mlx/array.cpp": ("line 2\n", "line 2 ours\n")}, "array two",
                    name="0002-array-two.patch", abbrev=9)
    add_to_series(d, p1.name, p2.name)
    return d


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_export_keeps_abbreviated_files_of_unchanged_commits(abbreviated_patches: Path, upstream: Upstream,
                                                             tmp_path: Path) -> None:
    # Formatting the commits again would write 40-digit index lines: new bytes, new build label.
    before = _files(abbreviated_patches)
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    git(dest, "rebase", "-q", "--force-rebase", "pristine")  # new commits, same content
    exported = patchqueue.export(dest, "patch-queue", load_base("v0.1.0"))
    assert exported == ["0001-scheduler-three.patch", "0002-array-two.patch"]
    assert _files(abbreviated_patches) == before


def test_export_rewrites_only_the_changed_commit_in_its_index_style(abbreviated_patches: Path, upstream: Upstream,
                                                                    tmp_path: Path) -> None:
    before = _files(abbreviated_patches)
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    (dest / "mlx" / "array.cpp").write_text((dest / "mlx" / "array.cpp").read_text().replace("line 5\n", "line 5 too\n"))
    git(dest, "commit", "-q", "--amend", "--no-edit", "-a")
    patchqueue.export(dest, "patch-queue", load_base("v0.1.0"))
    after = _files(abbreviated_patches)
    assert [name for name in sorted(before) if after[name] != before[name]] == ["0002-array-two.patch"]
    text = after["0002-array-two.patch"].decode()
    assert "+// array line 5 too" in text
    index = [line for line in text.splitlines() if line.startswith("index ")]
    assert len(index) == 1 and len(index[0].split()[1]) == len("123456789..123456789")


def test_export_rewrites_a_later_patch_whose_hunks_moved(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    # 0002 still applies after 0001 grew (with an offset), but its line numbers and
    # index line are stale, so it is written again; an untouched 0001 would be kept.
    d = project / "patches" / "v0.1.0"
    p1 = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 3\n", "line 3 ours\n")}, "scheduler three",
                    name="0001-scheduler-three.patch")
    p2 = make_patch(upstream, d, {"mlx/scheduler.cpp": ("line 20\n", "line 20 ours\n")}, "scheduler twenty",
                    name="0002-scheduler-twenty.patch")
    add_to_series(d, p1.name, p2.name)
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    patchqueue.export(dest, "patch-queue", load_base("v0.1.0"))  # 0002 now records 0001's result as its base
    before = _files(d)
    assert main(["patches", "apply", "--base", "v0.1.0", "--dest", str(dest), "--source", str(tmp_path / "mirror.git")]) == 0
    git(dest, "checkout", "-qb", "work", "pristine")
    git(dest, "cherry-pick", "patch-queue~1")
    scheduler = dest / "mlx" / "scheduler.cpp"
    scheduler.write_text("// a new first line\n" + scheduler.read_text())
    git(dest, "commit", "-q", "--amend", "--no-edit", "-a")
    git(dest, "cherry-pick", "patch-queue")
    patchqueue.export(dest, "work", load_base("v0.1.0"))
    after = _files(d)
    assert after["0001-scheduler-three.patch"] != before["0001-scheduler-three.patch"]
    assert after["0002-scheduler-twenty.patch"] != before["0002-scheduler-twenty.patch"]
    assert "@@ -18," in after["0002-scheduler-twenty.patch"].decode()
    assert after["series"] == before["series"]


def _queue_with_a_new_fix(upstream: Upstream, tmp_path: Path) -> Path:
    """The v0.1.0 series applied as a queue, plus one new commit on branch `work`."""
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    git(dest, "checkout", "-qb", "work")
    (dest / "mlx" / "array.cpp").write_text((dest / "mlx" / "array.cpp").read_text() + "// new fix\n")
    git(dest, "commit", "-qam", "a new fix\n\nDescription: new\nOrigin: vendor\nForwarded: no\nAuthor: A <a@b>\n"
        "Last-Update: 2026-11-02\nBackends: cpu\nRetire-When: never\nPublic-Headers: no\nVerified: applies")
    return dest


def test_export_picks_up_edits_and_new_commits(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    dest = _queue_with_a_new_fix(upstream, tmp_path)
    names = patchqueue.export(dest, "work", load_base("v0.1.0"))
    assert len(names) == 4 and names[-1].startswith("0004-")
    assert main(["patches", "lint", "--base", "v0.1.0"]) == 0


def test_export_keeps_series_comments(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    series = three_patches / "series"
    lines = series.read_text().splitlines()
    lines[-2] += "  # keep this inline note"
    lines.insert(len(lines) - 1, "# a heading between patches stays above its patch")
    series.write_text("\n".join([*lines, "# Not carried: 0009-old-fix.patch (upstream since v0.1.0)", ""]))
    dest = _queue_with_a_new_fix(upstream, tmp_path)
    patchqueue.export(dest, "work", load_base("v0.1.0"))
    text = series.read_text().splitlines()
    assert text[-1] == "# Not carried: 0009-old-fix.patch (upstream since v0.1.0)"
    assert text[-2].startswith("0004-") and text[-3] == "0003-scheduler-twenty.patch"
    assert text[-4] == "# a heading between patches stays above its patch"
    assert "0002-array-top.patch  # keep this inline note" in text
    assert load_series(load_base("v0.1.0")).patches[-1].name.startswith("0004-")


def test_export_keeps_a_heading_above_its_patch(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    series = three_patches / "series"
    lines = series.read_text().splitlines()
    at = lines.index("0003-scheduler-twenty.patch")
    series.write_text("\n".join([*lines[:at], "# Scheduler fixes", *lines[at:], ""]))
    dest = _queue_with_a_new_fix(upstream, tmp_path)
    patchqueue.export(dest, "work", load_base("v0.1.0"))
    text = series.read_text().splitlines()
    heading = text.index("# Scheduler fixes")
    assert text[heading + 1] == "0003-scheduler-twenty.patch" and text[-1].startswith("0004-")


def test_export_names_a_patch_as_on_another_base(project: Path, upstream: Upstream, tmp_path: Path) -> None:
    # The same fix carried on v0.1.0 as 0024 keeps that name when first exported for v0.2.0.
    old = project / "patches" / "v0.1.0"
    p = make_patch(upstream, old, {"mlx/scheduler.cpp": ("line 20\n", "line 20 ours\n")}, "scheduler twenty",
                   name="0024-scheduler-twenty.patch")
    add_to_series(old, p.name)
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.2.0")), _pristine("v0.2.0", upstream, tmp_path), dest)
    git(dest, "apply", "--index", str(p))
    git(dest, "commit", "-qm", "scheduler twenty\n\n" + p.read_text().split("\n\n", 1)[1].split("\n---\n", 1)[0])
    assert patchqueue.export(dest, "patch-queue", load_base("v0.2.0")) == ["0024-scheduler-twenty.patch"]


def test_export_restores_headers_lost_from_a_reworded_commit(three_patches: Path, upstream: Upstream, tmp_path: Path) -> None:
    dest = tmp_path / "queue"
    patchqueue.apply_series(load_series(load_base("v0.1.0")), _pristine("v0.1.0", upstream, tmp_path), dest)
    git(dest, "commit", "-q", "--amend", "-m", "scheduler twenty")  # message without headers
    patchqueue.export(dest, "patch-queue", load_base("v0.1.0"))
    series = load_series(load_base("v0.1.0"))
    assert series.patches[-1].headers["Retire-When"] == "upstream fixes issue 1"


def test_export_without_pinned_tree_fails(project: Path, upstream: Upstream) -> None:
    with pytest.raises(MlxForkError, match="no commit with the pinned tree"):
        wrong_tree = load_base("v0.2.0").__class__(**{**load_base("v0.2.0").__dict__, "tree": "0" * 40})
        patchqueue.export(upstream.repo, "main", wrong_tree)


def test_rebase_writes_ported_series_and_report(three_patches: Path, project: Path, upstream: Upstream, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "mirror.git"
    git(tmp_path, "clone", "-q", "--bare", str(upstream.repo), str(bare))
    report = tmp_path / "report" / "rebase"
    code = main(["patches", "rebase", "--from", "v0.1.0", "--to", "v0.2.0", "--source", str(bare), "--report", str(report)])
    assert code == 1  # one patch needs porting by hand
    target = project / "patches" / "v0.2.0"
    series = (target / "series").read_text()
    assert "already upstream" in series and "conflicts" in series
    carried = load_series(load_base("v0.2.0")).patches
    assert [p.subject for p in carried] == ["scheduler twenty"]
    assert (target / "unported").is_dir() and len(list((target / "unported").glob("*.patch"))) == 1
    data = json.loads(Path(f"{report}.json").read_text())
    assert [p["status"] for p in data["patches"]] == ["upstream", "conflict", "applies"]
    assert "1 carried, 1 already upstream, 1 to port by hand" in Path(f"{report}.md").read_text()
    # The carried patch applies to the new base as written.
    patchqueue.apply_series(load_series(load_base("v0.2.0")), prepare_source(load_base("v0.2.0"), bare).path, tmp_path / "p2")
    # A second rebase refuses to overwrite without --force; --dry-run only reports.
    rebase = ["patches", "rebase", "--from", "v0.1.0", "--to", "v0.2.0", "--source", str(bare), "--report", str(report)]
    assert main(rebase) == 1
    assert "--force" in capsys.readouterr().err
    assert main([*rebase, "--dry-run"]) == 1
