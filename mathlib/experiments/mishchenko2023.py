r"""Experiment drivers for the chapter on Mishchenko, Hanzely, Richtárik (ICML 2023).

Chapter-specific closed forms, bounds and sweeps built on the core API of ``mathlib``. Nothing
here is re-exported from ``mathlib``; notebooks import it as
``from mathlib.experiments import mishchenko2023 as ex``.

Notation (book page ``mishchenko2023/setup``): tasks $f_i$, proximal weight $\lambda$, Moreau
envelope $M_i=M_{\lambda f_i}$, the *s-step method*
$z^0=w,\ z^{j+1}=w-\lambda\nabla f_i(z^j)$ ($j<s$), direction $\nabla f_i(z^s)$ ($s=1$: FO-MAML with
$\alpha=\lambda$), its perturbed point $y=z^s+\lambda\nabla f_i(z^s)$ with $\nabla M_i(y)=\nabla f_i(z^s)$.
Every function names the claim it serves and the book label of the result it checks.
"""

from __future__ import annotations

import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import mathlib as ml
from mathlib.validate import check_int, check_positive

__all__ = [
    "FAST_COMPILE",
    "jit_sample",
    "envelope_constants",
    "envelope_eigs",
    "moreau_value",
    "random_spd",
    "sstep_polynomial",
    "quadratic_sstep_grad",
    "quadratic_sstep_fixed_point",
    "quadratic_sstep_fixed_points",
    "quadratic_imaml_minimizer",
    "quadratic_joint_minimizer",
    "minimizers",
    "sstep_point",
    "sstep_direction",
    "perturbed_point",
    "naive_radius",
    "perturbed_radius",
    "stochastic_bound",
    "quadratic_sstep_curves",
    "quadratic_stochastic_runs",
    "stationary_second_moment",
    "ridge_logistic",
    "digits_tasks",
    "logistic_smoothness",
    "logistic_sstep_runs",
    "logistic_moreau_grad_exact",
    "logistic_prox_exact",
    "logistic_moreau_minimizer",
    "kink_f",
    "kink_grad",
    "kink_prox",
    "kink_imaml_value",
    "kink_moreau_value",
    "smooth_kink_min_curvature",
    "smooth_kink_prediction",
    "cg_bound",
    "fit_ratio",
]


#: ``compiler_options`` for ``jax.jit`` of the chapter's programs, which run once or a few times and
#: whose compilation costs far more than their run: LLVM optimisation level 0 compiles about twice as
#: fast; results agree with the default level to round-off.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


from mathlib._core import jit_sample  # noqa: E402  (re-exported: the core's compiled-sampler helper)


# =============================================================================== claim 1
def envelope_constants(L, mu, lam):
    r"""$L_M=L/(1+\lambda L)$, $\mu_M=\mu/(1+\lambda\mu)$, $\kappa_M=L_M/\mu_M$ (Book: {prf:ref}`mishchenko2023-lem-conditioning`)."""
    L, mu, lam = float(L), float(mu), float(lam)
    LM, muM = L / (1 + lam * L), mu / (1 + lam * mu)
    return {"L_M": LM, "mu_M": muM, "kappa_M": LM / muM}


def envelope_eigs(h, lam):
    r"""Eigenvalues $h/(1+\lambda h)$ of $\nabla^2M_{\lambda f}$ from those $h$ of $\nabla^2 f(\mathrm{prox})$."""
    h = np.asarray(h, dtype=float)
    return h / (1.0 + lam * h)


def moreau_value(loss, w, batch, lam, p):
    r"""$M_{\lambda f}(w)$ evaluated at a given prox point $p$: $f(p)+\|p-w\|^2/(2\lambda)$."""
    return loss(p, batch) + jnp.sum((p - w) ** 2) / (2.0 * lam)


def random_spd(key, dim: int, eigs):
    """A symmetric matrix $Q\\,\\mathrm{diag}(\\text{eigs})\\,Q^\\top$ with a Haar-random orthogonal $Q$."""
    return _random_spd(key, check_int("random_spd", "dim", dim), jnp.asarray(eigs, jnp.float64))


@partial(jax.jit, static_argnums=1, compiler_options=FAST_COMPILE)
def _random_spd(key, dim, eigs):
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim), dtype=jnp.float64))
    q = q * jnp.sign(jnp.diagonal(r))[None, :]
    return (q * jnp.asarray(eigs, jnp.float64)[None, :]) @ q.T


