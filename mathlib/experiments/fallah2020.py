r"""Experiment drivers for the chapter on Fallah, Mokhtari, Ozdaglar (AISTATS 2020).

Chapter-specific sweeps built on the core API of ``mathlib``. Nothing here is re-exported
from ``mathlib``; notebooks import it as ``from mathlib.experiments import fallah2020 as ex``.

Every function states which claim of the chapter it serves (book page
``fallah2020/experiments``) and the label of the result it checks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mathlib._fd import fd_hvp, hvp
from mathlib._fits import fit_loglog_slope  # re-exported: the core's one definition of a slope
from mathlib._validate import check_choice, check_int, check_positive

__all__ = [
    "SIGMOID_D2_MAX",
    "logistic_fd_problem",
    "fd_error_sweep",
    "common_step_size",
    "deterministic_curves",
    "fomaml_floor_terms",
    "fomaml_floor_sweep",
    "correlated_linreg_tasks",
    "stochastic_runs",
    "stochastic_runs_series",
    "plateau",
    "estimator_mean_bias",
    "smoothness_scan",
    "lipschitz_pairs",
    "radial_points",
    "binned_envelope",
    "adaptive_step_run",
    "hf_delta_runs",
    "sinusoid_runs",
    "sinusoid_runs_series",
    "QUICK_COMPILE",
    "hf_direction_error",
    "hf_direction_errors",
    "fit_loglog_slope",
    "best_delta",
    "logistic_meta_family",
    "logistic_direction",
    "LOGISTIC_METHODS",
    "logistic_stochastic_runs",
    "logistic_deterministic",
    "logistic_inner_bias",
]


# =============================================================================== claim 1
#: $\max_z|\sigma''(z)|=1/(6\sqrt3)$ for the logistic sigmoid $\sigma$ (third derivative of the loss).
SIGMOID_D2_MAX = 1.0 / (6.0 * np.sqrt(3.0))


def logistic_fd_problem(key, n: int = 50, dim: int = 10, l2: float = 1e-2, dtype=jnp.float64):
    r"""A logistic-regression loss, a point $w$, a unit direction $v$ and the Hessian-Lipschitz constant.

    Uses :func:`mathlib.logistic_loss` on one task of :func:`mathlib.sample_logistic_tasks`.
    The Hessian $\frac1n\sum_j\sigma'(x_j^\top w)x_jx_j^\top+\lambda I$ is $\rho$-Lipschitz with
    $\rho=\max|\sigma''|\,\frac1n\sum_j\|x_j\|^3$, and every derivative is bounded, so
    Book: {prf:ref}`fallah2020-lem-fd-hvp` applies with both constants.

    Returns:
        ``(loss, w, batch, v, rho)`` with ``loss(w, batch)``.
    """
    from mathlib._data import sample_logistic_tasks

    n = check_int("logistic_fd_problem", "n", n)
    dim = check_int("logistic_fd_problem", "dim", dim)
    kd, kw, kv = jax.random.split(key, 3)
    ep = sample_logistic_tasks(kd, 1, n, 1, dim, dtype=dtype)
    batch = (ep.support[0][0], ep.support[1][0])
    w = jax.random.normal(kw, (dim,), dtype)
    v = jax.random.normal(kv, (dim,), dtype)
    v = v / jnp.linalg.norm(v)
    rho = float(SIGMOID_D2_MAX * np.mean(np.linalg.norm(np.asarray(batch[0]), axis=1) ** 3))
    return _logistic_l2_loss(float(l2)), w, batch, v, rho


@functools.lru_cache(maxsize=None)
def _logistic_l2_loss(l2: float):
    """``loss(w, batch)`` = :func:`mathlib.logistic_loss` with ridge ``l2``; one function object per ``l2``
    so that compiled sweeps (:func:`fd_error_sweep`) are reused across draws."""
    from mathlib._models import logistic_loss as _ll

    def loss(p, b):
        return _ll(p, b, l2=l2)

    return loss


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree
    )


def fd_error_sweep(loss, params, batch, v, deltas, dtype, schemes=("central", "forward")):
    r"""Relative error $\|d_\delta-Hv\|/\|Hv\|$ of finite-difference HVPs over a grid of $\delta$.

    The reference $Hv$ is the exact forward-over-reverse product (:func:`mathlib._fd.hvp`) in
    float64; the finite differences (:func:`mathlib._fd.fd_hvp`) are computed with ``params``,
    ``batch`` and ``v`` cast to ``dtype`` (float32 or float64). Needs x64 enabled.
    Claim 1 (Book: {prf:ref}`fallah2020-lem-fd-hvp`, {prf:ref}`fallah2020-rem-roundoff`).

    Returns:
        dict scheme -> numpy array of relative errors, one per delta.
    """
    for s in schemes:
        check_choice("fd_error_sweep", "schemes", s, ("central", "forward"))
    if not jax.config.jax_enable_x64:
        raise ValueError("fd_error_sweep: needs jax_enable_x64=True for the float64 reference")
    ds = jnp.asarray(np.asarray(deltas, dtype=np.float64), dtype)
    errs = _fd_sweep_program(loss, jnp.dtype(dtype), tuple(schemes))(params, batch, v, ds)
    return {s: np.asarray(e, dtype=np.float64) for s, e in zip(schemes, errs)}


@functools.lru_cache(maxsize=None)
def _fd_sweep_program(loss, dtype, schemes):
    """One compiled program per (loss, dtype, schemes) for :func:`fd_error_sweep`: reference, FD HVPs, errors."""

    def run(params, batch, v, ds):
        p64, b64, v64 = (_cast(t, jnp.float64) for t in (params, batch, v))
        ref = hvp(loss, p64, b64, v64)
        pc, bc, vc = (_cast(t, dtype) for t in (params, batch, v))
        out = []
        for s in schemes:
            approx = jax.vmap(lambda d, s=s: fd_hvp(loss, pc, bc, vc, d, scheme=s))(ds).astype(jnp.float64)
            out.append(jnp.linalg.norm(approx - ref[None], axis=1) / jnp.linalg.norm(ref))
        return tuple(out)

    return jax.jit(run)


def best_delta(deltas, errors):
    """``(delta*, error*)`` at the smallest error of a sweep."""
    errors = np.asarray(errors)
    k = int(np.nanargmin(errors))
    return float(np.asarray(deltas)[k]), float(errors[k])


# =============================================================================== claim 2
def common_step_size(tasks, alpha):
    r"""$\beta=1/\max\{\lambda_{\max}(\nabla^2F),\lambda_{\max}(M)\}$: one constant step that is stable for
    MAML, HF-MAML and FO-MAML on quadratic tasks, $M=\frac1n\sum_iA_i(I-\alpha A_i)$ being the
    Jacobian of the (affine) FO-MAML direction :func:`mathlib.quadratic_fomaml_grad` (both matrices
    are symmetric positive definite for $\alpha L<1$)."""
    from mathlib._quadratic import quadratic_fomaml_grad, quadratic_maml_hessian

    M = jax.jacfwd(quadratic_fomaml_grad)(jnp.zeros(tasks.b.shape[-1], tasks.b.dtype), tasks, alpha)
    lam_f = jnp.max(jnp.linalg.eigvalsh(quadratic_maml_hessian(tasks, alpha)))
    lam_m = jnp.max(jnp.linalg.eigvalsh(M))
    return 1.0 / jnp.maximum(lam_f, lam_m)


def deterministic_curves(tasks, alpha, num_steps: int, delta: float = 1e-3, beta=None, w0=None):
    r"""Full-batch runs of MAML, HF-MAML (central, fixed ``delta``) and FO-MAML on quadratic tasks.

    Plain gradient descent $w_{k+1}=w_k-\beta\frac1n\sum_i\hat g_i(w_k)$ on ``Episode.deterministic(tasks)``
    (as :func:`mathlib.run_deterministic`) with the common step :func:`common_step_size`, the three
    estimators run as traced rules of one compiled program (:func:`_hf_rule_grad`), and records the
    exact $\|\nabla F(w_k)\|$ (:func:`mathlib.exact_meta_gradient`). Claim 2.

    Returns:
        dict name -> numpy array of $\|\nabla F(w_k)\|$, $k=0..$ ``num_steps`` $-1$, plus ``"final_w"``
        (dict name -> final parameters) and ``"beta"``.
    """
    from mathlib._quadratic import quadratic_loss

    num_steps = check_int("deterministic_curves", "num_steps", num_steps)
    check_positive("deterministic_curves", "delta", delta)
    beta = float(common_step_size(tasks, alpha)) if beta is None else beta
    w0 = jnp.zeros(tasks.b.shape[-1], tasks.b.dtype) if w0 is None else jnp.asarray(w0)
    dt = w0.dtype
    names = ("maml", "hf_maml", "fomaml")
    rules = jnp.asarray(np.array([(1.0, 0, 1, 0, 0), (delta, 0, 0, 0, 1), (1.0, 0, 0, 1, 0)], np.float64), dt).T
    w, hist = _hf_program(quadratic_loss, num_steps)(tasks, jnp.asarray(alpha, dt), jnp.asarray(beta, dt), w0,
                                                     tuple(rules))
    out = {nm: np.asarray(hist[j]) for j, nm in enumerate(names)}
    finals = {nm: w[j] for j, nm in enumerate(names)}
    out["final_w"], out["beta"] = finals, beta
    return out


@jax.jit
def _fomaml_gd_final(tasks, alpha, beta, w0, num_steps_arr):
    """Deterministic FO-MAML GD (core :func:`mathlib.fomaml_grad`), traced hyper-parameters, vmappable."""
    from mathlib._core import Episode
    from mathlib._estimators import fomaml_grad, meta_gradient
    from mathlib._quadratic import quadratic_loss

    ep = Episode.deterministic(tasks)

    def body(w, _):
        return w - beta * meta_gradient(fomaml_grad, quadratic_loss, w, ep, alpha=alpha), None

    w, _ = jax.lax.scan(body, w0, None, length=num_steps_arr.shape[0])
    return w


def fomaml_floor_terms(tasks, alpha, w):
    r"""Quantities of {prf:ref}`fallah2020-lem-fomaml-floor` at a point $w$ (ideally $w_{FO}$).

    Returns a dict with:
        ``grad_norm``: exact $\|\nabla F(w)\|$;
        ``formula``: $\alpha\|\frac1n\sum_i(A_i-\bar A)\nabla f_i(\tilde w_i)\|$ (eq. ``fallah2020-eq-fo-floor``);
        ``fo_residual``: $\|g_{FO}(w)\|$ (zero at the fixed point);
        ``cs_bound``: $\alpha\gamma_H\sqrt{\frac1n\sum_i\|\nabla f_i(\tilde w_i)\|^2}$;
        ``paper_bound``: $\alpha L\sigma(w)$, the order of the reported FO-MAML floor with the
        constant set to 1 and $\sigma$ evaluated locally at $w$;
        ``sigma``, ``gamma_h``, ``L``.
    """
    return {k: float(v) for k, v in _floor_terms(tasks, jnp.asarray(alpha, tasks.A.dtype), jnp.asarray(w)).items()}


@jax.jit
def _floor_terms(tasks, alpha, w):
    """Compiled body of :func:`fomaml_floor_terms` (arrays)."""
    from mathlib._quadratic import (
        quadratic_fomaml_grad,
        quadratic_gradient_dissimilarity,
        quadratic_hessian_dissimilarity,
        quadratic_maml_grad,
        quadratic_smoothness,
    )

    A, b = tasks.A, tasks.b
    g = jnp.einsum("nij,nj->ni", A, w[None] - b)  # grad f_i(w)
    w_ad = w[None] - alpha * g
    g_ad = jnp.einsum("nij,nj->ni", A, w_ad - b)  # grad f_i(tilde w_i)
    Abar = jnp.mean(A, axis=0)
    formula = alpha * jnp.linalg.norm(jnp.mean(jnp.einsum("nij,nj->ni", A - Abar[None], g_ad), axis=0))
    L = quadratic_smoothness(tasks)
    gam = quadratic_hessian_dissimilarity(tasks)
    sig = quadratic_gradient_dissimilarity(w, tasks)
    return {
        "grad_norm": jnp.linalg.norm(quadratic_maml_grad(w, tasks, alpha)),
        "formula": formula,
        "fo_residual": jnp.linalg.norm(quadratic_fomaml_grad(w, tasks, alpha)),
        "cs_bound": alpha * gam * jnp.sqrt(jnp.mean(jnp.sum(g_ad**2, axis=-1))),
        "paper_bound": alpha * L * sig,
        "sigma": sig,
        "gamma_h": gam,
        "L": L,
    }


def fomaml_floor_sweep(tasks, alphas, spreads, num_steps: int):
    r"""FO-MAML floors $\|\nabla F(w_T)\|$ after ``num_steps`` deterministic steps from $w_0=0$.

    * over ``alphas`` (tasks as given);
    * over ``spreads`` $s$: centres rescaled $b_i\to s\,b_i$, at ``alphas[-1]``.

    Each run uses its own common step :func:`common_step_size`. Also returns the terms of
    :func:`fomaml_floor_terms` at every final point and the closed-form floor at
    :func:`mathlib.quadratic_fomaml_fixed_point`. Claim 2.

    Returns:
        dict ``"alpha"`` and ``"spread"`` -> list of dicts (one per value, keys of
        :func:`fomaml_floor_terms` plus ``"closed_form"``).
    """
    from mathlib._quadratic import QuadraticTask

    num_steps = check_int("fomaml_floor_sweep", "num_steps", num_steps)
    ticks = jnp.zeros(num_steps)
    w0 = jnp.zeros(tasks.b.shape[-1], tasks.b.dtype)

    def one(t, a):
        return {k: float(v) for k, v in _floor_point(t, jnp.asarray(a, t.A.dtype), w0, ticks).items()}

    res = {"alpha": [one(tasks, a) for a in alphas]}
    res["spread"] = [one(QuadraticTask(tasks.A, s * tasks.b), alphas[-1]) for s in spreads]
    return res


@jax.jit
def _floor_point(t, a, w0, ticks):
    """One run of :func:`fomaml_floor_sweep`, compiled once for every alpha, spread and family of one shape."""
    from mathlib._quadratic import quadratic_fomaml_fixed_point, quadratic_maml_grad

    w = _fomaml_gd_final(t, a, common_step_size(t, a), w0, ticks)
    terms = _floor_terms(t, a, w)
    terms["closed_form"] = jnp.linalg.norm(quadratic_maml_grad(quadratic_fomaml_fixed_point(t, a), t, a))
    return terms


# =============================================================================== claim 3
def _take_tasks(tasks, idx):
    return jax.tree_util.tree_map(lambda x: x[idx], tasks)


def correlated_linreg_tasks(key, num_tasks: int, dim: int, *, spread: float = 1.0, eig_range=(0.5, 2.0),
                            noise_std: float = 0.5, jitter: float = 0.2, dtype=None):
    r"""Linear-regression tasks whose optimum is correlated with their curvature.

    $\Sigma_i=Q\,\mathrm{diag}(\lambda_i)Q^\top$ with a shared random basis $Q$ and
    $\lambda_{ij}\sim U[\text{eig\_range}]$; in that basis
    $\theta_{ij}=-\text{spread}\,(\lambda_{ij}-\bar\lambda)/\mathrm{sd}(\lambda)+\text{jitter}\cdot\xi_{ij}$.
    The covariance between task Hessians and task gradients, which is the leading coefficient of
    the FO-MAML floor ({prf:ref}`fallah2020-lem-fomaml-floor`), is then close to its
    Cauchy--Schwarz maximum, so the floor stands out from the sampling noise at moderate batch
    sizes. Returns a batched :class:`mathlib.LinRegTask`.
    """
    fn = "correlated_linreg_tasks"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    dim = check_int(fn, "dim", dim)
    dtype = jnp.result_type(float) if dtype is None else dtype
    lo, hi = eig_range
    # one compiled program instead of a dozen eagerly compiled operations (same values)
    return _correlated_program(num_tasks, dim, jnp.dtype(dtype))(key, spread, float(lo), float(hi), noise_std, jitter)


@functools.lru_cache(maxsize=None)
def _correlated_program(num_tasks, dim, dtype):
    from mathlib._synthetic import LinRegTask

    def make(key, spread, lo, hi, noise_std, jitter):
        kq, kl, kj = jax.random.split(key, 3)
        q, r = jnp.linalg.qr(jax.random.normal(kq, (dim, dim), dtype))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        lam = jax.random.uniform(kl, (num_tasks, dim), dtype, minval=lo, maxval=hi)
        mid, sd = 0.5 * (lo + hi), (hi - lo) / np.sqrt(12.0)
        th = -spread * (lam - mid) / sd + jitter * jax.random.normal(kj, (num_tasks, dim), dtype)
        cov = jnp.einsum("ij,nj,kj->nik", q, lam, q)
        cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
        return LinRegTask(th @ q.T, cov, jnp.linalg.cholesky(cov), jnp.full((num_tasks,), noise_std, dtype))

    return jax.jit(make)


def stochastic_runs(method: str, tasks, alpha, beta, batch_sizes, n_in: int, n_out: int, n_hess,
                    num_steps: int, keys, delta: float = 1e-3, hessian_batch: str = "independent"):
    r"""Stochastic MAML / HF-MAML / FO-MAML on linear-regression tasks, vmapped over $B$ and seeds.

    One series of :func:`stochastic_runs_series` (see there for the sampling, the estimator and
    the random streams).

    Args:
        method: ``"maml"``, ``"hf_maml"`` (central, fixed ``delta``) or ``"fomaml"``.
        batch_sizes: list of task-batch sizes $B$.
        hessian_batch: ``"independent"`` (fresh $D_h$ of size ``n_hess``, Fallah et al. Alg. 1) or
            ``"query"`` (reuse $D_o$ for the Hessian term: the dependent choice that
            {prf:ref}`fallah2020-lem-independent-batches` warns about).
        keys: array of PRNG keys, one run per key and batch size.

    Returns:
        numpy array (len(batch_sizes), len(keys), num_steps) of exact $\|\nabla F(w_k)\|$.
    """
    check_choice("stochastic_runs", "hessian_batch", hessian_batch, ("independent", "query"))
    out = stochastic_runs_series({"run": (method, n_hess, hessian_batch)}, tasks, alpha, beta, batch_sizes, n_in,
                                 n_out, num_steps, keys, delta=delta)
    return out["run"]


def stochastic_runs_series(series: dict, tasks, alpha, beta, batch_sizes, n_in: int, n_out: int, num_steps: int,
                           keys, delta: float = 1e-3):
    r"""Several stochastic MAML / HF-MAML / FO-MAML series on linear-regression tasks from one compiled program.

    ``series`` maps a name to ``(method, n_hess)`` or ``(method, n_hess, hessian_batch)``. Each step
    samples $B$ tasks uniformly (with replacement) from the finite family ``tasks`` (a batched
    :class:`mathlib.LinRegTask`) and, per task, fresh Gaussian data batches of sizes $D_{in}$,
    $D_o$ and $D_h$ (:func:`mathlib.sample_regression_episodes`). The estimate is the mean over the
    $B$ tasks of the per-task direction :func:`_linreg_direction` (equal to the core
    :func:`mathlib.maml_grad`, :func:`mathlib.hf_maml_grad`, :func:`mathlib.fomaml_grad`; series with the same
    Hessian batch share one compiled body with traced coefficients); the outer step is SGD with constant ``beta``. The exact $\|\nabla F(w_k)\|$ of the population objective
    (:func:`mathlib.linreg_maml_grad`) is recorded at every step. Claim 3.

    One compiled program covers every series, batch size and seed (a ``vmap`` over the seeds;
    the runs of one seed with different $B$ share a pool of $\sum B$ task slots per step, each
    run averaging its own $B$ fresh tasks). Every series uses the same keys, so its task draws
    and its $D_{in}$, $D_o$ draws coincide with another series' whenever their Hessian batches
    have the same size, FO-MAML's with the first series that has an independent one (common random numbers). The exact gradient is affine in $w$,
    $\nabla F(w)=Aw-b$, with $A$ and $b$ taken once from the closed form. The program is traced with
    JAX's non-partitionable threefry, which compiles several times faster on CPU than the default
    (same distributions, other draws).

    Args:
        series: ``{name: (method, n_hess[, hessian_batch])}``; ``method`` is ``"maml"``,
            ``"hf_maml"`` (central, fixed ``delta``) or ``"fomaml"``; ``hessian_batch`` is
            ``"independent"`` (default; fresh $D_h$ of size ``n_hess``, Fallah et al. Alg. 1) or
            ``"query"`` (reuse $D_o$ for the Hessian term: the dependent choice that
            {prf:ref}`fallah2020-lem-independent-batches` warns about).
        batch_sizes: list of task-batch sizes $B$.
        keys: array of PRNG keys, one run per key and batch size.

    Returns:
        dict name -> numpy array (len(batch_sizes), len(keys), num_steps) of exact $\|\nabla F(w_k)\|$.
    """
    fn = "stochastic_runs_series"
    variants = []
    for name, spec in series.items():
        method, nh, *hb = spec
        hb = hb[0] if hb else "independent"
        check_choice(fn, "method", method, ("maml", "hf_maml", "fomaml"))
        check_choice(fn, "hessian_batch", hb, ("independent", "query"))
        if method == "fomaml" or hb == "query":
            nh = None
        else:
            nh = check_int(fn, "n_hess", nh)
        variants.append((method, nh, hb == "query" and method != "fomaml"))
    bs = [check_int(fn, "batch_sizes", b) for b in batch_sizes]
    num_steps = check_int(fn, "num_steps", num_steps)
    distinct = tuple(dict.fromkeys(variants))
    run = _stochastic_runner(distinct, tuple(bs), int(n_in), int(n_out), num_steps)
    dt = tasks.theta.dtype
    idx = jnp.asarray([distinct.index(v) for v in variants], jnp.int32)
    with jax.threefry_partitionable(False):
        out = np.asarray(run(tasks, jnp.asarray(alpha, dt), jnp.asarray(beta, dt), jnp.asarray(delta, dt), keys))
    res = {}
    for name, o in zip(series, out[np.asarray(idx)]):
        if not np.all(np.isfinite(o)):
            raise FloatingPointError(f"{fn}: series {name!r} diverged (non-finite gradient norm); reduce beta")
        res[name] = o
    return res


def _blended_direction(loss, params, ep, alpha, delta, c_maml, c_hf):
    r"""One task's direction $v-\alpha[c_{maml}\nabla^2f(w;\mathcal D_h)v+c_{hf}\,d_\delta]$: one traced formula,
    so one compiled body serves MAML $(1,0)$, HF-MAML $(0,1)$ and FO-MAML $(0,0)$.

    $v=\nabla f(w-\alpha\nabla f(w;\mathcal D_{in});\mathcal D_o)$, the exact product by :func:`mathlib._fd.hvp`,
    $d_\delta$ the central difference (:func:`mathlib._fd.fd_hvp`), both on ``ep.hessian``; ``delta`` is a number
    or a function of $\|v\|$. Without a Hessian batch the direction is $v$ (FO-MAML).
    """
    from mathlib._core import tree_axpy, tree_norm

    g = jax.grad(loss)
    v = g(tree_axpy(-alpha, g(params, ep.support), params), ep.query)
    if ep.hessian is None:  # only FO-MAML in this group
        return v
    d = delta(tree_norm(v)) if callable(delta) else delta
    h = hvp(loss, params, ep.hessian, v)
    f = fd_hvp(loss, params, ep.hessian, v, d, scheme="central")
    return jax.tree_util.tree_map(lambda vv, hh, ff: vv - alpha * (c_maml * hh + c_hf * ff), v, h, f)


def _linreg_direction(w, ep, alpha, delta, c_maml, c_hf):
    r""":func:`_blended_direction` on least squares with a fixed ``delta``: $(1,0)$ is :func:`mathlib.maml_grad`,
    $(0,1)$ :func:`mathlib.hf_maml_grad`, $(0,0)$ :func:`mathlib.fomaml_grad` (checked in
    ``tests/test_experiments_fallah2020.py``)."""
    from mathlib._synthetic import mse_loss

    return _blended_direction(mse_loss, w, ep, alpha, delta, c_maml, c_hf)


def _variant_groups(variants):
    r"""Group variants that can share one compiled body: same Hessian batch (size, or reuse of D_o).

    FO-MAML ignores the Hessian batch and joins the first group with an independent one (its draws of
    $\mathcal D_{in}$, $\mathcal D_o$ then coincide with that group's: common random numbers)."""
    groups = {}
    host = next(((nh, False) for m, nh, q in variants if m != "fomaml" and not q), None)
    for j, (m, nh, q) in enumerate(variants):
        key = (host if host is not None else (None, False)) if m == "fomaml" else (nh, q)
        groups.setdefault(key, []).append(j)
    return groups


@functools.lru_cache(maxsize=None)
def _stochastic_runner(variants, bs, n_in, n_out, num_steps):
    from mathlib._core import Episode
    from mathlib._synthetic import linreg_maml_grad, sample_regression_episodes

    # every batch size B of a seed draws its own B tasks: one pool of sum(B) slots per step,
    # slot j belongs to the run owner[j]
    owner = np.repeat(np.arange(len(bs)), bs)
    n_slots = int(owner.size)
    inv_b = 1.0 / np.asarray(bs, np.float64)
    groups = _variant_groups(variants)
    coefs = {m: c for m, c in (("maml", (1.0, 0.0)), ("hf_maml", (0.0, 1.0)), ("fomaml", (0.0, 0.0)))}

    def one(group, tasks, alpha, beta, delta, coef, key):
        nh, hess_is_query = group
        n_tasks, d = tasks.theta.shape
        dt = tasks.theta.dtype
        # the exact population gradient is affine in w: grad F(w) = A w - b, A and b from the core closed form
        zero = jnp.zeros(d, dt)
        b = -linreg_maml_grad(zero, tasks, alpha)
        A = jax.jacfwd(lambda w: linreg_maml_grad(w, tasks, alpha))(zero)
        own = jnp.asarray(owner)
        scale = jnp.asarray(inv_b, dt)[:, None]

        def body(w, k):  # w: (len(bs), d), one iterate per batch size
            k1, k2 = jax.random.split(k)
            sub = _take_tasks(tasks, jax.random.randint(k1, (n_slots,), 0, n_tasks))
            ep = sample_regression_episodes(k2, sub, n_in, n_out, None if hess_is_query else nh)
            if hess_is_query:
                ep = Episode(ep.support, ep.query, ep.query)
            est = jax.vmap(lambda wj, e: _linreg_direction(wj, e, alpha, delta, coef[0], coef[1]))(w[own], ep)
            g = jax.ops.segment_sum(est, own, num_segments=len(bs)) * scale
            return w - beta * g, jnp.linalg.norm(w @ A.T - b, axis=-1)

        w0 = jnp.zeros((len(bs), d), dt)
        return jax.lax.scan(body, w0, jax.random.split(key, num_steps))[1].T  # (len(bs), num_steps)

    def all_series(tasks, alpha, beta, delta, keys):
        outs = [None] * len(variants)
        dt = tasks.theta.dtype
        for group, idx in groups.items():
            coef = jnp.asarray([coefs[variants[j][0]] for j in idx], dt)  # (series in group, 2)
            f = jax.vmap(jax.vmap(functools.partial(one, group), in_axes=(None, None, None, None, None, 0)),
                         in_axes=(None, None, None, None, 0, None))
            out = f(tasks, alpha, beta, delta, coef, keys)  # (series, seeds, len(bs), steps)
            for r, j in enumerate(idx):
                outs[j] = jnp.swapaxes(out[r], 0, 1)  # (len(bs), seeds, steps)
        return jnp.stack(outs)

    return jax.jit(all_series)


def plateau(norms, frac: float = 0.5):
    r"""Plateau level of noisy runs: root mean square of the last ``frac`` of each run (last axis).

    The RMS estimates $\sqrt{\E\|\nabla F\|^2}$ under the stationary distribution of constant-step
    SGD, the quantity that scales as $\sqrt{\text{variance}/B}$.
    """
    norms = np.asarray(norms)
    k = max(1, int(round(frac * norms.shape[-1])))
    return np.sqrt(np.mean(norms[..., -k:] ** 2, axis=-1))


def estimator_mean_bias(tasks, alpha, w, n_in: int, n_out: int, n_hess: int, num_samples: int, key,
                        hessian_batch: str = "independent"):
    r"""Monte-Carlo mean of the stochastic MAML estimate at $w$ minus the exact $\nabla F(w)$.

    Draws ``num_samples`` (task, $D_{in}$, $D_o$, $D_h$) episodes, tasks uniform over the family,
    and averages :func:`mathlib.maml_grad`. With ``hessian_batch="independent"`` the mean is
    $\nabla F(w)$ exactly for linear regression ({prf:ref}`fallah2020-lem-independent-batches`);
    with ``"query"`` ($D_h=D_o$) it carries the covariance term of the lemma. Claim 3.

    Returns:
        ``(bias_norm, standard_error)``: $\|\bar g-\nabla F(w)\|$ and the Monte-Carlo standard error
        $\sqrt{\sum_j\widehat{\Var}(g_j)/N}$ of the mean.
    """
    from mathlib._core import Episode
    from mathlib._estimators import maml_grad, task_gradients
    from mathlib._synthetic import linreg_maml_grad, mse_loss, sample_regression_episodes

    check_choice("estimator_mean_bias", "hessian_batch", hessian_batch, ("independent", "query"))
    num_samples = check_int("estimator_mean_bias", "num_samples", num_samples)
    k1, k2 = jax.random.split(key)
    sub = _take_tasks(tasks, jax.random.randint(k1, (num_samples,), 0, tasks.theta.shape[0]))
    if hessian_batch == "independent":
        ep = sample_regression_episodes(k2, sub, n_in, n_out, n_hess)
    else:
        ep = sample_regression_episodes(k2, sub, n_in, n_out, None)
        ep = Episode(ep.support, ep.query, ep.query)
    g = np.asarray(task_gradients(maml_grad, mse_loss, w, ep, alpha=alpha))
    exact = np.asarray(linreg_maml_grad(w, tasks, alpha))
    bias = float(np.linalg.norm(g.mean(axis=0) - exact))
    se = float(np.sqrt(np.sum(g.var(axis=0, ddof=1)) / num_samples))
    return bias, se


# =============================================================================== claim 4
def smoothness_scan(tasks, loss, alpha, L, rho, points):
    r"""Exact $\|\nabla^2F(w)\|_2$, $\|\nabla F(w)\|$, $L(w)$ and $\E_i\|\nabla f_i(w)\|$ at many points.

    $F$ is the one-step MAML objective over the finite family ``tasks``
    (:func:`mathlib.exact_meta_objective`); its Hessian is formed densely (small $d$) and its
    spectral norm taken by ``eigvalsh``. $L(w)=4L+2\rho\alpha\E_i\|\nabla f_i(w)\|$ is
    :func:`mathlib.local_smoothness_bound` ({prf:ref}`fallah2020-lem-smoothness`). Claim 4.

    Args:
        points: array (n, d) of evaluation points.

    Returns:
        dict of numpy arrays ``hess_norm``, ``grad_norm``, ``bound``, ``task_grad_norm``.
    """
    h, g, b, tg = (np.asarray(x) for x in _smoothness_program(loss)(tasks, *_scalars(alpha, L, rho), jnp.asarray(points)))
    return {"hess_norm": h, "grad_norm": g, "bound": b, "task_grad_norm": tg}


def _scalars(*xs):
    return tuple(jnp.asarray(x, jnp.result_type(float)) for x in xs)


@functools.lru_cache(maxsize=None)
def _smoothness_program(loss):
    """Compiled once per loss (and shapes) for :func:`smoothness_scan`; tasks and constants are traced."""
    from mathlib._core import tree_norm
    from mathlib._diagnostics import exact_meta_objective, local_smoothness_bound

    def run(tasks, alpha, L, rho, points):
        F = lambda w: exact_meta_objective(loss, w, tasks, alpha)  # noqa: E731

        def at(w):
            H = jax.hessian(F)(w)
            H = 0.5 * (H + H.T)
            tg = jnp.mean(jax.vmap(lambda t: tree_norm(jax.grad(loss)(w, t)))(tasks))
            return (jnp.max(jnp.abs(jnp.linalg.eigvalsh(H))), jnp.linalg.norm(jax.grad(F)(w)),
                    local_smoothness_bound(loss, w, tasks, L, rho, alpha), tg)

        return jax.lax.map(at, points)

    return jax.jit(run)


def lipschitz_pairs(tasks, loss, alpha, L, rho, points, key, rel_dist: float = 0.05):
    r"""Ratios $\|\nabla F(w)-\nabla F(u)\|/(\min\{L(w),L(u)\}\|w-u\|)$ for $u=w+$ a random step.

    The step has length ``rel_dist`` $\cdot\max(1,\|w\|)$. The ratio must stay $\le1$ by
    {prf:ref}`fallah2020-lem-smoothness`. Returns a numpy array of ratios.
    """
    pts = jnp.asarray(points)
    dirs = jax.random.normal(key, pts.shape, pts.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    steps = rel_dist * jnp.maximum(1.0, jnp.linalg.norm(pts, axis=1, keepdims=True)) * dirs

    return np.asarray(_pairs_program(loss)(tasks, *_scalars(alpha, L, rho), pts, steps))


@functools.lru_cache(maxsize=None)
def _pairs_program(loss):
    """Compiled once per loss (and shapes) for :func:`lipschitz_pairs`; tasks and constants are traced."""
    from mathlib._diagnostics import exact_meta_gradient, local_smoothness_bound

    def run(tasks, alpha, L, rho, pts, steps):
        def ratio(w, s):
            u = w + s
            num = jnp.linalg.norm(exact_meta_gradient(loss, w, tasks, alpha) - exact_meta_gradient(loss, u, tasks, alpha))
            lw = local_smoothness_bound(loss, w, tasks, L, rho, alpha)
            lu = local_smoothness_bound(loss, u, tasks, L, rho, alpha)
            return num / (jnp.minimum(lw, lu) * jnp.linalg.norm(s))

        return jax.lax.map(lambda ws: ratio(*ws), (pts, steps))

    return jax.jit(run)


def radial_points(key, n: int, dim: int, r_min: float, r_max: float, dtype=None):
    """``n`` points with log-uniform radii in [r_min, r_max] and uniform random directions."""
    n = check_int("radial_points", "n", n)
    dtype = jnp.result_type(float) if dtype is None else dtype
    kr, kd = jax.random.split(key)
    r = jnp.exp(jax.random.uniform(kr, (n, 1), dtype, jnp.log(r_min), jnp.log(r_max)))
    d = jax.random.normal(kd, (n, dim), dtype)
    return r * d / jnp.linalg.norm(d, axis=1, keepdims=True)


def binned_envelope(x, y, n_bins: int = 10):
    """Per log-spaced bin of ``x``: (geometric bin centre, max of ``y``), empty bins dropped."""
    x, y = np.asarray(x), np.asarray(y)
    edges = np.geomspace(x.min(), x.max() * (1 + 1e-12), n_bins + 1)
    idx = np.digitize(x, edges) - 1
    cx, cy = [], []
    for b in range(n_bins):
        m = idx == b
        if m.any():
            cx.append(np.sqrt(edges[b] * edges[b + 1]))
            cy.append(y[m].max())
    return np.array(cx), np.array(cy)


# =============================================================================== claim 5
def adaptive_step_run(tasks, loss, alpha, L, rho, c, w0, num_steps: int):
    r"""Deterministic MAML with Fallah et al.'s adaptive step $\beta_k=c/L(w_k)$ on a finite family.

    Uses :func:`mathlib.run_deterministic` with ``optax.sgd(1)`` scaled by
    :func:`mathlib.fallah_step_size` evaluated on all tasks (so $\tilde L(w)=L(w)$ exactly), and
    records $\beta_k$, $F(w_k)$ and $\|\nabla F(w_k)\|$ (:func:`mathlib.exact_meta_gradient`).
    Claim 5 ({prf:ref}`fallah2020-cor-descent`, {prf:ref}`fallah2020-rem-step-size`).

    Returns:
        dict of numpy arrays ``beta``, ``loss``, ``grad_norm``.
    """
    from mathlib._diagnostics import exact_meta_gradient, exact_meta_objective
    from mathlib._estimators import make_estimator
    from mathlib._outer import fallah_step_size
    from mathlib._train import run_deterministic

    num_steps = check_int("adaptive_step_run", "num_steps", num_steps)
    check_positive("adaptive_step_run", "c", c)
    _, h = run_deterministic(
        make_estimator("maml", alpha=alpha), loss, w0, tasks, 1.0, num_steps,
        exact_grad_fn=lambda w: exact_meta_gradient(loss, w, tasks, alpha),
        exact_loss_fn=lambda w: exact_meta_objective(loss, w, tasks, alpha),
        step_size_fn=lambda w, k: fallah_step_size(loss, w, tasks, L, rho, alpha, c),
        record_loss=False, chunk_size=min(num_steps, 5000),
    )
    return {"beta": h["step_size"], "loss": h["exact_loss"], "grad_norm": h["exact_grad_norm"]}


def hf_delta_runs(tasks, loss, alpha, rho, beta, deltas, num_steps: int, w0):
    r"""Deterministic MAML, FO-MAML and HF-MAML (fixed $\delta$'s and the theorem's $\delta$).

    HF-MAML uses :func:`mathlib.hf_maml_grad` (central) with each fixed ``delta`` and with
    ``delta_rule="per_task"``, ``delta=1/(6*rho*alpha)``, i.e. $\delta_i=1/(6\rho\alpha\|v_i\|)$
    ({prf:ref}`fallah2020-rem-prescribed-delta`). Constant step ``beta``; exact $\|\nabla F(w_k)\|$
    recorded. Claim 5.

    Returns:
        dict name -> numpy array of $\|\nabla F(w_k)\|$; names ``"maml"``, ``"fomaml"``,
        ``"theorem"`` and ``"delta=<value>"`` for each fixed delta.
    """
    from mathlib._diagnostics import exact_meta_gradient
    from mathlib._estimators import make_estimator
    from mathlib._train import run_deterministic

    num_steps = check_int("hf_delta_runs", "num_steps", num_steps)
    check_positive("hf_delta_runs", "rho", rho)
    ests = {"maml": make_estimator("maml", alpha=alpha), "fomaml": make_estimator("fomaml", alpha=alpha),
            "theorem": make_estimator("hf_maml", alpha=alpha, delta=1.0 / (6.0 * rho * alpha), delta_rule="per_task")}
    for d in deltas:
        ests[f"delta={d:g}"] = make_estimator("hf_maml", alpha=alpha, delta=d)
    out = {}
    for name, est in ests.items():
        _, h = run_deterministic(est, loss, w0, tasks, beta, num_steps, record_loss=False,
                                 exact_grad_fn=lambda w: exact_meta_gradient(loss, w, tasks, alpha),
                                 chunk_size=min(num_steps, 5000))
        out[name] = h["exact_grad_norm"]
    return out


# =============================================================================== claim 6
#: XLA options for a short sinusoid run (quick mode), whose compilation costs about as much as its
#: run: LLVM -O1 and the older CPU loop emitters instead of the fusion emitters compile in about half
#: the time (measured 4 s against 8 s of CPU time) and run about 15% slower; same results up to float
#: rounding. Long runs keep the defaults.
QUICK_COMPILE = {"xla_backend_optimization_level": 1, "xla_cpu_use_fusion_emitters": False}


def sinusoid_runs(method: str, keys, *, num_steps: int, eval_every: int, alpha: float = 0.01, lr: float = 1e-3,
                  num_tasks: int = 25, k_shot: int = 10, k_hessian: int = 10, delta: float = 1e-2,
                  hidden=(40, 40), eval_tasks: int = 100, activation: str = "tanh"):
    r"""Sinusoid regression (Finn et al. 2017) with an MLP: meta-training curves, vmapped over seeds.

    Per step: ``num_tasks`` tasks with ``k_shot`` support, ``k_shot`` query and ``k_hessian``
    independent Hessian points (:func:`mathlib.sample_sinusoid_episodes`); the meta-gradient is
    :func:`mathlib.meta_gradient` of the core estimator (``"maml"``, ``"fomaml"`` or ``"hf_maml"``;
    HF-MAML uses ``delta_rule="per_task"``, i.e. a perturbation of length ``delta``); the outer
    optimiser is Adam (:func:`mathlib.outer_optimizer`). Every ``eval_every`` steps the
    post-adaptation loss (one inner step of size ``alpha`` on 10 support points, MSE on a 100-point
    grid) is averaged over the fixed evaluation tasks of :func:`mathlib.sinusoid_eval_set`.
    All seeds share one compiled program (``jax.vmap`` over ``keys``); the run is
    :func:`sinusoid_runs_series` with one series. The default
    ``activation="tanh"`` keeps the loss smooth, as the theory assumes: with ReLU the gradient jumps
    across kinks and a finite difference of gradients is not a Hessian-vector product. Claim 6.

    Returns:
        numpy array (len(keys), num_steps // eval_every + 1) of evaluation losses, the first
        column at initialisation.
    """
    fn = "sinusoid_runs"
    check_choice(fn, "method", method, ("maml", "fomaml", "hf_maml"))
    try:
        return sinusoid_runs_series({method: (method, k_hessian, delta)}, keys, num_steps=num_steps,
                                    eval_every=eval_every, alpha=alpha, lr=lr, num_tasks=num_tasks,
                                    k_shot=k_shot, hidden=hidden, eval_tasks=eval_tasks,
                                    activation=activation)[method]
    except (ValueError, FloatingPointError) as err:  # name this function, not the series helper
        raise type(err)(str(err).replace("sinusoid_runs_series", fn)) from None


def _one_step_correction(loss, params, support, hessian, v, *, method, k_hessian, delta):
    r"""The term $c$ of a one-step direction $v-\alpha c$, $v=\nabla f(w-\alpha\nabla f(w;\mathcal D_{in});\mathcal D_o)$.

    ``"maml"``: $c=\nabla^2f(w;\mathcal D)v$ (exact HVP) with $\mathcal D=\mathcal D_{in}$ if ``k_hessian == 0`` (then
    $v-\alpha c$ is :func:`mathlib.maml_grad` with ``hessian=None``, the autodiff gradient) or the first ``k_hessian``
    points of the independent batch; ``"hf_maml"``: the central difference with a perturbation of length ``delta``
    (:func:`mathlib.hf_maml_grad`, ``delta_rule="per_task"``) on the same choice of batch; ``"fomaml"``: $c=0$.
    ``tests/test_experiments_fallah2020.py`` checks each against the core estimator.
    """
    batch = support if k_hessian == 0 else jax.tree_util.tree_map(lambda x: x[:k_hessian], hessian)
    if method == "maml":
        return hvp(loss, params, batch, v)
    if method == "hf_maml":
        from mathlib._core import tree_norm

        nv = tree_norm(v)
        return fd_hvp(loss, params, batch, v, delta / jnp.where(nv > 0, nv, 1.0), scheme="central")
    return jax.tree_util.tree_map(jnp.zeros_like, v)


def sinusoid_runs_series(series: dict, keys, *, num_steps: int, eval_every: int, alpha: float = 0.01,
                         lr: float = 1e-3, num_tasks: int = 25, k_shot: int = 10, hidden=(40, 40),
                         eval_tasks: int = 100, activation: str = "tanh", compiler_options=None):
    r"""Several :func:`sinusoid_runs` series from one compiled program.

    ``series`` maps a name to ``(method, k_hessian)`` or ``(method, k_hessian, delta)`` (``delta``
    for ``"hf_maml"``, default ``1e-2``). Every series draws the same episodes for the same key
    (common random numbers; the Hessian points are drawn for all, ``max k_hessian`` of them, and used
    by the series that ask for them). The direction of a task is $v-\alpha c$ with
    $v=\nabla f(w-\alpha\nabla f(w;\mathcal D_{in});\mathcal D_o)$ computed once and the series' correction $c$
    (:func:`_one_step_correction`: exact HVP for MAML, central difference for HF-MAML, none for FO-MAML)
    chosen by a ``lax.switch`` on the series index; the series are looped (``lax.map``), so each step
    runs only its own branch. One small branch per series instead of one whole estimator per series
    keeps the compiled program small (compilation dominated the cost of this function).
    ``compiler_options``: XLA options of the program (``None``: defaults), e.g.
    :data:`QUICK_COMPILE` for a short run whose compilation costs as much as its run. Claim 6.

    Returns:
        dict name -> numpy array (len(keys), num_steps // eval_every + 1) of evaluation losses.
    """
    from mathlib._data import sample_sinusoid_episodes, sinusoid_eval_set
    import optax

    from mathlib._inner import adapt_gd
    from mathlib._models import init_mlp
    from mathlib._models import mlp_mse_loss as _mlp_mse_loss
    from mathlib._outer import outer_optimizer

    fn = "sinusoid_runs_series"
    num_steps = check_int(fn, "num_steps", num_steps)
    eval_every = check_int(fn, "eval_every", eval_every)
    if num_steps % eval_every:
        raise ValueError(f"{fn}: argument 'eval_every' must divide num_steps={num_steps}, got {eval_every}")
    opt = outer_optimizer("adam", lr)
    eval_ep, _ = sinusoid_eval_set(eval_tasks, 10, 100)
    sizes = (1, *hidden, 1)

    def mlp_mse_loss(p, batch):
        return _mlp_mse_loss(p, batch, activation=activation)

    specs = []
    for spec in series.values():
        method, k_hessian, *rest = spec
        check_choice(fn, "method", method, ("maml", "fomaml", "hf_maml"))
        specs.append((method, check_int(fn, "k_hessian", k_hessian, minimum=0), float(rest[0]) if rest else 1e-2))
    kh_max = max(k for _, k, _ in specs)
    branches = [functools.partial(_one_step_correction, mlp_mse_loss, method=m, k_hessian=k, delta=d)
                for m, k, d in specs]

    def grad(v, k, p):
        # every series draws the same tasks and points (common random numbers); only the correction differs
        ep = sample_sinusoid_episodes(k, num_tasks, k_shot, k_shot, k_hessian=kh_max)
        hes = ep.support if ep.hessian is None else ep.hessian
        g = jax.grad(mlp_mse_loss)

        def task(sup, qry, h):
            vq = g(jax.tree_util.tree_map(lambda a, b: a - alpha * b, p, g(p, sup)), qry)
            corr = jax.lax.switch(v, branches, p, sup, h, vq)
            return jax.tree_util.tree_map(lambda a, b: a - alpha * b, vq, corr)

        return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=0), jax.vmap(task)(ep.support, ep.query, hes))

    def post_adapt(params):
        def one(sup, qry):
            return mlp_mse_loss(adapt_gd(mlp_mse_loss, params, sup, alpha, 1), qry)

        return jnp.mean(jax.vmap(one)(eval_ep.support, eval_ep.query))

    def run(v, key):
        k_init, k_train = jax.random.split(key)
        params = init_mlp(k_init, sizes, activation=activation)
        state = (params, opt.init(params))

        def step(state, k):
            p, s = state
            upd, s = opt.update(grad(v, k, p), s, p)
            return (optax.apply_updates(p, upd), s), None

        def chunk(state, ks):
            state, _ = jax.lax.scan(step, state, ks)
            return state, post_adapt(state[0])

        ks = jax.random.split(k_train, num_steps).reshape(num_steps // eval_every, eval_every)
        _, losses = jax.lax.scan(chunk, state, ks)
        return jnp.concatenate([post_adapt(params)[None], losses])

    def all_series(keys):
        # the series index is a scalar inside lax.map (not vmapped): each switch runs one branch
        return jax.lax.map(lambda v: jax.vmap(functools.partial(run, v))(keys), jnp.arange(len(specs)))

    with jax.threefry_partitionable(False):  # compiles faster on CPU (same distributions, other draws)
        prog = jax.jit(all_series)
        out = np.asarray(prog(keys) if compiler_options is None else prog.lower(keys).compile(dict(compiler_options))(keys))
    res = {}
    for name, o in zip(series, out):
        if not np.all(np.isfinite(o)):
            raise FloatingPointError(f"{fn}: series {name!r} produced a non-finite evaluation loss (the run diverged)")
        res[name] = o
    return res


def hf_direction_error(activation: str, deltas, key, num_tasks: int = 25, k_shot: int = 10,
                       alpha: float = 0.01, hidden=(40, 40)):
    r"""Relative error of the HF-MAML direction against exact MAML for an MLP on sinusoid episodes.

    float64 parameters and data at a random initialisation; both estimators use the support batch
    for the Hessian term (``hessian=None``); HF-MAML perturbs by a vector of length $\delta$
    (``delta_rule="per_task"``) for each $\delta$ in ``deltas``. With ``activation="relu"`` the
    gradient is discontinuous across kinks and the finite difference is not a Hessian-vector
    product. :func:`hf_direction_errors` for several activations at once. Claim 6.

    Returns:
        numpy array of $\|g_{HF}-g_{MAML}\|/\|g_{MAML}\|$, one per delta.
    """
    return hf_direction_errors((activation,), deltas, key, num_tasks=num_tasks, k_shot=k_shot, alpha=alpha,
                               hidden=hidden)[activation]


def hf_direction_errors(activations, deltas, key, num_tasks: int = 25, k_shot: int = 10,
                        alpha: float = 0.01, hidden=(40, 40)) -> dict:
    r""":func:`hf_direction_error` for each activation in ``activations``, from one compiled program.

    Every activation sees the same parameters and episodes (the initialisation does not depend on
    the activation). The program runs once and its run is negligible, so it is compiled at XLA's
    backend optimisation level 0 without the CPU fusion emitters (measured: 2.9 s of CPU time
    against 7.2 s for two programs at the default options; the errors agree to round-off). Claim 6.

    Returns:
        dict activation -> numpy array of relative errors, one per delta.
    """
    from jax.flatten_util import ravel_pytree

    from mathlib._core import Episode
    from mathlib._data import sample_sinusoid_episodes
    from mathlib._estimators import hf_maml_grad, maml_grad, meta_gradient
    from mathlib._models import init_mlp, mlp_mse_loss

    activations = tuple(activations)
    for a in activations:
        check_choice("hf_direction_errors", "activation", a, ("tanh", "relu"))

    def errors(key, ds):
        k1, k2 = jax.random.split(key)
        p = init_mlp(k1, (1, *hidden, 1), activation=activations[0], dtype=jnp.float64)
        ep = sample_sinusoid_episodes(k2, num_tasks, k_shot, k_shot, dtype=jnp.float64)
        ep = Episode(ep.support, ep.query, None)
        out = []
        for act in activations:
            loss = functools.partial(mlp_mse_loss, activation=act)
            g = ravel_pytree(meta_gradient(maml_grad, loss, p, ep, alpha=alpha))[0]

            def one(d, loss=loss, g=g):
                h = ravel_pytree(meta_gradient(hf_maml_grad, loss, p, ep, alpha=alpha, delta=d,
                                               delta_rule="per_task"))[0]
                return jnp.linalg.norm(h - g) / jnp.linalg.norm(g)

            out.append(jax.lax.map(one, ds))
        return out

    ds = jnp.asarray(deltas, jnp.float64)
    prog = jax.jit(errors).lower(key, ds).compile({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False})
    return {a: np.asarray(e) for a, e in zip(activations, prog(key, ds))}


# =============================================================================== second edition (issue 9)
def logistic_rho2(batch) -> float:
    r"""Lipschitz constant $\rho_2$ of the third derivative of :func:`mathlib.logistic_loss` on ``batch``.

    The loss is $\frac1n\sum_j\ell(x_j^\top w)$ plus a ridge term (no third derivative); the fourth
    derivative of $\ell(z)=\log(1+e^z)-yz$ is $\sigma'''(z)$, with $\max_z|\sigma'''(z)|=1/8$ (at $z=0$),
    so $\rho_2=\frac18\cdot\frac1n\sum_j\|x_j\|^4$. Used for the $\frac{\rho_2}6\delta^2\|v\|^3$ curve of
    {prf:ref}`fallah2020-lem-fd-hvp` on {numref}`fig-fallah2020-fd-hvp-error`.
    """
    x = jnp.asarray(batch[0])
    return float(0.125 * jnp.mean(jnp.linalg.norm(x, axis=-1) ** 4))


def cosine_rho2(tasks) -> float:
    r"""Lipschitz constant $\rho_2$ of the third derivative of cosine tasks (derived here).

    $\nabla^3f(w)[v]=a k^3\,U\,\mathrm{diag}\big(\sin(kU^\top(w-c))\odot U^\top v\big)U^\top$ and
    $|\sin s-\sin t|\le|s-t|$ give $\rho_2=\max_i a_ik_i^4\|U_i\|_2^2\max_j\|u_{ij}\|^2$, the analogue of
    :func:`mathlib.cosine_constants`' $\rho$ one derivative higher.
    """
    A, U = jnp.asarray(tasks.A), jnp.asarray(tasks.U)
    if A.ndim == 2:
        U = U[None]
    amp, freq = jnp.reshape(tasks.amp, (-1,)), jnp.reshape(tasks.freq, (-1,))
    u2 = jnp.linalg.norm(U, ord=2, axis=(-2, -1)) ** 2
    umax = jnp.max(jnp.linalg.norm(U, axis=-2), axis=-1)
    return float(jnp.max(amp * freq**4 * u2 * umax**2))


def linreg_batch_bias_prediction(tasks, alpha, w, n_in: int, n_out: int):
    r"""Closed-form mean of the stochastic MAML estimate minus $\nabla F(w)$, for three Hessian batches.

    Linear regression with Gaussian features ({prf:ref}`fallah2020-lem-independent-batches`):

    * ``"independent"`` ($D_h\perp D_{in},D_o$): $0$;
    * ``"support"`` ($D_h=D_{in}$, autodiff MAML): $+\frac{\alpha^2}{D_{in}}\E_i(\Sigma_i^3+\mathrm{tr}(\Sigma_i^2)\Sigma_i)(w-\theta_i)$,
      i.e. $\nabla\hat F(w)-\nabla F(w)$ (:func:`mathlib.linreg_maml_grad` with ``n_in``);
    * ``"query"`` ($D_h=D_o$): $-\frac{\alpha}{D_o}\E_i(\Sigma_i^2+\mathrm{tr}(\Sigma_i)\Sigma_i)(\tilde w_i-\theta_i)$.

    Returns dict arm -> numpy vector (d,).
    """
    from mathlib._synthetic import linreg_maml_grad

    S, th = tasks.cov, tasks.theta
    r = w[None] - th
    w_ad = w[None] - alpha * jnp.einsum("nij,nj->ni", S, r)
    S2 = S @ S
    trS = jnp.trace(S, axis1=-2, axis2=-1)
    q = jnp.einsum("nij,nj->ni", S2 + trS[:, None, None] * S, w_ad - th)
    sup = linreg_maml_grad(w, tasks, alpha, n_in) - linreg_maml_grad(w, tasks, alpha)
    return {"independent": np.zeros(w.shape[-1]), "support": np.asarray(sup),
            "query": np.asarray(-alpha / n_out * jnp.mean(q, axis=0))}


def batch_bias_experiment(tasks, alpha, w, n_in: int, n_out: int, n_hess: int, num_samples: int, seed: int):
    r"""Monte-Carlo mean of the MAML estimate at $w$ for three Hessian batches, with common random numbers.

    Every sample draws one task (uniform over the family) and Gaussian batches $D_{in}$, $D_o$, $D_h$
    (drawn with numpy, ``seed``; no compilation); the three arms use the **same** draws:
    ``"independent"`` (Hessian term on $D_h$), ``"support"`` ($D_h=D_{in}$, autodiff MAML) and
    ``"query"`` ($D_h=D_o$). The estimates are :func:`mathlib.maml_grad` (eager ``vmap``). Compared
    with :func:`linreg_batch_bias_prediction`. Claim 3 ({prf:ref}`fallah2020-lem-independent-batches`).

    Returns:
        dict arm -> dict(``bias`` = $\|\bar g-\nabla F(w)\|$, ``se`` = Monte-Carlo standard error of the
        mean (root of the summed coordinate variances over $N$), ``pred`` = $\|$prediction$\|$,
        ``dev`` = $\|\bar g-\nabla F(w)-\text{prediction}\|$), plus ``"support-independent"``: the paired
        difference of the two arms' means against the prediction $-\alpha\,\mathrm{Cov}$ (same keys).
    """
    from mathlib._core import Episode
    from mathlib._estimators import maml_grad, task_gradients
    from mathlib._synthetic import linreg_maml_grad, mse_loss

    num_samples = check_int("batch_bias_experiment", "num_samples", num_samples)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, tasks.theta.shape[0], num_samples)
    chol, th, sd = (np.asarray(a)[idx] for a in (tasks.cov_chol, tasks.theta, tasks.noise_std))
    dim = th.shape[-1]

    def batch(n):
        x = np.einsum("tnk,tjk->tnj", rng.standard_normal((num_samples, n, dim)), chol)
        y = np.einsum("tnj,tj->tn", x, th) + sd[:, None] * rng.standard_normal((num_samples, n))
        return jnp.asarray(x), jnp.asarray(y)

    sup, qry, hes = batch(n_in), batch(n_out), batch(n_hess)
    eps = {"independent": Episode(sup, qry, hes), "support": Episode(sup, qry, None), "query": Episode(sup, qry, qry)}
    exact = np.asarray(linreg_maml_grad(w, tasks, alpha))
    pred = linreg_batch_bias_prediction(tasks, alpha, w, n_in, n_out)
    g = {k: np.asarray(task_gradients(maml_grad, mse_loss, w, e, alpha=alpha)) for k, e in eps.items()}

    def summary(samples, centre, target):
        m = samples.mean(axis=0) - centre
        return {"bias": float(np.linalg.norm(m)),
                "se": float(np.sqrt(np.sum(samples.var(axis=0, ddof=1)) / num_samples)),
                "pred": float(np.linalg.norm(target)), "dev": float(np.linalg.norm(m - target))}

    out = {k: summary(v, exact, pred[k]) for k, v in g.items()}
    out["support-independent"] = summary(g["support"] - g["independent"], 0.0, pred["support"])
    return out


