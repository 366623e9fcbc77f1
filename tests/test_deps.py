"""Offline dependency provisioning and `mlx-fork doctor` (no MLX source, no network)."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from build_tools import deps
from build_tools.bases import BasePin, Dependency, load_base
from build_tools.cli import main
from build_tools.errors import MlxForkError
from build_tools.profiles import get_profile

ROOT = Path(__file__).resolve().parent.parent


def dep(name: str, offline: str, platforms=("linux-cpu", "macos-metal", "linux-cuda"), version="1.0",
        consequence="") -> Dependency:
    return Dependency(name, version, f"https://example.invalid/{name}@{version}", tuple(platforms), offline,
                      consequence)


def pin(tmp_path: Path, *dependencies: Dependency) -> BasePin:
    return BasePin("v9.9.9", "9.9.9", "v9.9.9", "a" * 40, "b" * 40, "https://example.invalid/a.tar.gz",
                   "mlx-9.9.9", "stage", tuple(dependencies), tmp_path)


@pytest.fixture
def fake_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake /usr with nlohmann json 3.11.2, fmt 9.1.0 and doctest 2.4.9 CMake packages."""
    usr = tmp_path / "usr"
    nl = usr / "include" / "nlohmann"
    (nl / "detail").mkdir(parents=True)
    (nl / "json.hpp").write_text("// json\n")
    (nl / "detail" / "abi_macros.hpp").write_text(
        "#define NLOHMANN_JSON_VERSION_MAJOR 3\n#define NLOHMANN_JSON_VERSION_MINOR 11\n"
        "#define NLOHMANN_JSON_VERSION_PATCH 2\n")
    cmake = usr / "lib" / "cmake"
    (cmake / "fmt").mkdir(parents=True)
    (cmake / "fmt" / "fmt-config-version.cmake").write_text('set(PACKAGE_VERSION "9.1.0")\n')
    (cmake / "doctest").mkdir(parents=True)
    (cmake / "doctest" / "doctestConfigVersion.cmake").write_text('set(PACKAGE_VERSION "2.4.9")\n')
    for name in ("doctest.cmake", "doctestAddTests.cmake", "doctestConfig.cmake"):
        (cmake / "doctest" / name).write_text(f"# {name}\n")
    monkeypatch.setattr(deps, "INCLUDE_ROOTS", (usr / "include",))
    monkeypatch.setattr(deps, "CMAKE_PACKAGE_ROOTS", (cmake,))
    monkeypatch.delenv("MLX_FORK_GGUFLIB", raising=False)
    return usr


def test_json_and_fmt_become_local_sources(tmp_path: Path, fake_system: Path) -> None:
    base = pin(tmp_path, dep("json", "debian-json", version="3.11.3"), dep("fmt", "system-fmt", version="12.1.0"))
    out = deps.provision(base, get_profile("linux-cpu"), tmp_path / "slot" / "deps", work=tmp_path)
    shim = tmp_path / "slot" / "deps" / "json"
    assert f"-DFETCHCONTENT_SOURCE_DIR_JSON={shim}" in out.cmake_args
    link = shim / "single_include" / "nlohmann"
    assert link.is_symlink() and (link / "json.hpp").is_file()
    assert "-DUSE_SYSTEM_FMT=ON" in out.cmake_args
    assert out.cmake_args[-1] == "-DFETCHCONTENT_FULLY_DISCONNECTED=ON"
    assert out.identities["json"].startswith("system nlohmann-json 3.11.2")
    assert "9.1.0" in out.identities["fmt"]
    # Identities, not paths: the manifest must not depend on the work dir.
    assert not any(str(tmp_path) in v for v in out.identities.values())


def test_missing_json_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps, "INCLUDE_ROOTS", (tmp_path / "nothing",))
    monkeypatch.setattr(deps, "_on_macos", lambda: False)
    with pytest.raises(MlxForkError) as err:
        deps.provision(pin(tmp_path, dep("json", "debian-json")), get_profile("linux-cpu"), tmp_path / "d")
    assert "apt-get install -y nlohmann-json3-dev" in str(err.value)


