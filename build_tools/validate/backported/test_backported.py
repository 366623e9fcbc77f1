"""Checks backported from upstream tests newer than our bases, written for each base's API.

Ideas taken from upstream MLX (our own code, not copies):
  - v0.32.1 python/tests/test_threads.py: thread-local streams (test_threadlocal_stream)
    and function transformations from many threads at once (test_concurrent_transforms);
  - main python/tests/test_eval.py::test_async_eval_error_in_synchronize: an error in a
    CPU task started with async_eval surfaces as RuntimeError from synchronize().
Where a base predates an API (v0.31.x has no mx.new_thread_local_stream and lets a
stream be shared between threads), the check tests the same property the way that
base defines it. Each test runs in its own process, so one crash costs one test.
"""

from __future__ import annotations

import threading
import unittest
from collections.abc import Callable
from typing import Any

import mlx.core as mx

SINGULAR = [[1.0, 2.0], [2.0, 4.0]]
HAS_THREAD_LOCAL_STREAMS = hasattr(mx, "new_thread_local_stream")


def run_threads(target: Callable[..., None], n: int, *args: Any) -> list[str]:
    errors: list[str] = []

    def wrapped(i: int) -> None:
        try:
            target(i, *args)
        except Exception as exc:  # collected: unittest cannot see other threads' failures
            errors.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


class TestDeferredErrors(unittest.TestCase):
    def test_async_eval_error_in_synchronize(self) -> None:
        a = mx.linalg.inv(mx.array(SINGULAR), stream=mx.cpu)
        mx.async_eval(a)
        with self.assertRaises(RuntimeError):
            # upstream passes the device (mx.cpu); v0.31.x synchronize() takes a stream
            mx.synchronize(mx.default_stream(mx.cpu))
        # The stream must keep working after the error was delivered.
        self.assertEqual((mx.arange(4, stream=mx.cpu) * 2).sum().item(), 12)

    def test_eval_error_is_catchable(self) -> None:
        a = mx.linalg.inv(mx.array(SINGULAR), stream=mx.cpu)
        with self.assertRaises(RuntimeError):
            mx.eval(a)
        b = mx.linalg.inv(mx.array([[2.0, 0.0], [0.0, 4.0]]), stream=mx.cpu)
        self.assertEqual(b.tolist(), [[0.5, 0.0], [0.0, 0.25]])


class TestThreads(unittest.TestCase):
    def test_threadlocal_stream(self) -> None:
        if HAS_THREAD_LOCAL_STREAMS:
            # v0.32+ semantics: a plain stream belongs to its creating thread, using it
            # elsewhere raises; a thread-local stream works from any thread.
            shared = mx.new_stream(mx.default_device())

            def foreign(i: int) -> None:
                try:
                    with mx.stream(shared):
                        mx.eval(2 * mx.arange(10))
                except RuntimeError:
                    return
                raise AssertionError("a stream from another thread was usable")

            self.assertEqual(run_threads(foreign, 2), [])
            local = mx.new_thread_local_stream(mx.default_device())

            def own(i: int) -> None:
                with mx.stream(local):
                    y = 2 * mx.arange(10)
                    mx.eval(y)
                    if y.tolist() != [2 * k for k in range(10)]:
                        raise AssertionError(f"wrong values {y.tolist()}")

            self.assertEqual(run_threads(own, 2), [])
        else:
            # v0.31.x semantics: a stream may be shared by threads; concurrent use
            # of one stream must give the right values.
            shared = mx.new_stream(mx.cpu)
            expected = [2 * k for k in range(1000)]

            def use_shared(i: int) -> None:
                with mx.stream(shared):
                    for _ in range(200):
                        y = 2 * mx.arange(1000)
                        mx.eval(y)
                        if y.tolist() != expected:
                            raise AssertionError("wrong values on a shared stream")

            self.assertEqual(run_threads(use_shared, 4), [])

    def test_concurrent_transforms(self) -> None:
        x = mx.array([1.0, 2.0, 3.0])
        iters = 500
        expected_grad = mx.grad(lambda a: (a * a).sum())(x).tolist()
        expected_compile = mx.compile(lambda a: a * a + 1)(x).tolist()
        xb = mx.broadcast_to(x, (8, 3))
        expected_vmap = mx.vmap(lambda a: a * a)(xb).tolist()

        def worker(i: int) -> None:
            kind = i % 3
            if kind == 0:
                f, arg, want = mx.grad(lambda a: (a * a).sum()), x, expected_grad
            elif kind == 1:
                f, arg, want = mx.compile(lambda a: a * a + 1), x, expected_compile
            else:
                f, arg, want = mx.vmap(lambda a: a * a), xb, expected_vmap
            for _ in range(iters):
                r = f(arg)
                mx.eval(r)
                if r.tolist() != want:
                    raise AssertionError(f"kind {kind}: {r.tolist()} != {want}")

        self.assertEqual(run_threads(worker, 9), [])

    def test_threads_on_own_streams(self) -> None:
        # Each thread evaluates its own graph on its own stream: the supported
        # multi-threaded pattern on every base.
        def worker(i: int) -> None:
            s = mx.new_thread_local_stream(mx.cpu) if HAS_THREAD_LOCAL_STREAMS else mx.new_stream(mx.cpu)
            with mx.stream(s):
                for k in range(100):
                    y = (mx.arange(64, dtype=mx.float32) * (i + 1)).sum()
                    mx.eval(y)
                    if y.item() != (i + 1) * 2016:
                        raise AssertionError(f"iteration {k}: {y.item()}")

        self.assertEqual(run_threads(worker, 4), [])


if __name__ == "__main__":
    unittest.main()