def linreg_noise_constants(tasks, alpha, w, seed: int = 0, num_samples: int = 2000):
    r"""Constants of the assumptions for linear-regression tasks, evaluated at $w$.

    * ``sigma``: $\sqrt{\E_i\|\nabla f_i(w)-\nabla f(w)\|^2}$ (task dissimilarity at $w$, exact);
    * ``sigma_tilde``: $\max_i\sqrt{\E_\theta\|\nabla f_i(w,\theta)-\nabla f_i(w)\|^2}$, exact for Gaussian
      features: $(w-\theta_i)^\top(\Sigma_i^2+\mathrm{tr}(\Sigma_i)\Sigma_i)(w-\theta_i)+s_i^2\mathrm{tr}\Sigma_i$;
    * ``sigma_h``: $\max_i\sqrt{\E\|xx^\top-\Sigma_i\|_2^2}$ (spectral norm; Monte Carlo, ``num_samples``
      points per task, numpy ``seed``), the Hessian-noise constant of {prf:ref}`fallah2020-asm-noise`;
    * ``dh_condition``: $\lceil2\alpha^2\sigma_H^2\rceil$, the restated Hessian-batch condition of
      {prf:ref}`fallah2020-thm-maml`.
    """
    S, th, s = tasks.cov, tasks.theta, tasks.noise_std
    r = w[None] - th
    g = jnp.einsum("nij,nj->ni", S, r)
    sigma = jnp.sqrt(jnp.mean(jnp.sum((g - g.mean(0)) ** 2, axis=-1)))
    S2 = S @ S
    trS = jnp.trace(S, axis1=-2, axis2=-1)
    st2 = jnp.einsum("ni,nij,nj->n", r, S2 + trS[:, None, None] * S, r) + s**2 * trS
    z = np.random.default_rng(seed).standard_normal((th.shape[0], num_samples, th.shape[1]))
    x = np.einsum("tnk,tjk->tnj", z, np.asarray(tasks.cov_chol))
    dev = np.einsum("tni,tnj->tnij", x, x) - np.asarray(S)[:, None]
    op = np.max(np.abs(np.linalg.eigvalsh(dev)), axis=-1)
    sh2 = float(np.max(np.mean(op**2, axis=1)))
    return {"sigma": float(sigma), "sigma_tilde": float(jnp.sqrt(jnp.max(st2))), "sigma_h": float(jnp.sqrt(sh2)),
            "dh_condition": int(np.ceil(2 * alpha**2 * float(sh2)))}