# =============================================================================== claim 2: closed forms
def sstep_polynomial(A, lam, s: int):
    r"""$P_s=\sum_{t=0}^{s}(-\lambda A)^t$ (batched over a leading axis): the $s$-step direction on a
    quadratic task is $\nabla f_i(z^s)=A_iP_{s,i}(w-b_i)$ (Book: {prf:ref}`mishchenko2023-lem-quadratic-sstep`)."""
    s = check_int("sstep_polynomial", "s", s)
    A = jnp.asarray(A)
    eye = jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A.shape)
    P, term = eye, eye
    for _ in range(s):
        term = -lam * A @ term
        P = P + term
    return P


def _sstep_polynomial_traced(A, lam, s):
    r""":func:`sstep_polynomial` with ``s`` a traced integer (``lax.fori_loop``): one compilation for every $s$."""
    eye = jnp.broadcast_to(jnp.eye(A.shape[-1], dtype=A.dtype), A.shape)

    def body(_, c):
        P, term = c
        term = -lam * A @ term
        return P + term, term

    return jax.lax.fori_loop(0, s, body, (eye, eye))[0]


def quadratic_sstep_grad(w, tasks, lam, s: int):
    r"""Full-batch $s$-step direction $\frac1n\sum_iA_iP_{s,i}(w-b_i)$."""
    G = tasks.A @ sstep_polynomial(tasks.A, lam, s)
    return jnp.mean(jnp.einsum("nij,nj->ni", G, w[None, :] - tasks.b), axis=0)


def _solve_mean(M, b):
    return jnp.linalg.solve(jnp.mean(M, 0), jnp.mean(jnp.einsum("nij,nj->ni", M, b), 0))


def quadratic_sstep_fixed_point(tasks, lam, s: int):
    r"""Fixed point $w_s=(\sum_iA_iP_{s,i})^{-1}\sum_iA_iP_{s,i}b_i$ of the full-batch $s$-step method."""
    return _solve_mean(tasks.A @ sstep_polynomial(tasks.A, lam, s), tasks.b)


def _resolvent(A, lam):
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    return jnp.linalg.inv(eye[None] + lam * A)


def quadratic_sstep_fixed_points(tasks, lam, s_max: int):
    r"""Fixed points $w_1,\dots,w_{s_{\max}}$ of :func:`quadratic_sstep_fixed_point` (rows), in NumPy
    (float64; no compilation, which on these sizes costs far more than the arithmetic)."""
    s_max = check_int("quadratic_sstep_fixed_points", "s_max", s_max)
    A, b = np.asarray(tasks.A, np.float64), np.asarray(tasks.b, np.float64)
    P = term = np.broadcast_to(np.eye(A.shape[-1]), A.shape)
    out = []
    for _ in range(s_max):
        term = -lam * A @ term
        P = P + term
        G = A @ P
        out.append(np.linalg.solve(G.mean(0), np.einsum("nij,nj->ni", G, b).mean(0)))
    return np.stack(out)


def quadratic_imaml_minimizer(tasks, lam):
    r"""Minimiser of $\frac1n\sum_if_i(\mathrm{prox}_{\lambda f_i}(w))=\frac1n\sum_i\frac12(w-b_i)^\top R_iA_iR_i(w-b_i)$, $R_i=(I+\lambda A_i)^{-1}$."""
    R = _resolvent(tasks.A, lam)
    return _solve_mean(R @ tasks.A @ R, tasks.b)


def quadratic_joint_minimizer(tasks):
    r"""Minimiser $(\sum_iA_i)^{-1}\sum_iA_ib_i$ of joint training $\frac1n\sum_if_i$."""
    return _solve_mean(tasks.A, tasks.b)


def minimizers(tasks, lam):
    r"""The five minimisers of {numref}`mishchenko2023-tab-objectives` on quadratic tasks ($\alpha=\lambda$, one step)."""
    return {
        "moreau": ml.quadratic_moreau_minimizer(tasks, lam),
        "fomaml": ml.quadratic_fomaml_fixed_point(tasks, lam, 1),
        "maml": ml.quadratic_maml_minimizer(tasks, lam, 1),
        "imaml": quadratic_imaml_minimizer(tasks, lam),
        "joint": quadratic_joint_minimizer(tasks),
    }


