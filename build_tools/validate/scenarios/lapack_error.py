"""Class A: a LAPACK failure inside a CPU task must become a catchable error.

Inverts a singular matrix on the CPU stream (what upstream's
test_async_eval_error_in_synchronize uses). Stock v0.31.1 throws on the
stream's worker thread and aborts. If the first error is caught, the same
process goes on to the other LAPACK-backed ops that fail the same way and then
checks that the CPU stream still computes correctly afterwards, which is the
exception-safety half of the fix.
"""

from collections.abc import Callable

import mlx.core as mx
from _harness import exception_text, main, progress, report

SINGULAR = [[1.0, 2.0], [2.0, 4.0]]
NAN = float("nan")


def cases() -> list[tuple[str, Callable[[], object], bool]]:
    s = mx.array(SINGULAR)
    nan3 = mx.full((3, 3), NAN)
    # (name, thunk, must_raise): a singular inverse/solve has no answer, so
    # returning values is wrong; LU of a singular matrix and decompositions of
    # NaN input may legitimately return (NaN) values instead of raising.
    return [
        ("inv(singular)", lambda: mx.linalg.inv(s, stream=mx.cpu), True),
        ("solve(singular)", lambda: mx.linalg.solve(s, mx.array([1.0, 1.0]), stream=mx.cpu), True),
        ("lu(zeros)", lambda: mx.linalg.lu(mx.zeros((3, 3)), stream=mx.cpu), False),
        ("eigh(nan)", lambda: mx.linalg.eigh(nan3, stream=mx.cpu), False),
        ("svd(nan)", lambda: mx.linalg.svd(nan3, stream=mx.cpu), False),
    ]


def body() -> None:
    raised = []
    silent = []
    for name, make, must_raise in cases():
        progress(f"eval {name}")
        try:
            mx.eval(make())
        except (RuntimeError, ValueError) as exc:
            raised.append(f"{name}: {exception_text(exc)}")
            continue
        if must_raise:
            silent.append(name)
    progress("sanity after errors")
    x = mx.arange(16, dtype=mx.float32).reshape(4, 4)
    got = (x @ mx.eye(4) + 1).sum().item()
    if got != float(sum(range(16)) + 16):
        report("wrong-result", f"CPU stream computes {got} after caught errors", raised=raised)
        return
    if silent:
        report("wrong-result", "returned without an error: " + ", ".join(silent), raised=raised)
        return
    if raised:
        report("python-exception", raised[0], expected=True, raised=raised)
    else:
        report("ok", "no op raised", raised=raised)


main(body)
