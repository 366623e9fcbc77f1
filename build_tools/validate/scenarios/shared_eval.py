"""Class C: two threads mx.eval the same not-yet-evaluated array.

Both threads walk and run the same graph at once. Stock v0.31.1 mostly
returns wrong values (often zeros) and otherwise crashes. The result is
compared with the same graph evaluated on one thread first.
"""

import threading

import mlx.core as mx
from _harness import exception_text, is_stream_ownership_error, main, progress, report

TRIALS = 20
STEPS = 12


def graph(x: mx.array, w: mx.array) -> mx.array:
    y = x
    for _ in range(STEPS):
        y = mx.tanh(y @ w) + 0.1 * y
    return y.sum(axis=0)


def body() -> None:
    mx.random.seed(1234)
    x = mx.random.normal(shape=(128, 128))
    w = mx.random.normal(shape=(128, 128)) * 0.1
    mx.eval(x, w)
    reference = graph(x, w)
    mx.eval(reference)

    for trial in range(TRIALS):
        y = graph(x, w)  # lazy: nothing computed yet
        barrier = threading.Barrier(2)
        errors: list[str] = []

        def worker() -> None:
            try:
                barrier.wait()
                mx.eval(y)
            except Exception as exc:
                errors.append(exception_text(exc))

        progress(f"trial {trial}")
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            report("python-exception", errors[0], expected=is_stream_ownership_error(errors[0]), trial=trial)
            return
        if not mx.allclose(y, reference, rtol=1e-4, atol=1e-5).item():
            diff = mx.abs(y - reference).max().item()
            report("wrong-result", f"trial {trial}: max |diff| {diff:.3g} vs one-thread eval", trial=trial)
            return
    report("ok", f"{TRIALS} trials match the one-thread reference")


main(body)
