"""Microbenchmarks for the performance A/B, run with one side's interpreter.

Usage: python bench.py [--cases a,b,...] [--scale S]
Prints one JSON object: {case: {"unit": ..., "wall": s/unit, "cpu": s/unit, ...}}.
Each case warms up, then times several batches and reports the fastest batch
(seconds per unit of work): on a shared machine other processes only ever add
time, so the minimum is the least disturbed estimate (as timeit advises).
Lower is better for every case. Standard library + mlx only.
"""

import argparse
import json
import statistics
import sys
import threading
import time

import mlx.core as mx


def timed_batches(fn, batches, warmup=1):
    """[(wall seconds per unit, process CPU seconds per unit)] per batch.

    CPU time is summed over all the process's threads (MLX's stream workers
    included) and does not grow while other processes hold the cores, so it is
    the steadier measure on a shared machine; wall time is what a user waits.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(batches):
        c0 = time.process_time()
        t0 = time.perf_counter()
        units = fn()
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        samples.append((wall / units, cpu / units))
    return samples


def case_dispatch(scale):
    """Latency of evaluating one tiny op: graph build + schedule + eval overhead."""
    a = mx.array([1.0, 2.0, 3.0])
    b = mx.array([0.5, 0.5, 0.5])
    mx.eval(a, b)
    n = max(1, int(2000 * scale))

    def fn():
        for _ in range(n):
            mx.eval(a + b)
        return n

    return "s/op", timed_batches(fn, 9)


def case_graph_eval(scale):
    """One eval of a mid-size graph (~200 nodes of elementwise ops and small matmuls)."""
    mx.random.seed(0)
    x = mx.random.normal(shape=(256, 256))
    w = mx.random.normal(shape=(256, 256)) * 0.05
    mx.eval(x, w)
    n = max(1, int(2 * scale))

    def build():
        y = x
        for i in range(40):
            y = mx.tanh(y) * 0.9 + mx.sin(y) * 0.1
            y = y + mx.exp(-mx.abs(y))
            if i % 4 == 0:
                y = y @ w
        return y.sum()

    def fn():
        for _ in range(n):
            mx.eval(build())
        return n

    return "s/graph", timed_batches(fn, 5)


def case_matmul(scale):
    """A 512x512 float32 matmul (BLAS-bound: a patch should not change it)."""
    mx.random.seed(1)
    a = mx.random.normal(shape=(512, 512))
    b = mx.random.normal(shape=(512, 512))
    mx.eval(a, b)
    n = max(1, int(4 * scale))

    def fn():
        for _ in range(n):
            mx.eval(a @ b)
        return n

    return "s/matmul", timed_batches(fn, 5)


def case_threads(scale, threads=4):
    """Throughput of `threads` Python threads, each evaluating small graphs on its own CPU stream.

    v0.32+ streams belong to the thread that made them (thread-local streams exist
    there), so each thread makes its own; on v0.31.x the streams are made and first
    used on the main thread, because stock registers new streams without a lock.
    """
    per_thread = hasattr(mx, "new_thread_local_stream")
    streams = [None if per_thread else mx.new_stream(mx.cpu) for _ in range(threads)]
    inputs = []
    for i in range(threads):
        x = mx.random.normal(shape=(64, 64), key=mx.random.key(i))
        mx.eval(x)
        if streams[i] is not None:
            with mx.stream(streams[i]):
                mx.eval((x @ x).sum())
        inputs.append(x)
    n = max(1, int(50 * scale))
    errors = []

    def work(i):
        try:
            stream = streams[i] if streams[i] is not None else mx.new_stream(mx.cpu)
            with mx.stream(stream):
                x = inputs[i]
                for _ in range(n):
                    mx.eval((mx.tanh(x @ x) + 1).sum())
        except Exception as exc:
            errors.append(repr(exc))

    def fn():
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise RuntimeError(errors[0])
        return n * threads

    return "s/eval", timed_batches(fn, 3)


def case_decode(scale, layers=4, dim=512, heads=8, vocab=4096, prompt=64):
    """Token-by-token greedy decode of a small random-weight transformer with a KV cache.

    The shape of LLM serving's inner loop: per token a few dozen small kernels
    and one eval of the next token, so per-eval overhead shows as it does in a
    server. Written with mlx.core ops only (no mlx.nn), the same on every side.
    """
    mx.random.seed(3)
    head = dim // heads
    scale_w = dim ** -0.5
    emb = mx.random.normal(shape=(vocab, dim)) * 0.02
    blocks = [{name: mx.random.normal(shape=shape) * scale_w
               for name, shape in (("wq", (dim, dim)), ("wk", (dim, dim)), ("wv", (dim, dim)),
                                   ("wo", (dim, dim)), ("w1", (dim, 4 * dim)), ("w2", (4 * dim, dim)))}
              for _ in range(layers)]
    mx.eval(emb, blocks)

    def norm(x):
        return x * mx.rsqrt(mx.mean(x * x, axis=-1, keepdims=True) + 1e-5)

    def step(x, cache):
        # x: (T, dim); cache: per layer (k, v) of shape (heads, S, head) or None
        out_cache = []
        for blk, kv in zip(blocks, cache):
            h = norm(x)
            t = h.shape[0]
            q = (h @ blk["wq"]).reshape(t, heads, head).transpose(1, 0, 2)
            k = (h @ blk["wk"]).reshape(t, heads, head).transpose(1, 0, 2)
            v = (h @ blk["wv"]).reshape(t, heads, head).transpose(1, 0, 2)
            if kv is not None:
                k = mx.concatenate([kv[0], k], axis=1)
                v = mx.concatenate([kv[1], v], axis=1)
            att = mx.softmax((q @ k.transpose(0, 2, 1)) * head ** -0.5, axis=-1) @ v
            x = x + att.transpose(1, 0, 2).reshape(t, dim) @ blk["wo"]
            x = x + mx.maximum(norm(x) @ blk["w1"], 0.0) @ blk["w2"]
            out_cache.append((k, v))
        return (norm(x[-1:]) @ emb.T).argmax(axis=-1), out_cache

    tokens = max(4, int(32 * scale))
    prompt_ids = mx.random.randint(0, vocab, shape=(prompt,))
    mx.eval(prompt_ids)

    def fn():
        tok, cache = step(emb[prompt_ids], [None] * layers)
        mx.eval(tok, cache)
        for _ in range(tokens):
            tok, cache = step(emb[tok], cache)
            mx.eval(tok)
        return tokens

    return "s/token", timed_batches(fn, 5)


def case_gpu_threads(scale, threads=4):
    """Throughput of `threads` Python threads, each evaluating small graphs on its own GPU stream.

    Each thread makes its stream itself (thread-local streams in v0.32+; on
    v0.31.1 stock makes streams without a lock, so they are made up front there).
    """
    per_thread = hasattr(mx, "new_thread_local_stream")
    streams = [None if per_thread else mx.new_stream(mx.gpu) for _ in range(threads)]
    inputs = []
    for i in range(threads):
        x = mx.random.normal(shape=(256, 256), key=mx.random.key(i))
        mx.eval(x)
        inputs.append(x)
    n = max(1, int(50 * scale))
    errors = []

    def work(i):
        try:
            stream = streams[i] if streams[i] is not None else mx.new_stream(mx.gpu)
            with mx.stream(stream):
                x = inputs[i]
                for _ in range(n):
                    mx.eval((mx.tanh(x @ x) + 1).sum())
        except Exception as exc:
            errors.append(repr(exc))

    def fn():
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            raise RuntimeError(errors[0])
        return n * threads

    return "s/eval", timed_batches(fn, 3)


CASES = {
    "dispatch": case_dispatch,
    "graph_eval": case_graph_eval,
    "matmul": case_matmul,
    "decode": case_decode,
    "threads_streams": case_threads,
    "gpu_threads_streams": case_gpu_threads,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    out = {}
    for name in args.cases.split(","):
        try:
            unit, samples = CASES[name](args.scale)
            walls = [w for w, _ in samples]
            cpus = [c for _, c in samples]
            out[name] = {"unit": unit, "wall": min(walls), "cpu": min(cpus),
                         "wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus)}
        except Exception as exc:
            out[name] = {"error": repr(exc)}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
