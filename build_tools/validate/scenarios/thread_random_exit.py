"""Class H: Python threads that used mx.random exit before the interpreter does.

Stock v0.32.x aborts (SIGABRT) at interpreter exit in about half of the runs
(thread-local random state torn down in the wrong order). The result line is
printed before exit, so a crash after it is still a crash: the parent looks
at the exit status first.
"""

import threading

import mlx.core as mx
from _harness import exception_text, main, progress, report

THREADS = 4


def body() -> None:
    errors: list[str] = []

    def worker() -> None:
        try:
            x = mx.random.uniform(shape=(16,))
            mx.eval(x)
        except Exception as exc:
            errors.append(exception_text(exc))

    # One thread at a time: concurrent unkeyed draws are class B; this class is
    # only about what a finished thread leaves behind for interpreter exit.
    progress(f"{THREADS} threads, one after another, draw and exit")
    for _ in range(THREADS):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    if errors:
        report("python-exception", errors[0], expected=False)
    else:
        report("ok", "threads exited; interpreter exit follows")


main(body)
