"""Class G: reaching reference LAPACK's error handler (xerbla).

eig of a NaN matrix makes sgebal report an illegal argument; xerbla calls
exit() from the CPU worker thread. Stock v0.31.1 then deadlocks in the
scheduler's destructor (hang); v0.32.x exits with status 0 mid-program. The
fixed behaviour is a catchable error and a process that carries on.
"""

import mlx.core as mx
from _harness import exception_text, main, progress, report


def body() -> None:
    a = mx.full((3, 3), float("nan"))
    progress("eval eig(nan)")
    try:
        w, v = mx.linalg.eig(a, stream=mx.cpu)
        mx.eval(w, v)
    except (RuntimeError, ValueError) as exc:
        progress("caught; sanity")
        if (mx.arange(4) * 2).sum().item() != 12:
            report("wrong-result", "CPU stream broken after the caught error")
            return
        report("python-exception", exception_text(exc), expected=True)
        return
    # NaN in, NaN out without an error is an acceptable answer too.
    report("ok", "eig of a NaN matrix returned without an error")


main(body)