def test_gguflib_off_without_a_directory_and_says_why(tmp_path: Path, fake_system: Path) -> None:
    base = pin(tmp_path, dep("gguflib", "user-dir", consequence="gguf tests fail"))
    out = deps.provision(base, get_profile("linux-cpu"), tmp_path / "d")
    assert "-DMLX_BUILD_GGUF=OFF" in out.cmake_args
    assert any("gguf tests fail" in n for n in out.notes)


def test_gguflib_from_user_dir_and_env(tmp_path: Path, fake_system: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gg = tmp_path / "gguf-tools"
    gg.mkdir()
    (gg / "gguflib.c").write_text("/* */\n")
    base = pin(tmp_path, dep("gguflib", "user-dir"))
    out = deps.provision(base, get_profile("linux-cpu"), tmp_path / "d", deps.DepsRequest(gguflib=gg))
    assert "-DMLX_BUILD_GGUF=ON" in out.cmake_args
    assert f"-DFETCHCONTENT_SOURCE_DIR_GGUFLIB={gg.resolve()}" in out.cmake_args
    monkeypatch.setenv("MLX_FORK_GGUFLIB", str(gg))
    out = deps.provision(base, get_profile("linux-cpu"), tmp_path / "d")
    assert "-DMLX_BUILD_GGUF=ON" in out.cmake_args
    (gg / "gguflib.c").unlink()
    with pytest.raises(MlxForkError, match="not a gguf-tools checkout"):
        deps.provision(base, get_profile("linux-cpu"), tmp_path / "d")


def test_doctest_shim_looks_like_the_repository(tmp_path: Path, fake_system: Path) -> None:
    base = pin(tmp_path, dep("doctest", "debian-doctest"))
    profile = get_profile("linux-cpu")
    assert not deps.provision(base, profile, tmp_path / "d").identities  # not needed without tests
    out = deps.provision(base, profile, tmp_path / "d", deps.DepsRequest(tests=True))
    shim = tmp_path / "d" / "doctest"
    assert f"-DFETCHCONTENT_SOURCE_DIR_DOCTEST={shim}" in out.cmake_args
    assert "add_library(doctest INTERFACE)" in (shim / "CMakeLists.txt").read_text()
    assert (shim / "scripts" / "cmake" / "doctest.cmake").read_text() == "# doctest.cmake\n"
    assert (shim / "scripts" / "cmake" / "doctestAddTests.cmake").is_file()


def test_nanobind_from_a_cached_sdist(tmp_path: Path, fake_system: Path) -> None:
    cache = deps.sdist_cache(tmp_path / "work")
    cache.mkdir(parents=True)
    with tarfile.open(cache / "nanobind-2.10.2.tar.gz", "w:gz") as tar:
        data = b"cmake_minimum_required(VERSION 3.15)\n"
        info = tarfile.TarInfo("nanobind-2.10.2/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    base = pin(tmp_path, dep("nanobind", "pypi-sdist", version="2.10.2"))
    profile = get_profile("linux-cpu")
    assert deps.provision(base, profile, tmp_path / "d", work=tmp_path / "work").identities == {}
    out = deps.provision(base, profile, tmp_path / "d", deps.DepsRequest(python_bindings=True),
                         work=tmp_path / "work")
    target = tmp_path / "d" / "nanobind-2.10.2"
    assert f"-DFETCHCONTENT_SOURCE_DIR_NANOBIND={target}" in out.cmake_args
    assert (target / "CMakeLists.txt").is_file()


def test_metal_cpp_comes_from_the_stock_wheel(tmp_path: Path, fake_system: Path) -> None:
    wheel = tmp_path / "mlx_metal-9.9.9-py3-none-macosx_14_0_arm64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mlx/include/metal_cpp/Metal/Metal.hpp", "// metal\n")
        zf.writestr("mlx/lib/libmlx.dylib", b"\0")
    base = pin(tmp_path, dep("metal_cpp", "stock-wheel-metal-cpp", platforms=("macos-metal",)))
    assert deps.provision(base, get_profile("linux-cpu"), tmp_path / "d").identities == {}
    out = deps.provision(base, get_profile("macos-metal"), tmp_path / "d", stock_wheel=wheel)
    assert (tmp_path / "d" / "metal_cpp" / "Metal" / "Metal.hpp").read_text() == "// metal\n"
    assert f"-DFETCHCONTENT_SOURCE_DIR_METAL_CPP={tmp_path / 'd' / 'metal_cpp'}" in out.cmake_args


def test_online_only_deps_reconnect_fetchcontent_and_are_reported(tmp_path: Path, fake_system: Path) -> None:
    base = pin(tmp_path, dep("cccl", "online-only", platforms=("linux-cuda",), consequence="CI only"),
               dep("openblas", "unsupported-platform", platforms=("windows-cpu",)))
    cpu = deps.provision(base, get_profile("linux-cpu"), tmp_path / "d")
    assert cpu.cmake_args == ["-DFETCHCONTENT_FULLY_DISCONNECTED=ON"]
    cuda = deps.provision(base, get_profile("linux-cuda"), tmp_path / "d")
    assert cuda.online == ["cccl"]
    assert cuda.cmake_args[-1] == "-DFETCHCONTENT_FULLY_DISCONNECTED=OFF"
    assert any("CI only" in n for n in cuda.notes)


def test_unknown_strategy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MlxForkError, match="unknown offline strategy 'magic'"):
        deps.provision(pin(tmp_path, dep("x", "magic")), get_profile("linux-cpu"), tmp_path / "d")


