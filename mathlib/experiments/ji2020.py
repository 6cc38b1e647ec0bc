r"""Experiment drivers for the chapter on Ji, Lee, Liang, Poor (NeurIPS 2020): ANIL.

Chapter-specific sweeps built on the core API of ``mathlib``. Nothing here is re-exported from
``mathlib``; notebooks import it as ``from mathlib.experiments import ji2020 as ex``.

Notation (book page ``ji2020/setup``): body $\phi$, head $h$, features $z_\phi(x)$, $N$ inner
head steps of size $\alpha$, support batch $S$ (``episode.support``), query batch $D$
(``episode.query``). Every function states which claim it serves.

To sweep $N$ without recompiling, several drivers run a scan of fixed length ``n_max`` in which
step $t$ is applied only if $t<N$ (``masked`` steps are the identity, so the objective and all its
derivatives are exactly those of $N$ steps); :func:`masked_anil_grad` is checked against
``mathlib.anil_grad`` in the tests and in notebook 03.
"""

from __future__ import annotations

import contextlib
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import mathlib as ml
from mathlib._validate import check_choice, check_int, check_nonnegative
from mathlib._fits import fit_geometric_ratio, fit_loglog_slope, mean_ci  # re-exported: the core's definitions

__all__ = [
    "head_loss",
    "init_params",
    "digits_episodes",
    "jacobian_path",
    "masked_adapt",
    "masked_anil_grad",
    "masked_meta_loss",
    "anil_grad_recursion",
    "implicit_body_grad",
    "implicit_error_sweep",
    "train_deterministic",
    "family_setup",
    "train_families",
    "fit_geometric_ratio",
    "fit_loglog_slope",
    "compare_runs",
    "time_meta_step",
    "mean_ci",
    "compare_runs_concurrently",
    "QUICK_COMPILE",
]