# =============================================================================== the s-step method, any loss
def sstep_point(loss, w, batch, lam, s):
    r"""$z^s$ of $z^0=w$, $z^{j+1}=w-\lambda\nabla f(z^j)$; ``s`` may be traced (``lax.fori_loop``).

    Book: {prf:ref}`mishchenko2023-alg-sstep`. Same iterates as :func:`mathlib.prox_solve` with
    ``lr=lam`` (its ``steps`` $=s$).
    """
    g = jax.grad(loss)
    return jax.lax.fori_loop(0, s, lambda _, z: w - lam * g(z, batch), w)


def sstep_direction(loss, w, batch, lam, s):
    r"""$s$-step direction $\nabla f(z^s)$; equals :func:`mathlib.fomaml_grad` (``alpha=lam``, one step)
    for $s=1$ and ``mathlib.moreau_grad(..., steps=s+1, lr=lam)`` for every $s$."""
    return jax.grad(loss)(sstep_point(loss, w, batch, lam, s), batch)


def perturbed_point(loss, w, batch, lam, s):
    r"""$(z^s, y)$ with $y=z^s+\lambda\nabla f(z^s)$, so that $\mathrm{prox}_{\lambda f}(y)=z^s$ and
    $\nabla M_{\lambda f}(y)=\nabla f(z^s)$ (Book: {prf:ref}`mishchenko2023-lem-perturbed`)."""
    z = sstep_point(loss, w, batch, lam, s)
    return z, z + lam * jax.grad(loss)(z, batch)


# =============================================================================== bounds (derived here)
def naive_radius(lam, L, mu, s, sigma_bar):
    r"""Bias-only bound $\kappa_M\lambda(\lambda L)^s\bar\sigma/(1-\kappa_M(\lambda L)^{s+1})$ on $\limsup\|w_k-w^\star\|$;
    ``nan`` where its condition $\kappa_M(\lambda L)^{s+1}<1$ fails (Book: {prf:ref}`mishchenko2023-thm-naive`)."""
    k = envelope_constants(L, mu, lam)["kappa_M"]
    s = np.asarray(s, dtype=float)
    q = k * (lam * L) ** (s + 1)
    return np.where(q < 1, k * lam * (lam * L) ** s * sigma_bar / np.maximum(1 - q, 1e-300), np.nan)


def perturbed_radius(lam, L, mu, s, sigma_rms):
    r"""Perturbed-iterate bound $\sqrt{24\kappa_M}\,\lambda(\lambda L)^s\sigma_f$ on $\limsup\|w_k-w^\star\|$;
    ``nan`` where its condition $24\kappa_M(\lambda L)^{2s+2}\le1$ fails (Book: {prf:ref}`mishchenko2023-thm-perturbed`)."""
    k = envelope_constants(L, mu, lam)["kappa_M"]
    s = np.asarray(s, dtype=float)
    ok = 24 * k * (lam * L) ** (2 * s + 2) <= 1
    return np.where(ok, np.sqrt(24 * k) * lam * (lam * L) ** s * sigma_rms, np.nan)


def stochastic_bound(lam, L, mu, s, sigma_f, sigma_M, beta, tau, n):
    r"""Bound $36\kappa_M\lambda^2(\lambda L)^{2s}\sigma_f^2+12\beta c_\tau\sigma_M^2/\mu_M$ on $\limsup\mathbb E\|w_k-w^\star\|^2$,
    $c_\tau=(n-\tau)/(\tau(n-1))$; ``nan`` outside its conditions $72\kappa_M(\lambda L)^{2s+2}\le1$,
    $\beta\le\min\{1/(2L_M),\mu_M/(24c_\tau L_M^2)\}$ (Book: {prf:ref}`mishchenko2023-thm-stochastic`)."""
    c = envelope_constants(L, mu, lam)
    k, LM, muM = c["kappa_M"], c["L_M"], c["mu_M"]
    beta, tau = np.asarray(beta, dtype=float), np.asarray(tau, dtype=float)
    ctau = (n - tau) / (tau * (n - 1))
    val = 36 * k * lam**2 * (lam * L) ** (2 * s) * sigma_f**2 + 12 * beta * ctau * sigma_M**2 / muM
    ok = (72 * k * (lam * L) ** (2 * s + 2) <= 1) & (beta <= 1 / (2 * LM)) & (beta * 24 * ctau * LM**2 <= muM)
    return np.where(ok, val, np.nan)


