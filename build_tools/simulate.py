"""`mlx-fork simulate`: MLX's Metal host code on Linux against the simulated Metal runtime.

Ladder rung 3. For a base, the pristine tree and the patched tree (pristine + the
series) are each compiled - MLX core + CPU backend + Metal backend - with clang 19 and
libc++ against our fake Objective-C/Metal runtime (build_tools/metal_sim), giving a
libmlx.so that really runs MLX's command-buffer, allocator and completion-handler code.
Lifecycle scenarios (build_tools/metal_sim/scenarios, one per Metal fix) are linked
against each library and run many times; each run is a fresh process. A scenario is
*red* on a tree when some run failed (abort, crash, timeout, wrong result) and *green*
when none did. The red/green table with run counts and 95% Wilson bounds goes to
reports/<base>-metal-sim/ as JSON and markdown.

How the library is built: MLX's own CMake is configured for Linux CPU with clang/libc++
(to get its exact flags and the generated CPU preamble); simulate.py then writes its
own ninja file with those compile commands plus the Metal backend sources, which MLX's
CMake only builds on macOS. metal-cpp comes from the stock mlx-metal wheel of the same
version. Kernels are not executed (see metal_sim/SEMANTICS.md for what is simulated).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import metal_sim
from .bases import BasePin, load_base
from .deps import metal_cpp_dir
from .errors import MlxForkError
from .paths import PRIMARY_BASE, reports_dir, work_dir
from .proc import run, say
from .validate.stats import wilson

SCENARIO_DIR = Path(metal_sim.__file__).resolve().parent / "scenarios"
METALLIB_PLACEHOLDER = b"MTLB metal-sim placeholder: kernels are not executed\n"
# Compile everything at -O1: the simulator needs MLX's host logic, not fast kernels,
# and -O1 roughly halves the compile time of the CPU backend.
OPT_FLAGS = ("-O1", "-g1")

# Sources of the Metal backend besides mlx/backend/metal/*.cpp that MLX's CMake
# adds only when MLX_BUILD_METAL=ON, and the CPU-build sources they replace.
GPU_SOURCES = ("mlx/backend/gpu/copy.cpp", "mlx/backend/gpu/primitives.cpp", "mlx/backend/gpu/slicing.cpp")
METAL_EXCLUDE = {"no_metal.cpp", "jit_kernels.cpp"}  # MLX_METAL_JIT=OFF: nojit_kernels.cpp
CPU_ONLY_PREFIXES = ("mlx/backend/no_gpu/", "mlx/backend/metal/no_metal.cpp")


# ---------------------------------------------------------------- building


@dataclass
class CompileUnit:
    source: Path
    obj: Path
    args: list[str]  # compiler arguments without -o/-c


@dataclass
class SimLibrary:
    label: str
    tree: Path
    build: Path
    lib_dir: Path  # libmlx.so, libmetalsim.so, mlx.metallib placeholder
    sanitize: str | None = None

    @property
    def libmlx(self) -> Path:
        return self.lib_dir / "libmlx.so"


def _configure_cpu(base: BasePin, tree: Path, build: Path, work: Path, toolchain: metal_sim.Toolchain,
                   log: Path) -> list[dict[str, Any]]:
    """MLX's CMake for Linux CPU with clang/libc++; returns compile_commands.json."""
    from .compile import ccache_env
    from .deps import DepsRequest, provision
    from .profiles import get_profile

    profile = get_profile("linux-cpu")
    deps = provision(base, profile, build / "deps", DepsRequest(), work=work)
    args = [
        *profile.cmake_args,
        *deps.cmake_args,
        f"-DMLX_VERSION={base.version}+metalsim",
        f"-DCMAKE_C_COMPILER={toolchain.cc}",
        f"-DCMAKE_CXX_COMPILER={toolchain.cxx}",
        "-DCMAKE_CXX_FLAGS=-stdlib=libc++",
        "-DCMAKE_SHARED_LINKER_FLAGS=-stdlib=libc++",
        "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
        "-DMLX_USE_CCACHE=OFF",  # our ninja file adds ccache itself
    ]
    cmake_dir = build / "cmake"
    stamp = cmake_dir / "mlx-fork-configure.txt"
    wanted = "\n".join([str(tree.resolve()), *args]) + "\n"
    if not (stamp.is_file() and stamp.read_text() == wanted and (cmake_dir / "compile_commands.json").is_file()):
        cmake_dir.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        run(["cmake", "-G", "Ninja", "-S", tree, "-B", cmake_dir, *args], step="simulate: configure (cmake)",
            env=ccache_env(work), log=log)
        stamp.write_text(wanted)
    # Re-run CMake if a patch changed a CMakeLists.txt (ninja's regeneration rule).
    run(["ninja", "-C", cmake_dir, "build.ninja"], step="simulate: cmake regeneration check", log=log)
    # Generated sources (the CPU backend's compiled preamble) come from CMake's rules.
    generated = [
        e["file"] for e in json.loads((cmake_dir / "compile_commands.json").read_text())
        if not Path(e["file"]).resolve().is_relative_to(tree.resolve())
    ]
    if generated:
        run(["ninja", "-C", cmake_dir, *[os.path.relpath(g, cmake_dir) for g in generated]],
            step="simulate: generate sources", log=log)
    commands: list[dict[str, Any]] = json.loads((cmake_dir / "compile_commands.json").read_text())
    return commands