# =============================================================================== one BLAS thread
def _one_blas_thread():
    """Context in which LAPACK (eigh, svd, solve: called by XLA on CPU through scipy's OpenBLAS) uses one thread.

    On a loaded 2-core machine OpenBLAS's second thread spins against the other processes: we
    measured a 181x181 ``eigvalsh`` 30x slower with two threads than with one. The calls here are
    small, so one thread loses nothing on a quiet machine. No-op without ``threadpoolctl``.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


# =============================================================================== models and tasks
def _features(body, batch, *, activation):
    x, y = batch
    return ml.body_apply(body, x, activation, normalize=True), y


def _xent_l2(head, fbatch, *, activation, l2):
    z, y = fbatch
    val = ml.softmax_cross_entropy(ml.mlp_apply(head, z, activation), y)
    if l2:
        val = val + 0.5 * l2 * ml.tree_vdot(head, head)
    return val


@functools.lru_cache(maxsize=32)
def head_loss(l2: float = 0.0, activation: str = "tanh") -> ml.HeadLoss:
    r"""Classification loss of a body/head model with unit-norm features, as a ``mathlib.HeadLoss``.

    $\ell(\phi,h;B)=\mathrm{xent}\big(g_h(z_\phi(x)),y\big)+\frac{\lambda}{2}\|h\|^2$ with
    $z_\phi(x)=$ ``body_apply(..., normalize=True)`` ($\|z\|=1$) and $\lambda=$ ``l2`` applied to
    every head parameter. With a **linear** head and $\lambda>0$ the head loss is
    $\lambda$-strongly convex and $(\frac12\cdot 2+\lambda)$-smooth: the softmax Hessian
    $\mathrm{diag}(p)-pp^\top\preceq\frac12I$ and $\frac1n\sum_j\|(z_j,1)\|^2=2$
    (claims 1-3, the (SC) case). With a hidden head layer and $\lambda=0$ it is nonconvex (NC).

    Cached: equal arguments return the same object, so the jitted drivers, which take the loss as
    a static argument, compile once per loss rather than once per call of ``head_loss``.
    """
    check_nonnegative("head_loss", "l2", l2)
    return ml.HeadLoss(
        features=functools.partial(_features, activation=activation),
        head_loss=functools.partial(_xent_l2, activation=activation, l2=float(l2)),
    )


def init_params(key, dims=(64, 16), n_way: int = 5, head_hidden=(), dtype=jnp.float64):
    """``ml.init_body_head(key, (*dims, n_way), head_hidden=head_hidden, dtype=dtype)`` (tanh)."""
    return ml.init_body_head(key, (*dims, n_way), head_hidden=tuple(head_hidden), activation="tanh", dtype=dtype)


@functools.lru_cache(maxsize=4)
def _digits(dtype_name: str, test_classes=(7, 8, 9)):
    return ml.digits_dataset(jnp.dtype(dtype_name), test_classes=test_classes)


def digits_episodes(key, num_tasks: int, n_way: int = 5, k_shot: int = 5, k_query: int = 15,
                    split: str = "train", dtype=jnp.float64):
    """``num_tasks`` digits N-way K-shot episodes (``ml.sample_nway_kshot_episodes``) from a split.

    The split is ``ml.digits_dataset``'s default: meta-train classes 0-6, meta-test classes 7-9.
    """
    check_choice("digits_episodes", "split", split, ("train", "test"))
    d = _digits(jnp.dtype(dtype).name)
    classes = d.train_classes if split == "train" else d.test_classes
    return ml.sample_nway_kshot_episodes(key, num_tasks, d.X, d.y, classes, n_way, k_shot, k_query)


# =============================================================================== claim 1
def _jacobian_path_arrays(loss, params, batch, alpha, steps):
    feats = loss.features(params["body"], batch)
    u0, unravel = ravel_pytree(params["head"])
    f = lambda u: loss.head_loss(unravel(u), feats)  # noqa: E731
    hess = jax.hessian(f)
    eye = jnp.eye(u0.size, dtype=u0.dtype)

    def rec(u, J, H):
        ev = jnp.linalg.eigvalsh(H)  # one Hessian per step, shared with the Jacobian update
        return jnp.stack([jnp.linalg.norm(J, 2), ev[0], ev[-1], f(u)])

    def body(carry, _):
        u, J = carry
        H = hess(u)
        return (u - alpha * jax.grad(f)(u), (eye - alpha * H) @ J), rec(u, J, H)

    (uN, JN), recs = jax.lax.scan(body, (u0, eye), None, length=steps)
    return jnp.concatenate([recs, rec(uN, JN, hess(uN))[None]], axis=0)  # (steps + 1, 4)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _jacobian_paths(loss, params, batches, alpha, steps):
    return jax.vmap(lambda p, b: _jacobian_path_arrays(loss, p, b, alpha, steps))(params, batches)


def jacobian_path(loss: ml.HeadLoss, params, batch, alpha, steps: int):
    r"""Inner Jacobian $J_t=\partial h^t/\partial h^0=\prod_{s<t}(I-\alpha H_s)$ along $N$ head steps.

    $H_s=\nabla_h^2\ell(\phi,h^s;S)$ (dense, on the flattened head). Claim 1
    (Book: {prf:ref}`ji2020-lem-jacobian`). With a leading axis on the leaves of ``params`` *and*
    ``batch`` (several tasks), every output gets that leading axis (one compiled ``vmap``).

    Returns:
        dict of numpy arrays with last axis of length ``steps + 1`` (index $t$): ``"jac_norm"``
        ($\|J_t\|_2$), ``"lam_min"``, ``"lam_max"`` (extreme eigenvalues of $H_t$), ``"loss"``.
    """
    steps = check_int("jacobian_path", "steps", steps)
    batched = jnp.ndim(params["head"][0]["w"]) == 3  # (tasks, in, out) weights
    with _one_blas_thread():
        if batched:
            out = np.asarray(_jacobian_paths(loss, params, batch, alpha, steps))
        else:
            one = lambda t: jax.tree_util.tree_map(lambda x: x[None], t)  # noqa: E731
            out = np.asarray(_jacobian_paths(loss, one(params), one(batch), alpha, steps))[0]
    return {k: out[..., j] for j, k in enumerate(("jac_norm", "lam_min", "lam_max", "loss"))}


# =============================================================================== masked N (claims 2, 3)
def masked_adapt(loss: ml.HeadLoss, params, batch, alpha, n, n_max: int):
    r"""$N=$ ``n`` head steps (``n`` may be traced) inside a scan of fixed length ``n_max``.

    Step $t$ is $h\leftarrow h-\alpha\,\mathbb 1[t<N]\,\nabla_h\ell(\phi,h;S)$: identical to
    ``ml.adapt_head(loss, params, batch, alpha, N)`` for every ``N <= n_max``. Features are computed
    once (a ``HeadLoss``).
    """
    feats = loss.features(params["body"], batch)
    gh = jax.grad(lambda h: loss.head_loss(h, feats))

    def step(h, t):
        # lax.cond: where ``n`` is not batched (one N per compiled call, as in train_deterministic's
        # map over configurations) the steps t >= N are skipped, forward and backward; under a vmap
        # over N it becomes a select, the same identity.
        h = jax.lax.cond(t < n, lambda x: jax.tree_util.tree_map(lambda a, d: a - alpha * d, x, gh(x)),
                         lambda x: x, h)
        return h, None

    head, _ = jax.lax.scan(step, params["head"], jnp.arange(n_max))
    return {"body": params["body"], "head": head}


def masked_meta_loss(loss, params, episode, alpha, n, n_max: int):
    r"""ANIL task objective $\ell\big(\phi,h^N(\phi,h);D\big)$ with :func:`masked_adapt`."""
    return loss(masked_adapt(loss, params, episode.support, alpha, n, n_max), episode.query)


def masked_anil_grad(loss, params, episode, alpha, n, n_max: int):
    """Gradient of :func:`masked_meta_loss` in ``(body, head)``: equals ``ml.anil_grad(..., steps=n)``."""
    return jax.grad(lambda p: masked_meta_loss(loss, p, episode, alpha, n, n_max))(params)


def anil_grad_recursion(loss: ml.HeadLoss, params, episode, alpha, steps: int):
    r"""ANIL meta-gradient by the explicit reverse recursion of Book: {prf:ref}`ji2020-lem-anil-gradient`.

    $v\leftarrow\nabla_h\ell(\phi,h^N;D)$, $g_\phi\leftarrow\nabla_\phi\ell(\phi,h^N;D)$; for
    $t=N-1,\dots,0$: $g_\phi\leftarrow g_\phi-\alpha G_tv$, $v\leftarrow v-\alpha H_tv$; $g_h=v$.
    $H_tv$ is a head HVP and $G_tv=\nabla_\phi\langle\nabla_h\ell(\phi,h^t;S),v\rangle$ a mixed
    product (a VJP through the body). Written as a Python loop for clarity; a check of autodiff.
    """
    steps = check_int("anil_grad_recursion", "steps", steps)
    body, h = params["body"], params["head"]
    sup, qry = episode.support, episode.query

    def grad_h_S(phi, hh):
        return jax.grad(lambda x: loss.head_loss(x, loss.features(phi, sup)))(hh)

    iterates = [h]
    for _ in range(steps):
        iterates.append(ml.tree_axpy(-alpha, grad_h_S(body, iterates[-1]), iterates[-1]))
    gq = jax.grad(loss)({"body": body, "head": iterates[-1]}, qry)
    g_phi, v = gq["body"], gq["head"]
    for t in range(steps - 1, -1, -1):
        ht = iterates[t]
        Gv = jax.grad(lambda phi: ml.tree_vdot(grad_h_S(phi, ht), v))(body)
        Hv = jax.jvp(lambda x: grad_h_S(body, x), (ht,), (v,))[1]
        g_phi = ml.tree_axpy(-alpha, Gv, g_phi)
        v = ml.tree_axpy(-alpha, Hv, v)
    return {"body": g_phi, "head": v}


@functools.partial(jax.jit, static_argnums=(0, 3))
def _implicit_body_grad(loss, params, episode, newton_steps):
    body = params["body"]
    fs = loss.features(body, episode.support)
    u0, unravel = ravel_pytree(params["head"])
    f = lambda u: loss.head_loss(unravel(u), fs)  # noqa: E731

    def newton(u, _):
        return u - jnp.linalg.solve(jax.hessian(f)(u), jax.grad(f)(u)), None

    u_star, _ = jax.lax.scan(newton, u0, None, length=newton_steps)
    h_star = unravel(u_star)
    gq = jax.grad(loss)({"body": body, "head": h_star}, episode.query)
    vq, _ = ravel_pytree(gq["head"])
    v = unravel(jnp.linalg.solve(jax.hessian(f)(u_star), vq))

    def mixed(phi):
        gh = jax.grad(lambda x: loss.head_loss(x, loss.features(phi, episode.support)))(h_star)
        return ml.tree_vdot(gh, v)

    g_phi = ml.tree_sub(gq["body"], jax.grad(mixed)(body))
    return g_phi, h_star, jnp.linalg.norm(jax.grad(f)(u_star))


def implicit_body_grad(loss: ml.HeadLoss, params, episode, newton_steps: int = 30):
    r"""Implicit (bilevel) body gradient $\nabla_\phi\ell(\phi,h^*;D)-M^{*\top}(H^*)^{-1}\nabla_h\ell(\phi,h^*;D)$.

    $h^*=\arg\min_h\ell(\phi,h;S)$ by ``newton_steps`` Newton steps from ``params["head"]`` (dense
    Hessian of the flattened head; needs a strongly convex head loss). Claim 3
    (Book: {prf:ref}`ji2020-lem-implicit-limit`).

    Returns:
        ``(g_phi, h_star, grad_norm_at_h_star)``.
    """
    newton_steps = check_int("implicit_body_grad", "newton_steps", newton_steps)
    with _one_blas_thread():
        return jax.block_until_ready(_implicit_body_grad(loss, params, episode, newton_steps))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _errors_over_n(loss, params, episode, alpha, ns, n_max, g_impl):
    gi, _ = ravel_pytree(g_impl)

    def one(n):
        g = masked_anil_grad(loss, params, episode, alpha, n, n_max)
        return (jnp.linalg.norm(ravel_pytree(g["body"])[0] - gi) / jnp.linalg.norm(gi),
                jnp.linalg.norm(ravel_pytree(g["head"])[0]))

    rel, head = jax.vmap(one)(ns)
    return rel, head, jnp.linalg.norm(gi)


@functools.partial(jax.jit, static_argnums=(0,))
def _spectrum_at(loss, params, episode, h_star):
    r"""Eigenpairs of $H^*$ and $\|M^{*\top}u_j\|$ in one compiled function (eager, it was many small compiles)."""
    fs = loss.features(params["body"], episode.support)
    u_star, unravel = ravel_pytree(h_star)
    ev, U = jnp.linalg.eigh(jax.hessian(lambda u: loss.head_loss(unravel(u), fs))(u_star))

    def grad_h_flat(phi):
        return ravel_pytree(jax.grad(lambda x: loss.head_loss(x, loss.features(phi, episode.support)))(h_star))[0]

    mixed = jax.jacrev(grad_h_flat)(params["body"])  # pytree of (d_h, *leaf) arrays: M* = d(grad_h)/d(phi)
    M = jnp.concatenate([x.reshape(x.shape[0], -1) for x in jax.tree_util.tree_leaves(mixed)], axis=1)
    return ev, jnp.linalg.norm(U.T @ M, axis=1)  # ||M*^T u_j||: how much the body sees direction j


def implicit_error_sweep(loss: ml.HeadLoss, params, episode, alpha, ns, n_max: int | None = None):
    r"""Relative error $\|g_\phi(N)-g_\phi^{\rm impl}\|/\|g_\phi^{\rm impl}\|$ and $\|g_h(N)\|$ over ``ns``.

    $g(N)=$ :func:`masked_anil_grad` (vmapped over $N$, one compilation). Also returns the
    predicted contractions at $h^*$: ``rho_head`` $=\max_j|1-\alpha\lambda_j(H^*)|$ (all
    eigenpairs $(\lambda_j,u_j)$ of $H^*$) and ``rho_body``, the same maximum over the eigenvectors
    the body sees, $\|M^{*\top}u_j\|>10^{-8}\max_k\|M^{*\top}u_k\|$ with
    $M^*=\partial_\phi\nabla_h\ell(\phi,h^*;S)$ (Book: {prf:ref}`ji2020-lem-implicit-limit`). Claim 3.
    """
    ns = np.asarray(ns, dtype=int)
    n_max = int(ns.max()) if n_max is None else check_int("implicit_error_sweep", "n_max", n_max)
    g_impl, h_star, res = implicit_body_grad(loss, params, episode)
    out = _errors_over_n(loss, params, episode, alpha, jnp.asarray(ns), n_max, g_impl)
    rel, head, gi_norm = (np.asarray(x) for x in out)
    with _one_blas_thread():
        ev, seen = (np.asarray(x) for x in _spectrum_at(loss, params, episode, h_star))
    visible = seen > 1e-8 * seen.max()
    contraction = np.abs(1.0 - alpha * ev)
    return {"rel_err": rel, "head_norm": head,
            "rho_head": float(contraction.max()), "rho_body": float(contraction[visible].max()),
            "mu_star": float(ev[0]), "mu_body": float(ev[visible].min()), "L_star": float(ev[-1]),
            "n_invisible": int((~visible).sum()), "impl_norm": float(gi_norm),
            "inner_residual": float(res)}


# =============================================================================== claim 2
@functools.lru_cache(maxsize=16)
def _train_program(loss, n_max: int, beta: float, num_steps: int, per_config: bool, per_init_episodes: bool):
    """The jitted training of one group of :func:`train_deterministic` (one $N$, its step sizes and the
    initialisations vmapped), cached: every call with the same loss, ``n_max``, ``beta``, length and
    options (and shapes) reuses one compilation, so the groups of a call, and a loop over task
    families or seeds, compile once. $N$ and the episodes are arguments, not constants."""

    def objective(p, alpha, n, episodes):
        return jnp.mean(jax.vmap(lambda ep: masked_meta_loss(loss, p, ep, alpha, n, n_max))(episodes))

    def run(p0, alpha, n, episodes):
        def step(p, _):
            val, g = jax.value_and_grad(objective)(p, alpha, n, episodes)
            gb = ml.tree_vdot(g["body"], g["body"])
            gh = ml.tree_vdot(g["head"], g["head"])
            return ml.tree_axpy(-beta, g, p), (gb + gh, gb, gh, val)

        p_end, rec = jax.lax.scan(step, p0, None, length=num_steps)
        return (*rec, p_end)

    ep_axis = 0 if per_init_episodes else None
    over_inits = jax.vmap(run, in_axes=(0, None, None, ep_axis))
    return jax.jit(jax.vmap(over_inits, in_axes=(0 if per_config else None, 0, None, None)))


def train_deterministic(loss, params0, episodes, alphas, ns, n_max: int, beta: float, num_steps: int, *,
                        per_config: bool = False, return_params: bool = False, per_init_episodes: bool = False,
                        threads: int | None = None):
    r"""Full-batch ANIL by gradient descent, $(\phi,h)_{k+1}=(\phi,h)_k-\beta\,\nabla\mathcal L_N(\phi_k,h_k)$.

    $\mathcal L_N=\frac1B\sum_i\ell(\phi,h_i^N;D_i)$ over the fixed ``episodes`` (leading task axis).
    Runs every configuration ``(alphas[c], ns[c])`` and every initialisation (leading axis of the
    leaves of ``params0``): one compiled program, called once per distinct $N$ (its step sizes and
    the initialisations vmapped), the calls spread over ``threads`` CPU threads by
    ``ml.map_concurrent`` (default ``ml.default_threads()``: ``$MATHLIB_THREADS`` if set, else the
    cores available; 1 runs the groups one after the other; the results do not depend on it). With ``per_config=True`` the leaves of
    ``params0`` carry a leading configuration axis before the initialisation axis (each configuration
    starts from its own parameters: continuing runs from ``return_params``). With
    ``per_init_episodes=True`` the leaves of ``episodes`` carry a leading axis matching the
    initialisation axis, before the task axis: initialisation ``i`` trains on its own task set
    ``episodes[i]`` (a sweep over task families in one call). Claim 2.

    Returns:
        dict of numpy arrays of shape ``(configs, inits, num_steps)``: ``"grad_sq"``
        ($\|\nabla\mathcal L_N\|^2$ at step $k$, exact), ``"grad_sq_body"``, ``"grad_sq_head"``,
        ``"loss"`` ($\mathcal L_N$); non-finite values mark a diverged run. With ``return_params``
        also ``"params"``: the parameters after the last step, leaves of shape ``(configs, inits, ...)``.
    """
    num_steps = check_int("train_deterministic", "num_steps", num_steps)
    if per_config and per_init_episodes:
        raise ValueError("train_deterministic: arguments 'per_config' and 'per_init_episodes' cannot both be True "
                         "(the combination is not implemented)")
    if per_init_episodes:
        n_inits = jax.tree_util.tree_leaves(params0)[0].shape[0]
        n_sets = jax.tree_util.tree_leaves(episodes)[0].shape[0]
        if n_sets != n_inits:
            raise ValueError(f"train_deterministic: with per_init_episodes=True argument 'episodes' must have one "
                             f"task set per initialisation (leading axis {n_inits}), got {n_sets}")
    # Configurations grouped by N: one call per group (the step sizes of a group, the
    # initialisations and the tasks vmapped), the groups run concurrently on the CPU's cores
    # (ml.map_concurrent), the largest N first. N is not batched inside a group, so masked_adapt's
    # lax.cond skips the steps t >= N: a group costs about N inner steps, not n_max (a vmap over every
    # configuration would pay n_max for each; measured, it was also slower to run). Groups are padded
    # to equal size by repeating one of their configurations (one compiled program); the repeats are
    # dropped. Each group's result does not depend on how the groups are scheduled.
    ns_np = np.asarray(ns, dtype=int)
    uniq = np.unique(ns_np)
    groups = [np.flatnonzero(ns_np == u) for u in uniq]
    idx = np.stack([np.resize(g, max(map(len, groups))) for g in groups])      # (groups, size)
    dt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    alphas_g = jnp.asarray(np.asarray(alphas, float)[idx], dt)
    program = _train_program(loss, int(n_max), float(beta), num_steps, bool(per_config), bool(per_init_episodes))
    calls = []
    for g in range(idx.shape[0]):
        p_g = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[idx[g]], params0) if per_config else params0
        calls.append((p_g, alphas_g[g], jnp.asarray(uniq[g], jnp.int32), episodes))
    order = np.argsort(-uniq, kind="stable")                                     # the longest group first
    done = ml.map_concurrent(program, [calls[g] for g in order], threads=threads)
    per_group = [None] * len(calls)
    for g, res in zip(order, done):
        per_group[g] = res
    *grouped, p_end = jax.tree_util.tree_map(lambda *x: np.stack([np.asarray(a) for a in x]), *per_group)
    where = {int(c): (g, j) for g in range(idx.shape[0]) for j, c in reversed(list(enumerate(idx[g])))}
    pick = np.array([where[c] for c in range(ns_np.size)])
    out = dict(zip(("grad_sq", "grad_sq_body", "grad_sq_head", "loss"),
                   [o[pick[:, 0], pick[:, 1]] for o in grouped]))
    if return_params:
        out["params"] = jax.tree_util.tree_map(lambda x: x[pick[:, 0], pick[:, 1]], p_end)
    return out


def family_setup(seed: int, n_tasks: int, n_inits: int, *, head_hidden=(), n_inits_drawn: int = 5):
    """The task set and initialisations of notebook 02 for one ``seed`` (one task family).

    ``k_data, k_init = split(key(seed))``; the tasks are ``digits_episodes(k_data, n_tasks)``
    (5-way, 5 shots, 15 queries), the initialisations the first ``n_inits`` of
    ``split(k_init, n_inits_drawn)`` (``n_inits_drawn`` = the published run's count, so a shorter
    run repeats its first initialisations). Returns ``(episodes, params)``, the leaves of
    ``params`` with a leading initialisation axis. Claim 2.
    """
    check_int("family_setup", "n_inits", n_inits, minimum=1)
    if n_inits > n_inits_drawn:
        raise ValueError(f"family_setup: argument 'n_inits' must be at most n_inits_drawn={n_inits_drawn}, got {n_inits}")
    k_data, k_init = jax.random.split(jax.random.key(seed))
    episodes = digits_episodes(k_data, n_tasks, n_way=5, k_shot=5, k_query=15)
    keys = jax.random.split(k_init, n_inits_drawn)[:n_inits]
    params = jax.vmap(lambda k: init_params(k, head_hidden=head_hidden))(keys)
    return episodes, params


def train_families(loss, seeds, n_tasks: int, alphas, ns, n_max: int, beta: float, num_steps: int, *,
                   head_hidden=(), perturb: float = 0.0, n_perturbed: int = 1):
    r""":func:`train_deterministic` on the first initialisation of every task family in ``seeds``, in one call.

    Family ``seeds[i]`` is :func:`family_setup` ``(seeds[i], n_tasks, 1)``: its own task set and
    initialisation. With ``perturb > 0``, ``n_perturbed`` more runs are appended: the first
    ``n_perturbed`` families again, every initial parameter multiplied by ``1 + perturb`` (how much a
    tiny perturbation, far below any modelling choice, changes a run). Claim 2 (notebook 05).

    Returns:
        the dict of :func:`train_deterministic`, arrays of shape ``(configs, runs, num_steps)`` with
        ``runs = len(seeds)`` (``+ n_perturbed`` with ``perturb``; the perturbed copies last, in the
        order of their families).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("train_families: argument 'seeds' must name at least one task family, got []")
    check_nonnegative("train_families", "perturb", perturb)
    n_perturbed = check_int("train_families", "n_perturbed", n_perturbed)
    if perturb > 0 and n_perturbed > len(seeds):
        raise ValueError(f"train_families: argument 'n_perturbed' must be at most the number of families "
                         f"({len(seeds)}), got {n_perturbed}")
    sets = [family_setup(s, n_tasks, 1, head_hidden=head_hidden) for s in seeds]
    if perturb > 0:
        sets += [(e, jax.tree_util.tree_map(lambda x: x * (1.0 + perturb), p)) for e, p in sets[:n_perturbed]]
    episodes = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[e for e, _ in sets])
    params = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *[p for _, p in sets])
    return train_deterministic(loss, params, episodes, alphas, ns, n_max, beta, num_steps, per_init_episodes=True)


