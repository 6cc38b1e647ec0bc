r"""Independent computations run concurrently on the CPU's cores.

XLA on CPU runs the calls of a program one after the other, even when they are dispatched
asynchronously, and a small program (the few-shot models of this book) keeps about one core busy;
compiling a program is also single-threaded. A sweep over configurations that cannot share one
``vmap`` (they differ in a loop length, say), or several independent experiments, are then
independent calls; :func:`map_concurrent` runs them in threads (XLA releases Python's GIL while it
compiles and runs).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from mathlib._validate import check_int

__all__ = ["map_concurrent", "default_threads"]


def default_threads() -> int:
    """Threads :func:`map_concurrent` uses by default: ``$MATHLIB_THREADS`` if set, else the CPU count."""
    env = os.environ.get("MATHLIB_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"default_threads: environment variable MATHLIB_THREADS must be an integer >= 1, got {env!r}")
        return int(env)
    return max(1, os.cpu_count() or 1)


def map_concurrent(fn: Callable, arg_tuples: Sequence[tuple], *, threads: int | None = None) -> list[Any]:
    """``[fn(*args) for args in arg_tuples]``, the calls run concurrently in up to ``threads`` threads.

    If ``fn`` is a ``jax.jit``-wrapped function, every argument tuple must have the same shapes and
    dtypes (one compiled program): it is compiled once, ahead of time, from the first tuple (threads
    calling a jitted function for the first time would each compile it) and each result is ready
    (``block_until_ready``) when returned. Any other callable is called as it is: make sure that
    its calls do not compile the same program for the first time at once (compile shared programs
    first). Results are those of the serial loop, in the same order, as long as the calls are
    independent; calls start in the order given, so put the longest first.

    Args:
        fn: a jitted function, or a Python function whose work runs in JAX.
        arg_tuples: one tuple of positional arguments per call.
        threads: at most this many calls at a time (default :func:`default_threads`); 1 runs the
            serial loop.
    """
    import jax

    if not callable(fn):
        raise TypeError(f"map_concurrent: argument 'fn' must be callable, got {type(fn).__name__}")
    arg_tuples = [tuple(a) for a in arg_tuples]
    threads = default_threads() if threads is None else check_int("map_concurrent", "threads", threads, minimum=1)
    if not arg_tuples:
        return []
    jitted = hasattr(fn, "lower")

    def call(args):
        return jax.block_until_ready(fn(*args)) if jitted else fn(*args)

    threads = min(threads, len(arg_tuples))
    if threads == 1:
        return [call(a) for a in arg_tuples]
    if jitted:
        fn.lower(*arg_tuples[0]).compile()  # fills fn's cache: the threads' calls reuse this compilation
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(call, arg_tuples))
