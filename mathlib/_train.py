r"""Meta-training loops: jitted, vmapped over tasks, ``lax.scan`` over chunks of outer steps."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mathlib._core import Episode, tree_all_finite, tree_norm, tree_scale
from mathlib._estimators import Estimator, meta_gradient
from mathlib._validate import check_finite, check_int, check_positive

__all__ = ["TrainState", "TrainStep", "train", "make_train_step", "run_deterministic"]


class TrainState(NamedTuple):
    """Meta-training state: ``params`` (pytree), optax ``opt_state``, outer ``step`` counter (int array)."""

    params: Any
    opt_state: Any
    step: Any


def _objective_fn(estimator):
    if isinstance(estimator, Estimator):
        return estimator.objective
    return None


def _record_step(cfg, estimator, loss, state, k_step, sample_args, *, optimizer, sample_episodes):
    (record_loss, record_params, exact_grad_fn, exact_loss_fn, step_size_fn) = cfg
    episodes = sample_episodes(k_step, *sample_args)
    _check_batched("train", episodes)
    w = state.params
    g = meta_gradient(estimator, loss, w, episodes)
    updates, opt_state = optimizer.update(g, state.opt_state, w)
    rec = {"grad_norm": tree_norm(g), "param_norm": tree_norm(w)}
    if step_size_fn is not None:
        beta = step_size_fn(w, jax.random.fold_in(k_step, 1))
        updates = tree_scale(beta, updates)
        rec["step_size"] = jnp.asarray(beta)
    new_w = optax.apply_updates(w, updates)
    if record_loss:
        if isinstance(estimator, Estimator):
            rec["meta_loss"] = jnp.mean(jax.vmap(lambda ep: estimator.objective(loss, w, ep))(episodes))
        else:
            rec["meta_loss"] = jnp.full((), jnp.nan, rec["grad_norm"].dtype)
    if exact_grad_fn is not None:
        rec["exact_grad_norm"] = tree_norm(exact_grad_fn(w))
    if exact_loss_fn is not None:
        rec["exact_loss"] = jnp.asarray(exact_loss_fn(w))
    if record_params:
        rec["params"] = w
    finite = tree_all_finite(new_w) & jnp.isfinite(rec["grad_norm"])
    if record_loss and isinstance(estimator, Estimator):
        finite = finite & jnp.isfinite(rec["meta_loss"])
    rec["finite"] = finite
    return TrainState(new_w, opt_state, state.step + 1), rec


@functools.partial(jax.jit, static_argnames=("est_static", "cfg", "loss", "optimizer", "sample_episodes", "length"))
def _run_chunk(state, keys, stop, est_leaf, sample_args, *, est_static, cfg, loss, optimizer, sample_episodes, length):
    """``lax.scan`` of ``length`` outer steps; steps with index >= ``stop`` are skipped (padding of the
    last chunk, so every chunk of a run has the same shape and compiles once)."""
    estimator = est_leaf if est_static is None else est_static
    one = functools.partial(_record_step, cfg, estimator, loss, optimizer=optimizer, sample_episodes=sample_episodes)

    def body(state, xs):
        i, k = xs
        probe = jax.eval_shape(lambda s, kk: one(s, kk, sample_args), state, k)
        skip = lambda s, kk: (s, jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), probe[1]))  # noqa: E731
        return jax.lax.cond(i < stop, lambda s, kk: one(s, kk, sample_args), skip, state, k)

    return jax.lax.scan(body, state, (jnp.arange(length), keys))


def _check_batched(fn, episodes):
    if not isinstance(episodes, Episode):
        raise TypeError(f"{fn}: sample_episodes(key) must return a batched mathlib.Episode, got {type(episodes).__name__}")


class _ByIdentity:
    """Wraps an unhashable callable as a static ``jit`` argument compared by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __hash__(self):
        return id(self.obj)

    def __eq__(self, other):
        return isinstance(other, _ByIdentity) and other.obj is self.obj

    def __getattr__(self, name):
        return getattr(self.obj, name)

    def __call__(self, *a, **k):
        return self.obj(*a, **k)


def _static_ok(x, name=None):
    """``x`` itself if hashable, else a by-identity wrapper (so any callable can be a static argument)."""
    try:
        hash(x)
    except TypeError:
        return _ByIdentity(x)
    return x