# =============================================================================== claim 4
def _estimator(method: str, alpha, steps: int):
    check_choice("compare_runs", "method", method, ("anil", "maml", "anil_fo"))
    if method == "maml":
        return lambda loss, p, ep: ml.maml_grad(loss, p, ep, alpha=alpha, steps=steps)
    return lambda loss, p, ep: ml.anil_grad(loss, p, ep, alpha=alpha, steps=steps, first_order=method == "anil_fo")


def _adapt(method, loss, params, batch, alpha, steps):
    if method == "maml":
        return ml.adapt_gd(loss, params, batch, alpha, steps)
    return ml.adapt_head(loss, params, batch, alpha, steps)


def _eval_metric(kind):
    if kind == "xent":
        return lambda logits, y: ml.accuracy(logits, y)
    return lambda pred, y: ml.mse(pred, y)


#: ``compiler_options`` of the evaluators of a quick run of claim 4 (:func:`compare_runs`): LLVM
#: optimisation level 0. An evaluator runs a few times per seed, so its compilation (MAML adapts the
#: whole network on every test task) costs more than its runs; results agree with the default level
#: to round-off. The meta-steps keep the defaults (at level 0 they compiled 4x faster but ran so much
#: slower that a quick run took as long); full mode keeps the defaults everywhere.
QUICK_COMPILE = (("xla_backend_optimization_level", 0),)


