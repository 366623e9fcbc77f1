"""Class K1: threads evaluate at once on the default GPU stream.

Eight threads each build and evaluate their own graph (matmul, reduction,
elementwise) without choosing a stream, so in MLX 0.31.1 they all encode onto
the one default GPU stream, and some call mx.synchronize() while others are
still encoding. Compared with a one-thread reference. Stock v0.31.1 on an
NVIDIA H200: SIGABRT (terminate in cudaStreamEndCapture,
cudaGraphAddChildGraphNode "not supported") or SIGSEGV in every run. In
MLX 0.31.2 and later every thread has its own default stream.
"""

import threading

import mlx.core as mx
from _harness import exception_text, main, progress, report

THREADS = 8
ROUNDS = 8


def work(x: mx.array, w: mx.array, i: int) -> mx.array:
    y = mx.maximum(x @ (w * (i + 1)), 0.0)
    y = y @ w.T + mx.sin(y)
    return mx.stack([y.sum(), (y * y).mean(), mx.abs(y).max()])


def body():
    mx.random.seed(11)
    x = mx.random.normal(shape=(192, 192))
    w = mx.random.normal(shape=(192, 192)) * 0.05
    mx.eval(x, w)
    references = [work(x, w, i) for i in range(THREADS)]
    mx.eval(*references)

    for rnd in range(ROUNDS):
        results: list = [None] * THREADS
        errors: list[str] = []
        barrier = threading.Barrier(THREADS)

        def worker(i: int) -> None:
            try:
                barrier.wait()
                out = work(x, w, i)
                mx.eval(out)
                if i % 2 == 0:
                    mx.synchronize()
                results[i] = out
            except Exception as exc:
                errors.append(f"thread {i}: {exception_text(exc)}")

        progress(f"round {rnd}: {THREADS} threads on the default GPU stream")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            report("python-exception", errors[0], expected=False, round=rnd)
            return
        for i, (got, ref) in enumerate(zip(results, references)):
            if not mx.allclose(got, ref, rtol=1e-3, atol=1e-3).item():
                report("wrong-result", f"round {rnd} thread {i}: {got.tolist()} != {ref.tolist()}", round=rnd)
                return
    report("ok", f"{ROUNDS} rounds x {THREADS} threads match the one-thread reference")


main(body)
