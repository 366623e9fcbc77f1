"""Class F: mx.set_memory_limit on the CPU allocator.

MLX documents the limit as a guideline: going over it is allowed as long as
memory (and swap) can back the allocation, and only an allocation beyond that
must become an exception (the Metal allocator behaves so, and upstream's
test_multistream_deadlock relies on a tiny limit still evaluating). So the
fixed behaviour checked here is: with the limit far below one array, the
array still evaluates to the right value (or raises a catchable error), the
limit reads back as set, and nothing crashes. The harmful half of the class,
an over-limit allocation beyond physical memory, is not run: on a shared
machine it would invoke the OOM killer (class E covers failed allocations
with a capped address space instead).
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report

LIMIT = 64 << 20
REQUEST = 256 << 20


def body() -> None:
    previous = mx.set_memory_limit(LIMIT)
    echoed = mx.set_memory_limit(LIMIT)
    progress(f"memory limit {LIMIT >> 20} MiB (was {previous >> 20} MiB); computing {REQUEST >> 20} MiB")
    if echoed != LIMIT:
        report("wrong-result", f"set_memory_limit returned {echoed} after setting {LIMIT}")
        return
    mx.reset_peak_memory()
    n = REQUEST // 4
    try:
        big = mx.ones((n,), dtype=mx.float32) * 2
        all_two = mx.all(big == 2.0)  # exact, unlike a float32 sum of 64M elements
        mx.eval(big, all_two)
    except (MemoryError, RuntimeError) as exc:
        mx.set_memory_limit(previous)
        if (mx.arange(4) * 2).sum().item() != 12:
            report("wrong-result", "CPU stream broken after the refused allocation")
            return
        report("python-exception", exception_text(exc), expected=True)
        return
    peak = mx.get_peak_memory()
    if big.shape != (n,) or not all_two.item():
        report("wrong-result", "over-limit array has wrong values", peak=peak)
        return
    report("ok", f"over-limit array evaluated correctly (peak {peak >> 20} MiB, limit {LIMIT >> 20} MiB)", peak=peak)


main(body)