def train(
    estimator: Callable,
    loss: Callable,
    params,
    optimizer: optax.GradientTransformation,
    sample_episodes: Callable,
    num_steps: int,
    key,
    *,
    exact_grad_fn: Callable | None = None,
    exact_loss_fn: Callable | None = None,
    step_size_fn: Callable | None = None,
    chunk_size: int = 100,
    record_loss: bool = True,
    record_params: bool = False,
    progress: bool = False,
    state: TrainState | None = None,
    max_growth: float | None = 1e6,
    sample_args: tuple = (),
):
    r"""Run ``num_steps`` outer steps $w_{k+1}=w_k+\beta_k\,\mathrm{opt}(\hat g_k)$ with $\hat g_k$ = ``meta_gradient``.

    Compiles once: the chunked loop is a module-level ``jax.jit`` whose static arguments are
    ``loss``, ``optimizer``, ``sample_episodes`` (and the optional functions), compared by identity,
    and whose traced arguments are the state, the keys, ``sample_args`` and the
    :class:`mathlib.Estimator` (its numeric hyper-parameters are leaves). A second call with the same
    objects and shapes, or with an estimator that differs only in $\alpha,\delta,\lambda,\ldots$,
    compiles nothing. (A new optimizer *object*, e.g. a new learning rate, compiles again; keep one
    object, or pass data that changes between calls through ``sample_args`` instead of a closure.)

    Args:
        estimator: per-task estimator ``est(loss, params, episode)`` (e.g. from ``make_estimator``).
        loss: ``loss(params, batch) -> scalar``.
        params: initial meta-parameters (ignored if ``state`` is given).
        optimizer: optax transformation (e.g. ``outer_optimizer("sgd", 0.1)``).
        sample_episodes: ``sample_episodes(key, *sample_args) -> Episode`` batched over a leading
            task axis (must be traceable; fixed shapes).
        num_steps: number of outer steps.
        key: PRNG key. Outer step $t$ (counted from the start of the run, i.e. including the steps
            of a ``state`` being continued) uses ``jax.random.split(key, t_end)[t]`` for its episodes
            (the same key for every ``t_end > t``) and ``jax.random.fold_in`` of it for
            ``step_size_fn``. So ``train(..., n1, key)`` continued by ``train(..., n2, key,
            state=s)`` draws exactly the episodes of one run of ``n1 + n2`` steps; nothing is replayed.
        exact_grad_fn: optional ``params -> exact \nabla F(params)``; its norm is recorded.
        exact_loss_fn: optional ``params -> F(params)``; recorded.
        step_size_fn: optional ``(params, key) -> beta_k``; the optimizer's update is multiplied by it
            (use ``outer_optimizer("sgd", 1.0)`` and e.g. :func:`fallah_step_size` on an independent batch).
        chunk_size: outer steps per compiled ``lax.scan`` call; divergence is checked and progress
            printed between chunks (every chunk has the same length: the last one is padded with
            skipped steps, so one compilation serves the whole run).
        record_loss: record ``"meta_loss"``, the mean objective of the estimator
            (``Estimator.objective``) on the sampled episodes at $w_k$ (NaN for plain callables).
        record_params: also record $w_k$ (stacked).
        progress: print one line per chunk.
        state: continue from this ``TrainState``.
        max_growth: divergence threshold (default ``1e6``): the run is declared diverged at the first
            step $k$ with $\|\hat g_k\|>$ ``max_growth`` $\cdot\max(\|\hat g_0\|,1)$ ($\hat g_0$ the
            first estimate of this call). ``None`` disables the growth test (chapters that study
            divergence); non-finite values are always an error.
        sample_args: extra traced arguments of ``sample_episodes`` (e.g. a task set), so that a
            sampler defined once can be reused with new data without recompiling.

    Returns:
        ``(state, history)``; ``history`` is a dict of numpy arrays indexed by step $k$ (values at
        $w_k$ before the update): ``"step"``, ``"grad_norm"`` ($\|\hat g_k\|$), ``"param_norm"``
        ($\|w_k\|$), ``"meta_loss"`` if ``record_loss`` (default), and when requested
        ``"exact_grad_norm"``, ``"exact_loss"``, ``"step_size"``, ``"params"``.

    Raises:
        FloatingPointError: the run diverged: the loss, the estimate or the parameters became
            NaN/Inf (message ``"non-finite at step k"``) or the estimate grew by more than
            ``max_growth`` (``"diverged at step k"``); the message names the step and the last finite
            values (meta-loss, estimate norm, parameter norm).
    """
    fn = "train"
    num_steps = check_int(fn, "num_steps", num_steps)
    chunk_size = check_int(fn, "chunk_size", chunk_size)
    if max_growth is not None:
        check_positive(fn, "max_growth", max_growth)
    if state is None:
        check_finite(fn, "params", params)
        state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    loss, optimizer, sample_episodes = _static_ok(loss), _static_ok(optimizer), _static_ok(sample_episodes)
    cfg = (bool(record_loss), bool(record_params), *(None if f is None else _static_ok(f) for f in (exact_grad_fn, exact_loss_fn, step_size_fn)))
    # an Estimator is a traced pytree argument; a plain callable estimator is static (by identity)
    est_arg, est_static = (estimator, None) if isinstance(estimator, Estimator) else (None, _static_ok(estimator))
    step0 = int(state.step)
    length = min(chunk_size, num_steps)
    n_pad = -(-num_steps // length) * length  # padded to whole chunks; padding keys are never used
    keys = jax.random.split(key, step0 + n_pad)[step0:]
    sample_args = tuple(sample_args)
    chunks, start, t0 = [], 0, time.perf_counter()
    g_ref = None
    while start < num_steps:
        stop = min(start + length, num_steps)
        new_state, rec = _run_chunk(state, keys[start:start + length], stop - start, est_arg, sample_args,
                                    est_static=est_static, cfg=cfg, loss=loss, optimizer=optimizer,
                                    sample_episodes=sample_episodes, length=length)
        rec = jax.tree_util.tree_map(lambda a: np.asarray(a)[: stop - start], rec)
        chunks.append(rec)
        if g_ref is None:
            g_ref = float(rec["grad_norm"][0])
        bad = ~rec["finite"]
        grown = np.zeros_like(bad)
        if max_growth is not None and np.isfinite(g_ref):
            grown = np.nan_to_num(rec["grad_norm"], nan=0.0) > max_growth * max(g_ref, 1.0)
        if bad.any() or grown.any():
            i = int(np.argmax(bad | grown))
            k = step0 + start + i
            hist = {n: np.concatenate([c[n] for c in chunks]) for n in ("grad_norm", "param_norm") + (("meta_loss",) if "meta_loss" in rec else ())}
            last = start + i - 1  # last step before the failure (index into this call's history)
            if last >= 0:
                ml_ = hist["meta_loss"][last] if "meta_loss" in hist else np.nan
                tail = (f"last values before it, at step {step0 + last}: meta-loss {ml_:.3g}, estimate norm "
                        f"{hist['grad_norm'][last]:.3g}, parameter norm {hist['param_norm'][last]:.3g}")
            else:
                tail = "it is the first step of this call"
            what = (f"non-finite at step {k}" if bad[i] else
                    f"diverged at step {k}: the estimate norm {rec['grad_norm'][i]:.3g} grew by more than "
                    f"max_growth={max_growth:g} times max(first estimate norm {g_ref:.3g}, 1)")
            raise FloatingPointError(
                f"train: {what}; {tail}. The run diverged - reduce the outer step size or the inner step "
                "alpha (or pass max_growth=None to let a run that studies divergence continue until non-finite)"
            )
        state = new_state
        if progress:
            line = f"step {step0 + stop:>7d}/{step0 + num_steps}"
            for name in ("meta_loss", "grad_norm", "exact_grad_norm"):
                if name in rec:
                    line += f"  {name}={rec[name][-1]:.3e}"
            print(line + f"  ({time.perf_counter() - t0:.1f}s)", flush=True)
        start = stop
    history = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0] if name not in ("finite", "params")}
    if record_params:
        history["params"] = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *[c["params"] for c in chunks])
    history["step"] = step0 + np.arange(num_steps)
    return state, history


