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
    """Threads :func:`map_concurrent` uses by default: ``$MATHLIB_THREADS`` if set, else the number of
    cores this process may run on. ``MATHLIB_THREADS=1`` makes every sweep serial (to time one run alone,
    or on a shared machine)."""
    env = os.environ.get("MATHLIB_THREADS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"default_threads: environment variable MATHLIB_THREADS must be an integer >= 1, got {env!r}")
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))   # the cores this process may use
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def map_concurrent(fn: Callable, arg_tuples: Sequence[tuple], *, threads: int | None = None) -> list[Any]:
    """``[fn(*args) for args in arg_tuples]``, the calls run concurrently in up to ``threads`` threads.

    If ``fn`` is a ``jax.jit``-wrapped function, every argument tuple should have the same shapes and
    dtypes (otherwise each new signature compiles a program of its own): it is compiled once, ahead of
    time, from the first tuple. Threads calling a jitted function for the first time at once can each
    compile it (a race: we saw 4 compilations for 4 concurrent first calls, and also runs with one);
    the ahead-of-time compilation rules that out, and costs nothing when the program is already
    compiled. Any other callable (an already compiled ``jax.stages.Compiled``, a Python function) is
    called as it is: make sure that its calls do not compile the same program for the first time at
    once (compile shared programs first). Each result is ready (``block_until_ready``) when returned.
    Results are those of the serial loop, in the same order, as long as the calls are independent;
    calls start in the order given, so put the longest first. An exception in a call is raised again
    here, with a note naming the call.

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
    n = len(arg_tuples)

    def call(i_args):  # blocking inside the thread: calls merely dispatched from threads would run one by one
        i, args = i_args
        try:
            return jax.block_until_ready(fn(*args))
        except Exception as e:
            e.add_note(f"map_concurrent: in call {i} of {n} (0-based)")
            raise

    threads = min(threads, len(arg_tuples))
    if threads == 1:
        return [call(ia) for ia in enumerate(arg_tuples)]
    if jitted:
        fn.lower(*arg_tuples[0]).compile()  # fills fn's cache: the threads' calls reuse this compilation
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(call, enumerate(arg_tuples)))
