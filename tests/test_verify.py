"""verify: a fresh venv, installed as a user would, with stand-in MLX wheels (no MLX, no network).

The stand-in frontend `mlx` loads mlx/lib/libmlx.so with ctypes and takes
__version__ from it, like the real core module takes it from libmlx; the
stand-in libmlx is a small C library. That exercises the real checks: the
version the loaded library reports, the mapped library path, the provenance
file and the ABI gate, and each is shown to fail when it should.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import build_inputs
from test_package import make_wheel

from build_tools import verify
from build_tools.errors import MlxForkError
from build_tools.index import write_index
from build_tools.installed_headers import installed_headers_touched
from build_tools.manifest import Manifest
from build_tools.series import FileChange, Patch

FAKE_CORE = '''
import ctypes, os
_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "lib", "libmlx.so"))
_lib.mlx_version.restype = ctypes.c_char_p
__version__ = _lib.mlx_version().decode()


class array:
    def __init__(self, values):
        self.values = list(values)

    def __mul__(self, k):
        return array(v * k for v in self.values)

    def __add__(self, k):
        return array(v + k for v in self.values)

    def sum(self):
        return array([sum(self.values)])

    def item(self):
        return self.values[0]


def default_device():
    return "Device(cpu, 0)"
'''


def compile_lib(tmp_path: Path, version: str, extra: str = "", name: str = "libmlx.so") -> bytes:
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler")
    src = tmp_path / f"{name}.c"
    src.write_text(f'const char* mlx_version(void) {{ return "{version}"; }}\n'
                   "int mlx_add(int a, int b) { return a + b; }\n" + extra)
    out = tmp_path / f"build-{abs(hash((version, extra)))}" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def manifest_for(lib: bytes, patches: int = 0) -> Manifest:
    return Manifest(
        inputs=build_inputs(patches=[{"name": f"{i:04d}-x.patch", "sha256": str(i) * 64}
                                     for i in range(1, patches + 1)],
                            cmake_args=[], dependencies={}, toolchain={"deployment_target": None}),
        outputs={"libmlx_sha256": hashlib.sha256(lib).hexdigest()},
    )


def publish(tmp_path: Path, lib: bytes, manifest: Manifest, provenance: dict | None = None,
            stock_lib: bytes | None = None) -> tuple[Path, Path, Path]:
    """wheels/ with the stand-in frontend, the patched backend and its index; plus a stock backend wheel."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "mlx", "0.31.1", files={"mlx/core.py": FAKE_CORE.encode()})
    prov = provenance if provenance is not None else manifest.to_json()
    backend = make_wheel(wheels, "mlx_cpu", manifest.version,
                         files={"mlx/lib/libmlx.so": lib, "mlx/lib/mlx-fork.json": json.dumps(prov).encode()})
    stock = make_wheel(tmp_path / "stock", "mlx_cpu", "0.31.1",
                       files={"mlx/lib/libmlx.so": stock_lib if stock_lib is not None else lib})
    write_index(wheels)
    return wheels, backend, stock


def test_verify_proves_the_patched_library_is_loaded(tmp_path: Path) -> None:
    # The label depends on the inputs only, so the library can be built for it first.
    lib = compile_lib(tmp_path, manifest_for(b"", patches=2).runtime_version)
    manifest = manifest_for(lib, patches=2)
    stock_lib = compile_lib(tmp_path, "0.31.1", name="libstock.so")
    wheels, backend, stock = publish(tmp_path, lib, manifest, stock_lib=stock_lib)
    result = verify.verify_wheel(backend, manifest, library="libmlx.so", wheel_dir=wheels, via="index",
                                 stock_wheel=stock, log=tmp_path / "verify.log")
    assert result.version == manifest.version
    assert result.loaded_library.endswith("/site-packages/mlx/lib/libmlx.so")
    text = "\n".join(result.checks)
    assert f"mx.__version__ == {manifest.runtime_version}" in text
    assert "provenance mlx/lib/mlx-fork.json matches" in text
    assert "ABI gate: no stock export removed" in text


def test_verify_fails_when_the_loaded_library_reports_another_version(tmp_path: Path) -> None:
    lib = compile_lib(tmp_path, "0.31.1")  # e.g. the stock library was packaged by mistake
    manifest = manifest_for(lib)
    wheels, backend, _ = publish(tmp_path, lib, manifest)
    with pytest.raises(MlxForkError, match=r"mx.__version__ is '0.31.1', expected '0.31.1.0\+fork.0.h"):
        verify.verify_wheel(backend, manifest, library="libmlx.so", wheel_dir=wheels)


def test_verify_fails_on_provenance_mismatch(tmp_path: Path) -> None:
    manifest0 = manifest_for(b"")
    lib = compile_lib(tmp_path, manifest0.runtime_version)
    manifest = manifest_for(lib)
    other = manifest_for(lib, patches=1).to_json()
    wheels, backend, _ = publish(tmp_path, lib, manifest, provenance=other)
    with pytest.raises(MlxForkError, match=r"provenance inputs.patches"):
        verify.verify_wheel(backend, manifest, library="libmlx.so", wheel_dir=wheels)


