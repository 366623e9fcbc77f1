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


def body():
    errors: list[str] = []

    def worker() -> None:
        try:
            x = mx.random.uniform(shape=(16,))
            mx.eval(x)
        except Exception as exc:
            errors.append(exception_text(exc))

    progress(f"{THREADS} threads draw and exit")
    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        report("python-exception", errors[0], expected=False)
    else:
        report("ok", "threads exited; interpreter exit follows")


main(body)
