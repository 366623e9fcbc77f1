"""Wheel surgery and Linux overlay packaging against the real stock mlx-cpu wheel (stand-in libmlx)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import build_inputs
from packaging.version import InvalidVersion
from stockwheels import stock_wheel

from build_tools import package, stockwheels
from build_tools.errors import MlxForkError
from build_tools.manifest import Manifest
from build_tools.profiles import get_profile
from build_tools.wheelfile import check_record, metadata_field, record_digest, rewrite_wheel, wheel_info, wheel_tags


def make_wheel(directory: Path, name: str = "demo_pkg", version: str = "1.0", files: dict | None = None,
               tag: str = "py3-none-any") -> Path:
    """A minimal, valid wheel with an honest RECORD."""
    directory.mkdir(parents=True, exist_ok=True)
    dist_info = f"{name}-{version}.dist-info"
    files = dict(files or {f"{name}/__init__.py": b"VALUE = 1\n"})
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n".encode()
    files[f"{dist_info}/WHEEL"] = f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    record = "".join(f"{n},{record_digest(d)},{len(d)}\n" for n, d in files.items()) + f"{dist_info}/RECORD,,\n"
    path = directory / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{dist_info}/RECORD", record)
    return path


# ---------------------------------------------------------------- wheelfile


def test_rewrite_sets_version_replaces_adds_and_keeps_record_honest(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "in", files={"demo_pkg/__init__.py": b"A\n", "demo_pkg/lib.so": b"old"})
    assert check_record(src) == []
    out = rewrite_wheel(src, tmp_path / "out", version="1.0+fork.1.habc",
                        replace={"demo_pkg/lib.so": b"new!"}, add={"demo_pkg/extra.json": b"{}"})
    assert out.name == "demo_pkg-1.0+fork.1.habc-py3-none-any.whl"
    assert check_record(out) == []
    assert metadata_field(out, "Version") == ["1.0+fork.1.habc"]
    assert wheel_tags(out) == ["py3-none-any"]
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert zf.read("demo_pkg/lib.so") == b"new!"
        assert zf.read("demo_pkg/__init__.py") == b"A\n"
    assert names[-1] == "demo_pkg-1.0+fork.1.habc.dist-info/RECORD"
    assert not any(n.startswith("demo_pkg-1.0.dist-info/") for n in names)


def test_rewrite_refuses_bad_requests(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "in")
    with pytest.raises(MlxForkError, match=r"no demo_pkg/missing.so to replace"):
        rewrite_wheel(src, tmp_path / "out", replace={"demo_pkg/missing.so": b""})
    with pytest.raises(MlxForkError, match="already has"):
        rewrite_wheel(src, tmp_path / "out", add={"demo_pkg/__init__.py": b""})
    with pytest.raises(InvalidVersion):
        rewrite_wheel(src, tmp_path / "out", version="not a version")
    assert not list((tmp_path / "out").glob("*")) or not list((tmp_path / "out").glob("*.part"))


def test_check_record_catches_tampering(tmp_path: Path) -> None:
    src = make_wheel(tmp_path / "in", files={"demo_pkg/a.py": b"a\n", "demo_pkg/b.py": b"b\n"})
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "demo_pkg/a.py":
                data = b"changed\n"
            zout.writestr(item, data)
        zout.writestr("demo_pkg/unlisted.py", b"")
    problems = check_record(bad)
    assert any("demo_pkg/a.py: RECORD hash" in p for p in problems)
    assert any("demo_pkg/unlisted.py is in the wheel but not in RECORD" in p for p in problems)


def test_plan_linux_fixup_maps_onto_vendored_copies() -> None:
    stock = ["liblapack-86b2c207.so.3.10.0", "libblas-bd8a282c.so.3.10.0", "libstdc++.so.6", "libc.so.6"]
    vendored = ["libblas-bd8a282c.so.3.10.0", "liblapack-86b2c207.so.3.10.0", "libgfortran-f7379c93.so.5.0.0"]
    ours = ["libblas.so.3", "liblapack.so.3", "libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6",
            "ld-linux-x86-64.so.2"]
    fix = package.plan_linux_fixup(ours, stock, "$ORIGIN/../../mlx_cpu.libs", vendored)
    assert fix.replaced == {"libblas.so.3": "libblas-bd8a282c.so.3.10.0",
                            "liblapack.so.3": "liblapack-86b2c207.so.3.10.0"}
    with pytest.raises(MlxForkError, match=r"libopenblas.so.0, which the stock wheel does not vendor"):
        package.plan_linux_fixup(ours + ["libopenblas.so.0"], stock, "", vendored)


def test_manylinux_policy_comparison() -> None:
    assert package._manylinux_at_most("manylinux_2_35_x86_64", "manylinux_2_35_x86_64")
    assert package._manylinux_at_most("manylinux_2_17_x86_64", "manylinux_2_35_x86_64")
    assert not package._manylinux_at_most("manylinux_2_36_x86_64", "manylinux_2_35_x86_64")
    assert not package._manylinux_at_most("linux_x86_64", "manylinux_2_35_x86_64")


# ---------------------------------------------------------------- Linux overlay, real stock wheel


STAND_IN = r"""
#include <stddef.h>
extern void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*,
                   const double*, const int*, const double*, const int*, const double*, double*, const int*);
