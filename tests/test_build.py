"""The build stage without MLX: tree sync, manifest and label, CMake/Ninja driving, failure reporting."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest
from conftest import Upstream, build_inputs

from build_tools import build as build_mod
from build_tools import compile as compile_mod
from build_tools.cli import main, make_parser
from build_tools.errors import MlxForkError
from build_tools.manifest import BuildInputs, Manifest, compare_provenance, make_label, normalize_cmake_args
from build_tools.profiles import MACOS_TARGETS, get_profile, profile_of_build

LABEL = re.compile(r"^fork\.\d+\.h[0-9a-f]{10}$")


def inputs(**over: object) -> dict:
    return build_inputs(**over).to_json()


# ---------------------------------------------------------------- label


def test_label_format_and_pep440_roundtrip() -> None:
    from packaging.version import Version

    label = make_label(inputs())
    assert LABEL.match(label), label
    assert label.startswith("fork.1.")
    version = f"0.31.1+{label}"
    assert str(Version(version)) == version  # no normalisation: file name == pip's version


@pytest.mark.parametrize(
    "change",
    [
        {"patches": [{"name": "0001-a.patch", "sha256": "3" * 64}]},
        {"patches": []},
        {"cmake_args": ["-DBUILD_SHARED_LIBS=ON", "-DMLX_BUILD_GGUF=ON"]},
        {"toolchain": {"cxx": "c++ 13.1.0", "sdk": None, "deployment_target": None}},
        {"toolchain": {"cxx": "c++ 12.2.0", "sdk": "15.2", "deployment_target": "15.0"}},
        {"base": {"name": "v0.31.1", "version": "0.31.1", "tag": "v0.31.1", "commit": "d" * 40, "tree": "t" * 40}},
        {"stock_wheel": {"filename": "mlx_cpu.whl", "sha256": "4" * 64}},
        {"packaging": "full"},
        {"dependencies": {"json": "system nlohmann-json 3.11.3"}},
    ],
)
def test_label_changes_whenever_an_input_changes(change: dict) -> None:
    assert make_label(inputs(**change)) != make_label(inputs())


def test_label_is_stable_for_the_same_inputs() -> None:
    a, b = inputs(), inputs()
    b = dict(reversed(list(b.items())))  # key order is irrelevant
    assert make_label(a) == make_label(b)


def test_typed_inputs_hash_to_the_label_of_the_json_manifests() -> None:
    # A CUDA build's inputs as manifests have recorded them as JSON; the label below was computed
    # from this JSON before the manifest was typed, so the dataclasses must serialise to the same bytes.
    recorded = {
        "base": {"name": "v0.31.1", "version": "0.31.1", "tag": "v0.31.1", "commit": "c" * 40, "tree": "t" * 40},
        "patches": [{"name": "0001-cpu-defer-errors-of-stream-tasks.patch", "sha256": "1" * 64},
                    {"name": "0002-cpu-xerbla-raises-instead-of-exit.patch", "sha256": "2" * 64}],
        "platform": "linux-cuda", "packaging": "overlay",
        "cmake_args": ["-DBUILD_SHARED_LIBS=ON", "-DMLX_BUILD_CUDA=ON", "-DFETCHCONTENT_SOURCE_DIR_CCCL=<path>"],
        "dependencies": {"cccl": "cccl 3.1.0 (sha256 ab)", "fmt": "system fmt 9.1.0"},
        "toolchain": {"cxx": "c++ (Debian 12.2.0-14) 12.2.0", "cc": "cc 12.2.0", "cmake": "cmake version 3.31.6",
                      "ninja": "1.11.1", "machine": "x86_64", "sdk": None, "deployment_target": None},
        "stock_wheel": {"filename": "mlx_cuda_13-0.31.1-py3-none-manylinux_2_35_x86_64.whl", "sha256": "3" * 64},
        "build_env": {"CUDAARCHS": "90a"},
    }
    typed = BuildInputs.from_json(recorded)
    assert typed.to_json() == recorded
    assert Manifest(typed).label == "fork.2.h1f2e3353b4"
    without_env = {k: v for k, v in recorded.items() if k != "build_env"}
    assert Manifest(BuildInputs.from_json(without_env)).label == "fork.2.h1a106eb020"


def test_a_recorded_cuda_build_gives_back_its_own_profile() -> None:
    cuda = build_inputs(platform="linux-cuda", cmake_args=["-DMLX_CUDA_ARCHITECTURES=90a"],
                        stock_wheel={"filename": "mlx_cuda_12-0.31.1-py3-none-manylinux_2_35_x86_64.whl",
                                     "sha256": "3" * 64})
    profile = profile_of_build(cuda)
    assert profile.backend_dist == "mlx-cuda-12"
    assert "-DMLX_CUDA_ARCHITECTURES=90a" in profile.cmake_args
    metal = build_inputs(platform="macos-metal", toolchain={"deployment_target": "15.0"})
    assert profile_of_build(metal).deployment_target == "15.0"


def test_cmake_args_are_recorded_without_machine_paths() -> None:
    args = ["-DBUILD_SHARED_LIBS=ON", "-DFETCHCONTENT_SOURCE_DIR_JSON=/home/u/.cache/mlx-fork/deps/json",
            "-DMLX_VERSION=0.31.1+fork.0.habc", "-DCMAKE_OSX_DEPLOYMENT_TARGET=14.0"]
    assert normalize_cmake_args(args) == [
        "-DBUILD_SHARED_LIBS=ON", "-DFETCHCONTENT_SOURCE_DIR_JSON=<path>", "-DCMAKE_OSX_DEPLOYMENT_TARGET=14.0"]


def test_manifest_roundtrip_and_provenance_comparison(tmp_path: Path) -> None:
    m = Manifest(build_inputs(), outputs={"libmlx_sha256": "5" * 64}, info={"built_at": "now"})
    m.write(tmp_path / "m.json")
    back = Manifest.read(tmp_path / "m.json")
    assert back.version == m.version and back.label == m.label
    assert compare_provenance(m.to_json(), back.to_json()) == []
    other = Manifest(build_inputs(patches=[]), outputs={"libmlx_sha256": "6" * 64}).to_json()
    problems = compare_provenance(m.to_json(), other)
    assert any(p.startswith("version:") for p in problems)
    assert any(p.startswith("inputs.patches:") for p in problems)
    assert any(p.startswith("outputs.libmlx_sha256:") for p in problems)
    # `info` (timestamps, host) is not compared.
    assert compare_provenance(m.to_json(), Manifest(build_inputs(), m.outputs, {"built_at": "later"}).to_json()) == []


# ---------------------------------------------------------------- tree sync


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_sync_touches_only_changed_files(tmp_path: Path) -> None:
    src, dest = tmp_path / "patched", tmp_path / "src"
    _tree(src, {"mlx/a.cpp": "a\n", "mlx/b.cpp": "b\n", "mlx/gone.h": "x\n", "CMakeLists.txt": "c\n"})
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref\n")
    (src / ".mlx-fork-pristine.json").write_text("{}")
    (src / "link").symlink_to("mlx")
    first = compile_mod.sync_tree(src, dest)
    assert sorted(first.copied) == ["CMakeLists.txt", "link", "mlx/a.cpp", "mlx/b.cpp", "mlx/gone.h"]
    assert not (dest / ".git").exists() and not (dest / ".mlx-fork-pristine.json").exists()
    assert (dest / "link").is_symlink()
    old = time.time() - 1000
    for rel in ("mlx/a.cpp", "mlx/b.cpp", "CMakeLists.txt"):
        os.utime(dest / rel, (old, old))
    # A new "patched" tree: b.cpp edited, gone.h deleted, new.cpp added.
    (src / "mlx" / "b.cpp").write_text("b patched\n")
    (src / "mlx" / "gone.h").unlink()
    (src / "mlx" / "new.cpp").write_text("n\n")
    second = compile_mod.sync_tree(src, dest)
    assert second.copied == ["mlx/b.cpp", "mlx/new.cpp"]
    assert second.removed == ["mlx/gone.h"]
    assert (dest / "mlx" / "b.cpp").read_text() == "b patched\n"
    assert (dest / "mlx" / "a.cpp").stat().st_mtime == pytest.approx(old)  # untouched: no rebuild
    assert (dest / "mlx" / "b.cpp").stat().st_mtime > old + 500
    assert compile_mod.sync_tree(src, dest) == compile_mod.SyncReport([], [])


def test_sync_keeps_executable_bits(tmp_path: Path) -> None:
    src = tmp_path / "s"
    _tree(src, {"tools/run.sh": "#!/bin/sh\n"})
    (src / "tools" / "run.sh").chmod(0o755)
    compile_mod.sync_tree(src, tmp_path / "d")
    assert (tmp_path / "d" / "tools" / "run.sh").stat().st_mode & stat.S_IXUSR


# ---------------------------------------------------------------- configure / ninja


def _fake_tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_configure_runs_once_per_argument_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    # cmake stand-in: record the call and create build.ninja in the -B dir.
    _fake_tool(bin_dir, "cmake", f'echo "$@" >> {calls}\nwhile [ $# -gt 0 ]; do if [ "$1" = -B ]; then '
               'touch "$2/build.ninja"; fi; shift; done\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tree, build = tmp_path / "src", tmp_path / "build"
    tree.mkdir()
    log = tmp_path / "configure.log"
    assert compile_mod.configure(tree, build, ["-DA=1"], log, {}) is True
    assert compile_mod.configure(tree, build, ["-DA=1"], log, {}) is False
    assert compile_mod.configure(tree, build, ["-DA=2"], log, {}) is True
    assert len(calls.read_text().splitlines()) == 2


def test_ninja_failure_names_the_step_and_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "ninja", 'echo "[1/3] Building CXX object a.o"\necho "[2/3] Building CXX object b.o"\n'
               'echo "FAILED: b.o"\necho "error: boom"\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log = tmp_path / "logs" / "compile.log"
    with pytest.raises(MlxForkError) as err:
        compile_mod.ninja(tmp_path, "mlx", log, {})
    assert "compile (ninja mlx) failed" in str(err.value)
    assert str(log) in str(err.value)
    assert "error: boom" in log.read_text()
    assert "[1/3]" in capsys.readouterr().err  # progress was shown


def test_ninja_progress_and_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "ninja", 'echo "[1/2] Building CXX object a.o"\necho "[2/2] Linking CXX shared library libmlx.so"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    lock = tmp_path / "lock"
    monkeypatch.setenv("MLX_FORK_BUILD_LOCK", str(lock))
    assert compile_mod.ninja(tmp_path, "mlx", tmp_path / "c.log", {}) == 2
    err = capsys.readouterr().err
    assert "[2/2] 100%" in err
    assert lock.exists()


def test_compile_tree_refuses_a_missing_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    _fake_tool(bin_dir, "cmake",
               'while [ $# -gt 0 ]; do if [ "$1" = -B ]; then mkdir -p "$2"; touch "$2/build.ninja"; fi; shift; done\n')
    _fake_tool(bin_dir, "ninja", 'echo "[1/1] Linking CXX static library libmlx.a"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    (tmp_path / "src").mkdir()
    with pytest.raises(MlxForkError, match="BUILD_SHARED_LIBS"):
        compile_mod.compile_tree(tmp_path / "src", tmp_path / "build", [], tmp_path / "logs", work=tmp_path,
                               profile=get_profile("linux-cpu"))


# ---------------------------------------------------------------- profiles and CLI


def test_profiles() -> None:
    cpu = get_profile("linux-cpu")
    assert "-DBUILD_SHARED_LIBS=ON" in cpu.cmake_args and "-DMLX_BUILD_METAL=OFF" in cpu.cmake_args
    assert cpu.backend_dist == "mlx-cpu" and cpu.platform_tag == "manylinux_2_35_x86_64"
    for target in MACOS_TARGETS:
        mac = get_profile("macos-metal", target)
        assert mac.platform_tag == f"macosx_{target.split('.')[0]}_0_arm64"
        assert f"-DCMAKE_OSX_DEPLOYMENT_TARGET={target}" in mac.cmake_args
        assert {"-DMLX_BUILD_METAL=ON", "-DMLX_METAL_JIT=OFF", "-DCMAKE_OSX_ARCHITECTURES=arm64"} <= set(mac.cmake_args)
        assert mac.env == {"MACOSX_DEPLOYMENT_TARGET": target}
    with pytest.raises(MlxForkError, match="no stock mlx-metal wheel"):
        get_profile("macos-metal", "13.0")
    assert "-DMLX_BUILD_CUDA=ON" in get_profile("linux-cuda").cmake_args


def test_slot_dir_separates_platforms_and_targets(tmp_path: Path) -> None:
    from build_tools.bases import load_base

    base = load_base("v0.31.1", Path(__file__).resolve().parent.parent / "patches")
    assert build_mod.slot_dir(tmp_path, base, get_profile("linux-cpu")) == tmp_path / "v0.31.1" / "linux-cpu"
    assert build_mod.slot_dir(tmp_path, base, get_profile("macos-metal", "15.0")).name == "macos-metal-15.0"


def test_cli_has_build_and_compile() -> None:
    parser = make_parser()
    args = parser.parse_args(["build", "--base", "v0.31.1", "--platform", "linux-cpu", "--full"])
    assert args.full and args.platform == "linux-cpu"
    args = parser.parse_args(["compile", "--tree", "t", "--build-dir", "b"])
    assert args.func is build_mod._cmd_compile


def test_build_of_an_unknown_base_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "--base", "v0.0.0"]) == 1
    assert "unknown base 'v0.0.0'" in capsys.readouterr().err


def test_profile_defaults_follow_ci_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MACOSX_DEPLOYMENT_TARGET", "15")
    assert get_profile("macos-metal").platform_tag == "macosx_15_0_arm64"
    assert get_profile("macos-metal", "26.0").platform_tag == "macosx_26_0_arm64"  # explicit wins
    monkeypatch.setenv("MACOSX_DEPLOYMENT_TARGET", "13.0")
    with pytest.raises(MlxForkError):
        get_profile("macos-metal")
    monkeypatch.setenv("MLX_FORK_CUDA", "13")
    cuda = get_profile("linux-cuda", machine="aarch64")
    assert (cuda.backend_dist, cuda.platform_tag, cuda.vendored_libs) == (
        "mlx-cuda-13", "manylinux_2_35_aarch64", "mlx_cuda_13.libs")
    monkeypatch.setenv("MLX_FORK_CUDA", "11")
    with pytest.raises(MlxForkError, match="mlx-cuda-12 and mlx-cuda-13"):
        get_profile("linux-cuda")
    assert get_profile("linux-cpu", machine="x86_64").platform_tag == "manylinux_2_35_x86_64"
    with pytest.raises(MlxForkError, match="no stock MLX Linux wheels"):
        get_profile("linux-cpu", machine="riscv64")


@pytest.mark.parametrize("base_name", ["v0.31.1", "v0.32.1"])
@pytest.mark.parametrize("platform_name,machine,cuda", [
    ("linux-cpu", "x86_64", "12"), ("linux-cpu", "aarch64", "12"),
    ("linux-cuda", "x86_64", "12"), ("linux-cuda", "aarch64", "13"),
])
def test_every_linux_stock_backend_is_pinned(base_name: str, platform_name: str, machine: str, cuda: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from build_tools.bases import load_base
    from build_tools.stockwheels import stock_backend_filename, stock_pins

    monkeypatch.setenv("MLX_FORK_CUDA", cuda)
    base = load_base(base_name, Path(__file__).resolve().parent.parent / "patches")
    profile = get_profile(platform_name, machine=machine)
    assert stock_backend_filename(base, profile) in stock_pins(base)


def test_a_slot_takes_one_build_at_a_time(tmp_path: Path) -> None:
    with (
        build_mod.slot_lock(tmp_path / "slot"),
        pytest.raises(MlxForkError, match="another mlx-fork build is using"),
        build_mod.slot_lock(tmp_path / "slot"),
    ):
        pass
    with build_mod.slot_lock(tmp_path / "slot"):  # released again
        pass


def test_a_refused_build_leaves_no_slot_folder_behind(project: Path, upstream: Upstream, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(build_mod.sys, "platform", "linux")
    work = tmp_path / "work"
    (work / "v0.1.0" / "linux-cpu" / "build").mkdir(parents=True)  # an earlier build of the other base
    # The checkout is at v0.1.0, so a v0.2.0 build is refused by the source check.
    assert main(["build", "--base", "v0.2.0", "--source", str(upstream.repo), "--platform", "linux-cpu"]) == 1
    assert "not the pinned v0.2.0 commit" in capsys.readouterr().err
    assert sorted(p.name for p in work.iterdir()) == ["v0.1.0"]
    # An existing slot is left as it was.
    assert main(["build", "--base", "v0.1.0", "--source", str(tmp_path / "missing"), "--platform", "linux-cpu"]) == 1
    assert (work / "v0.1.0" / "linux-cpu" / "build").is_dir()


def test_compile_command_runs_configure_and_ninja_on_a_patched_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    _fake_tool(bin_dir, "cmake", f'echo "cmake $@" >> {calls}\nwhile [ $# -gt 0 ]; do if [ "$1" = -B ]; then '
               'mkdir -p "$2"; touch "$2/build.ninja"; fi; shift; done\n')
    _fake_tool(bin_dir, "ninja",
               f'echo "ninja $@" >> {calls}\ntouch "$2/libmlx.so"\necho "[1/1] Linking CXX shared library libmlx.so"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("MLX_FORK_WORK", str(tmp_path / "work"))
    monkeypatch.delenv("MLX_FORK_BUILD_LOCK", raising=False)
    (tmp_path / "x" / "src").mkdir(parents=True)
    if not Path("/usr/include/nlohmann/json.hpp").is_file():
        pytest.skip("system nlohmann-json is not installed (scripts/setup installs it)")
    rc = main(["compile", "--platform", "linux-cpu", "--tree", str(tmp_path / "x" / "src"),
               "--build-dir", str(tmp_path / "x" / "build"), "--version", "0.31.1+test"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x" / "build" / "libmlx.so")
    cmake_line, ninja_line = calls.read_text().splitlines()
    assert "-DMLX_VERSION=0.31.1+test" in cmake_line and "-DBUILD_SHARED_LIBS=ON" in cmake_line
    assert f"-DFETCHCONTENT_SOURCE_DIR_JSON={tmp_path / 'x' / 'deps' / 'json'}" in cmake_line
    assert ninja_line.endswith(" mlx")


def test_a_profile_the_host_cannot_compile_is_refused_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build_mod.sys, "platform", "linux")
    with pytest.raises(MlxForkError, match="needs macOS with Xcode"):
        build_mod.check_host(get_profile("macos-metal", "14.0"))
    build_mod.check_host(get_profile("linux-cpu", machine="x86_64"))
    monkeypatch.setattr(build_mod.sys, "platform", "darwin")
    with pytest.raises(MlxForkError, match="builds on Linux"):
        build_mod.check_host(get_profile("linux-cpu", machine="x86_64"))
