"""Class E: an allocation fails.

The address space is capped (RLIMIT_AS) a little above what the process
already uses, then an array bigger than the headroom is computed. The stock
CPU allocator returns null and a kernel writes through it (SIGSEGV). The
fixed behaviour is a catchable error (MemoryError or RuntimeError) after
which the process keeps working. Capping the address space keeps the
scenario safe on a shared machine: nothing is ever really allocated.
"""

import resource

import mlx.core as mx
from _harness import exception_text, main, progress, report

HEADROOM = 512 << 20  # bytes of address space left for the process
REQUEST = 1 << 30  # bytes the array needs: more than the headroom


def vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def body() -> None:
    warm = (mx.arange(8) + 1).sum()
    mx.eval(warm)  # start the CPU stream's thread before capping
    limit = vm_size() + HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    progress(f"address space capped at {limit >> 20} MiB; computing a {REQUEST >> 20} MiB array")
    try:
        big = mx.ones((REQUEST // 4,), dtype=mx.float32) + 1
        total = big.sum()
        mx.eval(total)
    except (MemoryError, RuntimeError) as exc:
        progress("caught; sanity")
        if (mx.arange(4) * 2).sum().item() != 12:
            report("wrong-result", "CPU stream broken after the failed allocation")
            return
        report("python-exception", exception_text(exc), expected=True)
        return
    report("wrong-result", f"a {REQUEST >> 20} MiB array evaluated under a cap of {HEADROOM >> 20} MiB headroom")


main(body)