def run_deterministic(estimator, loss, params0, tasks, beta, num_steps: int, exact_grad_fn=None, **kw):
    r"""Full-batch deterministic meta-training $w_{k+1}=w_k-\beta\frac1n\sum_i\hat g_i(w_k)$.

    Every step uses ``Episode.deterministic(tasks)`` (same batch for support, query and Hessian; the
    leading axis of ``tasks`` indexes tasks) and plain SGD with constant step ``beta``. Extra keyword
    arguments go to :func:`train` (e.g. ``exact_loss_fn``, ``chunk_size``, ``progress``).
    Returns ``(state, history)`` as :func:`train`.
    """
    check_positive("run_deterministic", "beta", beta)
    episodes = Episode.deterministic(tasks)
    # beta lives in the optimizer state (traced), so a sweep over beta compiles the loop once
    state = kw.pop("state", None)
    if state is None:
        check_finite("run_deterministic", "params0", params0)
        state = TrainState(params0, None, jnp.zeros((), jnp.int32))
    state = state._replace(opt_state={"lr": jnp.asarray(beta)})
    return train(
        estimator,
        loss,
        None,
        _TRACED_SGD,
        _fixed_episodes,
        num_steps,
        kw.pop("key", jax.random.key(0)),
        exact_grad_fn=exact_grad_fn,
        sample_args=(episodes,),
        state=state,
        **kw,
    )


