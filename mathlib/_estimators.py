r"""Per-task meta-gradient estimators ``est(loss, params, episode, **hyper) -> grad pytree``.

Notation (book notation page): $f(\cdot;D)$ the task loss on batch $D$; an episode carries
$D_{in}$ (``support``), $D_o$ (``query``) and $D_h$ (``hessian``, ``None`` = reuse $D_{in}$);
$U_K(w)$ is $K$ steps of GD with step $\alpha$ on $f(\cdot;D_{in})$ from $w$; the MAML objective is
$F_i(w)=f(U_K(w);D_o)$ and
$$\nabla F_i(w)=\prod_{k=0}^{K-1}\big(I-\alpha\nabla^2f(w^k;D_{in})\big)\,\nabla f(w^K;D_o)$$
(eq. ``eq-maml-grad``, product ordered $k=0$ leftmost). Costs count gradient evaluations
("grads") and Hessian-vector products ("HVPs", about two gradients each) per task.

``meta_gradient`` averages a per-task estimator over the leading task axis of a batched episode;
``make_estimator`` binds hyper-parameters and attaches ``.name``, ``.grads_per_task``,
``.hvps_per_task``.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from mathlib._core import Episode, hessian_batch, tree_axpy, tree_mean, tree_norm, tree_scale, tree_sub, tree_vdot
from mathlib._fd import FD_SCHEMES, fd_hvp, hvp
from mathlib._inner import _check_head_params, adapt_gd, adapt_head, adapt_masked, adapt_sign, gd_iterates, prox_solve
from mathlib._validate import check_alpha_steps, check_choice, check_int, check_nonnegative, check_positive

__all__ = [
    "maml_objective",
    "maml_grad",
    "fomaml_grad",
    "hf_maml_grad",
    "chayti_grad",
    "moreau_grad",
    "imaml_grad",
    "sign_maml_grad",
    "anil_grad",
    "reptile_grad",
    "meta_gradient",
    "task_gradients",
    "make_estimator",
    "Estimator",
    "ESTIMATORS",
    "TRACED_HYPER",
]


def _check_episode(fn, episode):
    if not isinstance(episode, Episode):
        raise TypeError(f"{fn}: argument 'episode' must be a mathlib.Episode, got {type(episode).__name__}")


_check_alpha_steps = check_alpha_steps


# ----------------------------------------------------------------------------- MAML family
def maml_objective(loss, params, episode: Episode, alpha, steps: int = 1):
    r"""$F_i(w)=f(U_K(w;D_{in});D_o)$: query loss after $K$ GD steps on the support batch."""
    _check_episode("maml_objective", episode)
    steps = _check_alpha_steps("maml_objective", alpha, steps)
    return loss(adapt_gd(loss, params, episode.support, alpha, steps), episode.query)


def maml_grad(loss, params, episode: Episode, alpha, steps: int = 1):
    r"""MAML meta-gradient (second order). Book: eq. ``eq-maml-grad`` / ``eq-maml-grad-k``, {prf:ref}`fallah2020-alg-maml`.

    $$g_i=\Big[\prod_{k=0}^{K-1}\big(I-\alpha\nabla^2f(w^k;D_h)\big)\Big]\nabla f(w^K;D_o),\qquad
    w^{k+1}=w^k-\alpha\nabla f(w^k;D_{in}),\ w^0=w.$$

    * ``episode.hessian is None``: $D_h=D_{in}$ and the result is ``jax.grad`` of
      :func:`maml_objective` (reverse-mode through the ``lax.scan`` inner loop), i.e. the exact
      gradient of $F_i$.
    * separate ``episode.hessian``: the iterates $w^k$ use $D_{in}$, the outer gradient $D_o$, and
      every Jacobian factor uses the independent batch $D_h$ through an exact HVP (applied from
      $k=K-1$ down to $0$). For $K=1$ this is exactly Fallah et al.'s Algorithm 1,
      $\big(I-\alpha\tilde\nabla^2f(w;D_h)\big)\tilde\nabla f(w-\alpha\tilde\nabla f(w;D_{in});D_o)$.

    Cost per task: $K+1$ gradients and $K$ HVPs.
    """
    fn = "maml_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    if episode.hessian is None:
        return jax.grad(lambda p: loss(adapt_gd(loss, p, episode.support, alpha, steps), episode.query))(params)
    w_last, iterates = gd_iterates(loss, params, episode.support, alpha, steps)
    v = jax.grad(loss)(w_last, episode.query)

    def back(v, w_k):
        return tree_axpy(-alpha, hvp(loss, w_k, episode.hessian, v), v), None

    v, _ = jax.lax.scan(back, v, iterates, reverse=True)
    return v


def fomaml_grad(loss, params, episode: Episode, alpha, steps: int = 1):
    r"""First-order MAML: $g_i=\nabla f(U_K(w;D_{in});D_o)$ (Fallah et al. Alg. 2 for $K=1$; Book: {prf:ref}`fallah2020-alg-fomaml`).

    Drops every Jacobian factor $I-\alpha\nabla^2 f$; equals MAML when the Hessians vanish along the
    inner path. For $K>1$ this is the multi-step first-order family ("FO-MuML" of Mishchenko et al.
    with step $\alpha$). Cost per task: $K+1$ gradients.
    """
    fn = "fomaml_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    w_k = adapt_gd(loss, params, episode.support, alpha, steps)
    return jax.grad(loss)(w_k, episode.query)


def _gd_path(loss, params, batch, alpha, steps):
    """``(w^K, iterates w^0..w^{K-1}, gradients grad f(w^k; batch))`` of K GD steps (stacked)."""
    g = jax.grad(loss)

    def body(p, _):
        d = g(p, batch)
        return tree_axpy(-alpha, d, p), (p, d)

    w_last, (iterates, grads) = jax.lax.scan(body, params, None, length=steps)
    return w_last, iterates, grads


def _fd_backward(loss, params, episode, alpha, steps, delta, scheme, delta_rule, dh):
    r"""$v\leftarrow v-\alpha\,\widehat{\nabla^2f(w^k;D_h)v}$ for $k=K-1,\dots,0$, finite-difference HVPs."""
    w_last, iterates, grads = _gd_path(loss, params, episode.support, alpha, steps)
    v = jax.grad(loss)(w_last, episode.query)
    reuse = scheme == "forward" and dh is None

    def back(v, xs):
        w_k, g_k = xs
        d = delta
        if delta_rule == "per_task":
            nv = tree_norm(v)
            d = delta / jnp.where(nv > 0, nv, jnp.ones_like(nv))
        h = fd_hvp(loss, w_k, episode.support if dh is None else dh, v, d, scheme=scheme,
                   grad_at_params=g_k if reuse else None)
        return tree_axpy(-alpha, h, v), None

    v, _ = jax.lax.scan(back, v, (iterates, grads), reverse=True)
    return v


def hf_maml_grad(loss, params, episode: Episode, alpha, delta, scheme: str = "central", delta_rule: str = "fixed",
                 steps: int = 1):
    r"""Hessian-free MAML (Fallah et al. Alg. 3; $K$ steps derived here). Book: {prf:ref}`fallah2020-alg-hfmaml`.

    One step ($K=1$, the paper's algorithm):
    $$v_i=\nabla f(w-\alpha\nabla f(w;D_{in});D_o),\qquad
    g_i=v_i-\alpha\,\frac{\nabla f(w+\delta_iv_i;D_h)-\nabla f(w-\delta_iv_i;D_h)}{2\delta_i}$$
    (``scheme="central"``; ``"forward"`` uses $[\nabla f(w+\delta_iv_i;D_h)-\nabla f(w;D_h)]/\delta_i$).
    Both finite-difference gradients use the same batch $D_h$ (``episode.hessian``, or $D_{in}$ if None).

    $K$ = ``steps`` $>1$: the exact $K$-step MAML gradient
    $\prod_{k=0}^{K-1}(I-\alpha\nabla^2f(w^k;D_h))\nabla f(w^K;D_o)$ with every Hessian-vector product
    replaced by the finite difference above at the inner iterate $w^k$, applied backwards:
    $v^K=\nabla f(w^K;D_o)$, $v^k=v^{k+1}-\alpha\,\widehat{\nabla^2f(w^k;D_h)v^{k+1}}$, $g_i=v^0$.

    * ``delta_rule="fixed"``: $\delta=$ ``delta`` for every product.
    * ``delta_rule="per_task"``: $\delta=$ ``delta``$/\|v\|$ for the vector $v$ being multiplied (so
      the perturbation has length ``delta``); ``delta = 1/(6*rho*alpha)`` gives the theorem's
      $\delta^i_k=1/(6\rho\alpha\|v_i\|)$ for $K=1$.

    Exact on quadratics for any $\delta$; bias $O(\delta^2)$ (central) or $O(\delta)$ (forward).
    Cost per task: $K+1$ gradients for the path and $2K$ for the finite differences ($3K+1$; forward
    with ``episode.hessian is None``: $2K+1$, reusing the inner gradients $\nabla f(w^k;D_{in})$).
    """
    fn = "hf_maml_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    check_positive(fn, "delta", delta)
    check_choice(fn, "scheme", scheme, FD_SCHEMES)
    check_choice(fn, "delta_rule", delta_rule, ("fixed", "per_task"))
    if steps > 1:
        return _fd_backward(loss, params, episode, alpha, steps, delta, scheme, delta_rule, episode.hessian)
    g = jax.grad(loss)
    g_in = g(params, episode.support)
    v = g(tree_axpy(-alpha, g_in, params), episode.query)
    if delta_rule == "per_task":
        nv = tree_norm(v)
        d = delta / jnp.where(nv > 0, nv, jnp.ones_like(nv))
    else:
        d = delta
    reuse = g_in if (scheme == "forward" and episode.hessian is None) else None
    h = fd_hvp(loss, params, hessian_batch(episode), v, d, scheme=scheme, grad_at_params=reuse)
    return tree_axpy(-alpha, h, v)


def chayti_grad(loss, params, episode: Episode, alpha, delta, scheme: str = "forward", steps: int = 1):
    r"""Chayti–Jaggi-style first-order estimator (derived here; papers digest §3.4, not verified against the paper).

    $\nabla F_i(w)=J_{U}(w)^\top v_i=\frac{d}{d\delta}U(w+\delta v_i)\big|_{\delta=0}$ (the Jacobian
    $I-\alpha\nabla^2f(w;D_{in})$ of the one-step map is symmetric), $v_i=\nabla f(U(w);D_o)$,
    estimated by a finite difference of the inner-problem solution $U(x)=x-\alpha\nabla f(x;D_{in})$:

    * ``"forward"``: $g_i=\frac{U(w+\delta v_i)-U(w)}{\delta}=v_i-\alpha\frac{\nabla f(w+\delta v_i;D_{in})-\nabla f(w;D_{in})}{\delta}$,
      bias $\le\tfrac{\alpha\rho}2\delta\|v_i\|^2$; 3 gradients per task (reuses $\nabla f(w;D_{in})$).
    * ``"central"`` (the symmetric estimator): $g_i=\frac{U(w+\delta v_i)-U(w-\delta v_i)}{2\delta}$, bias $O(\delta^2)$; 4 gradients
      per task; algebraically HF-MAML (central, fixed $\delta$, $D_h=D_{in}$).

    $K$ = ``steps`` $>1$: the one-step finite difference is applied to each factor of
    $J_{U_K}(w)^\top=\prod_{k=0}^{K-1}(I-\alpha\nabla^2f(w^k;D_{in}))$ (ordered $k=0$ leftmost), backwards
    along the inner path: $v^K=\nabla f(w^K;D_o)$, $v^k=\frac{U(w^k+\delta v^{k+1})-U(w^k)}{\delta}$ (or
    central), $g_i=v^0$. (A single finite difference of the $K$-step map, $[U_K(w+\delta v)-U_K(w)]/\delta$,
    would estimate $J_{U_K}v$, not $J_{U_K}^\top v$; the two differ unless the Hessians along the path
    commute.) Cost: forward $2K+1$ gradients (reusing $\nabla f(w^k;D_{in})$), central $3K+1$.

    All finite differences use the support batch $D_{in}$ (``episode.hessian`` is ignored).
    """
    fn = "chayti_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    check_positive(fn, "delta", delta)
    check_choice(fn, "scheme", scheme, FD_SCHEMES)
    if steps > 1:
        return _fd_backward(loss, params, episode, alpha, steps, delta, scheme, "fixed", None)
    g = jax.grad(loss)
    g_in = g(params, episode.support)
    v = g(tree_axpy(-alpha, g_in, params), episode.query)
    if scheme == "forward":
        h = fd_hvp(loss, params, episode.support, v, delta, scheme="forward", grad_at_params=g_in)
    else:
        h = fd_hvp(loss, params, episode.support, v, delta, scheme="central")
    return tree_axpy(-alpha, h, v)


# ----------------------------------------------------------------------------- proximal family
def moreau_grad(loss, params, episode: Episode, lam, steps: int, lr=None, smoothness=None):
    r"""Moreau-envelope gradient (Mishchenko et al.): $g_i=(w-\hat p_i)/\lambda$, $\hat p_i\approx\mathrm{prox}_{\lambda f(\cdot;D_{in})}(w)$.

    Exact identity $\nabla M_{\lambda f}(w)=(w-p)/\lambda=\nabla f(p)$ for the exact prox $p$;
    $\hat p_i$ is $K$ = ``steps`` GD steps on $f(u;D_{in})+\|u-w\|^2/(2\lambda)$ from $u=w$ (see
    :func:`prox_solve` for the default step; with ``lr=lam`` the $K$-step estimate equals
    $\nabla f(\hat p^{K-1})$, i.e. plain gradient for $K=1$ and FO-MAML for $K=2$). Uses only the
    support batch. Cost per task: $K$ gradients.
    """
    fn = "moreau_grad"
    _check_episode(fn, episode)
    check_positive(fn, "lam", lam)
    steps = check_int(fn, "steps", steps)
    p = prox_solve(loss, params, episode.support, lam, steps, lr=lr, smoothness=smoothness)
    return tree_scale(1.0 / lam, tree_sub(params, p))


def imaml_grad(loss, params, episode: Episode, lam, steps: int, cg_steps: int, lr=None, smoothness=None,
               cg_tol=0.0, *, return_residual: bool = False):
    r"""Implicit MAML gradient (Rajeswaran et al. 2019), regularisation $\|u-w\|^2/(2\lambda)$.

    Convention: $u^\star(w)=\arg\min_u f(u;D_{in})+\frac1{2\lambda}\|u-w\|^2$ (the same $\lambda$
    as the Moreau envelope; Rajeswaran et al.'s $\lambda_R$ with penalty $\frac{\lambda_R}2\|u-w\|^2$
    is $\lambda=1/\lambda_R$). Then $du^\star/dw=(I+\lambda\nabla^2f(u^\star))^{-1}$ and
    $$g_i=\big(I+\lambda\nabla^2f(\hat u;D_h)\big)^{-1}\nabla f(\hat u;D_o),$$
    with $\hat u$ = ``steps`` GD steps of :func:`prox_solve` (same ``lr``/``smoothness`` rules and
    divergence check) and the linear system $(I+\lambda H)x=b$, $b=\nabla f(\hat u;D_o)$, solved by
    at most ``cg_steps`` iterations of ``jax.scipy.sparse.linalg.cg`` on exact HVPs from $x_0=b$,
    stopping early once $\|(I+\lambda H)x-b\|\le$ ``cg_tol`` $\cdot\|b\|$ (default 0: all
    ``cg_steps`` iterations). Needs $I+\lambda\nabla^2f\succ0$, e.g. $\lambda L<1$ or $f$ convex.

    Args:
        cg_tol: relative CG tolerance (>= 0).
        return_residual: also return the achieved relative residual
            $\|(I+\lambda H)g_i-b\|/\|b\|$ (one more HVP). Then the result is a pair
            ``(g_i, residual)``, so use it directly (or ``jax.vmap`` it), not through ``meta_gradient``.

    Cost per task: ``steps`` + 1 gradients and at most ``cg_steps`` HVPs.
    """
    fn = "imaml_grad"
    _check_episode(fn, episode)
    check_positive(fn, "lam", lam)
    steps = check_int(fn, "steps", steps)
    cg_steps = check_int(fn, "cg_steps", cg_steps)
    check_nonnegative(fn, "cg_tol", cg_tol)
    u = prox_solve(loss, params, episode.support, lam, steps, lr=lr, smoothness=smoothness)
    gq = jax.grad(loss)(u, episode.query)
    dh = hessian_batch(episode)

    def matvec(x):
        return tree_axpy(lam, hvp(loss, u, dh, x), x)

    sol, _ = cg(matvec, gq, x0=gq, tol=cg_tol, atol=0.0, maxiter=cg_steps)
    if return_residual:
        nb = tree_norm(gq)
        res = tree_norm(tree_sub(matvec(sol), gq)) / jnp.where(nb > 0, nb, jnp.ones_like(nb))
        return sol, res
    return sol


# ----------------------------------------------------------------------------- other first-order
def sign_maml_grad(loss, params, episode: Episode, alpha, steps: int = 1):
    r"""Sign-MAML (Fan et al.): $g_i=\nabla f(U^{\rm sign}_K(w);D_o)$, $w^{k+1}=w^k-\alpha\,\mathrm{sign}(\nabla f(w^k;D_{in}))$.

    The inner map is piecewise a translation: $\partial w^{k+1}/\partial w^k=I-\alpha\,\mathrm{diag}
    (\mathrm{sign}'(\cdot))\nabla^2f=I$ wherever no coordinate of an inner gradient is exactly zero
    (a.e.), because $\mathrm{sign}'=0$ off the origin. So this first-order expression *is* the a.e.
    derivative of $f(U^{\rm sign}_K(w);D_o)$ (the objective jumps where an inner-gradient sign flips;
    the jumps are ignored). Cost per task: $K+1$ gradients.
    """
    fn = "sign_maml_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    w_k = adapt_sign(loss, params, episode.support, alpha, steps)
    return jax.grad(loss)(w_k, episode.query)


def anil_grad(loss, params, episode: Episode, alpha, steps: int = 1, first_order: bool = False, mask=None):
    r"""ANIL (Raghu et al.; Ji et al. 2020): the inner loop adapts only part of the parameters.

    Objective $F_i(\phi,h)=f\big(\phi,h^K(\phi,h);D_o\big)$ with $h^{k+1}=h^k-\alpha\nabla_hf(\phi,h^k;D_{in})$.

    * adapted part: ``params["head"]`` of a ``{"body", "head"}`` dict (default, ``mask=None``;
      :func:`mathlib.adapt_head`, which evaluates a :class:`mathlib.HeadLoss`'s features once), or the
      leaves selected by ``mask`` (a pytree of bools like ``params``, or ``params -> mask``; any
      parameter pytree; :func:`mathlib.adapt_masked`), the rest playing the role of $\phi$.
    * ``first_order=False``: exact gradient w.r.t. body and head by autodiff through the head loop
      (body gradient includes the mixed terms $-\alpha\nabla_\phi\nabla_hf\cdot(\ldots)$).
      Cost: $K+1$ gradients and $K$ (head and mixed) HVPs.
    * ``first_order=True``: $\nabla_{(\phi,h)}f(\phi,h^K;D_o)$ (FO-ANIL). Cost: $K+1$ gradients.
      (Its value needs no ``stop_gradient``; derivatives of the estimate w.r.t. $\alpha$ or $w$ are exact.)
    """
    fn = "anil_grad"
    _check_episode(fn, episode)
    if mask is None:
        _check_head_params(fn, params)
    steps = _check_alpha_steps(fn, alpha, steps)

    def adapt(p):
        if mask is None:
            return adapt_head(loss, p, episode.support, alpha, steps)
        return adapt_masked(loss, p, episode.support, alpha, steps, mask=mask)

    if first_order:
        return jax.grad(loss)(adapt(params), episode.query)
    return jax.grad(lambda p: loss(adapt(p), episode.query))(params)


def reptile_grad(loss, params, episode: Episode, alpha, steps: int = 1):
    r"""Reptile (Nichol et al.): $g_i=(w-U_K(w;D_{in}))/(\alpha K)=\frac1K\sum_{k<K}\nabla f(w^k;D_{in})$.

    Scaling: dividing by $\alpha K$ makes $g_i$ the *average* inner gradient along the path, so an
    outer step $w-\beta g$ with $\beta=\epsilon\,\alpha K$ is Reptile's interpolation
    $w+\epsilon(U_K(w)-w)$; $K=1$ gives the joint-training gradient $\nabla f(w;D_{in})$.
    Uses only the support batch. Cost per task: $K$ gradients.
    """
    fn = "reptile_grad"
    _check_episode(fn, episode)
    steps = _check_alpha_steps(fn, alpha, steps)
    w_k = adapt_gd(loss, params, episode.support, alpha, steps)
    return tree_scale(1.0 / (alpha * steps), tree_sub(params, w_k))


# ----------------------------------------------------------------------------- batching / registry
def _check_task_axis(fn, episodes: Episode):
    """A batched episode has one leading task axis, of the same size on every leaf of support, query, hessian."""
    sizes = {}
    for part in ("support", "query", "hessian"):
        leaves = jax.tree_util.tree_leaves(getattr(episodes, part))
        sizes[part] = sorted({jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}, key=str)
    flat = {s for v in sizes.values() for s in v}
    if len(flat) != 1 or None in flat:
        shown = ", ".join(f"{k} {v}" for k, v in sizes.items() if v)
        raise ValueError(
            f"{fn}: argument 'episodes' must be a batch of episodes with one leading task axis shared by every "
            f"leaf of support, query and hessian; got leading sizes {shown}. For a single task's Episode pass "
            "batched=False (or add a task axis: jax.tree_util.tree_map(lambda x: x[None], episode))"
        )
    return flat.pop()


def task_gradients(est, loss, params, episodes: Episode, *, batched: bool = True, **hyper):
    """Per-task estimates stacked along a leading task axis (``jax.vmap`` over ``episodes``).

    ``batched=False``: ``episodes`` is one task's Episode; the result has a task axis of size 1.
    """
    _check_episode("task_gradients", episodes)
    if not batched:
        episodes = jax.tree_util.tree_map(lambda x: x[None], episodes)
    _check_task_axis("task_gradients", episodes)
    return jax.vmap(lambda ep: est(loss, params, ep, **hyper))(episodes)


def meta_gradient(est, loss, params, episodes: Episode, *, batched: bool = True, **hyper):
    r"""$\frac1B\sum_{i=1}^B\mathrm{est}(\text{loss},w,\text{episode}_i)$: vmap over the leading task axis, then mean.

    ``episodes`` must be *batched* (a leading task axis of size $B$ on every leaf, as the samplers
    return); the sizes of that axis must agree across support, query and hessian, else a
    ``ValueError`` names them (so a single task's episode, whose leading axes are its numbers of
    examples, fails whenever its support and query sizes differ). A single task: ``batched=False`` (then the result is
    ``est(loss, params, episode)``), never a silent vmap over its examples. ``**hyper`` are passed
    to ``est`` (e.g. ``alpha=``).
    """
    _check_episode("meta_gradient", episodes)
    if not batched:
        return est(loss, params, episodes, **hyper)
    _check_task_axis("meta_gradient", episodes)
    if _is_objective_gradient(est, episodes, hyper):
        # MAML (D_h = D_in) and exact ANIL are gradients of their objective: differentiate the batch
        # mean once (one batched backward pass, no per-task gradient copies); same value as the mean
        # of the per-task gradients up to the order of summation.
        return jax.grad(lambda p: jnp.mean(jax.vmap(lambda ep: est.objective(loss, p, ep))(episodes)))(params)
    return tree_mean(jax.vmap(lambda ep: est(loss, params, ep, **hyper))(episodes))


def _is_objective_gradient(est, episodes, hyper):
    if hyper or not isinstance(est, Estimator):
        return False
    if est.name == "maml":
        return episodes.hessian is None
    return est.name == "anil" and not est.hyper.get("first_order", False)


def _obj_query_at(adapt):
    def objective(loss, params, episode, **h):
        return loss(adapt(loss, params, episode, **h), episode.query)

    return objective


def _moreau_objective(loss, params, episode, lam, steps, lr=None, smoothness=None):
    p = prox_solve(loss, params, episode.support, lam, steps, lr=lr, smoothness=smoothness)
    return loss(p, episode.support) + tree_vdot(tree_sub(p, params), tree_sub(p, params)) / (2.0 * lam)


def _imaml_objective(loss, params, episode, lam, steps, cg_steps, lr=None, smoothness=None, cg_tol=0.0):
    return loss(prox_solve(loss, params, episode.support, lam, steps, lr=lr, smoothness=smoothness), episode.query)


_gd = _obj_query_at(lambda loss, p, ep, alpha, steps=1, **_: adapt_gd(loss, p, ep.support, alpha, steps))
_sign = _obj_query_at(lambda loss, p, ep, alpha, steps=1, **_: adapt_sign(loss, p, ep.support, alpha, steps))
def _adapt_partial(loss, p, d, alpha, steps=1, mask=None):
    if mask is None:
        return adapt_head(loss, p, d, alpha, steps)
    return adapt_masked(loss, p, d, alpha, steps, mask=mask)


_head = _obj_query_at(lambda loss, p, ep, alpha, steps=1, mask=None, **_: _adapt_partial(loss, p, ep.support, alpha, steps, mask))


def _cost(grads, hvps=0):
    return lambda **h: (grads(h) if callable(grads) else grads, hvps(h) if callable(hvps) else hvps)


# name -> (function, objective(loss, params, episode, **hyper), cost(**hyper) -> (grads, hvps))
_REGISTRY = {
    "maml": (maml_grad, _gd, _cost(lambda h: h.get("steps", 1) + 1, lambda h: h.get("steps", 1))),
    "fomaml": (fomaml_grad, _gd, _cost(lambda h: h.get("steps", 1) + 1)),
    "hf_maml": (hf_maml_grad, _gd, _cost(lambda h: 3 * h.get("steps", 1) + 1)),
    "chayti": (chayti_grad, _gd, _cost(lambda h: (2 if h.get("scheme", "forward") == "forward" else 3) * h.get("steps", 1) + 1)),
    "moreau": (moreau_grad, _moreau_objective, _cost(lambda h: h["steps"])),
    "imaml": (imaml_grad, _imaml_objective, _cost(lambda h: h["steps"] + 1, lambda h: h["cg_steps"])),
    "sign_maml": (sign_maml_grad, _sign, _cost(lambda h: h.get("steps", 1) + 1)),
    "anil": (
        anil_grad,
        _head,
        _cost(lambda h: h.get("steps", 1) + 1, lambda h: 0 if h.get("first_order", False) else h.get("steps", 1)),
    ),
    "reptile": (reptile_grad, _gd, _cost(lambda h: h.get("steps", 1))),
}

ESTIMATORS = {name: entry[0] for name, entry in _REGISTRY.items()}
"""Registry: estimator name -> per-task function ``est(loss, params, episode, **hyper)``."""


#: Hyper-parameters that are numbers (traced leaves of an :class:`Estimator` under ``jax.jit``);
#: every other hyper-parameter (``steps``, ``cg_steps``, ``scheme``, ``delta_rule``, ``first_order``)
#: fixes the structure of the computation and is static.
TRACED_HYPER = ("alpha", "delta", "lam", "lr", "smoothness", "cg_tol")


def _split_hyper(hyper):
    leaves = tuple(k for k in sorted(hyper) if k in TRACED_HYPER and hyper[k] is not None)
    static = tuple((k, hyper[k]) for k in sorted(hyper) if k not in leaves)
    return leaves, static


@jax.tree_util.register_pytree_node_class
class Estimator:
    r"""A per-task estimator with bound hyper-parameters: ``est(loss, params, episode) -> grad``.

    Made by :func:`make_estimator`. An ``Estimator`` is a JAX pytree: the numeric hyper-parameters
    (``TRACED_HYPER``: $\alpha,\delta,\lambda$, ``lr``, ``smoothness``, ``cg_tol``) are its leaves and
    everything else (name, ``steps``, ``scheme``, ...) is static. So it can be passed *as an argument*
    to a ``jax.jit``-ed function, and a new $\alpha$ does not recompile it; it is hashable and
    compares by value (name and hyper-parameters).

    Attributes:
        name: registry name (e.g. ``"maml"``).
        hyper: dict of bound hyper-parameters.
        grads_per_task: gradient evaluations per task.
        hvps_per_task: Hessian-vector products per task (each about 2 gradients).
        cost: ``grads_per_task + 2 * hvps_per_task`` (gradient-equivalents).
    """

    def __init__(self, name, fn, objective_fn, hyper, grads, hvps):
        self.name, self.fn, self._objective, self.hyper = name, fn, objective_fn, dict(hyper)
        self.grads_per_task, self.hvps_per_task = grads, hvps
        self.cost = grads + 2 * hvps
        self.__doc__ = fn.__doc__

    # -- pytree protocol: numeric hyper-parameters are leaves
    def tree_flatten(self):
        leaves, static = _split_hyper(self.hyper)
        return tuple(self.hyper[k] for k in leaves), (self.name, leaves, static, self.grads_per_task, self.hvps_per_task)

    @classmethod
    def tree_unflatten(cls, aux, children):
        name, leaves, static, grads, hvps = aux
        fn, objective_fn, _ = _REGISTRY[name]
        return cls(name, fn, objective_fn, {**dict(static), **dict(zip(leaves, children))}, grads, hvps)

    def _key(self):
        leaves, static = _split_hyper(self.hyper)
        vals = []
        for k in leaves:
            v = self.hyper[k]
            try:
                vals.append(float(v))
            except Exception:  # traced or non-scalar: identity
                vals.append(id(v))
        return (self.name, static, leaves, tuple(vals))

    def __eq__(self, other):
        return isinstance(other, Estimator) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __call__(self, loss, params, episode, **overrides):
        """``fn(loss, params, episode, **hyper)``; keyword ``overrides`` replace bound values for this call."""
        return self.fn(loss, params, episode, **({**self.hyper, **overrides} if overrides else self.hyper))

    def replace(self, **overrides) -> "Estimator":
        """A copy with some hyper-parameters replaced (validated as in :func:`make_estimator`)."""
        return make_estimator(self.name, **{**self.hyper, **overrides})

    def objective(self, loss, params, episode):
        """The per-task objective associated with this estimator (query loss at the adapted point;
        for ``moreau`` the envelope value $f(\\hat p)+\\|\\hat p-w\\|^2/(2\\lambda)$ on the support batch)."""
        return self._objective(loss, params, episode, **self.hyper)

    def adapt(self, loss, params, support):
        r"""Test-time adaptation: this method's inner map applied to ``support`` (a batch $D_{in}$).

        * ``maml``, ``fomaml``, ``hf_maml``, ``chayti``, ``reptile``: $U_K(w)$, $K$ = ``steps``
          (default 1) GD steps with step $\alpha$ (:func:`mathlib.adapt_gd`);
        * ``sign_maml``: $K$ signSGD steps (:func:`mathlib.adapt_sign`);
        * ``anil``: $K$ GD steps on the adapted part only (:func:`mathlib.adapt_head`);
        * ``moreau``, ``imaml``: the approximate prox $\hat p\approx\mathrm{prox}_{\lambda f}(w)$
          (:func:`mathlib.prox_solve` with the bound ``steps``, ``lr``, ``smoothness``).

        Evaluate with ``loss(est.adapt(loss, w, ep.support), ep.query)``; for a batch of tasks,
        ``jax.vmap(lambda s: est.adapt(loss, w, s))(episodes.support)``.
        """
        return _ADAPT[self.name](loss, params, support, self.hyper)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"Estimator({self.name!r}, {args})"


def _adapt_gd_h(loss, p, d, h):
    return adapt_gd(loss, p, d, h["alpha"], h.get("steps", 1))


def _adapt_prox_h(loss, p, d, h):
    return prox_solve(loss, p, d, h["lam"], h["steps"], lr=h.get("lr"), smoothness=h.get("smoothness"))


_ADAPT = {
    "maml": _adapt_gd_h,
    "fomaml": _adapt_gd_h,
    "hf_maml": _adapt_gd_h,
    "chayti": _adapt_gd_h,
    "reptile": _adapt_gd_h,
    "sign_maml": lambda loss, p, d, h: adapt_sign(loss, p, d, h["alpha"], h.get("steps", 1)),
    "anil": lambda loss, p, d, h: _adapt_partial(loss, p, d, h["alpha"], h.get("steps", 1), h.get("mask")),
    "moreau": _adapt_prox_h,
    "imaml": _adapt_prox_h,
}


def make_estimator(name: str, **hyper) -> Estimator:
    """Bind hyper-parameters of a registered estimator; validates them now (Python level).

    Example: ``est = make_estimator("hf_maml", alpha=0.1, delta=1e-4)``; then
    ``meta_gradient(est, loss, w, episodes)``; ``est.name == "hf_maml"``, ``est.grads_per_task == 4``.
    """
    check_choice("make_estimator", "name", name, tuple(_REGISTRY))
    fn, objective_fn, cost = _REGISTRY[name]
    sig = inspect.signature(fn)
    allowed = [p for p in list(sig.parameters)[3:] if sig.parameters[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    for k in hyper:
        if k not in allowed:
            raise TypeError(f"make_estimator: unknown hyper-parameter '{k}' for '{name}'; expected one of {tuple(allowed)}")
    missing = [p for p in allowed if sig.parameters[p].default is inspect.Parameter.empty and p not in hyper]
    if missing:
        raise TypeError(f"make_estimator: '{name}' requires hyper-parameter(s) {tuple(missing)}")
    _validate_hyper(name, "make_estimator", hyper)
    if hyper.get("mask") is not None and not callable(hyper["mask"]):
        hyper["mask"] = Mask(hyper["mask"])
    grads, hvps = cost(**hyper)
    return Estimator(name, fn, objective_fn, hyper, grads, hvps)


class Mask:
    """A hashable, callable freeze of a boolean mask pytree (``Mask(tree)(params) -> tree``).

    :func:`make_estimator` wraps a mask pytree in it so that the :class:`Estimator` stays hashable.
    """

    def __init__(self, tree):
        leaves, self.treedef = jax.tree_util.tree_flatten(tree)
        if not all(isinstance(x, (bool, np.bool_)) for x in leaves):
            raise TypeError(f"make_estimator: argument 'mask' must have Python bool leaves (True = adapted), got {leaves!r}")
        self.flags = tuple(bool(x) for x in leaves)

    def __call__(self, params):
        return jax.tree_util.tree_unflatten(self.treedef, self.flags)

    def __hash__(self):
        return hash((self.treedef, self.flags))

    def __eq__(self, other):
        return isinstance(other, Mask) and (self.treedef, self.flags) == (other.treedef, other.flags)

    def __repr__(self):
        return f"Mask({jax.tree_util.tree_unflatten(self.treedef, self.flags)!r})"


def _validate_hyper(name, fn, h):
    for k in ("alpha", "delta", "lam"):
        if k in h:
            check_positive(fn, k, h[k])
    for k in ("steps", "cg_steps"):
        if k in h:
            h[k] = check_int(fn, k, h[k])
    if "cg_tol" in h:
        check_nonnegative(fn, "cg_tol", h["cg_tol"])
    for k in ("lr", "smoothness"):
        if h.get(k) is not None:
            check_positive(fn, k, h[k])
    if "scheme" in h:
        check_choice(fn, "scheme", h["scheme"], FD_SCHEMES)
    if "delta_rule" in h:
        check_choice(fn, "delta_rule", h["delta_rule"], ("fixed", "per_task"))