# =============================================================================== claim 2: runs
@partial(jax.jit, static_argnums=(4,), compiler_options=FAST_COMPILE)
@partial(jax.vmap, in_axes=(None, None, None, 0, None, None, None))
def _quadratic_run(tasks, lam, beta, s, num_steps, w0, w_star):
    G = tasks.A @ _sstep_polynomial_traced(tasks.A, lam, s)
    Gb = jnp.einsum("nij,nj->ni", G, tasks.b).mean(0)
    Gm = G.mean(0)

    def step(w, _):
        w = w - beta * (Gm @ w - Gb)
        return w, jnp.linalg.norm(w - w_star)

    _, d = jax.lax.scan(step, w0, None, length=num_steps)
    return d


def quadratic_sstep_curves(tasks, lam, s_values, beta, num_steps: int, w0=None):
    r"""Full-batch $s$-step runs: $\|w_k-w^\star\|$ per step for each $s$ (dict ``s -> array``)."""
    num_steps = check_int("quadratic_sstep_curves", "num_steps", num_steps)
    w_star = ml.quadratic_moreau_minimizer(tasks, lam)
    w0 = jnp.zeros_like(w_star) if w0 is None else w0
    s_values = [int(s) for s in s_values]
    d = np.asarray(_quadratic_run(tasks, lam, beta, jnp.asarray(s_values), num_steps, w0, w_star))  # all s at once
    return {s: d[j] for j, s in enumerate(s_values)}


@partial(jax.jit, static_argnums=(4, 5))
def _stochastic_runs(tasks, lam, w_star, s, num_steps, burn_in, betas, taus, keys, w0):
    n = tasks.A.shape[0]
    G = tasks.A @ _sstep_polynomial_traced(tasks.A, lam, s)  # s traced: one compilation for every s
    Gb = jnp.einsum("nij,nj->ni", G, tasks.b)

    def one(beta, tau, key):
        def step(carry, x):
            (w, acc), (k, on) = carry, x
            rank = jnp.argsort(jax.random.uniform(k, (n,)))
            weight = (rank < tau).astype(w.dtype) / tau  # uniform subset of size tau, without replacement
            g = jnp.einsum("n,nij,j->i", weight, G, w) - weight @ Gb
            w = w - beta * g
            return (w, acc + jnp.where(on, jnp.sum((w - w_star) ** 2), 0.0)), None

        # one scan over all steps (one copy of the step to compile), accumulating from step burn_in on
        ks = jax.random.split(key, num_steps)
        (w, acc), _ = jax.lax.scan(step, (w0, 0.0), (ks, jnp.arange(num_steps) >= burn_in))
        return acc / (num_steps - burn_in)

    return jax.vmap(one)(betas, taus, keys)


def quadratic_stochastic_runs(tasks, lam, s: int, betas, taus, num_steps: int, burn_in: int, seeds):
    r"""Mean of $\|w_k-w^\star\|^2$ over steps ``burn_in..num_steps`` of the stochastic $s$-step method
    ($\tau=B$ tasks per step, uniformly without replacement, constant $\beta$, started at the
    full-batch fixed point $w_s$, where the iterates' mean stays).

    Returns an array of shape ``(len(betas), len(taus), len(seeds))``; one compilation for the grid.
    """
    betas, taus, seeds = np.asarray(betas, float), np.asarray(taus, int), np.asarray(seeds, int)
    B, T, S = np.meshgrid(betas, taus, seeds, indexing="ij")
    keys = jax.vmap(jax.random.key)(jnp.asarray(S.ravel()))
    w_star = ml.quadratic_moreau_minimizer(tasks, lam)
    out = _stochastic_runs(tasks, lam, w_star, int(s), int(num_steps), int(burn_in), jnp.asarray(B.ravel()),
                           jnp.asarray(T.ravel(), jnp.float64), keys, quadratic_sstep_fixed_point(tasks, lam, int(s)))
    return np.asarray(out).reshape(B.shape)


