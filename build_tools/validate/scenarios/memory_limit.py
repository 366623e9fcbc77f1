"""Class F: mx.set_memory_limit on the CPU allocator.

With the limit set well below the size of one array, evaluating that array
must not silently go over it: a catchable error is the expected behaviour.
Stock MLX ignores the limit on CPU, which this records as a wrong result
(peak memory above the limit). Sizes are small, so the scenario is safe.
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report

LIMIT = 64 << 20
REQUEST = 256 << 20


def body():
    previous = mx.set_memory_limit(LIMIT)
    progress(f"memory limit {LIMIT >> 20} MiB (was {previous >> 20} MiB); computing {REQUEST >> 20} MiB")
    mx.reset_peak_memory()
    try:
        big = mx.ones((REQUEST // 4,), dtype=mx.float32) * 2
        total = big.sum()
        mx.eval(total)
    except (MemoryError, RuntimeError) as exc:
        mx.set_memory_limit(previous)
        if (mx.arange(4) * 2).sum().item() != 12:
            report("wrong-result", "CPU stream broken after the refused allocation")
            return
        report("python-exception", exception_text(exc), expected=True)
        return
    peak = mx.get_peak_memory()
    if peak > LIMIT:
        report("wrong-result", f"limit ignored: peak {peak >> 20} MiB > limit {LIMIT >> 20} MiB", peak=peak)
    else:
        report("ok", f"peak {peak >> 20} MiB within the limit", peak=peak)


main(body)