@functools.lru_cache(maxsize=None)
def _step_rule_program(loss, num_steps: int):
    from mathlib._diagnostics import exact_meta_gradient, exact_meta_objective, local_smoothness_bound

    def one(tasks, alpha, L, rho, value, adaptive, w0):
        def body(w, _):
            F = exact_meta_objective(loss, w, tasks, alpha)
            g = exact_meta_gradient(loss, w, tasks, alpha)
            Lw = local_smoothness_bound(loss, w, tasks, L, rho, alpha)
            tg = jax.vmap(lambda t: jax.grad(loss)(w, t))(tasks)
            sig = jnp.sqrt(jnp.mean(jnp.sum((tg - tg.mean(0)) ** 2, axis=-1)))
            beta = jnp.where(adaptive, value / Lw, value)
            return w - beta * g, (beta, F, jnp.linalg.norm(g), sig, Lw)

        return jax.lax.scan(body, w0, None, length=num_steps)[1]

    return jax.jit(jax.vmap(one, in_axes=(None, None, None, None, None, None, 0)))


def step_rule_runs(tasks, loss, alpha, L, rho, w0s, num_steps: int, *, c=None, beta=None):
    r"""Deterministic MAML from several starts with the adaptive step $c/L(w_k)$ or a constant $\beta$.

    Exactly one of ``c`` (adaptive, {prf:ref}`fallah2020-alg-stepsize` with the exact $L(w)$ of
    {prf:ref}`fallah2020-lem-smoothness`) and ``beta`` (constant control) is given. One compiled
    ``lax.scan`` for every rule (the rule and $c$ or $\beta$ are traced), ``vmap`` over the starts ``w0s`` (array (n, d)).
    Records at every iterate $w_k$ (before the step): the step size $\beta_k$, $F(w_k)$,
    $\|\nabla F(w_k)\|$, the task dissimilarity $\sigma(w_k)=\sqrt{\E_i\|\nabla f_i(w_k)-\nabla f(w_k)\|^2}$
    and $L(w_k)$. Claim 5 ({prf:ref}`fallah2020-thm-det-maml`, {prf:ref}`fallah2020-rem-step-size`).

    Returns:
        dict of numpy arrays (n, num_steps): ``beta``, ``loss``, ``grad_norm``, ``sigma``, ``Lw``.
    """
    num_steps = check_int("step_rule_runs", "num_steps", num_steps)
    if (c is None) == (beta is None):
        raise ValueError("step_rule_runs: give exactly one of 'c' (adaptive) and 'beta' (constant)")
    value = c if c is not None else beta
    check_positive("step_rule_runs", "c" if c is not None else "beta", value)
    w0s = jnp.asarray(w0s)
    dt = w0s.dtype
    prog = _step_rule_program(loss, num_steps)
    out = prog(tasks, jnp.asarray(alpha, dt), jnp.asarray(L, dt), jnp.asarray(rho, dt), jnp.asarray(value, dt),
               jnp.asarray(c is not None), w0s)
    keys = ("beta", "loss", "grad_norm", "sigma", "Lw")
    res = {k: np.asarray(v) for k, v in zip(keys, out)}
    if not np.all(np.isfinite(res["grad_norm"])):
        raise FloatingPointError("step_rule_runs: non-finite meta-gradient (the run diverged)")
    return res