def stationary_second_moment(tasks, lam, s: int, beta, tau: int):
    r"""Exact stationary $\mathbb E\|w-w^\star\|^2=\|w_s-w^\star\|^2+\mathrm{tr}\,\Sigma$ of the stochastic $s$-step method.

    With $K_i=I-\beta G_i$, $G_i=A_iP_{s,i}$, $c_i=G_i(w_s-b_i)$ and sampling $\tau$ of $n$ tasks
    without replacement ($\pi_1=\tau/n$, $\pi_2=\tau(\tau-1)/(n(n-1))$), the covariance solves
    $\Sigma=\tau^{-2}\big[(\pi_1-\pi_2)\sum_iK_i\Sigma K_i^\top+\pi_2\,(\sum_iK_i)\Sigma(\sum_iK_i)^\top\big]
    +\beta^2c_\tau\frac1n\sum_ic_ic_i^\top$, $c_\tau=(n-\tau)/(\tau(n-1))$
    (Book: {prf:ref}`mishchenko2023-lem-lyapunov`). Solved as a $d^2\times d^2$ linear system.
    """
    A, b = np.asarray(tasks.A), np.asarray(tasks.b)
    n, d, _ = A.shape
    G = np.asarray(A @ np.asarray(sstep_polynomial(jnp.asarray(A), lam, s)))
    w_s = np.asarray(quadratic_sstep_fixed_point(tasks, lam, s))
    w_star = np.asarray(ml.quadratic_moreau_minimizer(tasks, lam))
    K = np.eye(d)[None] - beta * G
    p1, p2 = tau / n, tau * (tau - 1) / (n * (n - 1))
    T = ((p1 - p2) * sum(np.kron(Ki, Ki) for Ki in K) + p2 * np.kron(K.sum(0), K.sum(0))) / tau**2
    c = np.einsum("nij,nj->ni", G, w_s[None] - b)
    ctau = (n - tau) / (tau * (n - 1))
    C = beta**2 * ctau * (c.T @ c) / n
    Sigma = np.linalg.solve(np.eye(d * d) - T, C.reshape(-1)).reshape(d, d)
    return float(np.sum((w_s - w_star) ** 2) + np.trace(Sigma))


# =============================================================================== claim 3: digits
def ridge_logistic(w, batch, l2):
    r"""$\ell(w)+\frac{l_2}2\|w\|^2$ with $\ell$ = :func:`mathlib.logistic_loss` (``l2`` may be traced)."""
    return ml.logistic_loss(w, batch) + 0.5 * l2 * jnp.sum(w * w)


def digits_tasks(seed: int, num_tasks: int, k: int):
    r"""``num_tasks`` one-vs-rest logistic tasks on the 8x8 digits, ``k`` images each (half positive),
    float64, intercept column: the support batches of :func:`mathlib.sample_digits_ovr_episodes` (all classes)."""
    data = ml.digits_dataset(jnp.float64)
    sample = jax.jit(lambda key: ml.sample_digits_ovr_episodes(key, num_tasks, k, 2, data=data, split="all"),
                     compiler_options=FAST_COMPILE)  # one program instead of many eager operations
    return sample(jax.random.key(seed)).support


def logistic_smoothness(X, l2):
    r"""Per-task bound $L_i=\|X_i\|_2^2/(4m)+l_2$ on the Hessian of :func:`ridge_logistic` ($m$ points)."""
    X = np.asarray(X)
    return np.array([np.linalg.norm(x, 2) ** 2 / (4 * x.shape[0]) for x in X]) + l2


def _moreau_grad_exact_one(w, batch, lam, l2, eta, iters):
    loss = partial(ridge_logistic, l2=l2)
    g = jax.grad(loss)
    p = jax.lax.fori_loop(0, iters, lambda _, u: u - eta * (g(u, batch) + (u - w) / lam), w)
    return (w - p) / lam


def logistic_moreau_grad_exact(w, batches, lam, l2, L, iters: int = 400):
    r"""$\nabla F(w)=\frac1n\sum_i(w-\mathrm{prox}_{\lambda f_i}(w))/\lambda$ with the prox solved by ``iters``
    GD steps of step $1/(1/\lambda+L)$ (contraction $\lambda(L-\mu)/(1+\lambda L)$, as :func:`mathlib.prox_solve`
    with ``smoothness=L``)."""
    eta = 1.0 / (1.0 / lam + L)
    return jax.vmap(lambda b: _moreau_grad_exact_one(w, b, lam, l2, eta, iters))(batches).mean(0)


