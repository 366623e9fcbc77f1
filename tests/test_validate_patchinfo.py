"""Patch facts shown in the report: ladder rungs and documented costs, from the DEP-3 headers."""

from __future__ import annotations

from pathlib import Path

from build_tools.bases import BasePin
from build_tools.validate.patchinfo import _from_headers, _scan_headers, load_patch_info

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


def test_headers_are_read_from_the_patch_file(tmp_path):
    path = tmp_path / "0002-cpu-lock-random-key.patch"
    path.write_text(PATCH, encoding="utf-8")
    info = _from_headers(path.name, _scan_headers(path))
    assert info.description == "Serialise access to the global random key"
    assert info.backends == ("cpu",)
    assert info.verified == ("applies", "cpu-reproducer", "upstream-suite")
    assert info.cost.startswith("one uncontended mutex") and not info.public_headers


def test_series_order_and_fallback_reading(tmp_path):
    (tmp_path / "0002-cpu-lock-random-key.patch").write_text(PATCH, encoding="utf-8")
    (tmp_path / "series").write_text("# order\n0002-cpu-lock-random-key.patch\n", encoding="utf-8")
    base = BasePin(name="v0.31.1", version="0.31.1", tag="v0.31.1", commit="a" * 40, tree="b" * 40,
                   archive_url="", archive_prefix="", build_stage_env="stage", directory=Path(tmp_path))
    infos, _note = load_patch_info(base)
    assert [i.name for i in infos] == ["0002-cpu-lock-random-key.patch"]
    assert infos[0].verified == ("applies", "cpu-reproducer", "upstream-suite")
    assert infos[0].cost


def test_an_empty_series_has_no_patches(tmp_path):
    (tmp_path / "series").write_text("# nothing yet\n", encoding="utf-8")
    base = BasePin(name="v0.31.1", version="0.31.1", tag="v0.31.1", commit="a" * 40, tree="b" * 40,
                   archive_url="", archive_prefix="", build_stage_env="stage", directory=Path(tmp_path))
    assert load_patch_info(base)[0] == []