def _jit(fn, compiler_options):
    return jax.jit(fn, compiler_options=dict(compiler_options)) if compiler_options else jax.jit(fn)


@functools.lru_cache(maxsize=16)
def _meta_step(method: str, kind: str, alpha: float, steps: int, activation: str, lr: float = 1e-3):
    """One jitted meta-step (meta-gradient over a batch + Adam update), compiled once per configuration.

    The same compiled function trains (:func:`compare_runs`) and is timed (:func:`time_meta_step`).
    """
    loss = ml.body_head_loss(kind, activation=activation)
    est = _estimator(method, alpha, steps)
    opt = optax.adam(lr)

    @jax.jit
    def step(p, s, episodes):
        g = ml.meta_gradient(est, loss, p, episodes)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s

    return step, opt


@functools.lru_cache(maxsize=16)
def _evaluator(method: str, kind: str, alpha: float, steps: int, activation: str, compiler_options: tuple = ()):
    """Jitted ``(params, episodes) -> metric per task`` after ``steps`` inner steps (head only for ANIL)."""
    loss = ml.body_head_loss(kind, activation=activation)
    metric = _eval_metric(kind)
    adapt = "maml" if method == "maml" else "anil"

    def one(p, ep):
        a = _adapt(adapt, loss, p, ep.support, alpha, steps)
        x, y = ep.query
        return metric(ml.body_head_apply(a, x, activation), y)

    return _jit(lambda p, eps: jax.vmap(lambda ep: one(p, ep))(eps), compiler_options)


