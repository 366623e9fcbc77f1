"""check-metal: the Metal backend type-check (ladder rung 2).

Hermetic tests compile a tiny fake "MLX tree" whose Metal files include a fake
metal-cpp header and the real stand-in Apple headers, with the real clang/libc++
flags. The integration tests type-check the real pinned tree (MLX_FORK_SOURCE)
against the stock mlx-metal wheel's metal-cpp (downloaded from PyPI, cached in
the work dir).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from build_tools import check_metal
from build_tools.bases import load_base
from build_tools.errors import MlxForkError

try:
    CLANG: str | None = check_metal.find_clang()
    check_metal.check_toolchain(CLANG)
except MlxForkError:
    CLANG = None

needs_clang = pytest.mark.skipif(CLANG is None, reason="clang++ with libc++ not installed (scripts/setup installs clang-19)")

# Uses every stand-in header the way metal-cpp and MLX's Metal backend do.
USES_STUBS = """\
#include <TargetConditionals.h>
#include <objc/runtime.h>
#include <objc/message.h>
#include <sys/sysctl.h>
#include <mach/vm_page_size.h>
#include <mach/mach.h>
#include <CoreFoundation/CoreFoundation.h>
#include <dispatch/dispatch.h>
#include <IOSurface/IOSurfaceRef.h>
#include <Metal/Metal.hpp>
#include <fmt/format.h>
#include <optional>
#include <string>

#if !TARGET_OS_OSX
#error "the stand-in TargetConditionals.h must describe macOS"
#endif

