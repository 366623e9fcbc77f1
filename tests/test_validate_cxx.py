"""The C++ doctest part: JUnit parsing and running a test binary against a side's library dir."""

from __future__ import annotations

import sys
from pathlib import Path

from build_tools.validate import cxx
from build_tools.validate.suite import compare

# Shape of doctest 2.4.9's JUnit reporter output (--no-path-filenames).
JUNIT = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="tests" errors="1" failures="2" tests="4" time="0" doctest_version="2.4.9">
    <testcase classname="test_ops.cpp" name="test add" time="0.001" status="run"/>
    <testcase classname="test_ops.cpp" name="fails, with comma" time="0" status="run">
      <failure message="1 == 2" type="CHECK">test_ops.cpp:4: CHECK( 1 == 2 ) is NOT correct!</failure>
    </testcase>
    <testcase classname="test_linalg.cpp" name="subcases/a" time="0" status="run"/>
    <testcase classname="test_linalg.cpp" name="subcases/b" time="0" status="run">
      <failure message="false" type="CHECK">CHECK( false ) is NOT correct!</failure>
    </testcase>
    <testcase classname="test_eval.cpp" name="throws" time="0" status="run">
      <error message="exception">boom</error>
    </testcase>
  </testsuite>
</testsuites>
"""


def test_junit_outcomes_are_keyed_by_file_and_case():
    run = cxx.parse_junit(JUNIT, "patched")
    assert {k: v.outcome for k, v in run.results.items()} == {
        "test_ops.cpp::test add": "pass",
        "test_ops.cpp::fails, with comma": "fail",
        "test_linalg.cpp::subcases/a": "pass",
        "test_linalg.cpp::subcases/b": "fail",
        "test_eval.cpp::throws": "error",
    }
    assert "NOT correct" in run.results["test_ops.cpp::fails, with comma"].message
    assert run.total == 5


def _fake_binary(tmp_path: Path, body: str) -> Path:
    binary = tmp_path / "tests"
    binary.write_text(f"#!{sys.executable}\n" + body, encoding="utf-8")
    binary.chmod(0o755)
    return binary


def test_binary_sees_the_side_library_dir_and_writes_junit(tmp_path):
    body = (
        "import os, sys\n"
        "out = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--out=')][0]\n"
        "ok = os.environ['LD_LIBRARY_PATH'].split(':')[0].endswith('stocklib')\n"
        f"xml = {JUNIT!r}\n"
        "open(out, 'w').write(xml if ok else xml.replace('name=\"test add\" time=\"0.001\" status=\"run\"/>',"
        " 'name=\"test add\"><failure message=\"wrong lib\"/></testcase>'))\n"
        "sys.exit(1)\n"
    )
    binary = _fake_binary(tmp_path, body)
    stock = cxx.run_tests(binary, tmp_path / "stocklib", "stock", tmp_path / "s.xml", timeout=30)
    patched = cxx.run_tests(binary, tmp_path / "otherlib", "patched", tmp_path / "p.xml", timeout=30)
    assert stock.results["test_ops.cpp::test add"].outcome == "pass" and stock.finished
    assert patched.results["test_ops.cpp::test add"].outcome == "fail"
    cmp = compare(stock, patched)
    assert [r.test for r in cmp.regressions] == ["test_ops.cpp::test add"]


def test_a_binary_killed_by_a_signal_is_a_crash(tmp_path):
    binary = _fake_binary(tmp_path, "import os\nos.abort()\n")
    run = cxx.run_tests(binary, tmp_path, "patched", tmp_path / "x.xml", timeout=30)
    assert run.results["<doctest binary>"].outcome == "crash" and not run.finished
    assert run.returncode == -6


def test_capabilities_missing_on_either_side_exclude_cases_on_both(tmp_path):
    assert cxx.capability_excludes({"stock": {"gguf": True}, "patched": {"gguf": True}}) == {}
    ex = cxx.capability_excludes({"stock": {"gguf": True}, "patched": {"gguf": False}})
    assert list(ex) == ["*gguf*"] and "patched" in ex["*gguf*"]
    body = (
        "import sys\n"
        "out = [a.split('=', 1)[1] for a in sys.argv if a.startswith('--out=')][0]\n"
        "excl = [a for a in sys.argv if a.startswith('--test-case-exclude=')]\n"
        f"xml = {JUNIT!r}\n"
        "open(out, 'w').write(xml.replace('test add', 'EXCLUDED ' + excl[0]) if excl else xml)\n"
    )
    binary = _fake_binary(tmp_path, body)
    run = cxx.run_tests(binary, tmp_path, "stock", tmp_path / "o.xml", timeout=30, exclude=list(ex))
    assert "test_ops.cpp::EXCLUDED --test-case-exclude=*gguf*" in run.results