extern void dgetrf_(const int*, const int*, double*, const int*, int*, int*);
const char* mlx_stand_in_version(void) { return "stand-in"; }
void mlx_stand_in_blas(double* a, int* ipiv, int* info) {
  int n = 1; double one = 1.0;
  dgemm_("N", "N", &n, &n, &n, &one, a, &n, a, &n, &one, a, &n);
  dgetrf_(&n, &n, a, &n, ipiv, info);
}
"""


@pytest.fixture(scope="module")
def stock_cpu() -> Path:
    return stock_wheel("v0.31.1", "mlx-cpu", "0.31.1", "manylinux_2_35_x86_64")


@pytest.fixture
def stand_in_so(tmp_path: Path) -> Path:
    """A small libmlx.so linked like a source build on Debian: NEEDs libblas.so.3 and liblapack.so.3."""
    if shutil.which("cc") is None or shutil.which("patchelf") is None:
        pytest.skip("needs a C compiler and patchelf (scripts/setup installs them)")
    src = tmp_path / "standin.c"
    src.write_text(STAND_IN)
    lib = tmp_path / "build" / "libmlx.so"
    lib.parent.mkdir()
    proc = subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src), "-Wl,-soname,libmlx.so",
                           "-Wl,--no-as-needed", "-lblas", "-llapack"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot link against system BLAS/LAPACK: {proc.stderr[-300:]}")
    return lib


def cpu_manifest() -> Manifest:
    return Manifest(inputs=build_inputs(patches=[], cmake_args=[], dependencies={},
                                        toolchain={"deployment_target": None}))


@pytest.mark.network
def test_linux_overlay_replaces_only_libmlx(tmp_path: Path, stock_cpu: Path, stand_in_so: Path) -> None:
    profile = get_profile("linux-cpu")
    manifest = cpu_manifest()
    wheel = package.overlay_wheel(stock_cpu, stand_in_so, profile, manifest, tmp_path / "out",
                                  log=tmp_path / "package.log")
    assert wheel.name == f"mlx_cpu-0.31.1+{manifest.label}-py3-none-manylinux_2_35_x86_64.whl"
    assert package.check_overlay(stock_cpu, wheel, profile) == []
    assert wheel_info(wheel).tags == wheel_info(stock_cpu).tags
    assert metadata_field(wheel, "Version") == [manifest.version]
    with zipfile.ZipFile(wheel) as zw, zipfile.ZipFile(stock_cpu) as zs:
        vendored = [n for n in zs.namelist() if n.startswith("mlx_cpu.libs/") and not n.endswith("/")]
        assert len(vendored) == 4
        for name in vendored:
            assert zw.read(name) == zs.read(name), name  # stock vendored libs byte-identical
        lib = zw.read("mlx/lib/libmlx.so")
        provenance = json.loads(zw.read("mlx/lib/mlx-fork.json"))
    assert provenance["version"] == manifest.version
    assert provenance["outputs"]["libmlx_sha256"] == hashlib.sha256(lib).hexdigest()
    # The stand-in now loads the stock vendored BLAS/LAPACK through the stock RPATH.
    extracted = tmp_path / "libmlx.so"
    extracted.write_bytes(lib)
    needed = package.elf_needed(extracted)
    assert "libblas-bd8a282c.so.3.10.0" in needed and "liblapack-86b2c207.so.3.10.0" in needed
    assert "libblas.so.3" not in needed
    assert package.elf_rpath(extracted) == "$ORIGIN/../../mlx_cpu.libs"
    assert "consistent with the following platform tag" in (tmp_path / "package.log").read_text()


@pytest.mark.network
def test_linux_overlay_refuses_a_library_needing_unvendored_libs(tmp_path: Path, stock_cpu: Path) -> None:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    src = tmp_path / "x.c"
    src.write_text("int f(void) { return 1; }\n")
    lib = tmp_path / "libmlx.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src), "-Wl,--no-as-needed", "-lz"], check=True)
    with pytest.raises(MlxForkError, match=r"libz.so.1, which the stock wheel does not vendor"):
        package.overlay_wheel(stock_cpu, lib, get_profile("linux-cpu"), cpu_manifest(), tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.whl")) if (tmp_path / "out").exists() else True


@pytest.mark.network
def test_stock_wheel_pin_mismatch_is_refused(tmp_path: Path, stock_cpu: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from build_tools.bases import load_base

    base = load_base("v0.31.1", Path(__file__).resolve().parent.parent / "patches")
    cache = stockwheels.stock_cache(tmp_path, base)
    cache.mkdir(parents=True)
    tampered = cache / stock_cpu.name
    tampered.write_bytes(stock_cpu.read_bytes() + b"x")
    with pytest.raises(MlxForkError, match="does not match the pin"):
        stockwheels.fetch_stock_wheel(base, get_profile("linux-cpu"), tmp_path)
    tampered.write_bytes(stock_cpu.read_bytes())
    assert stockwheels.fetch_stock_wheel(base, get_profile("linux-cpu"), tmp_path) == tampered


# ---------------------------------------------------------------- full packaging helpers


def test_setup_driver_labels_the_wheel_and_gives_cmake_the_runtime_version(tmp_path: Path) -> None:
    """upstream setup.py passes the distribution version to CMake as -DMLX_VERSION; the driver sets the
    distribution version to the wheel's and rewrites that CMake argument to the run-time form."""
    import os
    import sys

    project = tmp_path / "mlx"
    project.mkdir()
    (project / "setup.py").write_text(
        "import subprocess\nfrom functools import partial\nfrom setuptools import setup\n"
        "if __name__ == '__main__':\n"
        "    subprocess.run(['cmake', 'src', '-DFOO=1', '-DMLX_VERSION=0.31.1+fork.2.h0123456789'], check=True)\n"
        "    _setup = partial(setup, version='0.31.1')\n"
        "    _setup(name='mlx-cpu', py_modules=[])\n")
    (project / "driver.py").write_text(package.SETUP_DRIVER)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_cmake = bin_dir / "cmake"
    fake_cmake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'cmake-args.txt'}\n")
    fake_cmake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "driver.py", "0.31.1+fork.2.h0123456789", "0.31.1.0+fork.2.h0123456789",
                           "--version"], cwd=project, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0.31.1+fork.2.h0123456789"
    assert (tmp_path / "cmake-args.txt").read_text().split() == ["src", "-DFOO=1", "-DMLX_VERSION=0.31.1.0+fork.2.h0123456789"]