namespace mlx::core::metal {
struct Object : objc_object {};
inline size_t page() { return vm_page_size; }
inline int mem(size_t* out) { size_t n = sizeof(*out); return sysctlbyname("hw.memsize", out, &n, nullptr, 0); }
inline Class device_class() { return objc_lookUpClass("MTLDevice"); }
inline SEL sel() { return sel_registerName("newBufferWithLength:options:"); }
inline void* proto() { return objc_getProtocol("MTLDevice"); }
inline auto send = reinterpret_cast<void* (*)(const void*, SEL)>(&objc_msgSend);
inline CFTimeInterval t = 1.0;
inline kern_return_t k = KERN_SUCCESS;
inline dispatch_queue_t q = nullptr;
inline IOSurfaceRef s = nullptr;
inline std::optional<std::string> name() { return fmt::format("{}:{}", MTL::kVersion, 1); }
} // namespace mlx::core::metal
"""

GOOD = """\
#include "mlx/backend/metal/device.h"
namespace mlx::core::metal {
int good() { return page() > 0 ? 1 : 0; }
}
"""

# A planted type error, the kind a patch could introduce.
BAD = """\
#include "mlx/backend/metal/device.h"
namespace mlx::core::metal {
int planted() { std::string s = page(); return 0; }
}
"""


def fake_tree(root: Path, files: dict[str, str]) -> tuple[Path, Path, Path]:
    """A tree with mlx/backend/metal/*, a fake metal-cpp and fake fmt 12 headers."""
    tree = root / "tree"
    metal = tree / "mlx" / "backend" / "metal"
    metal.mkdir(parents=True)
    (metal / "device.h").write_text(USES_STUBS)
    for name, text in files.items():
        (metal / name).write_text(text)
    metal_cpp = root / "metal_cpp"
    (metal_cpp / "Metal").mkdir(parents=True)
    (metal_cpp / "Metal" / "Metal.hpp").write_text("#pragma once\nnamespace MTL { inline constexpr int kVersion = 26; }\n")
    fmt = root / "fmt12"
    (fmt / "fmt").mkdir(parents=True)
    # Only the fake (first on the path) defines fmt::format returning std::string from this signature.
    (fmt / "fmt" / "format.h").write_text(
        "#pragma once\n#include <string>\n#define MLX_FORK_FAKE_FMT 12\n"
        "namespace fmt { template <class... A> std::string format(const char*, A&&...) { return {}; } }\n"
    )
    return tree, metal_cpp, fmt


def inputs_for(tree: Path, metal_cpp: Path, fmt: Path) -> check_metal.CheckInputs:
    assert CLANG is not None
    return check_metal.CheckInputs(tree=tree, metal_cpp=metal_cpp, fmt_include=fmt, fmt_note="fake fmt 12",
                                   clang=CLANG)


def test_sources_exclude_no_metal(tmp_path: Path) -> None:
    tree, _, _ = fake_tree(tmp_path, {"eval.cpp": GOOD, "no_metal.cpp": GOOD, "device.cpp": GOOD})
    (tree / "mlx" / "backend" / "metal" / "kernels").mkdir()
    (tree / "mlx" / "backend" / "metal" / "kernels" / "x.cpp").write_text("")
    names = [p.name for p in check_metal.metal_sources(tree)]
    assert names == ["device.cpp", "eval.cpp"]


def test_not_an_mlx_tree(tmp_path: Path) -> None:
    with pytest.raises(MlxForkError, match="not an MLX source tree"):
        check_metal.metal_sources(tmp_path)


def test_compile_args_order(tmp_path: Path) -> None:
    inputs = check_metal.CheckInputs(tree=tmp_path / "t", metal_cpp=tmp_path / "mc", fmt_include=tmp_path / "f",
                                     fmt_note="", clang="clang++")
    args = inputs.compile_args()
    for flag in ("-fsyntax-only", "-stdlib=libc++", "-fblocks", "-std=gnu++20", "-DMLX_EXPORT"):
        assert flag in args
    includes = [a for a in args if a.startswith("-I")]
    # stand-ins first, fmt 12 before anything that could carry another fmt, the tree last
    assert includes == [f"-I{check_metal.STUBS_DIR}", f"-I{tmp_path / 'f'}", f"-I{tmp_path / 'mc'}",
                        f"-I{tmp_path / 't'}"]


def test_stubs_are_declarations_only() -> None:
    headers = sorted(p.relative_to(check_metal.STUBS_DIR).as_posix()
                     for p in check_metal.STUBS_DIR.rglob("*.h"))
    assert headers == [
        "CoreFoundation/CoreFoundation.h", "IOSurface/IOSurfaceRef.h", "TargetConditionals.h",
        "dispatch/dispatch.h", "mach/mach.h", "mach/vm_page_size.h", "objc/message.h", "objc/runtime.h",
        "sys/sysctl.h",
    ]
    for header in check_metal.STUBS_DIR.rglob("*.h"):
        text = header.read_text()
        assert "{\n  return" not in text and "asm" not in text, f"{header} must only declare"


@needs_clang
def test_clean_tree_passes(tmp_path: Path) -> None:
    tree, metal_cpp, fmt = fake_tree(tmp_path, {"eval.cpp": GOOD, "device.cpp": GOOD})
    report = check_metal.check_tree(inputs_for(tree, metal_cpp, fmt), "v0.0.0", kind="given", jobs=2)
    assert [(r.file, r.ok) for r in report.results] == [
        ("mlx/backend/metal/device.cpp", True), ("mlx/backend/metal/eval.cpp", True)]
    assert report.ok and report.passed == 2 and report.failed == 0
    assert "2 passed, 0 failed" in report.table()


@needs_clang
def test_planted_type_error_fails_with_compiler_message(tmp_path: Path) -> None:
    tree, metal_cpp, fmt = fake_tree(tmp_path, {"eval.cpp": BAD, "device.cpp": GOOD})
    report = check_metal.check_tree(inputs_for(tree, metal_cpp, fmt), "v0.0.0", kind="patched", jobs=2)
    by_file = {r.file: r for r in report.results}
    assert by_file["mlx/backend/metal/device.cpp"].ok
    bad = by_file["mlx/backend/metal/eval.cpp"]
    assert not bad.ok and not report.ok
    # clang's own diagnostic, with file and line of the planted statement
    assert any("eval.cpp:3:" in e and "no viable conversion" in e for e in bad.errors()), bad.message
    md = report.to_markdown()
    assert "**FAIL**" in md and "no viable conversion" in md
    data = report.to_json()
    assert data["failed"] == 1 and data["ok"] is False and data["kind"] == "patched"
    json.dumps(data)  # serialisable


@needs_clang
def test_fmt12_headers_come_first(tmp_path: Path) -> None:
    probe = '#include "mlx/backend/metal/device.h"\nstatic_assert(MLX_FORK_FAKE_FMT == 12);\n'
    tree, metal_cpp, fmt = fake_tree(tmp_path, {"eval.cpp": probe})
    report = check_metal.check_tree(inputs_for(tree, metal_cpp, fmt), "v0.0.0", kind="given", jobs=1)
    assert report.ok, report.results[0].message


@needs_clang
def test_cli_exit_code_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from build_tools import cli

    tree, metal_cpp, fmt = fake_tree(tmp_path, {"eval.cpp": BAD})
    monkeypatch.setattr(check_metal, "metal_cpp_dir", lambda base, work: metal_cpp)
    monkeypatch.setattr(check_metal, "fmt_headers", lambda base, work: (fmt, "fake fmt 12"))
    monkeypatch.setenv("MLX_FORK_WORK", str(tmp_path / "work"))
    code = cli.main(["check-metal", "--base", "v0.31.1", "--tree", str(tree), "--json", "--no-report"])
    assert code == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] == 1 and data["results"][0]["file"] == "mlx/backend/metal/eval.cpp"
    assert "error:" in data["results"][0]["message"]
    (tree / "mlx" / "backend" / "metal" / "eval.cpp").write_text(GOOD)
    assert cli.main(["check-metal", "--base", "v0.31.1", "--tree", str(tree), "--no-report"]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


# ---------------------------------------------------------------- real MLX trees


@pytest.mark.integration
@pytest.mark.network
@needs_clang
@pytest.mark.parametrize("base_name", ["v0.31.1", "v0.32.1"])
def test_real_tree_passes_and_catches_planted_error(base_name: str, mlx_source: Path, tmp_path: Path) -> None:
    """The patched pinned tree type-checks; the same tree with a type error in eval.cpp does not."""
    base = load_base(base_name)
    work = tmp_path / "work"
    report = check_metal.run_check(base, source=mlx_source, work=work)
    failures = {r.file: r.message for r in report.results if not r.ok}
    assert report.ok, failures
    assert len(report.results) >= 30

    tree, _ = check_metal.patched_tree(base, mlx_source, work)
    planted = tmp_path / "planted"
    shutil.copytree(tree / "mlx", planted / "mlx", ignore=shutil.ignore_patterns("kernels"))
    eval_cpp = planted / "mlx" / "backend" / "metal" / "eval.cpp"
    text = eval_cpp.read_text()
    anchor = "namespace mlx::core::gpu {\n"
    assert anchor in text
    eval_cpp.write_text(text.replace(anchor, anchor + "int planted_error = std::string(\"x\");\n", 1))
    inputs = check_metal.CheckInputs(
        tree=planted, metal_cpp=check_metal.metal_cpp_dir(base, work),
        fmt_include=check_metal.fmt_headers(base, work)[0], fmt_note="", clang=check_metal.find_clang(),
    )
    bad = check_metal.check_file(inputs, eval_cpp)
    assert not bad.ok
    assert any("eval.cpp:" in e and "no viable conversion" in e for e in bad.errors()), bad.message