def logistic_prox_exact(w, batch, lam, l2, L, iters: int = 400):
    r"""$\mathrm{prox}_{\lambda f}(w)$ for :func:`ridge_logistic` by ``iters`` GD steps of step $1/(1/\lambda+L)$."""
    loss = partial(ridge_logistic, l2=l2)
    g = jax.grad(loss)
    eta = 1.0 / (1.0 / lam + L)
    return jax.lax.fori_loop(0, iters, lambda _, u: u - eta * (g(u, batch) + (u - w) / lam), w)


@partial(jax.jit, static_argnums=(5,))
def _moreau_newton_parts(w, batches, lam, l2, L, iters):
    loss = partial(ridge_logistic, l2=l2)

    def one(b):
        p = logistic_prox_exact(w, b, lam, l2, L, iters)
        return jax.grad(loss)(p, b), jax.hessian(loss)(p, b)

    return jax.vmap(one)(batches)


def logistic_moreau_minimizer(batches, lam, l2, L, newton_steps: int = 12, iters: int = 400):
    r"""Minimiser $w^\star$ of $\Phi$ for ridge-logistic tasks by Newton's method on $\Phi$
    ($\nabla^2\Phi=\frac1n\sum_iH_i(I+\lambda H_i)^{-1}$, $H_i=\nabla^2f_i(p_i)$; Book:
    {prf:ref}`mishchenko2023-lem-envelope`), exact prox by :func:`logistic_prox_exact` (``iters`` steps).
    The small dense linear algebra runs in NumPy (LAPACK), which on CPU is far faster than XLA's here.

    Returns ``(w_star, grad_norm, h_max)``: $\|\nabla\Phi(w^\star)\|$ and $\max_i\lambda_{\max}(\nabla^2f_i(p_i(w^\star)))$.
    """
    d = batches[0].shape[-1]
    dtype = batches[0].dtype
    eye = np.eye(d)
    w = np.zeros(d)
    for _ in range(int(newton_steps)):
        g, H = (np.asarray(x) for x in _moreau_newton_parts(jnp.asarray(w, dtype), batches, lam, l2, L, int(iters)))
        Hm = np.mean([h @ np.linalg.inv(eye + lam * h) for h in H], axis=0)
        w = w - np.linalg.solve(Hm, g.mean(0))
    g, H = (np.asarray(x) for x in _moreau_newton_parts(jnp.asarray(w, dtype), batches, lam, l2, L, int(iters)))
    hmax = max(float(np.linalg.eigvalsh(h)[-1]) for h in H)
    return jnp.asarray(w, dtype), float(np.linalg.norm(g.mean(0))), hmax


