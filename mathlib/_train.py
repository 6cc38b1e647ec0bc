r"""Meta-training loops: jitted, vmapped over tasks, ``lax.scan`` over chunks of outer steps."""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mathlib._core import Episode, tree_all_finite, tree_norm, tree_scale
from mathlib._estimators import Estimator, meta_gradient
from mathlib._validate import check_finite, check_int, check_positive

__all__ = ["TrainState", "train", "run_deterministic"]


class TrainState(NamedTuple):
    """Meta-training state: ``params`` (pytree), optax ``opt_state``, outer ``step`` counter (int array)."""

    params: Any
    opt_state: Any
    step: Any


def _objective_fn(estimator):
    if isinstance(estimator, Estimator):
        return estimator.objective
    return None


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
):
    r"""Run ``num_steps`` outer steps $w_{k+1}=w_k+\beta_k\,\mathrm{opt}(\hat g_k)$ with $\hat g_k$ = ``meta_gradient``.

    Args:
        estimator: per-task estimator ``est(loss, params, episode)`` (e.g. from ``make_estimator``).
        loss: ``loss(params, batch) -> scalar``.
        params: initial meta-parameters (ignored if ``state`` is given).
        optimizer: optax transformation (e.g. ``outer_optimizer("sgd", 0.1)``).
        sample_episodes: ``sample_episodes(key) -> Episode`` batched over a leading task axis
            (must be traceable; fixed shapes).
        num_steps: number of outer steps.
        key: PRNG key; step $k$ uses ``jax.random.split(key, num_steps)[k]`` for its episodes and
            ``jax.random.fold_in`` of it for ``step_size_fn``.
        exact_grad_fn: optional ``params -> exact \nabla F(params)``; its norm is recorded.
        exact_loss_fn: optional ``params -> F(params)``; recorded.
        step_size_fn: optional ``(params, key) -> beta_k``; the optimizer's update is multiplied by it
            (use ``outer_optimizer("sgd", 1.0)`` and e.g. :func:`fallah_step_size` on an independent batch).
        chunk_size: outer steps per compiled ``lax.scan`` call; finiteness is checked and progress
            printed between chunks.
        record_loss: record the mean objective of the estimator (``Estimator.objective``) on the
            sampled episodes at $w_k$ (NaN for plain callables).
        record_params: also record $w_k$ (stacked).
        progress: print one line per chunk.
        state: continue from this ``TrainState``.

    Returns:
        ``(state, history)``; ``history`` is a dict of numpy arrays indexed by step $k$ (values at
        $w_k$ before the update): ``"step"``, ``"meta_loss"``, ``"grad_norm"`` ($\|\hat g_k\|$),
        and when available ``"exact_grad_norm"``, ``"exact_loss"``, ``"step_size"``, ``"params"``.

    Raises:
        FloatingPointError: the loss, the estimate or the parameters became NaN/Inf; the message
            names the first offending step.
    """
    fn = "train"
    num_steps = check_int(fn, "num_steps", num_steps)
    chunk_size = check_int(fn, "chunk_size", chunk_size)
    if state is None:
        check_finite(fn, "params", params)
        state = TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))
    objective = _objective_fn(estimator) if record_loss else None

    def step(state, k_step):
        episodes = sample_episodes(k_step)
        w = state.params
        g = meta_gradient(estimator, loss, w, episodes)
        updates, opt_state = optimizer.update(g, state.opt_state, w)
        rec = {"grad_norm": tree_norm(g)}
        if step_size_fn is not None:
            beta = step_size_fn(w, jax.random.fold_in(k_step, 1))
            updates = tree_scale(beta, updates)
            rec["step_size"] = jnp.asarray(beta)
        new_w = optax.apply_updates(w, updates)
        if objective is not None:
            rec["meta_loss"] = jnp.mean(jax.vmap(lambda ep: objective(loss, w, ep))(episodes))
        if exact_grad_fn is not None:
            rec["exact_grad_norm"] = tree_norm(exact_grad_fn(w))
        if exact_loss_fn is not None:
            rec["exact_loss"] = jnp.asarray(exact_loss_fn(w))
        if record_params:
            rec["params"] = w
        finite = tree_all_finite(new_w) & jnp.isfinite(rec["grad_norm"])
        if objective is not None:
            finite = finite & jnp.isfinite(rec["meta_loss"])
        rec["finite"] = finite
        return TrainState(new_w, opt_state, state.step + 1), rec

    run_chunk = jax.jit(lambda s, ks: jax.lax.scan(step, s, ks))
    keys = jax.random.split(key, num_steps)
    chunks, start, t0 = [], 0, time.perf_counter()
    step0 = int(state.step)
    while start < num_steps:
        stop = min(start + chunk_size, num_steps)
        state, rec = run_chunk(state, keys[start:stop])
        rec = jax.tree_util.tree_map(np.asarray, rec)
        chunks.append(rec)
        if not rec["finite"].all():
            k = start + int(np.argmin(rec["finite"]))
            i = k - start
            ml = rec.get("meta_loss", np.full(stop - start, np.nan))[i]
            raise FloatingPointError(
                f"train: non-finite at step {step0 + k} (meta-loss {ml:.3g}, estimate norm "
                f"{rec['grad_norm'][i]:.3g}); the run diverged - reduce the outer step size or the inner step alpha"
            )
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
    return train(
        estimator,
        loss,
        params0,
        optax.sgd(beta),
        lambda key: episodes,
        num_steps,
        kw.pop("key", jax.random.key(0)),
        exact_grad_fn=exact_grad_fn,
        **kw,
    )