def _fixed_episodes(key, episodes):
    return episodes


def _traced_sgd_update(updates, state, params=None):
    return jax.tree_util.tree_map(lambda g: -jnp.asarray(state["lr"], g.dtype) * g, updates), state


#: plain SGD $w-\beta g$ whose step $\beta$ is the traced state entry ``{"lr": beta}``
_TRACED_SGD = optax.GradientTransformation(lambda params: {"lr": jnp.ones(())}, _traced_sgd_update)


class TrainStep(NamedTuple):
    """``init(params) -> TrainState`` and the jitted ``step(state, episodes, estimator=None) -> (state, metrics)``."""

    init: Callable
    step: Callable

    def __call__(self, state, episodes, estimator=None):
        return self.step(state, episodes, estimator)


def make_train_step(estimator, loss, optimizer: optax.GradientTransformation, *, record_loss: bool = True) -> TrainStep:
    r"""An optax-style training step for your own loop: $w\leftarrow w+\mathrm{opt}(\hat g)$, compiled once.

    ``ts = make_train_step(est, loss, optax.adam(1e-3))``; ``state = ts.init(params)``; then
    ``state, metrics = ts(state, episodes)`` with a batched :class:`mathlib.Episode` (the
    meta-gradient $\hat g=$ ``meta_gradient(est, loss, w, episodes)`` followed by the optimizer's
    update). ``metrics`` holds ``"grad_norm"`` $\|\hat g\|$ and, with ``record_loss=True``
    (default), ``"meta_loss"`` (the estimator's objective at $w$ before the update, NaN for a plain
    callable; ``record_loss=False`` skips that extra evaluation). The step is one ``jax.jit``
    compiled on the first call; later calls with the same shapes reuse it, also with another
    :class:`mathlib.Estimator` of the same method and static hyper-parameters passed as
    ``ts(state, episodes, estimator=est.replace(alpha=0.05))`` (its numbers are traced). Evaluate
    with ``est.adapt`` between steps as you like.
    """
    if not isinstance(estimator, Estimator) and not callable(estimator):
        raise TypeError(f"make_train_step: argument 'estimator' must be an Estimator or a callable, got {type(estimator).__name__}")

    def init(params):
        return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def _step(state, episodes, est):
        _check_batched("make_train_step", episodes)
        w = state.params
        g = meta_gradient(est, loss, w, episodes)
        updates, opt_state = optimizer.update(g, state.opt_state, w)
        metrics = {"grad_norm": tree_norm(g)}
        if record_loss and isinstance(est, Estimator):
            metrics["meta_loss"] = jnp.mean(jax.vmap(lambda ep: est.objective(loss, w, ep))(episodes))
        elif record_loss:
            metrics["meta_loss"] = jnp.full((), jnp.nan)
        return TrainState(optax.apply_updates(w, updates), opt_state, state.step + 1), metrics

    if isinstance(estimator, Estimator):
        jitted = jax.jit(_step)

        def step(state, episodes, est=None):
            return jitted(state, episodes, estimator if est is None else est)
    else:
        jitted = jax.jit(lambda state, episodes: _step(state, episodes, estimator))

        def step(state, episodes, est=None):
            if est is not None:
                raise TypeError("make_train_step: estimator overrides need an Estimator (from make_estimator)")
            return jitted(state, episodes)

    return TrainStep(init, step)
