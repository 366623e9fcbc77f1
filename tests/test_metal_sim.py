"""Tests of the simulated Metal runtime itself (hermetic: no MLX source, no network).

tests/metal_sim/selftest.cpp is built once against a fresh libmetalsim; each test
runs one of its cases in its own process (faults abort the process, as they would
on a Mac) and checks what the fake did.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from build_tools import metal_sim
from build_tools.errors import MlxForkError

SELFTEST = Path(__file__).parent / "metal_sim" / "selftest.cpp"


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        tc = metal_sim.find_toolchain()
    except MlxForkError as exc:
        pytest.skip(f"simulated Metal runtime needs clang 19, libc++ and BlocksRuntime: {exc}")
    out = tmp_path_factory.mktemp("metalsim")
    lib = metal_sim.build_runtime(out, tc)
    exe = out / "selftest"
    proc = subprocess.run(
        [tc.cxx, *metal_sim.CXXFLAGS, *metal_sim.INCLUDE_ARGS, str(SELFTEST), "-o", str(exe),
         f"-L{out}", "-lmetalsim", f"-Wl,-rpath,{out}", *tc.link_flags()],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert lib.exists()
    return exe


@pytest.fixture(scope="module")
def selftest_tsan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same cases against a ThreadSanitizer build of the fake (its own races would
    otherwise show up as false reports in MLX scenarios run under TSan)."""
    try:
        tc = metal_sim.find_toolchain()
    except MlxForkError as exc:
        pytest.skip(f"simulated Metal runtime needs clang 19, libc++ and BlocksRuntime: {exc}")
    out = tmp_path_factory.mktemp("metalsim-tsan")
    metal_sim.build_runtime(out, tc, sanitize="thread")
    exe = out / "selftest"
    proc = subprocess.run(
        [tc.cxx, "-fsanitize=thread", *metal_sim.CXXFLAGS, *metal_sim.INCLUDE_ARGS, str(SELFTEST), "-o",
         str(exe), f"-L{out}", "-lmetalsim", f"-Wl,-rpath,{out}", *tc.link_flags()],
        capture_output=True, text=True,
    )
    if proc.returncode != 0 and "sanitizer" in proc.stderr.lower():
        pytest.skip(f"ThreadSanitizer does not link here: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    return exe


def run(exe: Path, case: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLX_SIM_")}
    full.update(env)
    return subprocess.run([str(exe), case], capture_output=True, text=True, env=full, timeout=60)


def aborted(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == -signal.SIGABRT


def test_dispatch_through_msgsend_fpret_and_stret(selftest: Path) -> None:
    proc = run(selftest, "dispatch")
    assert proc.returncode == 0, proc.stderr
    assert "dispatch ok" in proc.stdout


def test_unknown_selector_aborts_by_default(selftest: Path) -> None:
    proc = run(selftest, "unknown-selector")
    assert aborted(proc)
    assert "unknown selector -[MTLSimDevice thisSelectorDoesNotExist]" in proc.stderr


def test_unknown_selector_warn_mode_reports_and_returns_zero(selftest: Path) -> None:
    proc = run(selftest, "unknown-selector-warn", MLX_SIM_UNKNOWN_SELECTOR="warn")
    assert proc.returncode == 0, proc.stderr
    assert "value 0 unknown 1" in proc.stdout
    assert "NOT simulated" in proc.stderr


def test_message_to_deallocated_object_is_reported(selftest: Path) -> None:
    proc = run(selftest, "zombie")
    assert aborted(proc)
    assert "message sent to deallocated instance" in proc.stderr
    assert "TestZombie" in proc.stderr


def test_autorelease_pool_drains(selftest: Path) -> None:
    proc = run(selftest, "autorelease")
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_unretained_command_buffer_fails_with_invalid_resource(selftest: Path) -> None:
    proc = run(selftest, "unretained")
    assert proc.returncode == 0, proc.stderr
    assert "status 5 dead_before_completion 1" in proc.stdout
    assert "error 9 Invalid Resource (00000009:kIOGPUCommandBufferCallbackErrorInvalidResource)" in proc.stdout


def test_retained_command_buffer_keeps_buffer_alive_until_completion(selftest: Path) -> None:
    proc = run(selftest, "retained")
    assert proc.returncode == 0, proc.stderr
    assert "status 4 dead_before_completion 0" in proc.stdout
    assert "dead_at_end 1" in proc.stdout  # released after the GPU finished
    assert "Invalid Resource" not in proc.stdout + proc.stderr


def test_injected_out_of_memory_fails_only_that_command_buffer(selftest: Path) -> None:
    proc = run(selftest, "inject-oom")
    assert proc.returncode == 0, proc.stderr
    assert ("first status 5 code 8 domain MTLCommandBufferErrorDomain: Insufficient Memory "
            "(00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)") in proc.stdout
    assert "second status 4 error (nil)" in proc.stdout


def test_injection_by_environment_picks_the_nth_commit(selftest: Path) -> None:
    proc = run(selftest, "inject-env", MLX_SIM_FAIL_CB="2", MLX_SIM_FAIL_CODE="timeout")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["status 4 code 0", "status 5 code 2", "status 4 code 0"]


def test_completed_handlers_run_on_the_gpu_thread_after_status_is_final(selftest: Path) -> None:
    proc = run(selftest, "handler-thread")
    assert proc.returncode == 0, proc.stderr
    assert "handler ran on main thread: 0, status in handler 4" in proc.stdout


def test_late_handlers_run_after_wait_returns(selftest: Path) -> None:
    proc = run(selftest, "late-handlers", MLX_SIM_LATE_HANDLERS_US="50000")
    assert proc.returncode == 0, proc.stderr
    assert "handler ran before wait returned: 0, later: 1" in proc.stdout


def test_handlers_run_before_wait_returns_by_default(selftest: Path) -> None:
    proc = run(selftest, "late-handlers")
    assert proc.returncode == 0, proc.stderr
    assert "handler ran before wait returned: 1, later: 1" in proc.stdout


def test_completed_handler_after_commit_aborts(selftest: Path) -> None:
    proc = run(selftest, "handler-after-commit")
    assert aborted(proc)
    assert "Completed handler provided after commit call" in proc.stderr


def test_second_active_encoder_aborts(selftest: Path) -> None:
    proc = run(selftest, "two-encoders")
    assert aborted(proc)
    assert "A command encoder is already encoding" in proc.stderr


def test_exception_in_completion_handler_terminates(selftest: Path) -> None:
    proc = run(selftest, "handler-throws")
    assert aborted(proc)
    assert "[METAL] Command buffer execution failed" in proc.stderr
    assert "not expected" not in proc.stdout


def test_error_out_parameter_is_set_on_failure_and_cleared_on_success(selftest: Path) -> None:
    proc = run(selftest, "error-out-param")
    assert proc.returncode == 0, proc.stderr
    assert "missing: code 6 Library file not found: /nonexistent/mlx.metallib" in proc.stdout


def test_gpu_waits_for_shared_event(selftest: Path) -> None:
    proc = run(selftest, "shared-event")
    assert proc.returncode == 0, proc.stderr
    assert "status while waiting 3, after 4, value 5, reached 1, timeout 1" in proc.stdout


def test_memory_size_and_allocation_limit(selftest: Path) -> None:
    proc = run(selftest, "memory", MLX_SIM_MEMORY_SIZE=str(1 << 30))
    assert proc.returncode == 0, proc.stderr
    assert f"sysctl 0 memsize {1 << 30} recommended {(1 << 30) // 4 * 3} big nil" in proc.stdout


@pytest.mark.parametrize("case", ["unretained", "retained", "inject-oom", "handler-thread", "shared-event",
                                  "late-handlers"])
def test_fake_has_no_data_races_under_thread_sanitizer(selftest_tsan: Path, case: str) -> None:
    env = {"TSAN_OPTIONS": "halt_on_error=1"}
    if case == "late-handlers":
        env["MLX_SIM_LATE_HANDLERS_US"] = "20000"
    proc = run(selftest_tsan, case, **env)
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
