"""`mlx-fork build` orchestration without MLX: stages replaced by stand-ins, the real build() in between.

Checks what the pipeline itself promises: the order of the steps, the label and
manifest it records, that a failing step leaves nothing in wheels/, and that a
successful build publishes wheel + manifest + index.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from test_package import make_wheel

from build_tools import build as build_mod
from build_tools import source, verify
from build_tools.bases import load_base
from build_tools.deps import Provisioned
from build_tools.errors import MlxForkError
from build_tools.profiles import get_profile
from build_tools.wheelfile import rewrite_wheel

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def pipeline(tmp_path: Path) -> dict:
    project = tmp_path / "project"
    base_dir = project / "patches" / "v0.31.1"
    base_dir.mkdir(parents=True)
    shutil.copyfile(ROOT / "patches" / "v0.31.1" / "base.toml", base_dir / "base.toml")
    (base_dir / "series").write_text("# empty\n")
    tree = tmp_path / "pristine"
    (tree / "mlx").mkdir(parents=True)
    (tree / "mlx" / "a.cpp").write_text("int a;\n")
    stock = make_wheel(tmp_path / "stock", "mlx_cpu", "0.31.1",
                       files={"mlx/lib/libmlx.so": b"stock", "mlx_cpu.libs/libblas.so": b"blas"},
                       tag="py3-none-manylinux_2_35_x86_64")
    steps: list[str] = []

    def fake_source(base, src, work):
        steps.append("source")
        return source.PristineTree(base.name, tree, "test tree", base.commit, base.tree, 1)

    def fake_apply(series, pristine, dest):
        steps.append("series")
        shutil.copytree(pristine, dest)

    def fake_compile(tree_dir, build_dir, cmake_args, logs, **kw):
        steps.append("compile")
        assert any(a.startswith("-DMLX_VERSION=0.31.1.0+fork.0.h") for a in cmake_args)  # run-time form
        assert (tree_dir / "mlx" / "a.cpp").is_file()  # the synced patched tree
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "libmlx.so").write_bytes(b"patched")
        return build_dir / "libmlx.so"

    def fake_overlay(stock_wheel, library, profile, manifest, out_dir, **kw):
        steps.append("package")
        manifest.outputs["libmlx_sha256"] = "0" * 64
        return rewrite_wheel(stock_wheel, out_dir, version=manifest.version,
                             replace={"mlx/lib/libmlx.so": library.read_bytes()})

    state = {"verify_error": None}

    def fake_verify(wheel, manifest, **kw):
        steps.append("verify")
        assert kw["wheel_dir"] != project / "wheels"  # verified before publishing
        assert (kw["wheel_dir"] / "simple" / "index.html").is_file()
        if state["verify_error"]:
            raise MlxForkError(state["verify_error"])
        return verify.VerifyResult(wheel.name, manifest.version, "/x/libmlx.so", ["ok"])

    stages = build_mod.BuildStages(
        prepare_source=fake_source,
        apply_series=fake_apply,
        fetch_stock_wheel=lambda *a: stock,
        provision=lambda *a, **k: Provisioned(["-DUSE_SYSTEM_FMT=ON"], {"fmt": "system fmt 9"}),
        toolchain=lambda profile: {"cxx": "c++ 12.2.0", "deployment_target": None},
        compile_tree=fake_compile,
        overlay_wheel=fake_overlay,
        full_wheels=lambda *a, **k: pytest.fail("an overlay build packaged full wheels"),
        fetch_frontend_wheels=lambda *a: [],
        verify_wheel=fake_verify,
    )
    opts = build_mod.BuildOptions(base=load_base("v0.31.1", project / "patches"),
                                  profile=get_profile("linux-cpu", machine="x86_64"),
                                  work=tmp_path / "work", wheels=project / "wheels")
    return {"opts": opts, "stages": stages, "steps": steps, "state": state, "wheels": project / "wheels"}


def test_successful_build_publishes_wheel_manifest_and_index(pipeline: dict) -> None:
    result = build_mod.build(pipeline["opts"], pipeline["stages"])
    assert pipeline["steps"] == ["source", "series", "compile", "package", "verify"]
    wheels = pipeline["wheels"]
    (wheel,) = result.wheels
    assert wheel.parent == wheels and wheel.is_file()
    assert wheel.name == f"mlx_cpu-{result.manifest.version}-py3-none-manylinux_2_35_x86_64.whl"
    assert (wheels / "manifests" / f"{wheel.name}.json").is_file()
    assert wheel.name in (wheels / "simple" / "mlx-cpu" / "index.html").read_text()
    assert not list(wheels.glob(".staging-*"))
    inputs = result.manifest.inputs
    assert inputs.patches == [] and inputs.packaging == "overlay"
    assert inputs.dependencies == {"fmt": "system fmt 9"}
    assert (result.slot / "manifest.json").is_file()


def test_a_failed_verify_leaves_nothing_in_wheels(pipeline: dict) -> None:
    pipeline["state"]["verify_error"] = "verify failed: mx.__version__ is '0.31.1'"
    with pytest.raises(MlxForkError, match="verify failed"):
        build_mod.build(pipeline["opts"], pipeline["stages"])
    wheels = pipeline["wheels"]
    assert not list(wheels.glob("*.whl"))
    assert not list(wheels.glob(".staging-*"))
    assert not (wheels / "manifests").exists()


def test_the_label_follows_the_inputs(pipeline: dict) -> None:
    opts, stages = pipeline["opts"], pipeline["stages"]
    first = build_mod.build(opts, stages).manifest.label
    assert build_mod.build(opts, stages).manifest.label == first  # nothing changed: same label
    newer_compiler = dataclasses.replace(stages, toolchain=lambda profile: {"cxx": "c++ 99.0", "deployment_target": None})
    assert build_mod.build(opts, newer_compiler).manifest.label != first


def test_full_mode_is_forced_by_installed_headers_and_by_the_python_bindings() -> None:
    from build_tools.series import FileChange, Patch

    def patch(name: str, *paths: str) -> Patch:
        return Patch(name, Path(name), "0" * 64, name, {}, tuple(FileChange(p, (1,)) for p in paths))

    assert build_mod.full_mode_reasons([patch("0001-a.patch", "mlx/backend/cpu/eig.cpp")]) == []
    assert build_mod.full_mode_reasons([patch("0002-b.patch", "mlx/backend/metal/kernels.h")]) == []
    reasons = build_mod.full_mode_reasons([
        patch("0003-c.patch", "mlx/scheduler.h", "mlx/scheduler.cpp"),
        patch("0005-d.patch", "python/src/random.cpp"),
    ])
    assert reasons == ["0003-c.patch changes installed headers (mlx/scheduler.h)",
                       "0005-d.patch changes the Python bindings (python/src/random.cpp)"]
