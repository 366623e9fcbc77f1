"""Hermetic tests of `mlx-fork simulate`'s pieces (no MLX build): statistics, run
classification, the report, and how the Metal backend is added to MLX's CPU compile plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from build_tools import simulate
from build_tools.bases import parse_base
from build_tools.cli import make_parser


def test_cells_carry_wilson_bounds_of_the_failure_rate() -> None:
    lo, hi = simulate.Cell("pristine", "s", runs=100, failures=0).to_json()["wilson95"]
    assert lo == 0.0 and 0.03 < hi < 0.04  # 0/100: the failure rate is below ~3.7%
    lo, hi = simulate.Cell("pristine", "s", runs=100, failures=100).to_json()["wilson95"]
    assert 0.96 < lo < 0.97 and hi == 1.0


@pytest.mark.parametrize(
    ("rc", "out", "err", "ok", "kind"),
    [
        (0, "SCENARIO PASS\n", "", True, "pass"),
        (0, "no verdict\n", "", False, "exit-0"),
        (-6, "", "libc++abi: terminating due to uncaught exception of type std::runtime_error: "
                 "[METAL] Command buffer execution failed: Invalid Resource (00000009:...)", False,
         "invalid-resource"),
        (-6, "", "libc++abi: terminating due to uncaught exception of type std::runtime_error: "
                 "[METAL] Command buffer execution failed: Insufficient Memory", False, "terminate"),
        (-6, "", "metal-sim: FATAL: -[MTLCommandBuffer addCompletedHandler:]: Completed handler provided "
                 "after commit call", False, "sim-abort"),
        (1, "SCENARIO FAIL: not reported\n", "", False, "fail"),
        (-11, "", "", False, "signal-SIGSEGV"),
        (None, "", "", False, "timeout"),
        (0, "SCENARIO PASS\n", "WARNING: ThreadSanitizer: data race", False, "tsan"),
    ],
)
def test_classify(rc: int | None, out: str, err: str, ok: bool, kind: str) -> None:
    got_ok, got_kind, _ = simulate.classify(rc, out, err)
    assert (got_ok, got_kind) == (ok, kind)


def _base(tmp_path: Path):
    return parse_base(
        {"base": {"version": "0.31.1", "tag": "v0.31.1", "commit": "a" * 40, "tree": "b" * 40,
                  "archive_url": "https://example.invalid/x.tar.gz", "build_stage_env": "stage"}},
        tmp_path / "v0.31.1",
    )


def test_report_marks_red_to_green(tmp_path: Path) -> None:
    scen = simulate.get_scenarios(["failed_command_buffer", "cache_trim"])
    cells = [
        simulate.Cell("pristine", "failed_command_buffer", runs=100, failures=100, kinds={"terminate": 100}),
        simulate.Cell("patched", "failed_command_buffer", runs=100, failures=0),
        simulate.Cell("pristine", "cache_trim", runs=100, failures=0),
        simulate.Cell("patched", "cache_trim", runs=100, failures=0),
    ]
    json_path, md_path = simulate.write_report(_base(tmp_path), cells, {"pristine": "p", "patched": "q"},
                                               tmp_path / "out", scen)
    data = json.loads(json_path.read_text())
    rows = {r["scenario"]: r for r in data["scenarios"]}
    assert rows["failed_command_buffer"]["red_to_green"] is True
    assert rows["cache_trim"]["red_to_green"] is False  # green on pristine proves nothing
    assert rows["failed_command_buffer"]["cells"]["pristine"]["wilson95"][0] > 0.96
    md = md_path.read_text()
    assert "**red** 100/100" in md and "**green** 0/100" in md
    assert "no numerics" in md


def test_sanitized_scenario_judges_its_thread_columns(tmp_path: Path) -> None:
    # threads_streams_tsan runs only on ThreadSanitizer builds: its verdict (and the
    # rung of the patches it judges) comes from the +thread columns, not plain ones.
    scen = simulate.get_scenarios(["threads_streams", "threads_streams_tsan"])
    assert scen[1].sanitize == "thread" and scen[1].tree_key("patched") == "patched+thread"
    cells = [
        simulate.Cell("pristine", "threads_streams", runs=100, failures=13, kinds={"signal-SIGSEGV": 13}),
        simulate.Cell("patched", "threads_streams", runs=100, failures=0),
        simulate.Cell("pristine+thread", "threads_streams_tsan", runs=100, failures=100, kinds={"tsan": 100}),
        simulate.Cell("patched+thread", "threads_streams_tsan", runs=100, failures=2, kinds={"tsan": 2}),
    ]
    names = ["0023-metal-per-stream-locks-for-evaluation-from-several-t.patch",
             "0024-metal-read-the-allocator-s-memory-counters-under-its.patch"]
    json_path, _ = simulate.write_report(_base(tmp_path), cells, {}, tmp_path / "out", scen, names)
    data = json.loads(json_path.read_text())
    rows = {r["scenario"]: r for r in data["scenarios"]}
    assert rows["threads_streams"]["red_to_green"] is True
    assert rows["threads_streams_tsan"]["red_to_green"] is False
    # a race left on patched withholds the rung from both patches the TSan scenario judges
    assert data["patches"][names[0]]["simulated"] is False
    assert data["patches"][names[1]] == {"scenarios": {"threads_streams_tsan": {"pristine": "red", "patched": "red"}},
                                         "simulated": False}
    cells[-1] = simulate.Cell("patched+thread", "threads_streams_tsan", runs=100, failures=0)
    json_path, _ = simulate.write_report(_base(tmp_path), cells, {}, tmp_path / "out2", scen, names)
    data = json.loads(json_path.read_text())
    assert data["patches"][names[0]]["simulated"] is True and data["patches"][names[1]]["simulated"] is True


def test_unknown_scenario_is_an_error() -> None:
    with pytest.raises(Exception, match="unknown scenario"):
        simulate.get_scenarios(["nope"])


def test_every_scenario_source_exists() -> None:
    for s in simulate.SCENARIOS:
        assert (simulate.SCENARIO_DIR / s.source).is_file(), s.source


def test_plan_adds_metal_backend_and_drops_cpu_only_stubs(tmp_path: Path) -> None:
    tree = tmp_path / "mlx-src"
    (tree / "mlx/backend/metal/jit").mkdir(parents=True)
    (tree / "mlx/backend/gpu").mkdir(parents=True)
    (tree / "mlx/backend/no_gpu").mkdir(parents=True)
    for f in ("mlx/array.cpp", "mlx/backend/no_gpu/eval.cpp", "mlx/backend/metal/no_metal.cpp",
              "mlx/backend/metal/eval.cpp", "mlx/backend/metal/jit_kernels.cpp",
              "mlx/backend/metal/nojit_kernels.cpp", *simulate.GPU_SOURCES):
        (tree / f).write_text("")
    (tree / "mlx/backend/metal/jit/includes.h").write_text(
        "namespace mlx::core::metal {\nconst char* utils();\nconst char* gemm();\n}\n")
    commands = [
        {"file": str(tree / f), "command": f"clang++ -DX -I{tree} -O3 -g -o out.o -c {tree / f}"}
        for f in ("mlx/array.cpp", "mlx/backend/no_gpu/eval.cpp", "mlx/backend/metal/no_metal.cpp")
    ]
    build = tmp_path / "build"
    units, libs = simulate.plan_units(tree, build, commands, tmp_path / "metal-cpp", None)
    names = {u.source.name if "gen" in str(u.source) else str(u.source.relative_to(tree)) for u in units}
    assert "mlx/array.cpp" in names
    assert "mlx/backend/metal/eval.cpp" in names and "mlx/backend/metal/nojit_kernels.cpp" in names
    assert "mlx/backend/no_gpu/eval.cpp" not in names and "mlx/backend/metal/no_metal.cpp" not in names
    assert "mlx/backend/metal/jit_kernels.cpp" not in names
    assert "metal_jit_sources.cpp" in names
    stub = (build / "gen" / "metal_jit_sources.cpp").read_text()
    assert 'const char* utils() { return ""; }' in stub and 'const char* gemm() { return ""; }' in stub
    array_unit = next(u for u in units if u.source == tree / "mlx/array.cpp")
    assert "-O3" not in array_unit.args and "-O1" in array_unit.args and "-o" not in array_unit.args
    metal_unit = next(u for u in units if u.source.name == "eval.cpp")
    assert f"-I{simulate.metal_sim.INCLUDE_DIR}" in metal_unit.args and "-fblocks" in metal_unit.args
    assert "-lblas" in libs


def test_cli_registers_simulate() -> None:
    args = make_parser().parse_args(["simulate", "--base", "v0.31.1", "--runs", "7", "--scenario", "cache_trim"])
    assert args.runs == 7 and args.scenario == ["cache_trim"] and args.func is simulate._cmd_simulate


def test_patch_earns_simulated_only_when_red_on_pristine_and_green_on_patched(tmp_path: Path) -> None:
    scen = simulate.get_scenarios(["failed_command_buffer", "cache_trim", "threads_streams"])
    cells = [
        simulate.Cell("pristine", "failed_command_buffer", runs=10, failures=10),
        simulate.Cell("patched", "failed_command_buffer", runs=10, failures=0),
        simulate.Cell("pristine", "cache_trim", runs=10, failures=0),
        simulate.Cell("patched", "cache_trim", runs=10, failures=0),
        simulate.Cell("pristine", "threads_streams", runs=10, failures=2),
        simulate.Cell("patched", "threads_streams", runs=10, failures=1),
    ]
    names = ["0020-metal-retain-resources-referenced-by-command-buffers.patch",
             "0022-metal-defer-command-buffer-errors-to-the-next-wait-i.patch",
             "0023-metal-per-stream-locks-for-evaluation-from-several-t.patch",
             "0001-cpu-defer-errors-of-stream-tasks.patch"]
    json_path, md_path = simulate.write_report(_base(tmp_path), cells, {}, tmp_path / "out", scen, names)
    patches = json.loads(json_path.read_text())["patches"]
    assert patches[names[1]]["simulated"] is True
    assert patches[names[0]]["simulated"] is False  # green on pristine: not shown red
    assert patches[names[2]]["simulated"] is False  # still red on patched
    assert patches[names[3]]["scenarios"] == {} and patches[names[3]]["simulated"] is False
    assert "**simulated**" in md_path.read_text()


def test_plant_no_capture_removes_both_captures_and_fails_closed(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "mlx/backend/metal").mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / "mlx/backend/metal/eval.cpp").write_text(
        "command_buffer->addCompletedHandler(\n"
        "    [s, buffers = std::move(buffers)](MTL::CommandBuffer* cbuf) {});\n"
        "command_buffer->addCompletedHandler(\n"
        "    [buffers = std::move(buffers)](MTL::CommandBuffer* cbuf) {});\n")
    dest = simulate.plant_no_capture(tree, tmp_path / "planted")
    text = (dest / "mlx/backend/metal/eval.cpp").read_text()
    assert "buffers = std::move" not in text
    assert "[s](MTL::CommandBuffer* cbuf)" in text and "[](MTL::CommandBuffer* cbuf)" in text
    assert not (dest / ".git").exists()
    (tree / "mlx/backend/metal/eval.cpp").write_text("// no capture here\n")
    with pytest.raises(Exception, match="ablation"):
        simulate.plant_no_capture(tree, tmp_path / "planted2")