@pytest.mark.parametrize("base_name", ["v0.31.1", "v0.32.1"])
def test_every_pinned_dependency_has_a_known_strategy(base_name: str) -> None:
    base = load_base(base_name, ROOT / "patches")
    names = {d.name for d in base.dependencies}
    assert {"json", "fmt", "nanobind", "doctest", "gguflib", "metal_cpp"} <= names
    for d in base.dependencies:
        assert d.offline in deps.STRATEGIES, d


def test_real_linux_cpu_build_needs_no_network(tmp_path: Path) -> None:
    """On this machine (set up by scripts/setup) every Linux CPU dependency is local."""
    if not (Path("/usr/include/nlohmann/json.hpp").is_file()):
        pytest.skip("system nlohmann-json is not installed (scripts/setup installs it)")
    base = load_base("v0.31.1", ROOT / "patches")
    out = deps.provision(base, get_profile("linux-cpu"), tmp_path / "d")
    assert out.online == []
    assert "-DFETCHCONTENT_FULLY_DISCONNECTED=ON" in out.cmake_args
    assert "-DMLX_BUILD_GGUF=OFF" in out.cmake_args or "-DMLX_BUILD_GGUF=ON" in out.cmake_args


def test_doctor_prints_install_commands_for_what_is_missing(
    fake_system: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = deps.shutil.which
    monkeypatch.setattr(deps.shutil, "which", lambda name: None if name in ("ninja", "ccache") else real_which(name))
    monkeypatch.setattr(deps, "_on_macos", lambda: False)
    rc = main(["doctor", "--platform", "linux-cpu"])
    out = capsys.readouterr().out
    assert rc == 1  # ninja is required
    assert "[MISS] Ninja" in out
    assert "[warn] ccache" in out
    assert "sudo apt-get install -y ninja-build" in out
    assert "sudo apt-get install -y ccache" in out


def test_doctor_macos_profile_asks_for_xcode(fake_system: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deps.shutil, "which", lambda name: None)
    base = load_base("v0.31.1", ROOT / "patches")
    checks = {c.name: c for c in deps.doctor_checks(base, get_profile("macos-metal"), Path(os.devnull))}
    assert not checks["Xcode / macOS SDK"].ok
    assert "xcode-select --install" in checks["Xcode / macOS SDK"].fix
    assert checks["Ninja"].fix == "brew install ninja"
