"""Class D: threads share one lazy input, each computing on its own CPU stream.

Every thread makes its own stream and evaluates a function of the same
unevaluated array, so the shared part of the graph is scheduled from several
threads onto several streams at once. Stock v0.31.1 returns wrong values in
most runs and segfaults in some. Compared with a one-thread reference.

The shared graph and the references are built on the device the program
started on, named explicitly: in MLX 0.31.1 `with mx.stream(s)` sets the
process-wide default device and stream, and threads leaving their contexts
at once can restore another thread's CPU stream as the default. On a CUDA
build the next trial's shared graph then ran on the CPU, whose float32
matmul differs from the GPU's by about 1e-3 after eight layers (a separate
0.31.1 hazard of its own, not the race this class is about).
"""

import threading

import mlx.core as mx
from _harness import exception_text, is_stream_ownership_error, main, progress, report

THREADS = 4
TRIALS = 20


def shared(x: mx.array, w: mx.array) -> mx.array:
    y = x
    for _ in range(8):
        y = mx.tanh(y @ w) + 0.1 * y
    return y


def own(a: mx.array, i: int) -> mx.array:
    return (mx.exp(-mx.abs(a)) * (i + 1)).sum(axis=1)


def body():
    home = mx.default_stream(mx.default_device())
    with mx.stream(home):
        mx.random.seed(99)
        x = mx.random.normal(shape=(128, 128))
        w = mx.random.normal(shape=(128, 128)) * 0.1
        mx.eval(x, w)
        a_ref = shared(x, w)
        references = [own(a_ref, i) for i in range(THREADS)]
        mx.eval(*references)

    for trial in range(TRIALS):
        with mx.stream(home):
            a = shared(x, w)  # lazy, shared by all threads
        results: list = [None] * THREADS
        errors: list[str] = []
        barrier = threading.Barrier(THREADS)

        def worker(i: int) -> None:
            try:
                stream = mx.new_stream(mx.cpu)
                barrier.wait()
                with mx.stream(stream):
                    out = own(a, i)
                    mx.eval(out)
                results[i] = out
            except Exception as exc:
                errors.append(f"thread {i}: {exception_text(exc)}")

        progress(f"trial {trial}")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            report("python-exception", errors[0], expected=is_stream_ownership_error(errors[0]), trial=trial)
            return
        for i, (got, ref) in enumerate(zip(results, references)):
            with mx.stream(home):
                close = mx.allclose(got, ref, rtol=1e-4, atol=1e-5).item()
                diff = mx.abs(got - ref).max().item()
            if not close:
                report("wrong-result", f"trial {trial} thread {i}: max |diff| {diff:.3g}", trial=trial)
                return
    report("ok", f"{TRIALS} trials x {THREADS} streams match the one-thread reference")


main(body)
