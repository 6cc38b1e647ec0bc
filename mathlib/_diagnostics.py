r"""Ground-truth meta-gradients, smoothness estimates, dissimilarity constants and cost accounting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mathlib._core import Episode, tree_norm
from mathlib._inner import adapt_gd
from mathlib._validate import check_in_range, check_int, check_positive

__all__ = [
    "exact_meta_objective",
    "exact_meta_gradient",
    "smoothness_power_iteration",
    "local_smoothness_bound",
    "gradient_dissimilarity",
    "hessian_dissimilarity",
    "cost_table",
]


def exact_meta_objective(loss, params, tasks, alpha, steps: int = 1):
    r"""$F(w)=\frac1n\sum_if(U_{i,K}(w;D^i_{in});D^i_o)$ over a finite task set.

    ``tasks`` is either a batch of tasks (leading task axis; support = query = the task's batch, e.g.
    a batched ``QuadraticTask``) or a batched :class:`mathlib.Episode` (then $D_{in}$ = ``support``
    and $D_o$ = ``query``; ``hessian`` is not used: this is the objective itself).
    """
    check_positive("exact_meta_objective", "alpha", alpha)
    steps = check_int("exact_meta_objective", "steps", steps)
    if isinstance(tasks, Episode):
        per = jax.vmap(lambda e: loss(adapt_gd(loss, params, e.support, alpha, steps), e.query))(tasks)
    else:
        per = jax.vmap(lambda t: loss(adapt_gd(loss, params, t, alpha, steps), t))(tasks)
    return jnp.mean(per)


def exact_meta_gradient(loss, params, tasks, alpha, steps: int = 1):
    r"""Ground truth $\nabla F(w)$ by autodiff of :func:`exact_meta_objective` ($K$ steps).

    ``tasks``: a batch of tasks or a batched :class:`mathlib.Episode`, as in :func:`exact_meta_objective`.
    """
    check_positive("exact_meta_gradient", "alpha", alpha)
    steps = check_int("exact_meta_gradient", "steps", steps)
    return jax.grad(lambda p: exact_meta_objective(loss, p, tasks, alpha, steps))(params)


def smoothness_power_iteration(f, params, num_iters: int = 50, key=None):
    r"""Largest $|\lambda|$ of $\nabla^2 f(w)$ by power iteration on exact HVPs ($f$: params -> scalar).

    Returns $\|\nabla^2f(w)v_T\|$ for the normalised iterate $v_T$ (a lower bound on $\|\nabla^2f(w)\|_2$
    that converges to it). ``key`` seeds the start vector (default ``jax.random.key(0)``).
    """
    num_iters = check_int("smoothness_power_iteration", "num_iters", num_iters)
    flat, unravel = ravel_pytree(params)
    key = jax.random.key(0) if key is None else key
    g = jax.grad(f)

    def hv(v):
        return ravel_pytree(jax.jvp(g, (params,), (unravel(v),))[1])[0]

    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    v0 = v0 / jnp.linalg.norm(v0)

    def body(v, _):
        w = hv(v)
        n = jnp.linalg.norm(w)
        return jnp.where(n > 0, w / jnp.where(n > 0, n, 1.0), v), None

    v, _ = jax.lax.scan(body, v0, None, length=num_iters)
    return jnp.linalg.norm(hv(v))


def local_smoothness_bound(loss, params, tasks, L, rho, alpha):
    r"""Fallah et al.'s local smoothness $L(w)=4L+2\rho\alpha\frac1n\sum_i\|\nabla f_i(w)\|$.

    Book: {prf:ref}`fallah2020-lem-smoothness` ($\|\nabla F(w)-\nabla F(u)\|\le\min\{L(w),L(u)\}\|w-u\|$
    for $\alpha\le1/L$).
    """
    check_positive("local_smoothness_bound", "L", L)
    check_in_range("local_smoothness_bound", "rho", rho, 0.0)
    check_positive("local_smoothness_bound", "alpha", alpha)
    norms = jax.vmap(lambda t: tree_norm(jax.grad(loss)(params, t)))(tasks)
    return 4.0 * L + 2.0 * rho * alpha * jnp.mean(norms)


def gradient_dissimilarity(loss, params, tasks):
    r"""$\sigma(w)=\sqrt{\frac1n\sum_i\|\nabla f_i(w)-\nabla f(w)\|^2}$, $f=\frac1n\sum_if_i$."""
    gs = jax.vmap(lambda t: ravel_pytree(jax.grad(loss)(params, t))[0])(tasks)
    return jnp.sqrt(jnp.mean(jnp.sum((gs - jnp.mean(gs, axis=0)) ** 2, axis=-1)))


def hessian_dissimilarity(loss, params, tasks):
    r"""$\gamma_H(w)=\sqrt{\frac1n\sum_i\|\nabla^2f_i(w)-\nabla^2f(w)\|_2^2}$ (dense Hessians; small $d$ only)."""
    flat, unravel = ravel_pytree(params)
    H = jax.vmap(lambda t: jax.hessian(lambda x: loss(unravel(x), t))(flat))(tasks)
    D = H - jnp.mean(H, axis=0, keepdims=True)
    D = 0.5 * (D + jnp.swapaxes(D, -1, -2))
    return jnp.sqrt(jnp.mean(jnp.max(jnp.abs(jnp.linalg.eigvalsh(D)), axis=-1) ** 2))


def cost_table(steps: int = 1, cg_steps: int = 10, prox_steps: int | None = None):
    r"""Per-task oracle cost of each registered estimator: ``{name: {"grads", "hvps", "equiv"}}``.

    ``equiv`` = grads + 2 hvps (an HVP by forward-over-reverse costs about two gradients). ``steps``
    is $K$ for the inner-loop methods (the HF-MAML and Chayti–Jaggi rows are their one-step forms;
    for $K$ steps see ``make_estimator(...).grads_per_task``), ``cg_steps`` the CG iterations of iMAML, ``prox_steps`` the prox-solver steps of
    Moreau/iMAML (default ``steps``). The numbers are those of the estimator registry
    (:func:`make_estimator`'s ``grads_per_task``/``hvps_per_task``). Rows: maml, fomaml, hf_maml (central), chayti_forward,
    chayti_central, moreau, imaml, sign_maml, anil, anil_first_order, reptile.
    """
    steps = check_int("cost_table", "steps", steps)
    cg_steps = check_int("cost_table", "cg_steps", cg_steps)
    prox_steps = steps if prox_steps is None else check_int("cost_table", "prox_steps", prox_steps)
    from mathlib._estimators import _REGISTRY  # one cost formula per estimator: the registry's

    def cost(name, **h):
        return _REGISTRY[name][2](**h)

    rows = {
        "maml": cost("maml", steps=steps),
        "fomaml": cost("fomaml", steps=steps),
        "hf_maml": cost("hf_maml", steps=1),
        "chayti_forward": cost("chayti", scheme="forward", steps=1),
        "chayti_central": cost("chayti", scheme="central", steps=1),
        "moreau": cost("moreau", steps=prox_steps),
        "imaml": cost("imaml", steps=prox_steps, cg_steps=cg_steps),
        "sign_maml": cost("sign_maml", steps=steps),
        "anil": cost("anil", steps=steps),
        "anil_first_order": cost("anil", steps=steps, first_order=True),
        "reptile": cost("reptile", steps=steps),
    }
    return {k: {"grads": g, "hvps": h, "equiv": g + 2 * h} for k, (g, h) in rows.items()}