def test_stage_environments_follow_the_base() -> None:
    from build_tools.bases import load_base

    root = Path(__file__).resolve().parent.parent / "patches"
    assert [env for _, env in package._stage_envs(load_base("v0.31.1", root))] == [
        {"MLX_BUILD_STAGE": "0"}, {"MLX_BUILD_STAGE": "1"}, {"MLX_BUILD_STAGE": "2"}]
    assert [env for _, env in package._stage_envs(load_base("v0.32.1", root))] == [
        {}, {"MLX_BUILD_FRONTEND_PACKAGE": "1"}, {"MLX_BUILD_BACKEND_PACKAGE": "1"}]


@pytest.mark.network
def test_package_command_overlays_a_build_slot(tmp_path: Path, stock_cpu: Path, stand_in_so: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools.cli import main

    work = tmp_path / "work"
    (work / "stock" / "0.31.1").mkdir(parents=True)
    shutil.copyfile(stock_cpu, work / "stock" / "0.31.1" / stock_cpu.name)
    monkeypatch.setenv("MLX_FORK_WORK", str(work))
    slot = tmp_path / "slot"
    (slot / "build").mkdir(parents=True)
    shutil.copyfile(stand_in_so, slot / "build" / "libmlx.so")
    manifest = cpu_manifest()
    manifest.write(slot / "manifest.json")
    out = tmp_path / "out"
    assert main(["package", "--slot", str(slot), "--out", str(out)]) == 0
    wheel = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert wheel.parent == out and manifest.label in wheel.name
    assert package.check_overlay(stock_cpu, wheel, get_profile("linux-cpu")) == []
    full = Manifest(inputs=dataclasses.replace(manifest.inputs, packaging="full"))
    full.write(slot / "manifest.json")
    assert main(["package", "--slot", str(slot), "--out", str(out)]) == 1
    assert "is a full build" in capsys.readouterr().err


def test_plan_linux_fixup_keeps_libraries_stock_needs_but_does_not_vendor() -> None:
    # mlx-cuda: the CUDA libraries come from the nvidia-* wheels (Requires-Dist), the driver from the system.
    stock = ["libcuda.so.1", "libcublasLt.so.13", "liblapack-86b2c207.so.3.10.0", "libc.so.6"]
    vendored = ["liblapack-86b2c207.so.3.10.0"]
    fix = package.plan_linux_fixup(["libcuda.so.1", "libcublasLt.so.13", "liblapack.so.3"], stock,
                                   "$ORIGIN/../../mlx_cuda_13.libs", vendored)
    assert fix.replaced == {"liblapack.so.3": "liblapack-86b2c207.so.3.10.0"}
    with pytest.raises(MlxForkError, match="libnvshmem"):
        package.plan_linux_fixup(["libnvshmem.so.3"], stock, "", vendored)
