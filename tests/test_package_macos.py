"""macOS Metal overlay, tested without a Mac: the real stock mlx-metal wheel and a stand-in libmlx.dylib.

What can be checked here: the wheel mlx-fork produces has a valid RECORD, the
stock mlx.metallib and every other stock file byte-identical, the local version
in file name, METADATA and .dist-info, and the stock platform tag; metal-cpp is
taken from the same wheel. What cannot: delocate-wheel and loading the dylib
(both need macOS; the Apple-Silicon CI job covers them).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from conftest import build_inputs
from stockwheels import stock_wheel

from build_tools import deps, package, stockwheels
from build_tools.manifest import Manifest
from build_tools.profiles import MACOS_TARGETS, get_profile
from build_tools.wheelfile import check_record, metadata_field, wheel_info, wheel_tags

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def stock_metal() -> Path:
    return stock_wheel("v0.31.1", "mlx-metal", "0.31.1", "macosx_14_0_arm64")


@pytest.fixture(scope="module", params=MACOS_TARGETS)
def stock_metal_any(request: pytest.FixtureRequest) -> tuple[str, Path]:
    target = request.param
    return target, stock_wheel("v0.31.1", "mlx-metal", "0.31.1", f"macosx_{target.split('.')[0]}_0_arm64")


def metal_manifest(target: str = "14.0") -> Manifest:
    profile = get_profile("macos-metal", target)
    return Manifest(inputs=build_inputs(
        patches=[{"name": "0020-retain-command-buffers.patch", "sha256": "a" * 64}],
        platform="macos-metal", cmake_args=list(profile.cmake_args), dependencies={},
        toolchain={"sdk": "15.2", "deployment_target": target}))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_metal_overlay_keeps_metallib_and_sets_version(tmp_path: Path, stock_metal_any: tuple[str, Path]) -> None:
    target, stock_metal = stock_metal_any
    tag = f"macosx_{target.split('.')[0]}_0_arm64"
    profile = get_profile("macos-metal", target)
    stand_in = tmp_path / "libmlx.dylib"
    stand_in.write_bytes(b"\xcf\xfa\xed\xfe" + b"stand-in libmlx for macOS arm64" * 100)
    manifest = metal_manifest(target)
    wheel = package.overlay_wheel(stock_metal, stand_in, profile, manifest, tmp_path / "out")

    assert wheel.name == f"mlx_metal-0.31.1+{manifest.label}-py3-none-{tag}.whl"
    assert manifest.label.startswith("fork.1.h")
    assert check_record(wheel) == []
    assert package.check_overlay(stock_metal, wheel, profile) == []
    assert wheel_info(wheel).version.local == manifest.label
    assert metadata_field(wheel, "Version") == [f"0.31.1+{manifest.label}"]
    assert wheel_tags(wheel) == wheel_tags(stock_metal) == [f"py3-none-{tag}"]
    with zipfile.ZipFile(stock_metal) as zs, zipfile.ZipFile(wheel) as zw:
        metallib = zs.read("mlx/lib/mlx.metallib")
        assert len(metallib) > 50_000_000  # the real compiled kernels
        assert sha(zw.read("mlx/lib/mlx.metallib")) == sha(metallib)
        assert zw.read("mlx/lib/libmlx.dylib") == stand_in.read_bytes()
        headers = [n for n in zs.namelist() if n.startswith("mlx/include/metal_cpp/") and not n.endswith("/")]
        assert headers and all(zw.read(n) == zs.read(n) for n in headers)
        provenance = json.loads(zw.read("mlx/lib/mlx-fork.json"))
        names = zw.namelist()
    assert provenance["inputs"]["toolchain"]["deployment_target"] == target
    assert provenance["outputs"]["libmlx_sha256"] == sha(stand_in.read_bytes())
    assert names[-1] == f"mlx_metal-0.31.1+{manifest.label}.dist-info/RECORD"


def test_metal_overlay_refuses_a_wheel_of_another_target(tmp_path: Path, stock_metal: Path) -> None:
    from build_tools.errors import MlxForkError

    stand_in = tmp_path / "libmlx.dylib"
    stand_in.write_bytes(b"x")
    with pytest.raises(MlxForkError, match="not the mlx-metal macosx_15_0_arm64 wheel"):
        package.overlay_wheel(stock_metal, stand_in, get_profile("macos-metal", "15.0"), metal_manifest("15.0"),
                              tmp_path / "out")


def test_metal_cpp_is_provisioned_from_the_stock_wheel(tmp_path: Path, stock_metal: Path) -> None:
    from build_tools.bases import load_base

    base = load_base("v0.31.1", Path(__file__).resolve().parent.parent / "patches")
    dest = tmp_path / "deps"
    out = deps.provision(base, get_profile("macos-metal"), dest, stock_wheel=stock_metal)
    metal_cpp = dest / "metal_cpp"
    assert f"-DFETCHCONTENT_SOURCE_DIR_METAL_CPP={metal_cpp}" in out.cmake_args
    assert (metal_cpp / "Metal" / "Metal.hpp").is_file()
    assert (metal_cpp / "Foundation" / "Foundation.hpp").is_file()
    assert "-DFETCHCONTENT_FULLY_DISCONNECTED=ON" in out.cmake_args


@pytest.mark.parametrize("target", MACOS_TARGETS)
def test_every_shipped_deployment_target_has_a_pinned_stock_wheel(target: str) -> None:
    from build_tools.bases import load_base

    profile = get_profile("macos-metal", target)
    for name in ("v0.31.1", "v0.32.1"):
        base = load_base(name, Path(__file__).resolve().parent.parent / "patches")
        assert stockwheels.stock_backend_filename(base, profile) in stockwheels.stock_pins(base)
