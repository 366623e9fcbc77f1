"""Class K1: threads evaluate at once, each on its own GPU stream.

Eight threads each make a stream with mx.new_stream(mx.gpu) in the thread and
run matmuls, reductions and elementwise ops on it, compared with a one-thread
reference. In later rounds every thread makes a fresh stream per round, which
is how a server that opens a stream per request behaves. Stock v0.31.1 on an
NVIDIA H200: SIGSEGV or SIGABRT in nearly every run, wrong values in a
correctness variant, and some runs hang with every thread stuck in eval
(creating a stream inserts into the device's unguarded encoder map while the
other threads look up theirs).
"""

import threading

import mlx.core as mx
from _harness import exception_text, main, progress, report

THREADS = 8
ROUNDS = 6


def work(x: mx.array, w: mx.array, i: int) -> mx.array:
    y = x
    for _ in range(4):
        y = mx.tanh(y @ w) * (1.0 + 0.01 * i)
    return mx.concatenate([y.sum(axis=0), mx.exp(-mx.abs(y)).mean(axis=1)])


def body():
    mx.random.seed(7)
    x = mx.random.normal(shape=(256, 256))
    w = mx.random.normal(shape=(256, 256)) * 0.05
    mx.eval(x, w)
    references = [work(x, w, i) for i in range(THREADS)]
    mx.eval(*references)

    results: dict = {}
    errors: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(i: int) -> None:
        stream = None
        for rnd in range(ROUNDS):
            try:
                # Rounds 0 and 1 reuse the thread's stream; later rounds make a
                # fresh one each time, racing the other threads' evals.
                if stream is None or rnd >= 2:
                    stream = mx.new_stream(mx.gpu)
                barrier.wait()
                with mx.stream(stream):
                    out = work(x, w, i)
                    mx.eval(out)
                results[(rnd, i)] = out
            except threading.BrokenBarrierError:
                return
            except Exception as exc:
                errors.append(f"round {rnd} thread {i}: {exception_text(exc)}")
                barrier.abort()
                return

    progress(f"{THREADS} threads x {ROUNDS} rounds on their own GPU streams")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        report("python-exception", errors[0], expected=False)
        return
    for (rnd, i), got in sorted(results.items(), key=lambda kv: kv[0]):
        ref = references[i]
        if not mx.allclose(got, ref, rtol=1e-3, atol=1e-4).item():
            diff = mx.abs(got - ref).max().item()
            report("wrong-result", f"round {rnd} thread {i}: max |diff| {diff:.3g}", round=rnd)
            return
    if len(results) != THREADS * ROUNDS:
        report("wrong-result", f"only {len(results)} of {THREADS * ROUNDS} evaluations finished")
        return
    report("ok", f"{ROUNDS} rounds x {THREADS} GPU streams match the one-thread reference")


main(body)
