"""Choosing the wheels of each side, the perf A/B bookkeeping, and the CLI wiring (no MLX, no network)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from build_tools.cli import make_parser
from build_tools.errors import MlxForkError
from build_tools.validate import perf, venvs


def touch(d: Path, name: str, age: float = 0.0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_bytes(b"")
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def test_patched_backend_is_the_newest_build_of_the_same_release(tmp_path):
    touch(tmp_path, "mlx_cpu-0.31.1+fork.1-py3-none-manylinux_2_35_x86_64.whl", age=100)
    newest = touch(tmp_path / "sub", "mlx_cpu-0.31.1+fork.2-py3-none-manylinux_2_35_x86_64.whl")
    touch(tmp_path, "mlx_cpu-0.32.1+fork.9-py3-none-manylinux_2_35_x86_64.whl")
    touch(tmp_path, "mlx_cpu-0.31.1+fork.3-py3-none-macosx_14_0_arm64.whl")
    backend, frontend = venvs.find_patched_wheels(tmp_path, "0.31.1")
    assert backend == newest and frontend is None


def test_a_patched_frontend_is_used_when_present(tmp_path):
    touch(tmp_path, "mlx_cpu-0.31.1+fork.1-py3-none-manylinux_2_35_x86_64.whl")
    import sys
    cp = f"cp{sys.version_info.major}{sys.version_info.minor}"
    front = touch(tmp_path, f"mlx-0.31.1+fork.1-{cp}-{cp}-manylinux_2_35_x86_64.whl", age=50)
    touch(tmp_path, "mlx-0.31.1+fork.1-cp27-cp27-manylinux_2_35_x86_64.whl")
    touch(tmp_path, f"mlx-0.31.1+fork.2-{cp}-{cp}-manylinux_2_35_x86_64.whl")  # another build: never mixed in
    touch(tmp_path, f"mlx-0.31.1-{cp}-{cp}-manylinux_2_35_x86_64.whl")  # stock mirror: only for overlay builds
    assert venvs.find_patched_wheels(tmp_path, "0.31.1")[1] == front


def test_missing_patched_wheels_are_a_clear_error(tmp_path):
    with pytest.raises(MlxForkError, match=r"no mlx_cpu wheel of release 0.31.1"):
        venvs.find_patched_wheels(tmp_path, "0.31.1")
    with pytest.raises(MlxForkError, match="no wheel directory"):
        venvs.find_patched_wheels(tmp_path / "absent", "0.31.1")


def test_ours_are_the_labelled_wheels_of_the_release(tmp_path):
    from build_tools.wheeldir import patched_wheels

    ours = touch(tmp_path, "mlx_cpu-0.31.1+fork.2-py3-none-manylinux_2_35_x86_64.whl")
    touch(tmp_path, "mlx_cpu-0.31.1-py3-none-manylinux_2_35_x86_64.whl")  # stock
    touch(tmp_path, "mlx_cpu-0.31.10+fork.1-py3-none-manylinux_2_35_x86_64.whl")  # another release
    touch(tmp_path, "not-a-wheel.whl")
    assert [w.path for w in patched_wheels(tmp_path, "0.31.1")] == [ours]


def test_perf_rounds_alternate_which_side_goes_first(monkeypatch):
    calls: list[str] = []
    timing = {"stock": 1.0, "patched": 1.1}

    def fake(python, cases, scale, timeout):
        calls.append(str(python))
        t = timing[str(python)]
        return {c: {"unit": "s", "cpu": t, "wall": 2 * t if str(python) == "patched" else t} for c in cases}

    monkeypatch.setattr(perf, "_bench_once", fake)
    results = perf.run_ab([("stock", Path("stock")), ("patched", Path("patched"))], rounds=2,
                          cases=("dispatch", "threads_streams"))
    # per case and per round, the side that goes first alternates
    assert calls == ["stock", "patched", "patched", "stock", "patched", "stock", "stock", "patched"]
    dispatch = results[0]
    assert dispatch.ratios == pytest.approx([1.1] * 2)
    assert dispatch.wall_ratios == pytest.approx([2.2] * 2)
    assert dispatch.gate(False) == "fail" and results[1].gate(False) == "not-gated"


def test_perf_records_failed_rounds_instead_of_ratios(monkeypatch):
    def fake(python, cases, scale, timeout):
        if str(python) == "patched":
            return {c: {"error": "exit status -11"} for c in cases}
        return {c: {"unit": "s", "cpu": 1.0, "wall": 1.0} for c in cases}

    monkeypatch.setattr(perf, "_bench_once", fake)
    (res,) = perf.run_ab([("stock", Path("stock")), ("patched", Path("patched"))], rounds=2, cases=("matmul",))
    assert res.ratios == [] and len(res.errors) == 2 and res.gate(False) == "no-data"


def test_cli_has_the_validate_command_with_its_options():
    args = make_parser().parse_args(
        ["validate", "--base", "v0.31.1", "--quick", "--runs", "3", "--wheels", "w", "--skip", "perf",
         "--report-dir", "r"])
    assert args.mode == "quick" and args.runs == 3 and args.wheels == Path("w") and args.skip == ["perf"]
    assert make_parser().parse_args(["validate", "--thorough"]).mode == "thorough"
    with pytest.raises(SystemExit):
        make_parser().parse_args(["validate", "--quick", "--thorough"])


def test_stock_wheels_must_match_their_pins(tmp_path):
    wheel = tmp_path / "mlx_cpu-0.31.1-py3-none-manylinux_2_35_x86_64.whl"
    wheel.write_bytes(b"not the real wheel")
    venvs.check_pins([wheel], {})  # no pin: nothing to check
    venvs.check_pins([wheel], {wheel.name: venvs.sha256_file(wheel)})
    with pytest.raises(MlxForkError, match="does not match its sha256 pin"):
        venvs.check_pins([wheel], {wheel.name: "0" * 64})


def test_cuda_sides_take_the_nvidia_libraries_from_one_environment(tmp_path):
    from build_tools.validate import venvs

    assert venvs.backend_dist("linux-cuda") == "mlx_cuda_13"
    assert venvs.backend_dist("auto") == venvs.BACKEND_DIST
    site = tmp_path / "site"
    (site / "nvidia" / "cu13" / "lib").mkdir(parents=True)
    venv_site = tmp_path / "venv" / "lib" / "python3.12" / "site-packages"
    venv_site.mkdir(parents=True)
    venvs._link_cuda_site(tmp_path / "venv", site)
    pth = (venv_site / venvs.CUDA_SITE_PTH).read_text().splitlines()
    assert pth == [str(site), "import mlx_fork_cuda_preload"]
    preload = (venv_site / venvs.CUDA_PRELOAD).read_text()
    compile(preload, venvs.CUDA_PRELOAD, "exec")
    assert repr(str(site)) in preload
    with pytest.raises(MlxForkError, match="no nvidia/ packages"):
        venvs._link_cuda_site(tmp_path / "venv", tmp_path)


def test_a_mistyped_scenario_is_refused_before_any_venv_is_built(tmp_path, capsys):
    from build_tools.cli import main

    assert main(["validate", "--scenario", "Z9", "--work", str(tmp_path / "w")]) == 1
    assert "unknown scenario 'Z9'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
