"""Class B: several Python threads draw from mx.random without explicit keys.

The process-global random key is read and replaced by every draw; stock
v0.31.1 does that unlocked and crashes (SIGSEGV/SIGBUS) in almost every run.
Each draw is checked for shape and range, so a torn key that yields garbage
counts as a wrong result rather than passing silently.
"""

import threading

import mlx.core as mx
from _harness import exception_text, main, progress, report, run_threads

THREADS = 8
ITERS = 50


def body() -> None:
    barrier = threading.Barrier(THREADS)
    bad: list[str] = []
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            for k in range(ITERS):
                u = mx.random.uniform(shape=(32, 32))
                n = mx.random.normal(shape=(64,))
                mx.eval(u, n)
                lo, hi = u.min().item(), u.max().item()
                if u.shape != (32, 32) or not (lo >= 0.0 and hi < 1.0):
                    bad.append(f"thread {i} iter {k}: uniform range [{lo}, {hi}]")
                    return
                if not mx.isfinite(n).all().item():
                    bad.append(f"thread {i} iter {k}: non-finite normal draw")
                    return
        except Exception as exc:
            errors.append(f"thread {i}: {exception_text(exc)}")

    progress(f"{THREADS} threads x {ITERS} draws")
    run_threads(worker, THREADS)
    if errors:
        report("python-exception", errors[0], expected=False, count=len(errors))
    elif bad:
        report("wrong-result", bad[0], count=len(bad))
    else:
        report("ok", f"{THREADS * ITERS} draws per kind in range")


main(body)
