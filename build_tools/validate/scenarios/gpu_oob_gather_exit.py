"""Class K3: a kernel fault (out-of-bounds gather) is an error, not a crash at exit.

Gathers with an index far past the end of a GPU array: the kernel reads an
unmapped address and the CUDA context takes a sticky "illegal memory access"
error. That is a programming error and the GPU is unusable afterwards, but it
must surface as a RuntimeError at the wait and the program must still be able
to finish and exit with status 0. Stock v0.31.1 raises at synchronize, then
aborts at interpreter exit (SIGABRT: `cuModuleUnload ... illegal memory
access` thrown from a destructor).
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report


def body():
    x = mx.arange(16, dtype=mx.float32)
    mx.eval(x)
    # 2^31 - 1 elements past a 64-byte buffer: 8 GiB away, never mapped.
    idx = mx.array([2**31 - 1], dtype=mx.int32)
    progress("out-of-bounds gather on the GPU")
    try:
        y = mx.take(x, idx)
        mx.eval(y)
        mx.synchronize()
        value = y.item()
    except (RuntimeError, ValueError) as exc:
        progress("the fault raised; the program finishes and exits")
        report("python-exception", exception_text(exc), expected=True)
        return
    report("ok", f"the gather read {value} without a fault (the address was mapped)")


main(body)