def det_theorem_count_bound(loss_hist, grad_hist, sigma_hist, L, rho, alpha, c, eps):
    r"""Measured and derived number of iterates with $\|\nabla F(w_k)\|>\epsilon$ ({prf:ref}`fallah2020-thm-det-maml`).

    Bound: $(F(w_0)-F(w_T))\,(a+b\epsilon)/(c(1-c/2)\epsilon^2)$ with $m=2-(1+\alpha L)^2$,
    $a=4L+2\rho\alpha\sigma/m$, $b=2\rho\alpha/m$ and $\sigma=\max_k\sigma(w_k)$ (the proof uses
    {prf:ref}`fallah2020-asm-dissimilarity` only at the iterates). Needs $\alpha L<\sqrt2-1$.

    Returns ``(measured, bound)`` for one run (1-d arrays over iterations).
    """
    m = 2.0 - (1.0 + alpha * L) ** 2
    if m <= 0:
        raise ValueError("det_theorem_count_bound: needs alpha*L < sqrt(2)-1")
    sig = float(np.max(sigma_hist))
    a, b = 4 * L + 2 * rho * alpha * sig / m, 2 * rho * alpha / m
    drop = float(loss_hist[0] - loss_hist[-1])
    return int(np.sum(np.asarray(grad_hist) > eps)), drop * (a + b * eps) / (c * (1 - c / 2) * eps**2)