_JITTED: dict = {}


def _jitted(fn):
    """One ``jax.jit`` wrapper per Python function (a sampler passed to several runs compiles once).

    An already jitted function is returned as it is: the caller's own calls of it (e.g. to draw the
    batch :func:`time_meta_step` times) then reuse the compilation the training made.
    """
    if hasattr(fn, "lower"):  # a jax.jit-wrapped function
        return fn
    if fn not in _JITTED:
        _JITTED[fn] = jax.jit(fn)
    return _JITTED[fn]


def compare_runs(method: str, kind: str, init_fn, sample_train, eval_episodes, keys, *, alpha, steps: int,
                 lr: float, num_steps: int, eval_every: int, activation: str = "relu", compiler_options=()):
    r"""Meta-train one method from several seeds and evaluate after adaptation.

    ``method`` in ``{"anil", "maml", "anil_fo"}``: ANIL adapts the head only (``ml.anil_grad``,
    ``ml.adapt_head``), MAML every parameter (``ml.maml_grad``, ``ml.adapt_gd``); both take the
    same $N=$ ``steps`` inner steps of size ``alpha`` at training and at test time, the same Adam
    step ``lr`` and the same number of outer steps. ``kind`` is ``"xent"`` (metric: accuracy) or
    ``"mse"`` (metric: MSE). ``init_fn(key) -> params``; ``sample_train(key) -> Episode`` (batched).
    ``eval_episodes`` is a fixed batched ``Episode`` of test tasks. Claim 4.

    Each outer step calls one jitted meta-step, the very function :func:`time_meta_step` times
    (compiled once per configuration and shared by the two), on episodes drawn by ``sample_train``
    (jitted once per function object); seeds run one after the other. One compiled program per
    method was twice as slow to compile and, vmapped over seeds, slower to run on CPU.
    ``compiler_options``: XLA options of the evaluator, as ``((name, value), ...)`` (``()``: defaults;
    :data:`QUICK_COMPILE` for a quick run). The meta-step always keeps the defaults: it runs hundreds of
    times, and it is the function :func:`time_meta_step` times.

    Returns:
        ``(curves, per_task)``: ``curves`` of shape ``(seeds, evals)`` (mean metric over the test
        tasks after adaptation, at steps ``0, eval_every, ...``) and ``per_task`` of shape
        ``(seeds, tasks)`` at the end.
    """
    num_steps = check_int("compare_runs", "num_steps", num_steps)
    eval_every = check_int("compare_runs", "eval_every", eval_every)
    step, opt = _meta_step(method, kind, float(alpha), steps, activation, float(lr))
    evaluate = _evaluator(method, kind, float(alpha), steps, activation, tuple(sorted(dict(compiler_options).items())))
    sample, init = _jitted(sample_train), _jitted(init_fn)
    n_evals = num_steps // eval_every
    scores = []
    for key in keys:
        k_init, k_train = jax.random.split(key)
        p = init(k_init)
        s = opt.init(p)
        ks = jax.random.split(k_train, n_evals * eval_every)
        seed_scores = [evaluate(p, eval_episodes)]
        for i, k in enumerate(ks):   # iterating unstacks the keys once (indexing ks[i] was two eager ops a step)
            p, s = step(p, s, sample(k))
            if (i + 1) % eval_every == 0:
                seed_scores.append(evaluate(p, eval_episodes))
        scores.append(np.stack([np.asarray(x) for x in seed_scores]))
    scores = np.stack(scores)                                                # (seeds, evals + 1, tasks)
    return scores.mean(axis=-1), scores[:, -1]