def _strip_output_args(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("-o", "-c"):
            skip = True
            continue
        if a.startswith("-O") or a in ("-g", "-fcolor-diagnostics"):
            continue
        out.append(a)
    return out


def _jit_stub(tree: Path, dest: Path) -> Path:
    """Empty bodies for the generated Metal JIT source functions (kernels never compile here)."""
    header = (tree / "mlx/backend/metal/jit/includes.h").read_text()
    names = re.findall(r"const char\*\s+(\w+)\(\);", header)
    body = "".join(f'const char* {n}() {{ return ""; }}\n' for n in names)
    text = ("// Generated by mlx-fork simulate: the JIT kernel sources are not needed,\n"
            "// kernels are not executed by the simulated Metal runtime.\n"
            "namespace mlx::core::metal {\n" + body + "}\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.is_file() or dest.read_text() != text:
        dest.write_text(text)
    return dest


def plan_units(tree: Path, build: Path, commands: list[dict[str, Any]], metal_cpp: Path,
               sanitize: str | None) -> tuple[list[CompileUnit], list[str]]:
    """Compile units of core + CPU + Metal; returns them and the link libraries of libmlx."""
    tree = tree.resolve()
    units: list[CompileUnit] = []
    base_args: list[str] | None = None
    extra = list(OPT_FLAGS) + ["-DFMT_HEADER_ONLY=1", "-fblocks"]
    if sanitize:
        extra.append(f"-fsanitize={sanitize}")
    for entry in commands:
        src = Path(entry["file"]).resolve()
        argv = shlex.split(entry["command"]) if "command" in entry else list(entry["arguments"])
        rel = os.path.relpath(src, tree)
        if any(rel.startswith(p) for p in CPU_ONLY_PREFIXES):
            continue
        args = _strip_output_args(argv) + extra
        if rel == "mlx/array.cpp":
            base_args = args
        units.append(CompileUnit(src, build / "obj" / (rel.replace("/", "_").replace("..", "_") + ".o"), args))
    if base_args is None:
        raise MlxForkError("compile_commands.json has no mlx/array.cpp: not an MLX CMake build?")
    metal_args = [
        *base_args,
        *metal_sim.INCLUDE_ARGS,
        f"-I{metal_cpp}",
        f'-DMETAL_PATH="{build / "lib" / "mlx.metallib"}"',
        "-Wno-ignored-attributes",
        "-Wno-availability",
    ]
    metal_dir = tree / "mlx" / "backend" / "metal"
    sources = [tree / s for s in GPU_SOURCES]
    sources += sorted(p for p in metal_dir.glob("*.cpp") if p.name not in METAL_EXCLUDE)
    sources.append(_jit_stub(tree, build / "gen" / "metal_jit_sources.cpp"))
    for src in sources:
        rel = os.path.relpath(src, tree) if src.is_relative_to(tree) else src.name
        units.append(CompileUnit(src, build / "obj" / (rel.replace("/", "_") + ".o"), metal_args))
    return units, ["-lblas", "-llapack", "-llapacke"]


def _ninja_escape(s: str) -> str:
    return s.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def write_ninja(build: Path, units: list[CompileUnit], link_libs: list[str], toolchain: metal_sim.Toolchain,
                metalsim_lib: Path, sanitize: str | None) -> Path:
    ccache = shutil.which("ccache")
    launcher = f"{ccache} " if ccache else ""
    lines = [
        "# Generated by mlx-fork simulate: MLX core + CPU + Metal backend against libmetalsim.",
        f"rule cxx\n  command = {launcher}{toolchain.cxx} $flags -MD -MF $out.d -c $in -o $out\n"
        "  depfile = $out.d\n  deps = gcc\n  description = CXX $in",
        f"rule link\n  command = {toolchain.cxx} -shared -o $out $in $libs\n  description = LINK $out",
    ]
    objs = []
    for u in units:
        flags = " ".join(shlex.quote(a) for a in u.args).replace("$", "$$")
        lines.append(f"build {_ninja_escape(str(u.obj))}: cxx {_ninja_escape(str(u.source))}\n  flags = {flags}")
        objs.append(_ninja_escape(str(u.obj)))
    libs = [
        "-stdlib=libc++", "-fblocks", f"-L{metalsim_lib.parent}", "-lmetalsim", "-lBlocksRuntime", "-lpthread",
        "-ldl", *link_libs, "-Wl,-soname,libmlx.so", "-Wl,-z,defs", "'-Wl,-rpath,$$ORIGIN'",
    ]
    if sanitize:
        libs.remove("-Wl,-z,defs")  # the sanitizer runtime comes with the executable
        libs.insert(0, f"-fsanitize={sanitize}")
    lines.append(f"build {_ninja_escape(str(build / 'lib' / 'libmlx.so'))}: link {' '.join(objs)} | "
                 f"{_ninja_escape(str(metalsim_lib))}\n  libs = {' '.join(libs)}")
    path = build / "build.ninja"
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def build_library(base: BasePin, label: str, tree: Path, work: Path, *, sanitize: str | None = None,
                  jobs: int | None = None) -> SimLibrary:
    """Compile `tree` into a libmlx.so linked against libmetalsim.

    All trees of a base share one build slot: the tree is synced into slot/src
    (only files whose bytes differ are rewritten), so switching between pristine
    and patched recompiles just the files the patches touch (and ccache, seeing
    identical paths, usually has those too). The result is copied to
    <base>/<label>/lib.
    """
    from .compile import ccache_env, run_with_progress, sync_tree

    toolchain = metal_sim.find_toolchain()
    suffix = f"-{sanitize}" if sanitize else ""
    root = work / "metal-sim" / base.name
    slot = root / ("slot" + suffix)
    src = slot / "src"
    logs = slot / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    sync = sync_tree(tree, src)
    say(f"simulate: {label}: tree synced into the build slot ({len(sync.copied)} files changed)")
    lib_dir = slot / "lib"
    lib_dir.mkdir(parents=True, exist_ok=True)
    metalsim_lib = metal_sim.build_runtime(lib_dir, toolchain, sanitize=sanitize)
    (lib_dir / "mlx.metallib").write_bytes(METALLIB_PLACEHOLDER)
    metal_cpp = metal_cpp_dir(base, work)
    commands = _configure_cpu(base, src, slot, work, toolchain, logs / "configure.log")
    units, link_libs = plan_units(src, slot, commands, metal_cpp, sanitize)
    (slot / "obj").mkdir(exist_ok=True)
    write_ninja(slot, units, link_libs, toolchain, metalsim_lib, sanitize)
    say(f"simulate: compiling {label}{suffix}: {len(units)} files (ninja -C {slot})")
    cmd = ["ninja", "-C", str(slot)]
    if jobs:
        cmd += ["-j", str(jobs)]
    started = time.monotonic()
    run_with_progress(cmd, step=f"simulate: compiling {label}{suffix}", log=logs / "compile.log", env=ccache_env(work))
    say(f"simulate: {label}{suffix} built in {time.monotonic() - started:.0f}s")
    out = root / (label + suffix)
    out_lib = out / "lib"
    out_lib.mkdir(parents=True, exist_ok=True)
    for name in ("libmlx.so", "libmetalsim.so", "mlx.metallib"):
        shutil.copy2(lib_dir / name, out_lib / name)
    return SimLibrary(label=label, tree=tree, build=out, lib_dir=out_lib, sanitize=sanitize)


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    fix: str  # the Metal fix whose absence it reproduces
    source: str  # file in build_tools/metal_sim/scenarios
    env: dict[str, str]  # simulator settings (fault injection) for every run
    summary: str
    # Patch file names containing one of these are the fixes this scenario judges
    # (their `Verified:` may gain `simulated` when it is red on pristine, green on patched).
    patches: tuple[str, ...] = ()
    # Runs only against libraries built with this sanitizer ("thread"): for fixes
    # of data races that do not crash on x86 but that ThreadSanitizer reports.
    sanitize: str | None = None

    def tree_key(self, tree: str) -> str:
        """The report column of `tree` for this scenario (sanitized scenarios use `tree+thread`)."""
        return f"{tree}+{self.sanitize}" if self.sanitize else tree


MiB = 1 << 20

# The kill switch of patches/<base>/0020 (no effect on trees without it).
UNRETAINED_ENV = {"MLX_METAL_UNRETAINED_REFERENCES": "1"}


def _unretained(s: Scenario) -> Scenario:
    """`s` with retained references switched off: it then judges deferred cache release alone."""
    return replace(s, name=f"{s.name}_unretained", env={**s.env, **UNRETAINED_ENV},
                   fix="deferred cache release alone (retained references switched off)",
                   summary=f"{s.name} with the retained-references patch switched off by its kill switch",
                   patches=("release-cached-buffers",))


_BUFFER_LIFETIME = ("retain-resources", "release-cached-buffers")
CACHE_TRIM = Scenario(
    name="cache_trim",
    fix="retained command buffers / deferred cache release",
    source="cache_trim.cpp",
    env={"MLX_SIM_GPU_DELAY_US": "300", "MLX_SIM_GPU_JITTER_US": "700",
         "MLX_SIM_MEMORY_SIZE": str(256 * MiB), "SCENARIO_CACHE_LIMIT": "0"},
    summary="async_eval + allocation churn, cache limit 0, small memory, late GPU completion",
    patches=_BUFFER_LIFETIME,
)
CONV3D_PAD_TRIM = Scenario(
    name="conv3d_pad_trim",
    fix="retained command buffers / deferred cache release",
    source="conv3d_pad.cpp",
    env={"MLX_SIM_GPU_DELAY_US": "300", "SCENARIO_CACHE_LIMIT": "0"},
    summary="mx.conv3d with 3 input channels + async_eval, cache limit 0: the pad value conv.cpp drops "
            "while its fill is pending is released at once",
    patches=_BUFFER_LIFETIME,
)
CONV3D_PAD_CLEAR_CACHE = Scenario(
    name="conv3d_pad_clear_cache",
    fix="retained command buffers / deferred cache release",
    source="conv3d_pad.cpp",
    env={"MLX_SIM_GPU_DELAY_US": "300", "SCENARIO_CLEAR_CACHE": "1"},
    summary="mx.conv3d + async_eval, then mx.clear_cache() without synchronizing (default cache limit)",
    patches=_BUFFER_LIFETIME,
)
FAILED_COMMAND_BUFFER = Scenario(
    name="failed_command_buffer",
    fix="deferred errors",
    source="failed_command_buffer.cpp",
    env={"MLX_SIM_GPU_DELAY_US": "200"},
    summary="a command buffer fails with out-of-memory; expect an exception at eval, stream usable after",
    patches=("defer-command-buffer-errors",),
)
THREADS_STREAMS = Scenario(
    name="threads_streams",
    fix="per-stream locks",
    source="threads_streams.cpp",
    env={"MLX_SIM_GPU_DELAY_US": "100", "MLX_SIM_GPU_JITTER_US": "300",
         "SCENARIO_THREADS": "8", "SCENARIO_ITERS": "60"},
    summary="8 threads, each with its own new GPU stream, 60 eval/async_eval each, concurrently",
    patches=("per-stream-locks",),
)

SCENARIOS: tuple[Scenario, ...] = (
    CACHE_TRIM,
    CONV3D_PAD_TRIM,
    _unretained(CONV3D_PAD_TRIM),
    CONV3D_PAD_CLEAR_CACHE,
    _unretained(CONV3D_PAD_CLEAR_CACHE),
    FAILED_COMMAND_BUFFER,
    THREADS_STREAMS,
    replace(THREADS_STREAMS, name="threads_streams_tsan", fix="allocator counters read under the allocator lock",
            summary="threads_streams on a ThreadSanitizer build: any data race report fails the run",
            patches=("per-stream-locks", "allocator-s-memory-counters"), sanitize="thread"),
    _unretained(CACHE_TRIM),
    replace(FAILED_COMMAND_BUFFER, name="failed_command_buffer_late_handlers",
            env={**FAILED_COMMAND_BUFFER.env, "MLX_SIM_LATE_HANDLERS_US": "3000"},
            summary="failed_command_buffer with completion handlers running 3 ms after waiters wake"),
    Scenario(
        name="clear_cache_inflight",
        fix="deferred cache release",
        source="clear_cache_inflight.cpp",
        env={"MLX_SIM_GPU_DELAY_US": "500", "MLX_SIM_GPU_JITTER_US": "1000"},
        summary="clear_cache() right after async_eval, no synchronize",
        patches=("release-cached-buffers",),
    ),
)


def get_scenarios(names: list[str] | None) -> list[Scenario]:
    if not names:
        return list(SCENARIOS)
    known = {s.name: s for s in SCENARIOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MlxForkError(f"unknown scenario(s): {', '.join(unknown)}", hint=f"known: {', '.join(known)}")
    return [known[n] for n in names]


def build_scenario(lib: SimLibrary, scenario: Scenario, toolchain: metal_sim.Toolchain) -> Path:
    out = lib.build / "scenarios" / scenario.name
    out.parent.mkdir(parents=True, exist_ok=True)
    src = SCENARIO_DIR / scenario.source
    deps = [src, SCENARIO_DIR / "scenario.h", lib.libmlx]
    if out.is_file() and all(out.stat().st_mtime >= d.stat().st_mtime for d in deps):
        return out
    cmd = [toolchain.cxx, *metal_sim.CXXFLAGS, "-O1", f"-I{lib.tree}", *metal_sim.INCLUDE_ARGS,
           f"-I{SCENARIO_DIR}", "-DFMT_HEADER_ONLY=1", str(src), "-o", str(out),
           f"-L{lib.lib_dir}", "-lmlx", "-lmetalsim", f"-Wl,-rpath,{lib.lib_dir}", *toolchain.link_flags()]
    if lib.sanitize:
        cmd.insert(1, f"-fsanitize={lib.sanitize}")
    run(cmd, step=f"simulate: build scenario {scenario.name}")
    return out


# ---------------------------------------------------------------- running


@dataclass
class RunResult:
    ok: bool
    kind: str  # pass | invalid-resource | terminate | sim-abort | tsan | fail | timeout | signal-N | exit-N
    seconds: float
    detail: str = ""


def classify(rc: int | None, out: str, err: str) -> tuple[bool, str, str]:
    text = out + err
    detail = ""
    for line in (err + out).splitlines():
        if any(k in line for k in ("FATAL", "terminating", "SCENARIO FAIL", "Invalid Resource", "ThreadSanitizer",
                                   "execution failed")):
            detail = line.strip()[:300]
            break
    if rc is None:
        return False, "timeout", detail or "no verdict within the time limit"
    if "WARNING: ThreadSanitizer" in text:
        return False, "tsan", detail
    if rc == 0 and "SCENARIO PASS" in out:
        return True, "pass", ""
    if "Invalid Resource" in text:
        return False, "invalid-resource", detail
    if "terminating due to uncaught exception" in text or "terminate called" in text:
        return False, "terminate", detail
    if "metal-sim: FATAL" in text:
        return False, "sim-abort", detail
    if "SCENARIO FAIL" in out:
        return False, "fail", detail
    if rc < 0:
        return False, f"signal-{signal.Signals(-rc).name}", detail
    return False, f"exit-{rc}", detail


def run_once(exe: Path, env: dict[str, str], timeout: float, log: Path | None = None) -> RunResult:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MLX_SIM_", "SCENARIO_"))}
    full.update(env)
    started = time.monotonic()
    try:
        proc = subprocess.run([str(exe)], capture_output=True, text=True, env=full, timeout=timeout)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = None
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    seconds = time.monotonic() - started
    ok, kind, detail = classify(rc, out, err)
    if log is not None and not ok:
        with log.open("a") as fh:
            # Keep the head of stderr too: a sanitizer report starts with the racing accesses.
            shown = err if len(err) <= 12000 else err[:8000] + "\n[...]\n" + err[-4000:]
            fh.write(f"=== {exe.name} rc={rc} kind={kind} ({seconds:.1f}s)\n--- stdout\n{out[-4000:]}\n"
                     f"--- stderr\n{shown}\n")
    return RunResult(ok, kind, seconds, detail)


@dataclass
class Cell:
    tree: str
    scenario: str
    runs: int = 0
    failures: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_failure: str = ""
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return "red" if self.failures else "green"

    def to_json(self) -> dict[str, Any]:
        lo, hi = wilson(self.failures, self.runs)
        return {**asdict(self), "verdict": self.verdict, "failure_rate": self.failures / max(self.runs, 1),
                "wilson95": [round(lo, 4), round(hi, 4)]}


def run_cell(lib: SimLibrary, scenario: Scenario, exe: Path, runs: int, timeout: float, log: Path) -> Cell:
    cell = Cell(tree=lib.label + (f"+{lib.sanitize}" if lib.sanitize else ""), scenario=scenario.name)
    env = dict(scenario.env)
    if lib.sanitize == "thread":
        env["TSAN_OPTIONS"] = "halt_on_error=1 second_deadlock_stack=1"
    started = time.monotonic()
    for i in range(runs):
        r = run_once(exe, env, timeout, log)
        cell.runs += 1
        if not r.ok:
            cell.failures += 1
            cell.kinds[r.kind] = cell.kinds.get(r.kind, 0) + 1
            cell.first_failure = cell.first_failure or r.detail
        if (i + 1) % 25 == 0 or i + 1 == runs:
            say(f"simulate: {cell.tree} {scenario.name}: {cell.failures}/{cell.runs} failed")
    cell.seconds = round(time.monotonic() - started, 1)
    return cell


# ---------------------------------------------------------------- report


LIMITS = (
    "Kernels are not executed (no numerics): the simulator checks MLX's host-side command-buffer, allocator, "
    "event and completion-handler logic, never values.",
    "x86-64's stronger memory ordering hides some races that Apple silicon would show; ThreadSanitizer runs "
    "(where they build) cover part of that.",
    "The fake encodes our reading of Metal semantics (build_tools/metal_sim/SEMANTICS.md), not Apple's "
    "implementation; rung 4 (Apple silicon) remains the final word.",
    "Outcomes depend on thread timing: each cell is many fresh processes; bounds are 95% Wilson intervals "
    "of the failure rate.",
)


def patch_verdicts(rows: list[dict[str, Any]], scenarios: list[Scenario], patch_names: list[str]) -> dict[str, dict[str, Any]]:
    """Per patch: the scenarios that judge it and whether it earned rung 3 (`simulated`).

    Earned only when every scenario judging it ran on both trees, and at least one
    is red on pristine and all are green on patched.
    """
    by_name = {r["scenario"]: r for r in rows}
    out: dict[str, dict[str, Any]] = {}
    for name in patch_names:
        judged = [s for s in scenarios if any(slug in name for slug in s.patches)]
        results = {}
        for scn in judged:
            cells = by_name[scn.name]["cells"]
            results[scn.name] = {t: cells[scn.tree_key(t)]["verdict"] for t in ("pristine", "patched")
                                 if scn.tree_key(t) in cells}
        complete = bool(judged) and all(len(r) == 2 for r in results.values())
        earned = complete and any(r["pristine"] == "red" for r in results.values()) and all(
            r["patched"] == "green" for r in results.values())
        out[name] = {"scenarios": results, "simulated": earned}
    return out


def write_report(base: BasePin, cells: list[Cell], trees: dict[str, str], out_dir: Path,
                 scenarios: list[Scenario], patch_names: list[str] | None = None) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    by = {(c.scenario, c.tree): c for c in cells}
    tree_names = list(dict.fromkeys(c.tree for c in cells))
    rows: list[dict[str, Any]] = []
    for s in scenarios:
        row: dict[str, Any] = {"scenario": s.name, "fix": s.fix, "summary": s.summary, "env": s.env, "cells": {}}
        for t in tree_names:
            if (s.name, t) in by:
                row["cells"][t] = by[(s.name, t)].to_json()
        pristine = row["cells"].get(s.tree_key("pristine"))
        patched = row["cells"].get(s.tree_key("patched"))
        row["red_to_green"] = bool(pristine and patched and pristine["verdict"] == "red"
                                   and patched["verdict"] == "green")
        planted, planted_fixed = row["cells"].get("pristine-nocapture"), row["cells"].get("patched-nocapture")
        if planted and planted_fixed:
            row["ablation_red_to_green"] = planted["verdict"] == "red" and planted_fixed["verdict"] == "green"
        rows.append(row)
    patches = patch_verdicts(rows, scenarios, patch_names or [])
    data = {"base": base.name, "commit": base.commit, "trees": trees, "scenarios": rows, "patches": patches,
            "limits": list(LIMITS)}
    json_path = out_dir / "metal-sim.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")

    lines = [f"# Simulated Metal runtime: lifecycle scenarios on {base.name}", ""]
    lines.append("Each cell: failed runs / runs, [95% Wilson bounds of the failure rate], failure kinds. "
                 "red = at least one run failed; green = none did.")
    lines.append("")
    lines.append("| scenario | fix | " + " | ".join(tree_names) + " | red -> green |")
    lines.append("|---|---|" + "---|" * len(tree_names) + "---|")
    for row in rows:
        cells_md = []
        for t in tree_names:
            c = row["cells"].get(t)
            if not c:
                cells_md.append("-")
                continue
            lo, hi = c["wilson95"]
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(c["kinds"].items()))
            cells_md.append(f"**{c['verdict']}** {c['failures']}/{c['runs']} [{lo:.2f}, {hi:.2f}]"
                            + (f" ({kinds})" if kinds else ""))
        verdict = "yes" if row["red_to_green"] else "no"
        if "ablation_red_to_green" in row:
            verdict += f" (planted bug: {'yes' if row['ablation_red_to_green'] else 'no'})"
        lines.append(f"| {row['scenario']} | {row['fix']} | " + " | ".join(cells_md) + f" | {verdict} |")
    lines += ["", "## Scenarios", ""]
    for row in rows:
        env = " ".join(f"{k}={v}" for k, v in row["env"].items())
        lines.append(f"- **{row['scenario']}** ({row['fix']}): {row['summary']}. Settings: `{env}`.")
        for t, c in row["cells"].items():
            if c["first_failure"]:
                lines.append(f"  - first failure on {t}: `{c['first_failure']}`")
    if patches:
        lines += ["", "## Patches judged (rung 3 `simulated` = a scenario red on pristine, all green on patched)", ""]
        for name, v in patches.items():
            if not v["scenarios"]:
                continue
            res = "; ".join(f"{s}: " + " -> ".join(r.get(t, "-") for t in ("pristine", "patched"))
                            for s, r in v["scenarios"].items())
            lines.append(f"- {name}: {'**simulated**' if v['simulated'] else 'not earned'} ({res})")
    lines += ["", "## Trees", ""]
    lines += [f"- {name}: {desc}" for name, desc in trees.items()]
    lines += ["", "## Limits of the simulator", ""]
    lines += [f"- {x}" for x in LIMITS]
    md_path = out_dir / "metal-sim.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


# ---------------------------------------------------------------- CLI


def _patched_tree(base: BasePin, pristine: Path, work: Path) -> tuple[Path, str]:
    from .patchqueue import patched_tree
    from .series import load_series

    series = load_series(base)
    dest = patched_tree(series, pristine, work / "metal-sim" / base.name / "trees")
    names = ", ".join(p.name for p in series.patches) or "no patches"
    return dest, f"pristine + series ({len(series.patches)} patches: {names})"


# The planted bug of the ablation: MLX's Metal eval() keeps every input's
# array::Data alive in the command buffer's completion handler; without that
# capture, buffers are released while command buffers still use them.
_CAPTURE = re.compile(r"\[(s, )?buffers = std::move\(buffers\)\]")


def plant_no_capture(tree: Path, dest: Path) -> Path:
    """Copy `tree` to `dest` with eval.cpp's input-buffer capture removed (fails closed)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(tree, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    path = dest / "mlx" / "backend" / "metal" / "eval.cpp"
    text = path.read_text()
    new, n = _CAPTURE.subn(lambda m: "[s]" if m.group(1) else "[]", text)
    if n == 0:
        raise MlxForkError(f"ablation: no `buffers = std::move(buffers)` capture in {path}",
                           hint="the planted bug needs MLX's Metal eval.cpp capture; this tree has none")
    path.write_text(new)
    return dest


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .source import prepare_source

    base = load_base(args.base)
    work = work_dir()
    scenarios = get_scenarios(args.scenario)
    toolchain = metal_sim.find_toolchain()
    trees: list[tuple[str, Path, str]] = []
    if args.tree:
        for spec in args.tree:
            label, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
            trees.append((label, Path(path).resolve(), f"given tree {path}"))
    else:
        pristine = prepare_source(base, args.source, work)
        trees.append(("pristine", pristine.path, f"pristine {base.tag} ({base.commit[:12]})"))
        if not args.pristine_only:
            path, desc = _patched_tree(base, pristine.path, work)
            trees.append(("patched", path, desc))
    if args.ablation:
        planted_root = work / "metal-sim" / base.name / "trees"
        for label, path, _ in list(trees):
            dest = plant_no_capture(path, planted_root / f"{label}-nocapture")
            trees.append((f"{label}-nocapture", dest,
                          f"{label} with the planted bug: metal/eval.cpp no longer keeps input buffers alive"))
    # --tsan runs every scenario on ThreadSanitizer builds too (runs/4 each);
    # scenarios that need a sanitizer run only there, with the full run count.
    sanitizers: list[str | None] = [None]
    if args.tsan or any(s.sanitize == "thread" for s in scenarios):
        sanitizers.append("thread")
    cells: list[Cell] = []
    out_dir = args.report_dir or reports_dir() / f"{base.name}-metal-sim"
    out_dir.mkdir(parents=True, exist_ok=True)
    failures_log = out_dir / "failures.log"
    failures_log.write_text("")
    for sanitize in sanitizers:
        for label, path, _ in trees:
            lib = build_library(base, label, path, work, sanitize=sanitize, jobs=args.jobs)
            for s in scenarios:
                if s.sanitize is not None and s.sanitize != sanitize:
                    continue
                if s.sanitize is None and sanitize is not None and not args.tsan:
                    continue
                exe = build_scenario(lib, s, toolchain)
                runs = args.runs if sanitize is None or s.sanitize else max(1, args.runs // 4)
                cells.append(run_cell(lib, s, exe, runs, args.timeout, failures_log))
    patch_names: list[str] = []
    if not args.tree:
        from .series import load_series

        patch_names = [p.name for p in load_series(base).patches]
    json_path, md_path = write_report(base, cells, {label: desc for label, _, desc in trees}, out_dir, scenarios,
                                      patch_names)
    print(md_path.read_text())
    say(f"simulate: report {md_path} and {json_path.name}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate",
        help="run the Metal lifecycle scenarios on Linux against the simulated Metal runtime",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--base", default=PRIMARY_BASE, help=f"pinned base (default {PRIMARY_BASE})")
    p.add_argument("--source", type=Path, help="MLX checkout/tree of the base (else MLX_FORK_SOURCE or download)")
    p.add_argument("--tree", action="append", metavar="[LABEL=]PATH",
                   help="simulate this already-prepared tree instead of pristine+patched (repeatable)")
    p.add_argument("--pristine-only", action="store_true", help="skip the patched tree")
    p.add_argument("--runs", type=int, default=100, help="runs per scenario and tree (default 100)")
    p.add_argument("--scenario", action="append", help="only this scenario (repeatable); default all")
    p.add_argument("--ablation", action="store_true",
                   help="also run each tree with a planted use-after-release bug (eval.cpp's buffer capture "
                        "removed), to show what the buffer-lifetime fixes prevent")
    p.add_argument("--tsan", action="store_true", help="also build with ThreadSanitizer and run runs/4 there")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per run before it counts as a hang")
    p.add_argument("--jobs", type=int, help="parallel compile jobs")
    p.add_argument("--report-dir", type=Path, help="default reports/<base>-metal-sim")
    p.set_defaults(func=_cmd_simulate)
