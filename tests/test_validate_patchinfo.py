"""Patch facts shown in the report: ladder rungs and documented costs, from the DEP-3 headers."""

from __future__ import annotations

from pathlib import Path

import pytest

from build_tools.bases import BasePin
from build_tools.errors import MlxForkError
from build_tools.validate.patchinfo import load_patch_info

PATCH = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: Fork Dev <fork@example.com>
Date: Sat, 1 Nov 2026 00:00:00 +0000
Subject: [PATCH] cpu: lock the random key

Description: Serialise access to the global random key
 so threads drawing without keys cannot tear it.
Origin: vendor
Bug: https://github.com/ml-explore/mlx/issues/3216
Forwarded: not-needed
Author: Fork Dev <fork@example.com>
Last-Update: 2026-11-01
Backends: cpu
Retire-When: upstream makes the key thread-local
Public-Headers: no
Verified: applies, cpu-reproducer, upstream-suite
Cost: one uncontended mutex per unkeyed draw (~20 ns)
---
 mlx/random.cpp | 1 +
 1 file changed, 1 insertion(+)

diff --git a/mlx/random.cpp b/mlx/random.cpp
index 1111111..2222222 100644
--- a/mlx/random.cpp
+++ b/mlx/random.cpp
@@ -1,1 +1,2 @@
 a
+b
"""


def _base(tmp_path: Path) -> BasePin:
    return BasePin(name="v0.31.1", version="0.31.1", tag="v0.31.1", commit="a" * 40, tree="b" * 40,
                   archive_url="", archive_prefix="", build_stage_env="stage", directory=Path(tmp_path))


def test_patch_facts_come_from_the_series(tmp_path):
    (tmp_path / "0002-cpu-lock-random-key.patch").write_text(PATCH, encoding="utf-8")
    (tmp_path / "series").write_text("# order\n0002-cpu-lock-random-key.patch\n", encoding="utf-8")
    infos = load_patch_info(_base(tmp_path))
    assert [i.name for i in infos] == ["0002-cpu-lock-random-key.patch"]
    info = infos[0]
    assert info.description == "Serialise access to the global random key"
    assert info.backends == ("cpu",)
    assert info.verified == ("applies", "cpu-reproducer", "upstream-suite")
    assert info.cost.startswith("one uncontended mutex") and not info.public_headers


def test_a_series_naming_a_missing_patch_fails_loudly(tmp_path):
    (tmp_path / "series").write_text("0009-missing.patch\n", encoding="utf-8")
    with pytest.raises(MlxForkError, match="cannot describe the patch series"):
        load_patch_info(_base(tmp_path))


def test_an_empty_series_has_no_patches(tmp_path):
    (tmp_path / "series").write_text("# nothing yet\n", encoding="utf-8")
    assert load_patch_info(_base(tmp_path)) == []


def test_the_report_marks_which_series_patches_the_patched_build_holds(tmp_path):
    from build_tools.validate.patchinfo import match_wheel

    (tmp_path / "0002-cpu-lock-random-key.patch").write_text(PATCH, encoding="utf-8")
    (tmp_path / "series").write_text("0002-cpu-lock-random-key.patch\n", encoding="utf-8")
    series = load_patch_info(_base(tmp_path))
    sha = series[0].sha256
    marked, note = match_wheel(series, [{"name": "0002-cpu-lock-random-key.patch", "sha256": sha}])
    assert marked[0].in_wheel is True and note == ""
    marked, note = match_wheel(series, [])  # e.g. a stock rebuild with an empty series
    assert marked[0].in_wheel is False and "not in the patched build: 0002" in note
    marked, note = match_wheel(series, [{"name": "0002-cpu-lock-random-key.patch", "sha256": "0" * 64}])
    assert marked[0].in_wheel is False and "changed" in note
    assert match_wheel(series, None) == (series, "")