def test_without_a_gpu_driver_a_cuda_backend_is_checked_from_its_files(tmp_path: Path, monkeypatch) -> None:
    # A frontend whose import would fail, as mlx.core does where libmlx NEEDs a missing libcuda.so.1.
    lib = compile_lib(tmp_path, "never imported")
    manifest = manifest_for(lib, patches=1)
    wheels, backend, stock = publish(tmp_path, lib, manifest)
    (wheels / "mlx-0.31.1-py3-none-any.whl").unlink()
    make_wheel(wheels, "mlx", "0.31.1", files={"mlx/core.py": b"raise ImportError('libcuda.so.1: cannot open')\n"})
    write_index(wheels)
    monkeypatch.setattr(verify, "cuda_driver_loadable", lambda: False)
    result = verify.verify_wheel(backend, manifest, library="libmlx.so", wheel_dir=wheels, stock_wheel=stock,
                                 needs_gpu_driver=True)
    text = "\n".join(result.checks)
    assert "not imported: no GPU driver here" in text and "installed libmlx sha256 matches" in text
    assert "provenance mlx/lib/mlx-fork.json matches" in text and "ABI gate: no stock export removed" in text
    assert result.left_for_gpu == verify.LEFT_FOR_A_GPU and result.loaded_library == ""
    # The file checks still fail when they should.
    wheels2, backend2, _ = publish(tmp_path / "other", lib, manifest, provenance=manifest_for(lib, patches=2).to_json())
    with pytest.raises(MlxForkError, match=r"provenance inputs\.patches"):
        verify.verify_wheel(backend2, manifest, library="libmlx.so", wheel_dir=wheels2, needs_gpu_driver=True)


def test_abi_gate_fails_on_a_removed_symbol(tmp_path: Path) -> None:
    manifest0 = manifest_for(b"")
    lib = compile_lib(tmp_path, manifest0.runtime_version)
    stock_lib = compile_lib(tmp_path, "0.31.1", extra="int mlx_removed_in_patch(void) { return 1; }\n",
                            name="libstock.so")
    manifest = manifest_for(lib)
    wheels, backend, stock = publish(tmp_path, lib, manifest, stock_lib=stock_lib)
    with pytest.raises(MlxForkError, match=r"ABI gate: 1 exported symbol.*mlx_removed_in_patch"):
        verify.verify_wheel(backend, manifest, library="libmlx.so", wheel_dir=wheels, stock_wheel=stock)


def test_abi_diff_and_exported_symbols(tmp_path: Path) -> None:
    a = tmp_path / "a" / "liba.so"
    a.parent.mkdir()
    a.write_bytes(compile_lib(tmp_path, "x",
                              extra="int only_in_a(void) { return 0; }\nstatic int hidden(void) { return 1; }\n"))
    b = tmp_path / "b" / "libb.so"
    b.parent.mkdir()
    b.write_bytes(compile_lib(tmp_path, "y", extra="int only_in_b(void) { return 0; }\n"))
    sa, sb = verify.exported_symbols(a), verify.exported_symbols(b)
    assert {"mlx_version", "mlx_add", "only_in_a"} <= set(sa) and "hidden" not in sa
    assert sa["only_in_a"] == "T"
    report = verify.abi_diff(sa, sb)
    assert report.removed == ["only_in_a"] and report.added == ["only_in_b"] and not report.ok
    assert verify.abi_diff(sa, {**sa, "new": "T"}).ok


def test_abi_diff_classifies_removed_symbols() -> None:
    stock = {"_ZN3mlx4core3addEv": "T", "_ZN3mlx4core5array4initIPaEEvT_": "W", "gguf_open": "T",
             "to_half": "T", "_ZTV_weak_but_imported": "V", "_ZN3mlx4core5arrayC1IhEET_": "W"}
    patched = {"_ZN3mlx4core3addEv": "T", "new_symbol": "T"}
    report = verify.abi_diff(stock, patched, imported={"_ZTV_weak_but_imported"}, configured_away=["gguflib"])
    assert report.removed == ["_ZTV_weak_but_imported"]  # weak, but the stock frontend imports it
    assert report.removed_configured == ["gguf_open", "to_half"]
    assert report.removed_weak == ["_ZN3mlx4core5array4initIPaEEvT_", "_ZN3mlx4core5arrayC1IhEET_"]
    assert report.added == ["new_symbol"]
    # Without gguflib configured away, its C API disappearing is a break like any strong symbol.
    assert "gguf_open" in verify.abi_diff(stock, patched).removed


def _patch(name: str, *paths: str, public: str = "no") -> Patch:
    return Patch(name, Path(name), "0" * 64, "subject", {"Public-Headers": public},
                 tuple(FileChange(p, (1,)) for p in paths))


def test_installed_header_changes_are_found() -> None:
    patches = [
        _patch("0001-cpp-only.patch", "mlx/backend/cpu/encoder.cpp", "python/tests/test_x.py"),
        _patch("0002-header.patch", "mlx/scheduler.h", "mlx/scheduler.cpp"),
        _patch("0003-private.patch", "mlx/backend/metal/kernels.h"),
    ]
    assert installed_headers_touched(patches) == {"0002-header.patch": ["mlx/scheduler.h"]}


def test_verify_command_checks_the_newest_patched_wheel_against_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from build_tools.cli import main

    lib = compile_lib(tmp_path, manifest_for(b"").runtime_version)
    manifest = manifest_for(lib)
    wheels, backend, _ = publish(tmp_path, lib, manifest)
    assert main(["verify", "--dir", str(wheels), "--no-abi"]) == 1  # no manifest recorded for it yet
    assert "no build manifest" in capsys.readouterr().err
    manifest.write(verify.manifest_for(wheels, backend))
    assert main(["verify", "--dir", str(wheels), "--no-abi"]) == 0
    out = capsys.readouterr().out
    assert f"verified {backend.name}" in out and f"mx.__version__ == {manifest.runtime_version}" in out