def hf_maml_target_grad(loss, params, episode, alpha, eps, rho):
    r"""HF-MAML with the working perturbation $\delta_i=2\epsilon/(\alpha\rho\|v_i\|^2)$ (derived here).

    By {prf:ref}`fallah2020-lem-fd-hvp` the central difference errs by at most $\frac\rho2\delta_i\|v_i\|^2$,
    so $\alpha\|d_i-\nabla^2f_i v_i\|\le\epsilon$ for every task and the direction is within $\epsilon$ of
    MAML's ({prf:ref}`fallah2020-prop-hf-delta`). Calls :func:`mathlib.hf_maml_grad` with that
    (traced) $\delta_i$ and ``delta_rule="fixed"``; $v_i=0$ gives $\delta_i=1$ (any $\delta$ is exact then).
    """
    from mathlib._core import tree_norm
    from mathlib._estimators import hf_maml_grad

    g = jax.grad(loss)
    w_ad = jax.tree_util.tree_map(lambda p, q: p - alpha * q, params, g(params, episode.support))
    nv = tree_norm(g(w_ad, episode.query))
    d = jnp.where(nv > 0, 2.0 * eps / (alpha * rho * jnp.where(nv > 0, nv, 1.0) ** 2), 1.0)
    return hf_maml_grad(loss, params, episode, alpha, d, delta_rule="fixed")