def compare_runs_concurrently(jobs: dict, keys, *, threads: int | None = None, **common):
    r""":func:`compare_runs` for every entry of ``jobs``, the runs spread over ``threads`` CPU threads.

    ``jobs`` maps a name to the keyword arguments of one :func:`compare_runs` call (``method``,
    ``kind``, ``init_fn``, ``sample_train``, ``eval_episodes``, ``alpha``, ``num_steps``, ...);
    ``common`` holds the arguments they share (``steps``, ``lr``, ``eval_every``, ...). Runs are
    independent and each is deterministic, so the results are those of the serial loop; XLA
    releases Python's GIL while it compiles and runs, so on a two-core machine two runs (their
    compilations included) proceed at once. The initialisations and samplers are compiled first, in
    this thread (several runs share them). Jobs start in the order given: put the longest first.
    Claim 4.

    Returns:
        dict name -> ``(curves, per_task)`` of :func:`compare_runs`.
    """
    key0 = jax.random.split(keys[0])[0]   # a key of the callers' kind (typed or raw)
    for job, kw in jobs.items():   # shared programs compiled once, before the threads could race to compile them
        for name in ("method", "kind", "init_fn", "sample_train", "eval_episodes"):
            if name not in kw:
                raise ValueError(f"compare_runs_concurrently: job {job!r} of argument 'jobs' must give '{name}'")
        for name in ("init_fn", "sample_train"):
            _jitted(kw[name]).lower(key0).compile()
    names = list(jobs)
    out = ml.map_concurrent(lambda name: compare_runs(keys=keys, **common, **jobs[name]), [(n,) for n in names],
                            threads=threads)
    return dict(zip(names, out))


def time_meta_step(method: str, kind: str, params, episodes, *, alpha, steps: int, repeats: int = 20,
                   activation: str = "relu", lr: float = 1e-3):
    r"""Wall-clock seconds of one jitted meta-step (meta-gradient over the batch + Adam update).

    The meta-step is the one :func:`compare_runs` trains with (same configuration and shapes: no
    new compilation); otherwise it compiles on the first call (not timed); then the **minimum** over ``repeats`` calls, each synchronised with
    ``block_until_ready``: on a shared machine other processes only ever add time, so the minimum
    estimates the uncontended cost (medians were dominated by contention in our runs). Compare
    ratios measured side by side. Claim 4.
    """
    repeats = check_int("time_meta_step", "repeats", repeats)
    step, opt = _meta_step(method, kind, float(alpha), steps, activation, float(lr))
    s = opt.init(params)
    jax.block_until_ready(step(params, s, episodes))  # compiles on the first call for these shapes
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, s, episodes))
        ts.append(time.perf_counter() - t0)
    return float(np.min(ts))