@partial(jax.jit, static_argnums=(6, 7))
def _logistic_run(batches, lam, l2, L, beta, s, num_steps, record_every, w0, w_star):
    loss = partial(ridge_logistic, l2=l2)

    def direction(w):
        return jax.vmap(lambda b: sstep_direction(loss, w, b, lam, s))(batches).mean(0)

    def block(w, _):
        w = jax.lax.fori_loop(0, record_every, lambda _, v: v - beta * direction(v), w)
        return w, jnp.linalg.norm(w - w_star)

    w, dist = jax.lax.scan(block, w0, None, length=num_steps // record_every)
    return dist, jnp.linalg.norm(logistic_moreau_grad_exact(w, batches, lam, l2, L))


def logistic_sstep_runs(batches, lam, l2, L, beta, s_values, num_steps: int, record_every: int, w_star, w0=None):
    r"""Full-batch $s$-step runs on logistic tasks for several $s$ (one compilation: $s$ is traced).

    Returns ``(dist, gnorm)``: $\|w_k-w^\star\|$ every ``record_every`` steps, shape
    ``(len(s_values), num_steps // record_every)``, and the exact $\|\nabla F(w_K)\|$ at the last
    iterate (:func:`logistic_moreau_grad_exact`), shape ``(len(s_values),)``.
    """
    w0 = jnp.zeros_like(w_star) if w0 is None else w0
    # one run per s (not vmapped: a batched trip count would run every s for max(s) inner steps)
    out = [_logistic_run(batches, lam, l2, L, beta, jnp.asarray(int(s)), int(num_steps), int(record_every), w0, w_star)
           for s in s_values]
    return np.stack([np.asarray(d) for d, _ in out]), np.array([float(g) for _, g in out])


# =============================================================================== claim 5: 1-D counterexample
def kink_f(y, L):
    r"""$f(y)=\tfrac12y^2$ for $y\le1$, $\tfrac12+(y-1)+\tfrac L2(y-1)^2$ for $y>1$: convex, $C^1$, $\max(1,L)$-smooth."""
    return jnp.where(y <= 1, 0.5 * y**2, 0.5 + (y - 1) + 0.5 * L * (y - 1) ** 2)


def kink_grad(y, L):
    """$f'(y)$ of :func:`kink_f`."""
    return jnp.where(y <= 1, y, 1 + L * (y - 1))


def kink_prox(x, lam, L):
    r"""$\mathrm{prox}_{\lambda f}(x)=x/(1+\lambda)$ for $x\le1+\lambda$, $(x+\lambda L-\lambda)/(1+\lambda L)$ otherwise."""
    return jnp.where(x <= 1 + lam, x / (1 + lam), (x + lam * L - lam) / (1 + lam * L))


def kink_imaml_value(x, lam, L):
    r"""iMAML objective $g(x)=f(\mathrm{prox}_{\lambda f}(x))$."""
    return kink_f(kink_prox(x, lam, L), L)


def kink_moreau_value(x, lam, L):
    r"""Moreau envelope $M(x)=f(p)+(x-p)^2/(2\lambda)$, $p=\mathrm{prox}_{\lambda f}(x)$."""
    p = kink_prox(x, lam, L)
    return kink_f(p, L) + (x - p) ** 2 / (2 * lam)


def _smooth_parts(p, L, eps):
    u = (p - 1.0) / eps
    fp = p + (L - 1) * eps * (jax.nn.softplus(u) - jax.nn.softplus(-1.0 / eps))
    fpp = 1 + (L - 1) * jax.nn.sigmoid(u)
    return fp, fpp


def smooth_kink_min_curvature(lam, L, eps, num: int = 20001, width: float = 30.0):
    r"""$\min g''$ for the $C^\infty$ task $f''(y)=1+(L-1)\,\mathrm{sigmoid}((y-1)/\varepsilon)$, $f'(0)=0$.

    Parametrised by the prox point $p$: $x=p+\lambda f'(p)$, $g'=f'(p)/(1+\lambda f''(p))$,
    $g''=\frac{d g'/dp}{1+\lambda f''(p)}$; minimum over $p\in1\pm\text{width}\cdot\varepsilon$.
    Returns ``(min g'', x at the minimum)``.
    """
    u = jnp.linspace(-width, width, num, dtype=jnp.float64)
    vals, xs = _smooth_kink_curvature(u, float(lam), float(L), float(eps))
    i = int(jnp.argmin(vals))
    return float(vals[i]), float(xs[i])


@partial(jax.jit, compiler_options=FAST_COMPILE)
def _smooth_kink_curvature(u, lam, L, eps):
    p = 1.0 + eps * u

    def gprime(q):
        fp, fpp = _smooth_parts(q, L, eps)
        return fp / (1 + lam * fpp)

    def gsecond(q):
        return jax.grad(gprime)(q) / (1 + lam * _smooth_parts(q, L, eps)[1])

    fp, _ = _smooth_parts(p, L, eps)
    return jax.vmap(gsecond)(p), p + lam * fp


def smooth_kink_prediction(lam, L, eps):
    r"""Leading order of $\min g''$ as $\varepsilon\to0$: $-\frac{\lambda(L-1)}{\varepsilon}\max_{\sigma\in(0,1)}
    \frac{\sigma(1-\sigma)}{(1+\lambda+\lambda(L-1)\sigma)^3}$ (the $f'''$ term, with $f'(1)\to1$)."""
    sig = np.linspace(1e-6, 1 - 1e-6, 200001)
    h = sig * (1 - sig) / (1 + lam + lam * (L - 1) * sig) ** 3
    return -lam * (L - 1) * h.max() / eps


def cg_bound(kappa, k):
    r"""CG error bound in the energy norm: $2\big((\sqrt\kappa-1)/(\sqrt\kappa+1)\big)^k$ (relative)."""
    r = (np.sqrt(kappa) - 1) / (np.sqrt(kappa) + 1)
    return 2 * r ** np.asarray(k, float)


def fit_ratio(s, d):
    r"""Geometric ratio $q$ of $d_s\approx Cq^s$: $\exp$ of the least-squares slope of $\log d$ against $s$."""
    s, d = np.asarray(s, float), np.asarray(d, float)
    return float(np.exp(np.polyfit(s, np.log(d), 1)[0]))
