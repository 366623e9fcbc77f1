"""`mlx-fork base add`: a base pin made from MLX source and PyPI, equal to the committed pins.

PyPI answers come from recorded responses (tests/fixtures/base_add/pypi-<base>.json,
written by `base add --record-pypi` and trimmed to what a pin reads), so the PyPI part
is hermetic. Reading the MLX tree needs MLX source (MLX_FORK_SOURCE); resolving the
git-export pins in the dependencies' own repositories needs their clones too
(MLX_FORK_DEP_SOURCES="fmt=PATH cccl=PATH cudnn=PATH cutlass=PATH"). Each part skips,
with the reason, when its source is missing.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import Upstream, git

from build_tools import base_add
from build_tools.base_add import (
    GitPinner,
    fetchcontent_declarations,
    frontend_gaps,
    library_pins,
    make_base,
    read_mlx_tag,
    render,
    stock_wheels,
)
from build_tools.bases import load_base
from build_tools.cli import main
from build_tools.errors import MlxForkError
from build_tools.pypi import DistFile, RecordedIndex, RecordingIndex, requires_dist, wheel_metadata_by_ranges

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "base_add"
# The bases whose pins were written before `base add` existed: the generator is held to them.
ORIGINAL_BASES = ["v0.31.1", "v0.32.1"]
# Bases whose committed base.toml must be what `base add` writes.
BASES = ["v0.31.1", "v0.31.2", "v0.32.0", "v0.32.1"]


def recorded(base_name: str) -> RecordedIndex:
    return RecordedIndex(FIXTURES / f"pypi-{base_name}.json")


def committed(base_name: str) -> dict:
    return tomllib.loads((ROOT / "patches" / base_name / "base.toml").read_text(encoding="utf-8"))


# ---------------------------------------------------------------- PyPI (hermetic)


@pytest.mark.parametrize("base_name", ORIGINAL_BASES)
def test_stock_wheels_and_libraries_from_pypi_equal_the_committed_pins(base_name: str) -> None:
    version = base_name.removeprefix("v")
    index = recorded(base_name)
    notes: list[str] = []
    wheels, missing = stock_wheels(index, version, notes)
    assert [{"filename": w.filename, "sha256": w.sha256} for w in wheels] == committed(base_name)["stock_wheels"]
    assert missing == [] and frontend_gaps(index, version) == []
    libraries = library_pins(index, version, notes)
    assert libraries is not None
    assert [{"name": lib.name, "package": lib.package, "version": lib.version, "wheel": lib.wheel,
             "sha256": lib.sha256, "platforms": list(lib.platforms), "headers": list(lib.headers),
             "shared": list(lib.shared)} for lib in libraries] == committed(base_name)["libraries"]


def test_a_version_without_cuda_wheels_says_so_and_pins_no_libraries() -> None:
    index = recorded("v0.31.2")
    wheels, missing = stock_wheels(index, "0.31.2", [])
    assert [w.filename for w in wheels] == [
        "mlx_cpu-0.31.2-py3-none-manylinux_2_35_x86_64.whl",
        "mlx_metal-0.31.2-py3-none-macosx_14_0_arm64.whl",
        "mlx_metal-0.31.2-py3-none-macosx_15_0_arm64.whl",
        "mlx_metal-0.31.2-py3-none-macosx_26_0_arm64.whl",
        "mlx_cpu-0.31.2-py3-none-manylinux_2_35_aarch64.whl",
    ]
    assert missing == [f"linux-cuda {arch} (CUDA {n}): mlx-cuda-{n} has no 0.31.2 release"
                       for n in (12, 13) for arch in ("x86_64", "aarch64")]
    assert library_pins(index, "0.31.2", []) is None


def test_windows_wheels_are_left_out_and_named() -> None:
    notes: list[str] = []
    wheels, _ = stock_wheels(recorded("v0.32.1"), "0.32.1", notes)
    assert not any("win" in w.filename for w in wheels)
    assert any("mlx_cpu-0.32.1-py3-none-win_amd64.whl" in n and "not a platform mlx-fork targets" in n
               for n in notes)


def test_the_cuda_runtime_requirement_comes_from_the_toolkit_not_a_pinned_wheel() -> None:
    index = recorded("v0.32.1")
    wheel = next(f for f in index.releases("mlx-cuda-13")["0.32.1"] if "x86_64" in f.filename)
    assert "nvidia-cuda-runtime==13.*" in requires_dist(index.metadata(wheel))
    libraries = library_pins(index, "0.32.1", [])
    assert libraries is not None and "nvidia-cuda-runtime" not in {lib.package for lib in libraries}


class FakeIndex:
    def __init__(self, releases: dict[str, dict[str, list[DistFile]]], metadata: dict[str, str]) -> None:
        self._releases = releases
        self._metadata = metadata

    def releases(self, project: str) -> dict[str, list[DistFile]]:
        return self._releases.get(project, {})

    def metadata(self, file: DistFile) -> str:
        return self._metadata[file.filename]


def _f(name: str, yanked: bool = False) -> DistFile:
    return DistFile(name, "0" * 64, f"https://files.example/{name}", yanked)


def test_a_library_pin_is_the_newest_final_release_with_a_linux_x86_64_wheel() -> None:
    cuda = "mlx_cuda_13-1.0.0-py3-none-manylinux_2_35_x86_64.whl"
    index = FakeIndex(
        {
            "mlx-cuda-13": {"1.0.0": [_f(cuda)]},
            "nvidia-cublas": {
                "13.1.0": [_f("nvidia_cublas-13.1.0-py3-none-manylinux_2_27_x86_64.whl")],
                "13.2.0": [_f("nvidia_cublas-13.2.0-py3-none-manylinux_2_27_x86_64.whl", yanked=True)],
                "13.3.0rc1": [_f("nvidia_cublas-13.3.0rc1-py3-none-manylinux_2_27_x86_64.whl")],
                "13.4.0": [_f("nvidia_cublas-13.4.0-py3-none-manylinux_2_27_aarch64.whl")],
                "14.0.0": [_f("nvidia_cublas-14.0.0-py3-none-manylinux_2_27_x86_64.whl")],
            },
            "nvidia-new": {"1.0": [_f("nvidia_new-1.0-py3-none-manylinux_2_17_x86_64.whl")]},
        },
        {cuda: "Name: mlx-cuda-13\nRequires-Dist: nvidia-new\nRequires-Dist: nvidia-cublas==13.*\n"
               "Requires-Dist: nvidia-nccl-cu13; sys_platform == 'win32'\n\nDescription\n"},
    )
    notes: list[str] = []
    libraries = library_pins(index, "1.0.0", notes)
    assert libraries is not None
    # Rule order first (cublas), then what no rule knows; the win32-only requirement is dropped.
    assert [(lib.package, lib.version) for lib in libraries] == [("nvidia-cublas", "13.1.0"), ("nvidia-new", "1.0")]
    assert libraries[1].headers == libraries[1].shared == ()
    assert any("nvidia-new" in n and "LibraryRule" in n for n in notes)


def test_recorded_responses_round_trip(tmp_path: Path) -> None:
    inner = FakeIndex({"mlx-cpu": {"1.0": [_f("mlx_cpu-1.0-py3-none-manylinux_2_35_x86_64.whl")],
                                   "0.9": [_f("mlx_cpu-0.9-py3-none-manylinux_2_35_x86_64.whl")]}},
                      {"mlx_cpu-1.0-py3-none-manylinux_2_35_x86_64.whl":
                       "Metadata-Version: 2.4\nName: mlx-cpu\nSummary: long\nRequires-Dist: x\n\nbody\n"})
    recorder = RecordingIndex(inner)
    wheel = recorder.releases("mlx-cpu")["1.0"][0]
    recorder.metadata(wheel)
    path = tmp_path / "pypi.json"
    recorder.save(path, keep_release=lambda project, version: version == "1.0")
    replay = RecordedIndex(path)
    assert [f.filename for f in replay.releases("mlx-cpu")["1.0"]] == [wheel.filename]
    assert "0.9" not in replay.releases("mlx-cpu")
    assert replay.metadata(wheel) == "Metadata-Version: 2.4\nName: mlx-cpu\nRequires-Dist: x\n"
    with pytest.raises(MlxForkError, match="no recorded releases of mlx-metal"):
        replay.releases("mlx-metal")


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    requested: ClassVar[list[str]] = []

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()

    def do_GET(self) -> None:
        if self.path.endswith(".metadata"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = (int(x) for x in self.headers["Range"].removeprefix("bytes=").split("-"))
        self.requested.append(f"{start}-{end}")
        body = self.payload[start:end + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def wheel_server() -> Iterator[str]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mlx/lib/libmlx.so", os.urandom(4 * 1024 * 1024))  # incompressible: a big wheel
        zf.writestr("mlx_cuda_13-1.0.dist-info/METADATA", "Name: mlx-cuda-13\nRequires-Dist: nvidia-cublas\n")
    _RangeHandler.payload = buffer.getvalue()
    _RangeHandler.requested = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/mlx_cuda_13-1.0-py3-none-manylinux_2_35_x86_64.whl"
    finally:
        server.shutdown()


def test_wheel_metadata_is_read_with_range_requests_when_the_index_has_no_metadata_file(wheel_server: str) -> None:
    from build_tools.pypi import PyPI

    wheel = DistFile(wheel_server.rsplit("/", 1)[1], "0" * 64, wheel_server)
    text = PyPI("http://127.0.0.1:1").metadata(wheel)
    assert requires_dist(text) == ["nvidia-cublas"]
    fetched = sum(int(e) - int(s) + 1 for s, e in (r.split("-") for r in _RangeHandler.requested))
    assert fetched < len(_RangeHandler.payload) // 4, _RangeHandler.requested
    assert wheel_metadata_by_ranges(wheel) == text


# ---------------------------------------------------------------- CMake (hermetic)


def test_fetchcontent_declarations_platforms_versions_and_variables() -> None:
    files = {
        "CMakeLists.txt": """