def hf_floor_bound(tasks, loss, alpha, w, delta, rho2):
    r"""Derived floor of deterministic HF-MAML with a fixed $\delta$: $\alpha\frac{\rho_2}6\delta^2\,\E_i\|v_i\|^3$.

    At an HF-MAML fixed point $\nabla F(w)=\alpha\E_i(d_i-\nabla^2f_iv_i)$, and each term is at most
    $\frac{\rho_2}6\delta^2\|v_i\|^3$ ({prf:ref}`fallah2020-lem-fd-hvp`), $v_i=\nabla f_i(\tilde w_i)$ at ``w``.
    """
    g = jax.vmap(lambda t: jax.grad(loss)(w - alpha * jax.grad(loss)(w, t), t))(tasks)
    return float(alpha * rho2 / 6 * delta**2 * jnp.mean(jnp.linalg.norm(g, axis=-1) ** 3))


def _hf_rule_grad(loss, params, episode, alpha, h, power, c_maml, c_fo, c_hf):
    r"""One task's direction of :func:`hf_rule_runs` for a traced rule (one compiled program serves all rules).

    ``c_maml * maml_grad + c_fo * fomaml_grad + c_hf * hf_maml_grad`` (one-hot weights), the latter with the
    per-task $\delta_i=h\,\|v_i\|^{-p}$ and ``delta_rule="fixed"``: $p=0$ is a fixed $\delta=h$, $p=1$ with
    $h=1/(6\rho\alpha)$ is the theorem's rule (``delta_rule="per_task"``), $p=2$ with $h=2\epsilon/(\alpha\rho)$
    is :func:`hf_maml_target_grad`; $v_i=0$ gives $\delta_i=h$.
    """
    from mathlib._core import tree_norm
    from mathlib._estimators import fomaml_grad, hf_maml_grad, maml_grad

    g = jax.grad(loss)
    w_ad = jax.tree_util.tree_map(lambda p, q: p - alpha * q, params, g(params, episode.support))
    nv = tree_norm(g(w_ad, episode.query))
    d = h / jnp.where(nv > 0, nv, 1.0) ** power
    parts = (maml_grad(loss, params, episode, alpha), fomaml_grad(loss, params, episode, alpha),
             hf_maml_grad(loss, params, episode, alpha, d, delta_rule="fixed"))
    return jax.tree_util.tree_map(lambda a, b, c: c_maml * a + c_fo * b + c_hf * c, *parts)


