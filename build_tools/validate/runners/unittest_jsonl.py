"""Run a unittest directory and record every test's outcome as JSON lines.

Usage (inside the test directory, with the side's interpreter):
    python unittest_jsonl.py OUT.jsonl [--skip SKIP.json] [--pattern test*.py] [--only GLOB]

One line is written and flushed when a test starts and one when it ends, so a
suite that dies from a signal still leaves every finished result and names the
test that was running. SKIP.json maps test-id globs to a reason: matching tests
are skipped with that reason (tests that cannot run on this machine, listed
identically for both sides of a comparison). Subtest failures count against
their test. Standard library only: it runs in the venv under test.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
import time
import traceback
import unittest
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from _typeshed import OptExcInfo  # sys.exc_info() of a failed test, as unittest passes it on

RANK = {"pass": 0, "skip": 0, "expected-failure": 0, "unexpected-success": 1, "fail": 2, "error": 3}


class JsonlResult(unittest.TestResult):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self.current: dict[str, dict[str, Any]] = {}

    def _emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()

    def _set(self, test: unittest.TestCase, outcome: str, message: str = "") -> None:
        tid = test.id()
        rec = self.current.setdefault(tid, {"outcome": "pass", "message": ""})
        if RANK[outcome] >= RANK[rec["outcome"]] or rec["outcome"] == "pass":
            rec["outcome"] = outcome
            rec["message"] = message[-4000:]

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self.current[test.id()] = {"outcome": "pass", "message": "", "t0": time.monotonic()}
        self._emit({"event": "start", "id": test.id()})

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        rec = self.current.pop(test.id(), {"outcome": "pass", "message": "", "t0": time.monotonic()})
        self._emit({
            "event": "end", "id": test.id(), "outcome": rec["outcome"], "message": rec["message"],
            "seconds": round(time.monotonic() - rec.get("t0", time.monotonic()), 4),
        })

    def _fmt(self, err: OptExcInfo) -> str:
        return "".join(traceback.format_exception(*err))

    def addError(self, test: unittest.TestCase, err: OptExcInfo) -> None:
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._set(test, "error", self._fmt(err))
        else:  # class/module fixture failure: record it as its own error entry
            self._emit({"event": "end", "id": str(test), "outcome": "error", "message": self._fmt(err)[-4000:], "seconds": 0})

    def addFailure(self, test: unittest.TestCase, err: OptExcInfo) -> None:
        super().addFailure(test, err)
        self._set(test, "fail", self._fmt(err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if isinstance(test, unittest.TestCase) and test.id() in self.current:
            self._set(test, "skip", str(reason))
        else:  # skipped class: unittest never starts its tests
            self._emit({"event": "end", "id": test.id(), "outcome": "skip", "message": str(reason), "seconds": 0})

    def addExpectedFailure(self, test: unittest.TestCase, err: OptExcInfo) -> None:
        super().addExpectedFailure(test, err)
        self._set(test, "expected-failure", self._fmt(err))

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set(test, "unexpected-success", "")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase,
                   err: OptExcInfo | None) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = err[0] is not None and issubclass(err[0], test.failureException)
            self._set(test, "fail" if failed else "error", f"{subtest.id()}\n" + self._fmt(err))


def iter_tests(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from iter_tests(item)
        else:
            yield item


def apply_skips(suite: unittest.TestSuite, skips: dict[str, str]) -> None:
    for test in iter_tests(suite):
        name = getattr(test, "_testMethodName", None)
        if name is None:
            continue
        for pattern, reason in skips.items():
            if fnmatch.fnmatchcase(test.id(), pattern):
                method = getattr(test, name)
                setattr(test, name, unittest.skip(reason)(method))
                break


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--skip", default=None)
    parser.add_argument("--pattern", default="test*.py")
    parser.add_argument("--only", default=None, help="run only tests whose id matches this glob")
    args = parser.parse_args()
    sys.path.insert(0, os.getcwd())
    skips: dict[str, str] = {}
    if args.skip:
        with open(args.skip, encoding="utf-8") as fh:
            skips = json.load(fh)
    suite = unittest.defaultTestLoader.discover(os.getcwd(), pattern=args.pattern, top_level_dir=os.getcwd())
    if args.only:
        suite = unittest.TestSuite(t for t in iter_tests(suite) if fnmatch.fnmatchcase(t.id(), args.only))
    apply_skips(suite, skips)
    with open(args.out, "w", encoding="utf-8") as out:
        result = JsonlResult(out)
        result._emit({"event": "begin", "total": suite.countTestCases(), "python": sys.version.split()[0]})
        suite.run(result)
        result._emit({"event": "finish", "ran": result.testsRun})
    return 0


if __name__ == "__main__":
    sys.exit(main())