if(MLX_BUILD_METAL)
  set(METAL_CPP_URL
      https://example.com/metal-cpp_26.zip)
  FetchContent_Declare(metal_cpp URL ${METAL_CPP_URL})
endif()
if(MLX_BUILD_CPU)
  if(MLX_BUILD_ACCELERATE)
  elseif(WIN32)
    if(ARM64)
      set(ZIP "a.zip")
    else()
      set(ZIP "b.zip")
    endif()
    FetchContent_Declare(
      openblas
      URL "https://github.com/OpenMathLib/OpenBLAS/releases/download/v0.3.33/${ZIP}" # per arch
    )
  endif()
endif()
FetchContent_Declare(
  json
  URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz)
if(USE_SYSTEM_FMT)
else()
  FetchContent_Declare(fmt GIT_REPOSITORY https://github.com/fmtlib/fmt.git GIT_TAG 12.1.0 EXCLUDE_FROM_ALL)
endif()
# FetchContent_Declare(commented URL https://example.com/x-1.0.zip)
""",
        "mlx/backend/cuda/CMakeLists.txt":
            'FetchContent_Declare(\n  cccl\n  URL "https://github.com/NVIDIA/cccl/releases/download/v3.1.3/cccl-v3.1.3.zip")\n'
            "FetchContent_Declare(gguf GIT_REPOSITORY https://github.com/antirez/gguf-tools/ GIT_TAG 8fa6eb65)\n",
        "mlx/distributed/jaccl/CMakeLists.txt":
            "FetchContent_Declare(json URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz)\n"
            "FetchContent_Declare(jaccl SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/../)\n",
    }
    found = {d.name: d for d in fetchcontent_declarations(files)}
    assert sorted(found) == ["cccl", "fmt", "gguf", "json", "metal_cpp", "openblas"]
    assert found["metal_cpp"].upstream == "https://example.com/metal-cpp_26.zip"
    assert (found["metal_cpp"].version, found["metal_cpp"].platforms) == ("26", ("macos-metal",))
    assert found["openblas"].platforms == ("windows-cpu",)
    assert found["openblas"].version == "0.3.33" and "${ZIP}" in found["openblas"].upstream  # two values: kept
    assert found["json"].platforms == ("linux-cpu", "linux-cuda", "macos-metal") and found["json"].version == "3.11.3"
    assert found["json"].where == "CMakeLists.txt:21"  # the first declaration wins
    assert (found["fmt"].upstream, found["fmt"].version) == ("https://github.com/fmtlib/fmt.git@12.1.0", "12.1.0")
    assert (found["fmt"].repository, found["fmt"].tag) == ("https://github.com/fmtlib/fmt", "12.1.0")
    assert (found["cccl"].repository, found["cccl"].tag, found["cccl"].version) == (
        "https://github.com/NVIDIA/cccl", "v3.1.3", "3.1.3")
    assert found["cccl"].platforms == ("linux-cuda",)
    assert found["gguf"].upstream == "https://github.com/antirez/gguf-tools@8fa6eb65"


def test_git_pinner_resolves_a_tag_and_subtrees(upstream: Upstream) -> None:
    pinner = GitPinner({"fmt": str(upstream.repo)})
    commit, trees = pinner.resolve("fmt", "https://example.invalid/fmt", "v0.1.0", [".", "mlx"])
    assert commit == upstream.v1_commit
    assert trees == [upstream.v1_tree, git(upstream.repo, "rev-parse", "v0.1.0:mlx")]
    with pytest.raises(MlxForkError, match=r"has no tag v9\.9\.9"):
        pinner.resolve("fmt", "https://example.invalid/fmt", "v9.9.9", ["."])


# ---------------------------------------------------------------- the command (hermetic, a tiny MLX)


def _tiny_mlx(tmp_path: Path, fmt_tag: str) -> Path:
    repo = tmp_path / "mlx"
    (repo / "mlx").mkdir(parents=True)
    (repo / "mlx" / "version.h").write_text(
        "#define MLX_VERSION_MAJOR 0\n#define MLX_VERSION_MINOR 9\n#define MLX_VERSION_PATCH 0\n")
    (repo / "setup.py").write_text('build_stage = int(os.environ.get("MLX_BUILD_STAGE", 0))\n')
    (repo / "CMakeLists.txt").write_text(
        "FetchContent_Declare(json URL https://github.com/nlohmann/json/releases/download/v3.11.3/json.tar.xz)\n"
        f"FetchContent_Declare(fmt GIT_REPOSITORY https://github.com/fmtlib/fmt.git GIT_TAG {fmt_tag})\n"
        "FetchContent_Declare(newdep GIT_REPOSITORY https://example.com/newdep.git GIT_TAG v1.2)\n")
    git(repo, "init", "-q", "--initial-branch=main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v0.9.0")
    git(repo, "tag", "v0.9.0")
    return repo


def test_base_add_writes_a_loadable_pin_and_names_what_is_missing(
    project: Path, upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _tiny_mlx(tmp_path, "v0.1.0")  # upstream's tag stands in for fmt's
    cpu = "mlx_cpu-0.9.0-py3-none-manylinux_2_35_x86_64.whl"
    index = FakeIndex({"mlx-cpu": {"0.9.0": [DistFile(cpu, "a" * 64, "")]}}, {})
    monkeypatch.setattr(base_add, "PyPI", lambda url: index)
    args = ["base", "add", "v0.9.0", "--source", str(repo), "--from", f"fmt={upstream.repo}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    pin = load_base("v0.9.0")
    assert (pin.commit, pin.tree) == (git(repo, "rev-parse", "v0.9.0"), git(repo, "rev-parse", "v0.9.0^{tree}"))
    assert (pin.build_stage_env, pin.archive_prefix) == ("stage", "mlx-0.9.0")
    fmt = [d for d in pin.dependencies if d.name == "fmt"]
    assert [(d.offline, d.platforms) for d in fmt] == [("system-fmt", ("linux-cpu", "macos-metal")),
                                                       ("git-export", ("linux-cuda",))]
    assert (fmt[1].commit, fmt[1].exports[0].tree) == (upstream.v1_commit, upstream.v1_tree)
    newdep = next(d for d in pin.dependencies if d.name == "newdep")
    assert newdep.offline == "online-only" and "newdep" in err and "DependencyRule" in err
    assert pin.libraries == ()
    text = (project / "patches" / "v0.9.0" / "base.toml").read_text()
    assert "#   linux-cuda x86_64 (CUDA 13): mlx-cuda-13 has no 0.9.0 release" in text
    assert "#   macos-metal 14.0: mlx-metal has no 0.9.0 release" in text
    assert "linux-cpu aarch64: mlx-cpu 0.9.0 has no such wheel" in err
    assert "No [[libraries]]" in text
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err
    assert main([*args, "--force"]) == 0


def test_base_add_explains_bad_input(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _tiny_mlx(tmp_path, "v0.1.0")
    assert main(["base", "add", "0.9.0", "--source", str(repo)]) == 1
    assert "not an upstream release tag" in capsys.readouterr().err
    assert main(["base", "add", "v0.9.1", "--source", str(repo)]) == 1
    assert "has no tag v0.9.1" in capsys.readouterr().err
    assert main(["base", "add", "v0.9.0", "--source", str(tmp_path)]) == 1
    assert "is not a git repository" in capsys.readouterr().err
    assert main(["base", "add", "v0.9.0", "--source", str(repo), "--from", "zlib=/x"]) == 1
    assert "expected NAME=PATH with NAME one of cccl, cudnn, cutlass, fmt" in capsys.readouterr().err


# ---------------------------------------------------------------- against the committed pins (MLX source)


class ReplayPinner:
    """Answers git-export pins from a committed base.toml, after checking the question is the same."""

    def __init__(self, data: dict) -> None:
        self.pins = {(d["name"], d["repository"], d["tag"]): d for d in data["dependencies"]
                     if d["offline"] == "git-export"}

    def resolve(self, name: str, repository: str, tag: str, paths: list[str]) -> tuple[str, list[str]]:
        pin = self.pins[(name, repository, tag)]
        assert paths == [e["path"] for e in pin["exports"]]
        return pin["commit"], [e["tree"] for e in pin["exports"]]


def _read_tag(mlx_source: Path, base_name: str) -> base_add.MlxTag:
    try:
        return read_mlx_tag(mlx_source, base_name)
    except MlxForkError as exc:
        pytest.skip(f"MLX_FORK_SOURCE={mlx_source} cannot give {base_name}: {exc.message}")


@pytest.mark.integration
@pytest.mark.parametrize("base_name", BASES)
def test_base_add_writes_the_committed_base_toml(base_name: str, mlx_source: Path) -> None:
    """Everything but the dependencies' own commit and tree ids is read here (see the next test for those)."""
    expected = (ROOT / "patches" / base_name / "base.toml").read_text(encoding="utf-8")
    source = _read_tag(mlx_source, base_name)
    text = render(make_base(source, recorded(base_name), ReplayPinner(committed(base_name))))
    assert text == expected


@pytest.mark.integration
@pytest.mark.parametrize("base_name", BASES)
def test_git_export_pins_come_from_the_dependency_repositories(base_name: str, mlx_source: Path) -> None:
    value = os.environ.get("MLX_FORK_DEP_SOURCES", "")
    if not value:
        pytest.skip("MLX_FORK_DEP_SOURCES is unset: resolving git-export pins needs clones of their repositories "
                    "(MLX_FORK_DEP_SOURCES='fmt=PATH cccl=PATH cudnn=PATH cutlass=PATH')")
    expected = (ROOT / "patches" / base_name / "base.toml").read_text(encoding="utf-8")
    pinner = GitPinner(base_add.parse_sources(value.replace(",", " ").split()))
    text = render(make_base(_read_tag(mlx_source, base_name), recorded(base_name), pinner))
    assert text == expected


def test_fixtures_hold_no_urls_or_paths() -> None:
    """Recorded answers are file names, hashes and metadata headers only."""
    for path in sorted(FIXTURES.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        assert "://" not in text and '"/' not in text, path
        json.loads(text)