@functools.lru_cache(maxsize=None)
def _hf_program(loss, num_steps: int):
    from mathlib._core import Episode
    from mathlib._diagnostics import exact_meta_gradient
    from mathlib._estimators import meta_gradient

    def one(tasks, alpha, beta, w0, rule):
        ep = Episode.deterministic(tasks)
        h, power, cm, cf, ch = rule

        def body(w, _):
            step = meta_gradient(_hf_rule_grad, loss, w, ep, alpha=alpha, h=h, power=power, c_maml=cm, c_fo=cf,
                                 c_hf=ch)
            return w - beta * step, jnp.linalg.norm(exact_meta_gradient(loss, w, tasks, alpha))

        return jax.lax.scan(body, w0, None, length=num_steps)

    return jax.jit(jax.vmap(one, in_axes=(None, None, None, None, 0)))


def hf_rule_runs(tasks, loss, alpha, rho, beta, w0, num_steps: int, *, deltas=(), targets=()):
    r"""Deterministic MAML, FO-MAML and HF-MAML with several perturbation rules, one program per rule.

    Rules: ``"maml"``, ``"fomaml"``, ``"theorem"`` ($\delta_i=1/(6\rho\alpha\|v_i\|)$), ``"delta=<d>"``
    (fixed $\delta$, central, {prf:ref}`fallah2020-lem-fd-hvp`) for each of ``deltas``, and
    ``"target=<e>"`` ($\delta_i=2\epsilon/(\alpha\rho\|v_i\|^2)$, :func:`hf_maml_target_grad`) for each
    $\epsilon$ in ``targets``. Every rule is a traced row of :func:`_hf_rule_grad`'s parameters and the
    rules are vmapped, so one compilation serves every rule, value and task family of the same shape.
    Constant step ``beta``.
    Claim 5.

    Returns:
        dict name -> numpy array of exact $\|\nabla F(w_k)\|$ ($k=0..T-1$), and ``"final_w"``: dict
        name -> final parameters.
    """
    num_steps = check_int("hf_rule_runs", "num_steps", num_steps)
    check_positive("hf_rule_runs", "rho", rho)
    w0 = jnp.asarray(w0)
    dt = w0.dtype
    args = (tasks, jnp.asarray(alpha, dt), jnp.asarray(rho, dt), jnp.asarray(beta, dt), w0)
    out, finals = {}, {}
    names, rules = ["maml", "fomaml", "theorem"], [(1.0, 0, 1, 0, 0), (1.0, 0, 0, 1, 0), (1.0 / (6 * rho * alpha), 1, 0, 0, 1)]
    for d in deltas:
        names.append(f"delta={d:g}")
        rules.append((d, 0, 0, 0, 1))
    for e in targets:
        names.append(f"target={e:g}")
        rules.append((2.0 * e / (alpha * rho), 2, 0, 0, 1))
    rule = jnp.asarray(np.asarray(rules, dtype=np.float64), dt).T
    w, hist = _hf_program(loss, num_steps)(tasks, args[1], args[3], w0, tuple(rule))
    for j, nm in enumerate(names):
        out[nm], finals[nm] = np.asarray(hist[j]), w[j]
    out["final_w"] = finals
    return out


# =============================================================================== stochastic, non-quadratic (issue 9)
def logistic_meta_family(key, num_tasks: int, n_points: int, dim: int, *, spread: float = 2.0,
                         scale_spread: float = 0.5, l2: float = 1e-2, dtype=jnp.float64):
    r"""A finite family of logistic-regression tasks with finite datasets, and its constants.

    Task $i$ is :func:`mathlib.logistic_loss` (ridge ``l2``) on its own ``n_points`` examples from
    :func:`mathlib.sample_logistic_tasks`; $f_i$ is the loss on the whole dataset, so
    $F(w)=\frac1N\sum_if_i(w-\alpha\nabla f_i(w))$ and its gradient are exact
    (:func:`mathlib.exact_meta_gradient`). Constants: $L=\max_i\frac1{4n}\|X_i\|_2^2+\lambda$ (smoothness of
    every $f_i$) and $\rho=\max|\sigma''|\max_{i,j}\|x_{ij}\|^3$, a Hessian-Lipschitz constant of the loss on
    **any** sub-batch (the one the derived HF-MAML rule needs for stochastic $\mathcal D_h$).

    Returns:
        ``(loss, data, L, rho)`` with ``data = (x, y)`` of shapes ``(N, n, d)`` and ``(N, n)``.
    """
    from mathlib._data import sample_logistic_tasks

    data = sample_logistic_tasks(key, num_tasks, n_points, 1, dim, spread=spread, scale_spread=scale_spread,
                                 dtype=dtype).support
    x = np.asarray(data[0])
    L = float(np.max(np.linalg.norm(x, ord=2, axis=(-2, -1)) ** 2 / n_points) / 4 + l2)
    rho = float(SIGMOID_D2_MAX * np.max(np.linalg.norm(x, axis=-1) ** 3))
    return _logistic_l2_loss(float(l2)), data, L, rho


def _sample_batches(key, data, task_idx, sizes):
    """Per slot (task ``task_idx[j]``): batches of the given sizes, drawn with replacement from its dataset."""
    x, y = data
    n = x.shape[1]
    idx = jax.random.randint(key, (task_idx.shape[0], sum(sizes)), 0, n)
    xs, ys = x[task_idx[:, None], idx], y[task_idx[:, None], idx]
    out, a = [], 0
    for s in sizes:
        out.append((xs[:, a:a + s], ys[:, a:a + s]))
        a += s
    return out


