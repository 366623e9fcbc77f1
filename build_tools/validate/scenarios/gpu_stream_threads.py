"""Class K4: threads evaluate at once, each on its own GPU stream.

Four threads each evaluate small graphs (matmul, tanh, reduction) on a GPU
stream of their own, 50 times, compared with a one-thread reference. On
v0.31.x the streams are made up front on the main thread (stock registers new
streams without a lock, a different race); on v0.32+ streams belong to the
thread that made them, so each thread makes its own. Stock v0.31.1 on an
NVIDIA H200: SIGSEGV in every one of 14 processes of the GPU performance A/B
that runs this workload.
"""

import threading

import mlx.core as mx
from _harness import exception_text, main, progress, report

THREADS = 4
EVALS = 50


def work(x: mx.array) -> mx.array:
    return (mx.tanh(x @ x) + 1).sum()


def body():
    per_thread = hasattr(mx, "new_thread_local_stream")
    streams = [None if per_thread else mx.new_stream(mx.gpu) for _ in range(THREADS)]
    inputs = [mx.random.normal(shape=(256, 256), key=mx.random.key(i)) * 0.05 for i in range(THREADS)]
    mx.eval(*inputs)
    references = [work(x).item() for x in inputs]
    wrong: list[str] = []
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            stream = streams[i] if streams[i] is not None else mx.new_stream(mx.gpu)
            with mx.stream(stream):
                for k in range(EVALS):
                    got = work(inputs[i])
                    mx.eval(got)
                    value = got.item()
                    if abs(value - references[i]) > 1e-3 * max(1.0, abs(references[i])):
                        wrong.append(f"thread {i} eval {k}: {value} != {references[i]}")
                        return
        except Exception as exc:
            errors.append(f"thread {i}: {exception_text(exc)}")

    progress(f"{THREADS} threads x {EVALS} evals, each on its own GPU stream")
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        report("python-exception", errors[0], expected=False)
    elif wrong:
        report("wrong-result", wrong[0])
    else:
        report("ok", f"{THREADS} threads x {EVALS} evals on their own GPU streams match the reference")


main(body)
