"""Class K2: a GPU out-of-memory raises once and the process stays healthy.

Asks for one 200 GiB array on the GPU (more than an H200's 141 GiB; the
allocation fails in cudaMallocAsync). That must be a catchable RuntimeError.
Then ordinary small GPU work must run and be right, several times. Stock
v0.31.1 raises the first error but leaves "out of memory" as the CUDA last
error: the next small op dies with `terminate ... cudaPeekAtLastError()
failed: out of memory`, or later unrelated evals raise the stale error.
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report

ROWS, COLS = 50, 1 << 30  # 50 x 2^30 float32 = 200 GiB (each dim fits a launch)


def body():
    progress("allocating 200 GiB on the GPU")
    try:
        huge = mx.zeros((ROWS, COLS), dtype=mx.float32)
        mx.eval(huge)
    except (RuntimeError, MemoryError, ValueError) as exc:
        first = exception_text(exc)
    else:
        report("ok", "the 200 GiB array was allocated (a GPU with that much memory): nothing to recover from")
        return
    del huge
    for i in range(5):
        progress(f"small GPU op {i} after the out-of-memory error")
        try:
            x = mx.arange(1024, dtype=mx.float32)
            got = ((x * 2) @ mx.ones((1024,))).item()
        except Exception as exc:
            report("python-exception", f"small op {i} after OOM: {exception_text(exc)}", expected=False, first=first)
            return
        if got != float(sum(range(1024)) * 2):
            report("wrong-result", f"small op {i} after OOM computed {got}", first=first)
            return
    report("python-exception", first, expected=True)


main(body)
