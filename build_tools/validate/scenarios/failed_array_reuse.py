"""Discovered class X1: reading an array whose evaluation failed.

After a caught LAPACK error (class A), the failed array and arrays computed
from it must not hand out values: its buffer was never written. Reading it
again, or evaluating something that depends on it, has to raise as well.
Stock v0.31.1 aborts at the first error already; stock v0.32.x raises once
and then returns uninitialised memory for both reads (reported by the CPU
patch work). Returning values is a wrong result.
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report

SINGULAR = [[1.0, 2.0], [2.0, 4.0]]


def body() -> None:
    a = mx.linalg.inv(mx.array(SINGULAR), stream=mx.cpu)
    progress("first eval of inv(singular)")
    try:
        mx.eval(a)
    except (RuntimeError, ValueError) as exc:
        first = exception_text(exc)
    else:
        report("wrong-result", "inv of a singular matrix evaluated without an error")
        return
    progress("reading the failed array")
    try:
        values = a.tolist()
    except (RuntimeError, ValueError):
        pass
    else:
        report("wrong-result", f"failed array read back as {values}", first=first)
        return
    progress("evaluating a dependent of the failed array")
    try:
        b = a + 1
        mx.eval(b)
        dependent = b.tolist()
    except (RuntimeError, ValueError):
        pass
    else:
        report("wrong-result", f"array computed from the failed one evaluated to {dependent}", first=first)
        return
    if (mx.arange(4, stream=mx.cpu) * 2).sum().item() != 12:
        report("wrong-result", "CPU stream broken after the errors")
        return
    report("python-exception", first, expected=True)


main(body)
