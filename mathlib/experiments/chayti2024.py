r"""Experiment drivers for the chapter on Chayti and Jaggi (2024), "a first-order method that
reaches MAML's stationary points".

Chapter-specific sweeps built on the core API of ``mathlib``. Nothing here is re-exported from
``mathlib``; notebooks import it as ``from mathlib.experiments import chayti2024 as ex``.

Every function names the claim of the chapter it serves (book page ``chayti2024/experiments``).
The estimator itself is ``mathlib.chayti_grad`` (one inner step); :func:`chayti_grad_k` below is the
multi-step version derived in the chapter (a candidate for the core, which is adding ``steps`` to
``chayti_grad`` concurrently).
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mathlib as ml
from mathlib.experiments.fallah2020 import binned_envelope, fit_loglog_slope, radial_points
from mathlib.validate import check_choice, check_int, check_positive

__all__ = [
    "jit_sample",
    "l0l1_constants",
    "task_smoothness_scan",
    "radial_points",
    "binned_envelope",
    "fit_loglog_slope",
    "chayti_grad_k",
    "k_step_cost",
    "run_direction",
    "run_fd_deltas",
    "fixed_point",
    "full_batch_direction",
    "deterministic_suite",
    "deterministic_suites",
    "plateau",
    "noisy_estimator_error",
    "optimum_on_grid",
    "GrowingTask",
    "growing_loss",
    "sample_growing_tasks",
    "OPTIMIZERS",
    "optimizer_runs",
    "optimizer_sweep",
    "MEMORY_METHODS",
    "memory_sweep",
]


from mathlib._core import jit_sample  # noqa: E402  (re-exported: the core's compiled-sampler helper)


# =============================================================================== claim 1
def l0l1_constants(L, rho, alpha):
    r"""$(L_0,L_1)=\big((1+\alpha L)^2L,\ \alpha\rho/(1-\alpha L)\big)$ of {prf:ref}`chayti2024-lem-l0l1` (needs $\alpha L<1$).

    Then $\|\nabla^2F_i(w)\|\le L_0+L_1\|\nabla F_i(w)\|$ for the one-step MAML objective
    $F_i(w)=f_i(w-\alpha\nabla f_i(w))$ of an $L$-smooth task with $\rho$-Lipschitz Hessian. Claim 1.
    """
    check_positive("l0l1_constants", "L", L)
    check_positive("l0l1_constants", "alpha", alpha)
    if not float(alpha) * float(L) < 1.0:
        raise ValueError(f"l0l1_constants: needs alpha*L < 1, got alpha*L = {float(alpha) * float(L):.3g}")
    return (1.0 + alpha * L) ** 2 * L, alpha * rho / (1.0 - alpha * L)


def task_smoothness_scan(tasks, loss, alpha, points):
    r"""Per-task and averaged smoothness of the one-step MAML objective at many points. Claim 1.

    For each point $w$ and task $i$: $\|\nabla^2F_i(w)\|_2$ (dense Hessian, largest $|\lambda|$)
    and $\|\nabla F_i(w)\|$; for the average $F=\frac1n\sum_iF_i$: $\|\nabla^2F(w)\|_2$,
    $\|\nabla F(w)\|$ and $\frac1n\sum_i\|\nabla F_i(w)\|$. Small $d$ only.

    Returns:
        dict of numpy arrays: ``task_hess`` and ``task_grad`` (points, tasks), ``hess``, ``grad``,
        ``mean_task_grad`` (points,).
    """
    g = jax.grad(loss)

    def Fi(w, t):
        return loss(w - alpha * g(w, t), t)

    @jax.jit
    def at(w):
        H = jax.vmap(lambda t: jax.hessian(Fi)(w, t))(tasks)
        H = 0.5 * (H + jnp.swapaxes(H, -1, -2))
        G = jax.vmap(lambda t: jax.grad(Fi)(w, t))(tasks)
        hn = jnp.max(jnp.abs(jnp.linalg.eigvalsh(H)), axis=-1)
        gn = jnp.linalg.norm(G, axis=-1)
        Hb = jnp.mean(H, axis=0)
        return hn, gn, jnp.max(jnp.abs(jnp.linalg.eigvalsh(Hb))), jnp.linalg.norm(jnp.mean(G, axis=0)), jnp.mean(gn)

    hn, gn, h, gr, mg = (np.asarray(x) for x in jax.lax.map(at, jnp.asarray(points)))
    return {"task_hess": hn, "task_grad": gn, "hess": h, "grad": gr, "mean_task_grad": mg}


# =============================================================================== claim 2
def _axpy(a, x, y):
    return jax.tree_util.tree_map(lambda u, v: v + a * u, x, y)


def chayti_grad_k(loss, params, episode, alpha, delta, scheme: str = "forward", steps: int = 1,
                  store_iterates: bool = True):
    r"""$K$-step first-order estimator (derived here, {prf:ref}`chayti2024-alg-k-step`). Claim 2.

    Inner loop $w^{k+1}=w^k-\alpha\nabla f(w^k;D_{in})$, $k<K$, storing $w^k$ (and $\nabla f(w^k;D_{in})$
    for the forward scheme). Backward pass with $u_K=\nabla f(w^K;D_o)$ and, for $k=K-1,\dots,0$,
    one finite difference of the one-step map $U(x)=x-\alpha\nabla f(x;D_{in})$ at the iterate:

    * ``"forward"``: $u_k=\big(U(w^k+\delta u_{k+1})-U(w^k)\big)/\delta$, i.e.
      $u_{k+1}-\alpha\big(\nabla f(w^k+\delta u_{k+1})-\nabla f(w^k)\big)/\delta$; $2K+1$ gradients.
    * ``"central"``: $u_k=\big(U(w^k+\delta u_{k+1})-U(w^k-\delta u_{k+1})\big)/(2\delta)$; $3K+1$ gradients.

    Returns $u_0\approx\prod_{k=0}^{K-1}(I-\alpha\nabla^2f(w^k))\nabla f(w^K;D_o)$, the exact $K$-step
    MAML gradient of :func:`mathlib.maml_grad` up to $O(\delta)$ (forward) or $O(\delta^2)$ (central).
    For ``steps=1`` it equals :func:`mathlib.chayti_grad`. ``episode.hessian`` is ignored (all
    differences use $D_{in}$).

    Memory: with ``store_iterates=True`` the $K$ iterates (and, forward, their gradients) are kept:
    parameter copies only, no activations. With ``store_iterates=False`` each $w^k$ is recomputed
    from $w^0$ in the backward pass (``lax.fori_loop``): memory independent of $K$, at
    $K(K-1)/2$ extra gradients ($K(K+5)/2+1$ in all for either scheme; see :func:`k_step_cost`).
    """
    fn = "chayti_grad_k"
    check_positive(fn, "alpha", alpha)
    check_positive(fn, "delta", delta)
    check_choice(fn, "scheme", scheme, ml.FD_SCHEMES)
    steps = check_int(fn, "steps", steps)
    g = jax.grad(loss)
    sup = episode.support

    def fwd(w, _):
        gw = g(w, sup)
        return _axpy(-alpha, gw, w), (w, gw)

    if not store_iterates:
        def iterate(k):
            return jax.lax.fori_loop(0, k, lambda _, w: _axpy(-alpha, g(w, sup), w), params)

        u = g(iterate(steps), episode.query)

        def back_rc(u, k):
            w = iterate(k)
            gp = g(_axpy(delta, u, w), sup)
            if scheme == "forward":
                d = jax.tree_util.tree_map(lambda a, b: (a - b) / delta, gp, g(w, sup))
            else:
                gm = g(_axpy(-delta, u, w), sup)
                d = jax.tree_util.tree_map(lambda a, b: (a - b) / (2.0 * delta), gp, gm)
            return _axpy(-alpha, d, u), None

        u, _ = jax.lax.scan(back_rc, u, jnp.arange(steps - 1, -1, -1))
        return u

    w_last, (ws, gs) = jax.lax.scan(fwd, params, None, length=steps)
    u = g(w_last, episode.query)

    def back(u, wg):
        w, gw = wg
        gp = g(_axpy(delta, u, w), sup)
        if scheme == "forward":
            d = jax.tree_util.tree_map(lambda a, b: (a - b) / delta, gp, gw)
        else:
            gm = g(_axpy(-delta, u, w), sup)
            d = jax.tree_util.tree_map(lambda a, b: (a - b) / (2.0 * delta), gp, gm)
        return _axpy(-alpha, d, u), None

    u, _ = jax.lax.scan(back, u, (ws, gs), reverse=True)
    return u


def k_step_cost(name: str, steps: int):
    r"""Gradient evaluations and HVPs per task of one estimate (claim 5): ``(grads, hvps)``.

    MAML $K+1$ gradients and $K$ HVPs; FO-MAML $K+1$; Reptile $K$; :func:`chayti_grad_k` forward
    $2K+1$, central $3K+1$ (no HVP); with ``store_iterates=False`` (``*_recompute``) the iterates
    are recomputed: $K(K+1)/2$ gradients for the $w^k$ ($k\le K$), one at the query point and $2$ per
    backward step (forward: $\nabla f(w^k)$ and $\nabla f(w^k+\delta u)$; central: $\nabla f(w^k\pm\delta u)$).
    """
    steps = check_int("k_step_cost", "steps", steps)
    K = steps
    rc = K * (K - 1) // 2 + K  # K steps to w^K, then k steps to recompute w^k, k = K-1..0
    table = {"maml": (K + 1, K), "fomaml": (K + 1, 0), "reptile": (K, 0),
             "chayti_forward": (2 * K + 1, 0), "chayti_central": (3 * K + 1, 0),
             "chayti_forward_recompute": (2 * K + 1 + rc, 0), "chayti_central_recompute": (2 * K + 1 + rc, 0)}
    check_choice("k_step_cost", "name", name, tuple(table))
    return table[name]


def run_direction(direction, w0, beta, num_steps: int, exact_grad):
    r"""Deterministic iteration $w_{k+1}=w_k-\beta\,\mathrm{direction}(w_k)$, one ``lax.scan``.

    Records the exact $\|\nabla F(w_k)\|$ (``exact_grad(w)``) after every step. Returns
    ``(w_final, norms)`` (numpy). Claim 2.
    """
    num_steps = check_int("run_direction", "num_steps", num_steps)

    @jax.jit
    def run(w0):
        def body(w, _):
            w = w - beta * direction(w)
            return w, jnp.linalg.norm(exact_grad(w))

        return jax.lax.scan(body, w0, None, length=num_steps)

    w, norms = run(w0)
    return np.asarray(w), np.asarray(norms)


def run_fd_deltas(loss, tasks, alpha, beta, deltas, scheme, steps, num_steps: int, w0):
    r"""Deterministic runs of :func:`chayti_grad_k` for several $\delta$ at once (``vmap``). Claim 2.

    All tasks in every step (``Episode.deterministic``), constant step ``beta``; the exact
    $K$-step $\|\nabla F(w_k)\|$ (:func:`mathlib.exact_meta_gradient`) after every step.

    Returns:
        numpy array (len(deltas), num_steps) of $\|\nabla F(w_k)\|$ and the final iterates.
    """
    num_steps = check_int("run_fd_deltas", "num_steps", num_steps)
    ep = ml.Episode.deterministic(tasks)

    def run(d):
        def direction(w):
            return ml.meta_gradient(chayti_grad_k, loss, w, ep, alpha=alpha, delta=d, scheme=scheme, steps=steps)

        def body(w, _):
            w = w - beta * direction(w)
            return w, jnp.linalg.norm(ml.exact_meta_gradient(loss, w, tasks, alpha, steps))

        return jax.lax.scan(body, w0, None, length=num_steps)

    w, norms = jax.jit(jax.vmap(run))(jnp.asarray(deltas, dtype=jnp.asarray(w0).dtype))
    return np.asarray(norms), np.asarray(w)


def fixed_point(direction, w_init, iters: int = 30):
    r"""A zero of a deterministic direction field $g(w)$ by Newton's method on its Jacobian (small $d$).

    Used for the biased fixed points of FO-MAML ($\frac1n\sum_i\nabla f_i(U_i(w))=0$) and Reptile
    ($\frac1n\sum_i(w-U_i(w))=0$) and for the finite-difference estimators' own fixed points.
    Returns ``(w, residual_norm)``. Claim 2.
    """
    iters = check_int("fixed_point", "iters", iters)
    J = jax.jacfwd(direction)

    @jax.jit
    def newton(w):
        def body(w, _):
            return w - jnp.linalg.solve(J(w), direction(w)), None

        w, _ = jax.lax.scan(body, w, None, length=iters)
        return w, jnp.linalg.norm(direction(w))

    w, r = newton(jnp.asarray(w_init))
    return np.asarray(w), float(r)


def full_batch_direction(name, loss, tasks, alpha, steps: int = 1, delta=None, scheme="forward"):
    r"""The deterministic direction $g(w)=\frac1n\sum_ig_i(w)$ of a method on a finite task set. Claim 2.

    Names: ``"maml"`` (exact $K$-step gradient), ``"fomaml"`` ($\frac1n\sum_i\nabla f_i(U_{i,K}(w))$),
    ``"reptile"`` ($\frac1n\sum_i(w-U_{i,K}(w))/(\alpha K)$), ``"chayti"`` (:func:`chayti_grad_k`
    with ``delta``, ``scheme``), ``"naive"`` (the finite difference of the whole $K$-step map,
    $\frac1n\sum_i(U_{i,K}(w+\delta v_i)-U_{i,K}(w))/\delta$ with $v_i=\nabla f_i(U_{i,K}(w))$, which
    estimates $J_{U_{i,K}}v_i$ instead of $J_{U_{i,K}}^\top v_i$). Written without ``stop_gradient``
    so that :func:`fixed_point` can differentiate it (the core's :func:`mathlib.fomaml_grad` stops the
    gradient through the inner loop, which is right for training but gives a singular Jacobian here).
    """
    check_choice("full_batch_direction", "name", name, ("maml", "fomaml", "reptile", "chayti", "naive"))
    steps = check_int("full_batch_direction", "steps", steps)
    g = jax.grad(loss)

    def per_task(w, t):
        if name == "maml":
            return jax.grad(lambda x: loss(ml.adapt_gd(loss, x, t, alpha, steps), t))(w)
        if name == "chayti":
            return chayti_grad_k(loss, w, ml.Episode.deterministic(t), alpha, delta, scheme, steps)
        wk = ml.adapt_gd(loss, w, t, alpha, steps)
        if name == "fomaml":
            return g(wk, t)
        if name == "reptile":
            return (w - wk) / (alpha * steps)
        v = g(wk, t)
        return (ml.adapt_gd(loss, w + delta * v, t, alpha, steps) - wk) / delta

    return lambda w: jnp.mean(jax.vmap(lambda t: per_task(w, t))(tasks), axis=0)


def _masked_directions(loss, tasks, alpha, kmax: int, naive_delta):
    r"""Full-batch directions of :func:`full_batch_direction` with the number of inner steps $K\le$ ``kmax``
    a *traced* argument: the inner loop runs ``kmax`` steps and step $k$ is the identity when $k\ge K$
    (``jnp.where``), so one compiled program serves every $K$ (values equal the static-$K$ ones up to
    round-off; the identity steps have identity Jacobians). Returns ``(dirs, chayti)`` with
    ``dirs[name](w, K)`` for ``maml``, ``fomaml``, ``reptile``, ``naive`` and ``chayti(w, K, delta, scheme)``."""
    g = jax.grad(loss)
    ks = jnp.arange(kmax)

    def adapt(w, t, K):
        def body(w, k):
            return jnp.where(k < K, w - alpha * g(w, t), w), None

        return jax.lax.scan(body, w, ks)[0]

    def per_task(name, w, t, K):
        if name == "maml":
            return jax.grad(lambda x: loss(adapt(x, t, K), t))(w)
        wk = adapt(w, t, K)
        if name == "fomaml":
            return g(wk, t)
        if name == "reptile":
            return (w - wk) / (alpha * K)
        v = g(wk, t)
        return (adapt(w + naive_delta * v, t, K) - wk) / naive_delta

    def chayti_task(w, t, K, delta, scheme):
        def fwd(w, k):
            gw = g(w, t)
            return jnp.where(k < K, w - alpha * gw, w), (w, gw)

        wK, (ws, gs) = jax.lax.scan(fwd, w, ks)
        u = g(wK, t)

        def back(u, x):
            w, gw, k = x
            gp = g(w + delta * u, t)
            d = (gp - gw) / delta if scheme == "forward" else (gp - g(w - delta * u, t)) / (2.0 * delta)
            return jnp.where(k < K, u - alpha * d, u), None

        return jax.lax.scan(back, u, (ws, gs, ks), reverse=True)[0]

    def mean(f):
        return lambda w, *a: jnp.mean(jax.vmap(lambda t: f(w, t, *a))(tasks), axis=0)

    # nested ``jax.jit``: each direction is traced once per shape and reused by every caller
    dirs = {nm: jax.jit(mean(lambda w, t, K, nm=nm: per_task(nm, w, t, K))) for nm in ("maml", "fomaml", "reptile", "naive")}
    return dirs, jax.jit(mean(chayti_task), static_argnums=3)


def deterministic_suites(loss, tasks, alpha, beta, steps_list, deltas, num_steps: int, w0, naive_delta: float = 1e-5,
                         newton_iters: int = 20, fixed_points=("maml", "fomaml", "reptile", "naive", "forward", "central")):
    r"""All deterministic runs of claim 2 for every $K$ in ``steps_list``, as **one** compiled program.

    Runs $w_{k+1}=w_k-\beta g(w_k)$ for the directions of :func:`full_batch_direction`: ``"maml"``,
    ``"fomaml"``, ``"reptile"``, ``"naive"`` (with ``naive_delta``) and the ``"forward"`` and
    ``"central"`` first-order estimators (:func:`chayti_grad_k`) for every $\delta$ in ``deltas``;
    records the exact $K$-step $\|\nabla F(w_k)\|$ after every step; then, for the methods named in
    ``fixed_points``, refines the run's last iterate to the direction's zero by Newton's method (as
    :func:`fixed_point`) and evaluates $\|\nabla F\|$ there: the computed floor of the method (NaN for
    methods not in ``fixed_points``). $K$ and $\delta$ are traced (``vmap``; $K$ via
    :func:`_masked_directions`), so the number of compilations does not grow with the sweep.

    Returns:
        dict K -> dict name -> dict with ``norms`` (num_steps,), ``floor`` (:func:`plateau` of the run),
        ``fixed_point_grad`` ($\|\nabla F\|$ at the direction's zero) and ``residual`` (norm of the
        direction there); names ``maml``, ``fomaml``, ``reptile``, ``naive``, ``forward-<delta>``,
        ``central-<delta>`` (delta formatted with ``:g``).
    """
    num_steps = check_int("deterministic_suite", "num_steps", num_steps)
    newton_iters = check_int("deterministic_suite", "newton_iters", newton_iters)
    steps_list = [check_int("deterministic_suite", "steps", K) for K in steps_list]
    plain = ("maml", "fomaml", "reptile", "naive")
    for nm in fixed_points:
        check_choice("deterministic_suite", "fixed_points", nm, plain + ("forward", "central"))
    dirs, chayti = _masked_directions(loss, tasks, alpha, max(steps_list), naive_delta)
    dtype = jnp.asarray(w0).dtype
    D = jnp.asarray(deltas, dtype=dtype)
    nd = D.shape[0]
    nan = jnp.asarray(jnp.nan, dtype)

    def newton(f, w):
        J = jax.jacfwd(f)
        w, _ = jax.lax.scan(lambda w, _: (w - jnp.linalg.solve(J(w), f(w)), None), w, None, length=newton_iters)
        return w, jnp.linalg.norm(f(w))

    def run(K, w0):
        exact = jax.vmap(lambda w: jnp.linalg.norm(dirs["maml"](w, K)))
        fd = {sch: jax.vmap(lambda w, d, sch=sch: chayti(w, K, d, sch)) for sch in ("forward", "central")}

        def body(c, _):
            ws, Wf, Wc = c
            ws = tuple(w - beta * dirs[n](w, K) for n, w in zip(plain, ws))
            Wf = Wf - beta * fd["forward"](Wf, D)
            Wc = Wc - beta * fd["central"](Wc, D)
            return (ws, Wf, Wc), exact(jnp.concatenate([jnp.stack(ws), Wf, Wc]))

        W0 = jnp.broadcast_to(w0, (nd,) + w0.shape)
        (ws, Wf, Wc), norms = jax.lax.scan(body, (tuple(w0 for _ in plain), W0, W0), None, length=num_steps)
        fpg, res = [], []
        for n, w in zip(plain, ws):
            if n in fixed_points:
                wf, r = newton(lambda x, n=n: dirs[n](x, K), w)
                fpg.append(exact(wf[None])), res.append(r[None])
            else:
                fpg.append(nan[None]), res.append(nan[None])
        for sch, W in (("forward", Wf), ("central", Wc)):
            if sch in fixed_points:
                W2, r = jax.vmap(lambda w, d, sch=sch: newton(lambda x: chayti(x, K, d, sch), w))(W, D)
                fpg.append(exact(W2)), res.append(r)
            else:
                fpg.append(jnp.full((nd,), nan)), res.append(jnp.full((nd,), nan))
        return norms, jnp.concatenate(fpg), jnp.concatenate(res)

    Ks = jnp.asarray(steps_list)
    norms, fpg, resid = (np.asarray(x) for x in jax.jit(jax.vmap(run, in_axes=(0, None)))(Ks, jnp.asarray(w0)))
    names = list(plain) + [f"forward-{float(d):g}" for d in deltas] + [f"central-{float(d):g}" for d in deltas]
    return {K: {n: {"norms": norms[i, :, j], "floor": float(plateau(norms[i, :, j])),
                    "fixed_point_grad": float(fpg[i, j]), "residual": float(resid[i, j])} for j, n in enumerate(names)}
            for i, K in enumerate(steps_list)}


def deterministic_suite(loss, tasks, alpha, beta, steps: int, deltas, num_steps: int, w0, naive_delta: float = 1e-5,
                        newton_iters: int = 20, fixed_points=("maml", "fomaml", "reptile", "naive", "forward", "central")):
    r"""All deterministic runs of claim 2 for one $K$: :func:`deterministic_suites` with ``steps_list=[steps]``.

    Returns:
        dict name -> dict with ``norms``, ``floor``, ``fixed_point_grad``, ``residual``.
    """
    steps = check_int("deterministic_suite", "steps", steps)
    return deterministic_suites(loss, tasks, alpha, beta, [steps], deltas, num_steps, w0, naive_delta=naive_delta,
                                newton_iters=newton_iters, fixed_points=fixed_points)[steps]


def plateau(norms, frac: float = 0.1):
    """Median of the last ``frac`` of a trajectory of gradient norms (the floor of a run)."""
    norms = np.asarray(norms)
    n = max(1, int(round(frac * norms.shape[-1])))
    return np.median(norms[..., -n:], axis=-1)


# =============================================================================== claim 3
def noisy_estimator_error(loss, w, task, alpha, hs, eps, scheme, num_draws: int, key):
    r"""RMS error of the first-order estimator when every inner solve is inexact. Claim 3.

    Model ({prf:ref}`chayti2024-lem-inexact`): each call of the inner solver returns
    $\hat U(x)=U(x)+\varepsilon\xi$ with $\xi$ an independent uniformly random unit vector (e.g. an
    inner problem solved by a stochastic method to accuracy $\varepsilon$); $U(x)=x-\alpha\nabla f(x)$.
    The estimator uses $v=\nabla f(\hat U(w))$ and

    * forward: $(\hat U(w+hv)-\hat U(w))/h$ (the same solve $\hat U(w)$ as for $v$);
    * central: $(\hat U(w+hv)-\hat U(w-hv))/(2h)$.

    The reference is the exact $\nabla F_i(w)=(I-\alpha\nabla^2f(w))\nabla f(U(w))$.

    Returns:
        numpy array (len(eps), len(hs)) of $\sqrt{\E\|g-\nabla F_i(w)\|^2}$ over ``num_draws`` draws.
    """
    check_choice("noisy_estimator_error", "scheme", scheme, ml.FD_SCHEMES)
    num_draws = check_int("noisy_estimator_error", "num_draws", num_draws)
    w = jnp.asarray(w)
    # module-level jit: one compilation per (loss, scheme, num_draws, shapes), reused across points w
    return np.asarray(_noisy_error(loss, scheme, num_draws, w, task, jnp.asarray(alpha, w.dtype),
                                   jnp.asarray(eps, w.dtype), jnp.asarray(hs, w.dtype), key))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _noisy_error(loss, scheme, num_draws, w, task, alpha, eps, hs, key):
    g = jax.grad(loss)
    U = lambda x: x - alpha * g(x, task)  # noqa: E731
    exact = jax.grad(lambda x: loss(U(x), task))(w)

    def unit(k):
        z = jax.random.normal(k, w.shape, w.dtype)
        return z / jnp.linalg.norm(z)

    def one(e, h, k):
        k0, k1, k2 = jax.random.split(k, 3)
        u0 = U(w) + e * unit(k0)
        v = g(u0, task)
        up = U(w + h * v) + e * unit(k1)
        if scheme == "forward":
            est = (up - u0) / h
        else:
            est = (up - (U(w - h * v) + e * unit(k2))) / (2.0 * h)
        return jnp.sum((est - exact) ** 2)

    keys = jax.random.split(key, num_draws)
    f = jax.vmap(jax.vmap(lambda e, h: jnp.sqrt(jnp.mean(jax.vmap(lambda k: one(e, h, k))(keys))),
                          in_axes=(None, 0)), in_axes=(0, None))
    return f(eps, hs)


def optimum_on_grid(hs, errors):
    r"""Per row of ``errors`` (one $\varepsilon$ each): the $h$ of the smallest error and that error,
    refined by a parabola through the three grid points around the minimum in $\log$-$\log$. Claim 3."""
    hs = np.log10(np.asarray(hs, float))
    out_h, out_e = [], []
    for row in np.log10(np.asarray(errors, float)):
        k = int(np.clip(np.argmin(row), 1, len(row) - 2))
        a, b, c = np.polyfit(hs[k - 1:k + 2], row[k - 1:k + 2], 2)
        x = -b / (2 * a) if a > 0 else hs[k]
        out_h.append(10 ** x)
        out_e.append(10 ** (a * x * x + b * x + c))
    return np.array(out_h), np.array(out_e)


# =============================================================================== claim 4
class GrowingTask(NamedTuple):
    r"""Cosine task plus a quartic: $f(w)=f^{\cos}(w)+\frac q4\|w-c\|^4$ (not globally $L$-smooth)."""

    cos: ml.CosineTask
    q: jax.Array


def growing_loss(w, task: GrowingTask):
    r"""$f(w)=\tfrac12(w-c)^\top A(w-c)+a\sum_j\cos(k\,u_j^\top(w-c))+\tfrac q4\|w-c\|^4$ (claim 4)."""
    r = w - task.cos.c
    return ml.cosine_loss(w, task.cos) + 0.25 * task.q * jnp.dot(r, r) ** 2


def sample_growing_tasks(key, num_tasks: int, dim: int, q: float, **kw) -> GrowingTask:
    """Cosine tasks of :func:`mathlib.sample_cosine_tasks` (``**kw``) with a quartic of weight ``q``."""
    check_positive("sample_growing_tasks", "q", q)
    cos = ml.sample_cosine_tasks(key, num_tasks, dim, **kw)
    return GrowingTask(cos, jnp.full((num_tasks,), q, dtype=cos.A.dtype))


#: outer optimisers compared in claim 4 (each scaled by the learning rate ``lr``)
OPTIMIZERS = ("sgd", "clipped_sgd", "nsgdm", "adam", "fallah")


def _base_optimizer(name, clip, momentum):
    if name in ("sgd", "fallah"):
        return ml.outer_optimizer("sgd", 1.0)
    if name == "clipped_sgd":
        return ml.outer_optimizer("clipped_sgd", 1.0, max_norm=clip)
    if name == "nsgdm":
        return ml.outer_optimizer("normalized_sgd_momentum", 1.0, beta=momentum)
    return ml.outer_optimizer("adam", 1.0)


def optimizer_runs(loss, pool, alpha, name, lrs, w0s, *, num_steps: int, batch_size: int, delta: float,
                   key, clip: float = 1.0, momentum: float = 0.9, decay: float = 50.0, L=None, rho=None,
                   record_every: int = 10, blowup: float = 1e8):
    r"""Stochastic meta-training with one outer optimiser, for every learning rate and start point. Claim 4.

    Each step samples ``batch_size`` tasks from the finite ``pool`` (with replacement) and uses the
    forward first-order estimator (:func:`mathlib.chayti_grad`, ``delta``); the update is
    ``lr_t * opt(g)`` with ``lr_t = lr / sqrt(1 + t / decay)`` and ``opt`` one of :data:`OPTIMIZERS`:
    ``"sgd"`` (plain), ``"clipped_sgd"`` ($\min\{1,\text{clip}/\|g\|\}g$), ``"nsgdm"``
    (normalised SGD with momentum ``momentum``), ``"adam"``, ``"fallah"`` (SGD scaled by
    $1/\tilde L(w)$ of :func:`mathlib.fallah_step_size` with $c=1$ on an independent batch of the
    same size, so ``lr`` plays the role of $c$; needs global ``L`` and ``rho``). All optimisers are
    from :func:`mathlib.outer_optimizer` with unit rate. A run whose iterate leaves the ball of
    radius ``blowup`` or becomes non-finite is frozen and flagged as diverged.
    :func:`optimizer_sweep` with one pool and one optimiser.

    Returns:
        dict: ``grad_norm`` (lrs, starts, records) exact $\|\nabla F\|$ over the pool every
        ``record_every`` steps (NaN after divergence), ``diverged`` (lrs, starts) booleans,
        ``final`` (lrs, starts) median of the last 10 % of records.
    """
    return optimizer_sweep(loss, [pool], alpha, [(0, name, lrs)], w0s, num_steps=num_steps, batch_size=batch_size,
                           delta=delta, key=key, clip=clip, momentum=momentum, decay=decay, L=L, rho=rho,
                           record_every=record_every, blowup=blowup)[0]


def optimizer_sweep(loss, pools, alpha, runs, w0s, *, num_steps: int, batch_size: int, delta: float,
                    key, clip: float = 1.0, momentum: float = 0.9, decay: float = 50.0, L=None, rho=None,
                    record_every: int = 10, blowup: float = 1e8):
    r"""Many :func:`optimizer_runs` (several task pools, optimisers and learning rates) as **one** compiled program. Claim 4.

    ``pools``: task pools of the same structure and size (e.g. :class:`GrowingTask` pools with
    $q=0$ and $q>0$); ``runs``: list of ``(pool_index, name, lrs)``. Every (run, learning rate) is
    one configuration with the pool, the optimiser and the rate as *traced* values (``vmap``): each
    step computes the updates of every optimiser used in ``runs`` and keeps the configuration's own
    (the others' states evolve unused), so the trajectories are those of :func:`optimizer_runs`
    while the number of compilations is one. The sampling keys are shared across configurations
    (one per start point), as in separate calls with the same ``key``.

    Returns:
        list (one per entry of ``runs``) of dicts as :func:`optimizer_runs`.
    """
    num_steps = check_int("optimizer_sweep", "num_steps", num_steps)
    batch_size = check_int("optimizer_sweep", "batch_size", batch_size)
    for _, name, _ in runs:
        check_choice("optimizer_sweep", "name", name, OPTIMIZERS)
    names = [name for _, name, _ in runs]
    use_fallah = "fallah" in names
    if use_fallah and (L is None or rho is None):
        raise ValueError("optimizer_runs: 'fallah' needs the global constants L and rho")
    base_of = {"sgd": "sgd", "fallah": "sgd", "clipped_sgd": "clipped_sgd", "nsgdm": "nsgdm", "adam": "adam"}
    bases = sorted({base_of[n] for n in names})
    opts = [_base_optimizer(b, clip, momentum) for b in bases]
    n_pool = ml.num_tasks(pools[0])
    stacked = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *pools)
    n_rec = num_steps // record_every
    dtype = w0s.dtype
    cfg_pool, cfg_base, cfg_fallah, cfg_lr = [], [], [], []
    for pi, name, lrs in runs:
        for lr in lrs:
            cfg_pool.append(pi), cfg_base.append(bases.index(base_of[name]))
            cfg_fallah.append(name == "fallah"), cfg_lr.append(float(lr))

    def run(pi, bi, is_fallah, lr, w0, k):
        pool = jax.tree_util.tree_map(lambda x: x[pi], stacked)
        take = lambda idx: jax.tree_util.tree_map(lambda x: x[idx], pool)  # noqa: E731

        def step(carry, kt):
            w, ss, t, dead = carry
            k1, k2 = jax.random.split(kt)
            batch = take(jax.random.randint(k1, (batch_size,), 0, n_pool))
            gh = ml.meta_gradient(ml.chayti_grad, loss, w, ml.Episode.deterministic(batch),
                                  alpha=alpha, delta=delta, scheme="forward")
            outs = [o.update(gh, s, w) for o, s in zip(opts, ss)]
            upd = jnp.stack([u for u, _ in outs])[bi]
            scale = lr / jnp.sqrt(1.0 + t / decay)
            if use_fallah:
                other = take(jax.random.randint(k2, (batch_size,), 0, n_pool))
                scale = jnp.where(is_fallah, scale * ml.fallah_step_size(loss, w, other, L, rho, alpha, 1.0), scale)
            w2 = w + scale * upd
            bad = dead | ~jnp.all(jnp.isfinite(w2)) | (jnp.linalg.norm(w2) > blowup)
            w2 = jnp.where(bad, w, w2)
            return (w2, tuple(s for _, s in outs), t + 1.0, bad), None

        def rec(carry, ks):
            carry, _ = jax.lax.scan(step, carry, ks)
            return carry, jnp.where(carry[3], jnp.nan, jnp.linalg.norm(ml.exact_meta_gradient(loss, carry[0], pool, alpha)))

        keys = jax.random.split(k, n_rec * record_every).reshape(n_rec, record_every)
        carry = (w0, tuple(o.init(w0) for o in opts), jnp.asarray(0.0, dtype), jnp.asarray(False))
        carry, norms = jax.lax.scan(rec, carry, keys)
        return norms, carry[3]

    keys = jax.random.split(key, w0s.shape[0])
    f = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, None, None, None, 0, 0)), in_axes=(0, 0, 0, 0, None, None)))
    norms, dead = f(jnp.asarray(cfg_pool), jnp.asarray(cfg_base), jnp.asarray(cfg_fallah), jnp.asarray(cfg_lr, dtype),
                    jnp.asarray(w0s), keys)
    norms, dead = np.asarray(norms), np.asarray(dead)
    m = max(1, n_rec // 10)
    final = np.where(dead, np.inf, np.median(norms[..., -m:], axis=-1))
    out, i = [], 0
    for _, _, lrs in runs:
        j = i + len(lrs)
        out.append({"grad_norm": norms[i:j], "diverged": dead[i:j], "final": final[i:j]})
        i = j
    return out


# =============================================================================== claim 5
def _mlp_problem(width: int, depth: int, n_points: int, dtype):
    sizes = (1,) + (width,) * depth + (1,)
    params = ml.init_mlp(jax.random.key(0), sizes, activation="tanh", dtype=dtype)
    ep = ml.sample_sinusoid_episodes(jax.random.key(1), 1, n_points, n_points, dtype=dtype)
    ep = jax.tree_util.tree_map(lambda x: x[0], ep)

    def loss(p, batch):
        return ml.mlp_mse_loss(p, batch, activation="tanh")

    return loss, params, ep


MEMORY_METHODS = ("maml", "chayti_forward", "chayti_forward_recompute", "fomaml")


def memory_sweep(configs, *, methods=MEMORY_METHODS, depth: int = 2, n_points: int = 100, alpha: float = 1e-3,
                 delta: float = 1e-3, dtype=jnp.float32, time_repeats: int = 0):
    r"""XLA's compiled memory statistics of one per-task meta-gradient, for each ``(width, K)``. Claim 5.

    Model: a tanh MLP ``(1, width x depth, 1)`` on one sinusoid task with ``n_points`` support and
    query points. Methods (:data:`MEMORY_METHODS`): exact $K$-step MAML (:func:`mathlib.maml_grad`,
    reverse mode through the inner loop), the forward first-order estimator :func:`chayti_grad_k`
    storing the iterates (``chayti_forward``) or recomputing them (``chayti_forward_recompute``),
    and FO-MAML. Each jitted function is lowered and compiled once; ``compiled.memory_analysis()``
    gives the temporary (scratch) bytes XLA allocates, where the stored activations of the inner
    loop live; ``argument`` bytes (parameters and data) are the same for all methods. Without
    timing the compilation uses LLVM optimisation level 0 (same buffer assignment, faster). With
    ``time_repeats > 0`` the wall time per call is measured too (median; noisy on a shared machine).

    Returns:
        list of dicts with ``method``, ``width``, ``steps``, ``params`` (count), ``temp_bytes``,
        ``arg_bytes``, ``grads``, ``hvps`` (:func:`k_step_cost`), ``seconds``.
    """
    fns = {
        "maml": lambda loss, p, ep, K: ml.maml_grad(loss, p, ep, alpha=alpha, steps=K),
        "chayti_forward": lambda loss, p, ep, K: chayti_grad_k(loss, p, ep, alpha, delta, "forward", K),
        "chayti_forward_recompute": lambda loss, p, ep, K: chayti_grad_k(loss, p, ep, alpha, delta, "forward", K,
                                                                         store_iterates=False),
        "fomaml": lambda loss, p, ep, K: ml.fomaml_grad(loss, p, ep, alpha=alpha, steps=K),
    }
    for m in methods:
        check_choice("memory_sweep", "methods", m, MEMORY_METHODS)
    out = []
    for width, K in configs:
        width, K = check_int("memory_sweep", "width", width), check_int("memory_sweep", "steps", K)
        loss, params, ep = _mlp_problem(width, depth, n_points, dtype)
        n_par = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
        for name in methods:
            fn = fns[name]
            f = jax.jit(lambda p, e, fn=fn, K=K: fn(loss, p, e, K))
            # the temporary bytes come from XLA's buffer assignment, which the LLVM optimisation level
            # does not change (checked: identical bytes); level 0 compiles ~40 % faster. Timed runs keep
            # the default level so that their code is optimised.
            comp = f.lower(params, ep).compile(None if time_repeats else {"xla_backend_optimization_level": 0})
            mem = comp.memory_analysis()
            grads, hvps = k_step_cost(name, K)
            sec = float("nan")
            if time_repeats:
                jax.block_until_ready(comp(params, ep))
                ts = []
                for _ in range(time_repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(comp(params, ep))
                    ts.append(time.perf_counter() - t0)
                sec = float(np.median(ts))
            out.append({"method": name, "width": width, "steps": K, "params": n_par,
                        "temp_bytes": int(mem.temp_size_in_bytes), "arg_bytes": int(mem.argument_size_in_bytes),
                        "grads": grads, "hvps": hvps, "seconds": sec})
    return out


# =============================================================================== claim 6
#: methods compared on few-shot MNIST-1D (claim 6): exact MAML, the first-order estimator with the
#: forward and the symmetric (central) difference, FO-MAML and Reptile
MNIST1D_METHODS = ("maml", "chayti_forward", "chayti_central", "fomaml", "reptile")


@functools.lru_cache(maxsize=4)
def _mnist1d_cached(num_samples: int, seed: int):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = int(num_samples), int(seed)
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator: restore it
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    out = (d["x"].astype(np.float32), d["y"].astype(np.int32), d["x_test"].astype(np.float32), d["y_test"].astype(np.int32))
    for a in out:
        a.setflags(write=False)
    return out


def mnist1d_data(num_samples: int = 2000, seed: int = 42):
    r"""MNIST-1D signals generated locally by the ``mnist1d`` package (no download). Claim 6.

    ``make_dataset`` with the package's default arguments except ``num_samples`` and ``seed``
    (10 classes, signals of length 40, standardised; the package's 80/20 train/test split).
    Generation costs about a second per thousand samples on one core, so the result is cached
    in-process. Returns numpy arrays ``(X_train, y_train, X_test, y_test)``, float32 and int32.
    """
    num_samples = check_int("mnist1d_data", "num_samples", num_samples, minimum=10)
    return _mnist1d_cached(num_samples, int(seed))


def nway_indices(rng, y, num_episodes: int, n_way: int, k: int, classes=None):
    r"""Row indices of ``num_episodes`` N-way episodes with ``k`` examples per class (numpy, vectorised). Claim 6.

    As :func:`mathlib.sample_nway_kshot` (same sampling law) but returning indices into the dataset
    instead of the data, so that thousands of episodes cost one numpy call and no compilation:
    ``n_way`` distinct classes drawn uniformly from ``classes`` (default: all labels of ``y``) in
    random order (class $j$ of the episode gets label $j$), and for each, ``k`` distinct rows drawn
    uniformly among that class's rows. Split the ``k`` into support and query afterwards (the rows
    of one class are distinct, so support and query never share an example).

    Returns:
        int32 array ``(num_episodes, n_way, k)``.
    """
    fn = "nway_indices"
    num_episodes, n_way, k = check_int(fn, "num_episodes", num_episodes), check_int(fn, "n_way", n_way), check_int(fn, "k", k)
    y = np.asarray(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    if n_way > len(classes):
        raise ValueError(f"{fn}: argument 'n_way' must be <= the number of classes ({len(classes)}), got {n_way}")
    pools = [np.flatnonzero(y == c) for c in classes]
    sizes = np.array([len(p) for p in pools])
    if k > sizes.min():
        raise ValueError(f"{fn}: argument 'k' = {k} exceeds the smallest class size ({sizes.min()})")
    P = np.zeros((len(classes), sizes.max()), np.int64)
    for j, p in enumerate(pools):
        P[j, :len(p)] = p
    cls = np.argsort(rng.random((num_episodes, len(classes))), axis=1)[:, :n_way]  # (E, n_way) class slots
    u = rng.random((num_episodes, n_way, sizes.max()))
    u[np.arange(sizes.max()) >= sizes[cls][..., None]] = 2.0  # padding never chosen
    pick = np.argpartition(u, k - 1, axis=-1)[..., :k]
    return P[cls[..., None], pick].astype(np.int32)


def _mnist_loss(params, batch):
    return ml.mlp_xent_loss(params, batch, activation="tanh")


def _episodes(X, idx, k_support):
    """``Episode`` batch from index episodes ``idx`` (..., n_way, k): the first ``k_support`` per class are support."""
    n_way = idx.shape[-2]

    def part(ii):
        kk = ii.shape[-1]
        lab = jnp.broadcast_to(jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), kk), ii.shape[:-2] + (n_way * kk,))
        return X[ii.reshape(ii.shape[:-2] + (n_way * kk,))], lab

    return ml.Episode(part(idx[..., :k_support]), part(idx[..., k_support:]), None)


def _mnist1d_grad_fn(method: str, K: int):
    """Per-task meta-gradient ``f(params, episode, alpha, delta)`` of one method of claim 6 (core estimators)."""
    if method == "maml":
        return lambda p, ep, a, d: ml.maml_grad(_mnist_loss, p, ep, alpha=a, steps=K)
    if method == "fomaml":
        return lambda p, ep, a, d: ml.fomaml_grad(_mnist_loss, p, ep, alpha=a, steps=K)
    if method == "reptile":
        return lambda p, ep, a, d: ml.reptile_grad(_mnist_loss, p, ep, alpha=a, steps=K)
    scheme = method.split("_")[1]
    return lambda p, ep, a, d: ml.chayti_grad(_mnist_loss, p, ep, alpha=a, delta=d, scheme=scheme, steps=K)


def mnist1d_cost(method: str, steps: int):
    r"""``(grads, hvps)`` per task of one meta-gradient estimate of ``method`` with $K$ = ``steps`` (claim 6).

    From :func:`mathlib.make_estimator` (the core's cost table): MAML $K+1$ gradients and $K$ HVPs,
    forward first-order $2K+1$, symmetric $3K+1$, FO-MAML $K+1$, Reptile $K$ gradients.
    """
    check_choice("mnist1d_cost", "method", method, MNIST1D_METHODS)
    name, hyper = method.split("_")[0], {"alpha": 0.1, "steps": check_int("mnist1d_cost", "steps", steps)}
    if name == "chayti":
        hyper.update(delta=1e-3, scheme=method.split("_")[1])
    est = ml.make_estimator(name, **hyper)
    return est.grads_per_task, est.hvps_per_task


def _adapt_accuracy(params, X, idx, k_support, alpha, K):
    """Mean query accuracy after $K$ GD steps on each index episode's support batch (vmapped over episodes)."""
    def one(ii):
        ep = _episodes(X, ii, k_support)
        w = ml.adapt_gd(_mnist_loss, params, ep.support, alpha, K)
        x, lab = ep.query
        return ml.accuracy(ml.mlp_apply(w, x, "tanh"), lab)

    return jnp.mean(jax.vmap(one)(idx))


@functools.partial(jax.jit, static_argnums=(3, 5))
def _mnist1d_eval(stacked_params, X, idx, k_support, alpha, steps):
    return jax.vmap(lambda p: _adapt_accuracy(p, X, idx, k_support, alpha, steps))(stacked_params)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _mnist1d_train(methods, steps, k_support, lr, method_index, init, idx, X, alpha, delta):
    """Adam meta-training of ``methods[method_index]`` for every seed (``vmap``); ``idx`` (seeds, num_steps, batch, n_way, k).

    The method is a *traced* index into ``lax.switch`` (not batched, so only its branch runs): one
    compiled program serves every method, and each call trains one method (timed separately).
    """
    branches = [_mnist1d_grad_fn(m, steps) for m in methods]
    opt = optax.adam(lr)

    def one(p0, idx_s):
        def step(carry, ii):
            p, s = carry
            eps = _episodes(X, ii, k_support)
            g = jax.lax.switch(method_index, [lambda p, eps, f=f: ml.tree_mean(jax.vmap(lambda ep: f(p, ep, alpha, delta))(eps))
                                              for f in branches], p, eps)
            upd, s = opt.update(g, s, p)
            return (optax.apply_updates(p, upd), s), None

        p = jax.lax.scan(step, (p0, opt.init(p0)), idx_s)[0][0]
        # at the final point, on the last training batch: this method's direction against exact MAML's
        eps = _episodes(X, idx_s[-1], k_support)
        g = jax.lax.switch(method_index, [lambda p, eps, f=f: ml.tree_mean(jax.vmap(lambda ep: f(p, ep, alpha, delta))(eps))
                                          for f in branches], p, eps)
        g0 = ml.meta_gradient(ml.maml_grad, _mnist_loss, p, eps, alpha=alpha, steps=steps)
        return p, ml.tree_norm(ml.tree_sub(g, g0)) / ml.tree_norm(g0), ml.tree_vdot(g, g0) / (ml.tree_norm(g) * ml.tree_norm(g0))

    return jax.vmap(one)(init, idx)


def mnist1d_fewshot(*, methods=MNIST1D_METHODS, num_samples: int = 2000, data_seed: int = 42, n_way: int = 5,
                    k_support: int = 5, k_query: int = 10, hidden=(64, 64), steps: int = 2, alpha: float = 0.4,
                    delta: float = 1e-2, lr: float = 1e-3, meta_batch: int = 16, num_steps: int = 300,
                    seeds=(0, 1, 2), eval_episodes: int = 200, opt_level: int | None = None):
    r"""Few-shot MNIST-1D: meta-train a tanh MLP with each method, then adapt on held-out signals. Claim 6.

    Data: :func:`mnist1d_data` (``num_samples``, ``data_seed``). Tasks: ``n_way``-way episodes with
    ``k_support`` support and ``k_query`` query signals per class (:func:`nway_indices`: random
    classes among the ten, random label order), drawn from the package's *training* signals during
    meta-training and from its *test* signals at test time (new examples, same ten classes). Model:
    tanh MLP ``(40, *hidden, n_way)``, softmax cross-entropy (:func:`mathlib.mlp_xent_loss`), float32.
    (Smooth activation on purpose: the estimator's analysis needs a Lipschitz Hessian; with ReLU the
    gradient jumps where a unit switches, and a finite difference of it across a switch is not small.)
    Inner map: $K$ = ``steps`` GD steps with step ``alpha`` (training and test alike). Outer: Adam
    with rate ``lr``, ``meta_batch`` tasks per step, ``num_steps`` steps. Estimators are the core's
    (:func:`mathlib.maml_grad`, :func:`mathlib.chayti_grad` with ``delta``, :func:`mathlib.fomaml_grad`,
    :func:`mathlib.reptile_grad`).

    Every seed fixes the initialisation and the sequence of training episodes, **shared by all
    methods** (paired comparison); each method trains all seeds in one ``vmap`` inside one compiled
    ``lax.scan``, built ahead of time (``lower().compile()``) and then timed: ``seconds_per_step`` is
    wall time / ``num_steps`` for all seeds together (noisy on a shared machine; compare methods by
    ratios). Test: the same ``eval_episodes`` test episodes for every method and seed (query
    accuracy after adaptation, mean over episodes), also at the initialisation. At each method's
    final point, on its last training batch, its direction $g$ is compared with the exact MAML
    meta-gradient $g_0$ there: ``grad_relerr`` $=\|g-g_0\|/\|g_0\|$ and ``grad_cos`` (cosine).
    ``opt_level`` (0-3) compiles the training program with XLA's backend optimisation level set (LLVM
    ``-O``; lower compiles faster and runs slower; same results up to float rounding); ``None``: the
    default (full mode; the timings are then those of the default compilation).

    Returns:
        dict: ``acc`` {method: (seeds,)} test accuracy, ``acc_init`` (seeds,), ``grad_relerr`` and
        ``grad_cos`` {method: (seeds,)}, ``seconds_per_step`` {method: float}, ``compile_seconds`` (one
        program for all methods), ``grads``/``hvps`` {method: int} per task (:func:`mnist1d_cost`),
        ``params`` {method: final parameters stacked over seeds}, ``init``, ``chance`` = 1/``n_way``,
        ``n_train``/``n_test`` (signals in the two parts).
    """
    fn = "mnist1d_fewshot"
    for m in methods:
        check_choice(fn, "methods", m, MNIST1D_METHODS)
    for nm, v in (("num_steps", num_steps), ("meta_batch", meta_batch), ("eval_episodes", eval_episodes),
                  ("steps", steps), ("k_support", k_support), ("k_query", k_query)):
        check_int(fn, nm, v)
    Xtr, ytr, Xte, yte = mnist1d_data(num_samples, data_seed)
    sizes = (Xtr.shape[1], *hidden, n_way)
    seeds = tuple(int(s) for s in seeds)
    init = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[ml.init_mlp(jax.random.key(s), sizes, activation="tanh")
                                                             for s in seeds])
    k = k_support + k_query
    idx = np.stack([nway_indices(np.random.default_rng([s, 1]), ytr, num_steps * meta_batch, n_way, k)
                    .reshape(num_steps, meta_batch, n_way, k) for s in seeds])
    a32, d32 = jnp.float32(alpha), jnp.float32(delta)
    Xj, idx = jnp.asarray(Xtr), jnp.asarray(idx)
    out = {"acc": {}, "grad_relerr": {}, "grad_cos": {}, "seconds_per_step": {}, "compile_seconds": 0.0, "grads": {}, "hvps": {}, "params": {},
           "init": init, "chance": 1.0 / n_way, "n_train": int(len(ytr)), "n_test": int(len(yte))}
    methods = tuple(methods)
    args = (methods, int(steps), int(k_support), float(lr), jnp.int32(0), init, idx, Xj, a32, d32)
    t0 = time.perf_counter()
    options = None
    if opt_level is not None:
        options = {"xla_backend_optimization_level": check_int(fn, "opt_level", opt_level, minimum=0)}
    comp = _mnist1d_train.lower(*args).compile(options)
    out["compile_seconds"] = time.perf_counter() - t0
    for i, m in enumerate(methods):
        t0 = time.perf_counter()
        p, rel, cos = jax.block_until_ready(comp(jnp.int32(i), *args[5:]))
        out["params"][m], out["grad_relerr"][m], out["grad_cos"][m] = p, np.asarray(rel), np.asarray(cos)
        out["seconds_per_step"][m] = (time.perf_counter() - t0) / num_steps
        out["grads"][m], out["hvps"][m] = mnist1d_cost(m, steps)
    test_idx = jnp.asarray(nway_indices(np.random.default_rng([data_seed, 2]), yte, eval_episodes, n_way, k))
    stacked = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), init, *[out["params"][m] for m in methods])
    accs = np.asarray(_mnist1d_eval(stacked, jnp.asarray(Xte), test_idx, int(k_support), a32, int(steps)))
    accs = accs.reshape(len(methods) + 1, len(seeds))
    out["acc_init"] = accs[0]
    out["acc"] = {m: accs[i + 1] for i, m in enumerate(methods)}
    return out


__all__ += ["MNIST1D_METHODS", "mnist1d_data", "nway_indices", "mnist1d_cost", "mnist1d_fewshot"]