def logistic_direction(loss, params, episode, alpha, eps, rho, c_maml, c_hf):
    r"""One task's MAML, HF-MAML or FO-MAML direction as one traced formula (one compiled program for all three).

    With $v=\nabla f(w-\alpha\nabla f(w;\mathcal D_{in});\mathcal D_o)$, the direction is
    $v-\alpha\,[c_{maml}\,\nabla^2f(w;\mathcal D_h)v+c_{hf}\,d]$ where the exact product is
    :func:`mathlib._fd.hvp` and $d$ is the central difference :func:`mathlib._fd.fd_hvp` with the derived
    $\delta=2\epsilon/(\alpha\rho\|v\|^2)$ ({prf:ref}`fallah2020-prop-hf-delta`). $(1,0)$ is
    :func:`mathlib.maml_grad`, $(0,1)$ is :func:`hf_maml_target_grad` (= :func:`mathlib.hf_maml_grad` with that
    $\delta$), $(0,0)$ is :func:`mathlib.fomaml_grad`, all with the episode's independent $\mathcal D_h$;
    ``tests/test_experiments_fallah2020.py`` checks the three identities. Computing both products for every
    method costs about 1.8 times the cheapest separate programs but compiles once.
    """
    def derived_delta(nv):
        return jnp.where(nv > 0, 2.0 * eps / (alpha * rho * jnp.where(nv > 0, nv, 1.0) ** 2), 1.0)

    return _blended_direction(loss, params, episode, alpha, derived_delta, c_maml, c_hf)


#: methods of :func:`logistic_stochastic_runs`: name -> (c_maml, c_hf) of :func:`logistic_direction`
LOGISTIC_METHODS = {"maml": (1.0, 0.0), "hf_maml": (0.0, 1.0), "fomaml": (0.0, 0.0)}


def logistic_stochastic_runs(loss, data, alpha, beta, rho, eps, batch_sizes, n_batch: int, num_steps: int,
                             eval_every: int, keys):
    r"""Stochastic MAML, HF-MAML (derived $\delta$) and FO-MAML on a finite logistic family, exact $\|\nabla F\|$.

    Each outer step, for every method, batch size and seed: $B$ tasks uniform with replacement from the
    family and, per task, independent batches $\mathcal D_{in},\mathcal D_o,\mathcal D_h$ of ``n_batch``
    examples drawn with replacement from its dataset (Fallah et al., Alg. 1 and 3 with an independent
    Hessian batch; Alg. 2). The direction is :func:`logistic_direction`; constant step ``beta``. The
    three methods and every $B$ of a seed use the same task and data draws (common random numbers;
    the $B$ of a seed share a pool of $\sum B$ slots, each run averaging its own $B$). The exact
    $\|\nabla F(w_k)\|$ (:func:`mathlib.exact_meta_gradient` over all tasks and all data) is recorded every
    ``eval_every`` steps. One compiled program (``vmap`` over seeds and methods, ``lax.scan`` over steps).
    Issue 9, "MAML and HF-MAML reach any accuracy".

    Returns:
        dict method -> numpy array (len(batch_sizes), len(keys), num_steps // eval_every) of exact
        $\|\nabla F(w_k)\|$ at $k=0,$ ``eval_every``, ...
    """
    fn = "logistic_stochastic_runs"
    bs = tuple(check_int(fn, "batch_sizes", b) for b in batch_sizes)
    n_batch = check_int(fn, "n_batch", n_batch)
    num_steps = check_int(fn, "num_steps", num_steps)
    eval_every = check_int(fn, "eval_every", eval_every)
    if num_steps % eval_every:
        raise ValueError(f"{fn}: num_steps ({num_steps}) must be a multiple of eval_every ({eval_every})")
    check_positive(fn, "eps", eps)
    dt = data[0].dtype
    coef = jnp.asarray(np.asarray(list(LOGISTIC_METHODS.values()), np.float64), dt)
    run = _logistic_program(loss, bs, n_batch, num_steps // eval_every, eval_every)
    with jax.threefry_partitionable(False):
        out = np.asarray(run(data, jnp.asarray(alpha, dt), jnp.asarray(beta, dt), jnp.asarray(rho, dt),
                             jnp.asarray(eps, dt), coef, keys))  # (methods, seeds, T, len(bs))
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"{fn}: a run diverged (non-finite gradient norm); reduce beta")
    return {m: np.moveaxis(out[j], -1, 0) for j, m in enumerate(LOGISTIC_METHODS)}


def _logistic_exact_grad(loss, w, data, alpha):
    r"""Exact $\nabla F(w)=\frac1N\sum_i(I-\alpha\nabla^2f_i(w))\nabla f_i(w-\alpha\nabla f_i(w))$ over the whole family
    (:func:`logistic_direction` with every batch the task's full dataset; equals
    :func:`mathlib.exact_meta_gradient`, checked in ``tests/test_experiments_fallah2020.py``)."""
    from mathlib._core import Episode

    return jnp.mean(jax.vmap(lambda e: logistic_direction(loss, w, e, alpha, 1.0, 1.0, 1.0, 0.0))(
        Episode(data, data, data)), axis=0)


@functools.lru_cache(maxsize=None)
def _logistic_program(loss, bs, n_batch, n_evals, eval_every):
    from mathlib._core import Episode

    owner = np.repeat(np.arange(len(bs)), bs)
    n_slots = int(owner.size)
    inv_b = 1.0 / np.asarray(bs, np.float64)

    def one(data, alpha, beta, rho, eps, c, key):  # one method (c), one seed
        n_tasks, n_points, d = data[0].shape
        dt = data[0].dtype
        own = jnp.asarray(owner)
        scale = jnp.asarray(inv_b, dt)[:, None]

        def step(w, r):  # w: (len(bs), d); r: this step's task indices (slots,) and example indices (slots, 3 D)
            t, idx = r
            xs, ys = data[0][t[:, None], idx], data[1][t[:, None], idx]
            ep = Episode(*((xs[:, j * n_batch:(j + 1) * n_batch], ys[:, j * n_batch:(j + 1) * n_batch]) for j in range(3)))
            est = jax.vmap(lambda wj, e: logistic_direction(loss, wj, e, alpha, eps, rho, c[0], c[1]))(w[own], ep)
            return w - beta * jax.ops.segment_sum(est, own, num_segments=len(bs)) * scale, None

        def block(w, k):  # one random call per block of eval_every steps (cheaper to compile)
            u = jax.random.randint(k, (eval_every, n_slots, 3 * n_batch + 1), 0, n_tasks * n_points)
            r = (u[..., 0] % n_tasks, u[..., 1:] % n_points)
            gn = jax.vmap(lambda wj: jnp.linalg.norm(_logistic_exact_grad(loss, wj, data, alpha)))(w)
            return jax.lax.scan(step, w, r)[0], gn

        return jax.lax.scan(block, jnp.zeros((len(bs), d), dt), jax.random.split(key, n_evals))[1]

    seeds = jax.vmap(one, in_axes=(None, None, None, None, None, None, 0))
    return jax.jit(jax.vmap(seeds, in_axes=(None, None, None, None, None, 0, None)))


def logistic_deterministic(loss, data, alpha, beta, num_steps: int, method: str = "maml"):
    r"""Full-batch MAML or FO-MAML (constant ``beta``) from $w=0$ on a logistic family: final $w$ and $\|\nabla F(w)\|$.

    FO-MAML's final $\|\nabla F\|$ after many steps is its floor ({prf:ref}`fallah2020-lem-fomaml-floor`);
    MAML's final $w$ is the stationary point used by :func:`logistic_inner_bias`.
    """
    check_choice("logistic_deterministic", "method", method, ("maml", "fomaml"))
    num_steps = check_int("logistic_deterministic", "num_steps", num_steps)
    w, gn = _logistic_det_program(loss, num_steps)(data, jnp.asarray(alpha, data[0].dtype),
                                                    jnp.asarray(beta, data[0].dtype),
                                                    jnp.asarray(1.0 if method == "maml" else 0.0, data[0].dtype))
    return w, float(gn)


@functools.lru_cache(maxsize=None)
def _logistic_det_program(loss, num_steps):
    from mathlib._core import Episode

    def run(data, alpha, beta, c):
        ep = Episode(data, data, data)  # full data for D_in, D_o, D_h: the exact task gradients of F

        def body(w, _):
            g = jax.vmap(lambda e: logistic_direction(loss, w, e, alpha, 1.0, 1.0, c, 0.0))(ep)
            return w - beta * jnp.mean(g, axis=0), None

        w = jax.lax.scan(body, jnp.zeros(data[0].shape[-1], data[0].dtype), None, length=num_steps)[0]
        return w, jnp.linalg.norm(_logistic_exact_grad(loss, w, data, alpha))

    return jax.jit(run)


@functools.lru_cache(maxsize=None)
def _inner_bias_program(loss, num_samples, n_batch):
    g = jax.grad(loss)

    def diff(w, data, alpha, key):
        k1, k2 = jax.random.split(key)
        t = jax.random.randint(k1, (num_samples,), 0, data[0].shape[0])
        d_in, d_o, d_h = _sample_batches(k2, data, t, (n_batch, n_batch, n_batch))
        w_full = jax.vmap(lambda f: w - alpha * g(w, f))(data)  # exact inner step of every task

        def one(a, b, c, wf):
            # (I - alpha H(D_h)) is linear: apply it once to the difference of the two outer gradients
            dv = g(w - alpha * g(w, a), b) - g(wf, b)
            return dv - alpha * hvp(loss, w, c, dv)

        dd = jax.vmap(one)(d_in, d_o, d_h, w_full[t])
        return jnp.linalg.norm(jnp.mean(dd, 0)), jnp.sqrt(jnp.sum(jnp.var(dd, 0, ddof=1)) / num_samples)

    return jax.jit(diff)


def logistic_inner_bias(loss, data, alpha, w, n_batch: int, num_samples: int, key):
    r"""Inner-step bias of stochastic MAML at $w$: $\|\E\hat g-\nabla F(w)\|$ and its Monte-Carlo standard error.

    $\hat g=(I-\alpha\nabla^2f_i(w;\mathcal D_h))\nabla f_i(w-\alpha\nabla f_i(w;\mathcal D_{in});\mathcal D_o)$
    with independent batches; replacing $\nabla f_i(w;\mathcal D_{in})$ by the task's full gradient gives
    an estimate $\hat g^\circ$ with mean exactly $\nabla F(w)$ ($\mathcal D_o\perp\mathcal D_h$,
    {prf:ref}`fallah2020-lem-independent-batches`). So the bias is $\E[\hat g-\hat g^\circ]$, estimated from
    the same draws (common random numbers), which makes its standard error small. This is the part of the
    error that no task batch $B$ removes (the $\tilde\sigma^2/D_{in}$ term).
    """
    num_samples = check_int("logistic_inner_bias", "num_samples", num_samples)
    n_batch = check_int("logistic_inner_bias", "n_batch", n_batch)
    with jax.threefry_partitionable(False):
        bias, se = _inner_bias_program(loss, num_samples, n_batch)(jnp.asarray(w), data,
                                                                    jnp.asarray(alpha, data[0].dtype), key)
    return float(bias), float(se)
