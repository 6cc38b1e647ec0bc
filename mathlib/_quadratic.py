r"""Quadratic tasks $f_i(w)=\tfrac12(w-b_i)^\top A_i(w-b_i)$ and closed forms for every estimator.

For a quadratic task the $K$-step inner map is affine,
$U_i(w)-b_i=P_i(w-b_i)$ with $P_i=(I-\alpha A_i)^K$, so the MAML objective is again quadratic:
$$F(w)=\tfrac1n\sum_i\tfrac12(w-b_i)^\top C_i(w-b_i),\qquad C_i=P_iA_iP_i=A_i(I-\alpha A_i)^{2K}.$$
All functions here accept either one task (``A`` of shape (d, d)) or a batch (``A`` of shape
(n, d, d)); "F-level" quantities are means over the task axis. Book: notation page and
{prf:ref}`fallah2020-lem-fomaml-floor` (FO-MAML fixed point).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mathlib._validate import check_alpha_steps, check_in_range, check_int, check_nonnegative, check_positive
from mathlib._models import _flat_random

__all__ = [
    "QuadraticTask",
    "quadratic_loss",
    "sample_quadratic_tasks",
    "quadratic_maml_objective",
    "quadratic_maml_grad",
    "quadratic_maml_hessian",
    "quadratic_maml_minimizer",
    "quadratic_fomaml_grad",
    "quadratic_fomaml_fixed_point",
    "quadratic_prox",
    "quadratic_moreau_objective",
    "quadratic_moreau_grad",
    "quadratic_moreau_minimizer",
    "quadratic_imaml_grad",
    "quadratic_reptile_grad",
    "quadratic_smoothness",
    "quadratic_strong_convexity",
    "quadratic_hessian_dissimilarity",
    "quadratic_gradient_dissimilarity",
]


class QuadraticTask(NamedTuple):
    r"""Quadratic task $f(w)=\tfrac12(w-b)^\top A(w-b)$ (``A`` symmetric). Batched: leading task axis."""

    A: jax.Array
    b: jax.Array


def quadratic_loss(w, task: QuadraticTask):
    r"""$f(w)=\tfrac12(w-b)^\top A(w-b)$ for a single (unbatched) task; ``w`` a vector of shape (d,)."""
    if jnp.shape(w) != jnp.shape(task.b):
        raise ValueError(
            f"quadratic_loss: shape mismatch: w has shape {jnp.shape(w)} but the task's b has shape "
            f"{jnp.shape(task.b)} (A {jnp.shape(task.A)}); pass one unbatched task and w of shape (d,)"
        )
    r = w - task.b
    return 0.5 * jnp.dot(r, task.A @ r)


def _default_float():
    return jnp.result_type(float)


def sample_quadratic_tasks(
    key,
    num_tasks: int,
    dim: int,
    *,
    eig_range=(0.5, 2.0),
    rotation_spread: float = 1.0,
    shared_hessian: bool = False,
    per_task_spectrum: bool = False,
    b_scale: float = 1.0,
    dtype=None,
) -> QuadraticTask:
    r"""Sample ``num_tasks`` quadratic tasks in dimension ``dim`` with controlled heterogeneity.

    $A_i=Q_i\,\mathrm{diag}(\lambda_i)\,Q_i^\top$ with

    * spectrum: by default the same for every task, $\lambda_j$ = ``linspace(*eig_range, dim)``, so
      $L=\max\text{eig\_range}$ and $\mu=\min\text{eig\_range}$ exactly and the Hessians differ only by
      rotation; ``per_task_spectrum=True`` draws $\lambda_{i,j}\sim U[\text{eig\_range}]$ i.i.d. instead
      (extra heterogeneity, present even at ``rotation_spread=0``);
    * rotations $Q_i=Q_0\exp(s\,S_i)$, $Q_0$ Haar-random and shared, $S_i=(G_i-G_i^\top)/\sqrt2$ with
      $G_i$ standard Gaussian, $s$ = ``rotation_spread``: $s=0$ gives a common eigenbasis (commuting
      Hessians that differ only in their spectra), $s\gtrsim1$ essentially independent rotations;
    * ``shared_hessian=True``: every task uses $A_1$ (then $\gamma_H=0$, no FO-MAML floor);
    * centres $b_i\sim\mathcal N(0,\text{b\_scale}^2 I)$ (gradient dissimilarity scales with b_scale).

    Returns a batched ``QuadraticTask`` (``A``: (n, d, d), ``b``: (n, d)) in ``dtype`` (default: JAX's
    default float type, float64 when x64 is enabled).
    """
    fn = "sample_quadratic_tasks"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    dim = check_int(fn, "dim", dim)
    lo, hi = eig_range
    check_in_range(fn, "eig_range[0]", lo, low=0.0, low_inclusive=False)
    check_in_range(fn, "eig_range[1]", hi, low=float(lo))
    check_nonnegative(fn, "rotation_spread", rotation_spread)
    check_nonnegative(fn, "b_scale", b_scale)
    dtype = jnp.dtype(_default_float() if dtype is None else dtype)
    return _sample_quadratic(
        key, num_tasks, dim, float(lo), float(hi), float(rotation_spread), bool(shared_hessian),
        bool(per_task_spectrum), float(b_scale), dtype,
    )


def _expm_skew(S):
    """$\\exp(S)$ for real skew-symmetric $S$ via the Hermitian eigendecomposition of $iS$ (orthogonal result)."""
    mu, V = jnp.linalg.eigh(1j * S)
    E = jnp.einsum("...ij,...j,...kj->...ik", V, jnp.exp(-1j * mu), jnp.conj(V))
    return jnp.real(E).astype(S.dtype)


@partial(jax.jit, static_argnums=(1, 2, 9))
def _sample_quadratic(key, num_tasks, dim, lo, hi, spread, shared_hessian, per_task_spectrum, b_scale, dtype):
    k_eig, k_normal = jax.random.split(key)
    u = _flat_random(jax.random.uniform, k_eig, (num_tasks, dim), dtype=dtype)  # same values, faster compile
    lin = jnp.linspace(0.0, 1.0, dim, dtype=dtype)
    lam = lo + (hi - lo) * jnp.where(per_task_spectrum, u, lin[None, :])
    z = _flat_random(jax.random.normal, k_normal, (num_tasks * dim + dim + num_tasks, dim), dtype=dtype)
    q0, r0 = jnp.linalg.qr(z[:dim])
    q0 = q0 * jnp.sign(jnp.diagonal(r0))[None, :]
    g = z[dim : dim + num_tasks * dim].reshape(num_tasks, dim, dim)
    skew = (g - jnp.swapaxes(g, -1, -2)) / jnp.sqrt(jnp.asarray(2.0, dtype))
    rot = _expm_skew(spread * skew)
    q = jnp.einsum("ij,njk->nik", q0, rot)
    A = jnp.einsum("nij,nj,nkj->nik", q, lam, q)
    A = 0.5 * (A + jnp.swapaxes(A, -1, -2))
    A = jnp.where(shared_hessian, jnp.broadcast_to(A[0], A.shape), A)
    b = b_scale * z[dim + num_tasks * dim :]
    return QuadraticTask(A, b)


# --------------------------------------------------------------------------- helpers
def _batched(tasks: QuadraticTask) -> QuadraticTask:
    A, b = jnp.asarray(tasks.A), jnp.asarray(tasks.b)
    if A.ndim == 2:
        A, b = A[None], b[None]
    if A.ndim != 3 or b.ndim != 2 or A.shape[:2] != b.shape or A.shape[1] != A.shape[2]:
        raise ValueError(f"quadratic tasks: 'A' must have shape (n, d, d) and 'b' shape (n, d), got {A.shape} and {b.shape}")
    return QuadraticTask(A, b)


def _inner_power(A, alpha, steps):
    """$P=(I-\\alpha A)^K$ for a batch of matrices."""
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    return jax.vmap(lambda a: jnp.linalg.matrix_power(eye - alpha * a, steps))(A)


_check_alpha_steps = check_alpha_steps


def _mean_mv(M, w, b):
    """$\\frac1n\\sum_i M_i(w-b_i)$."""
    return jnp.mean(jnp.einsum("nij,nj->ni", M, w[None, :] - b), axis=0)


def _solve_mean(M, b):
    """Solution of $\\sum_i M_i(w-b_i)=0$."""
    return jnp.linalg.solve(jnp.mean(M, axis=0), jnp.mean(jnp.einsum("nij,nj->ni", M, b), axis=0))


# --------------------------------------------------------------------------- MAML / FO-MAML
def _maml_matrices(tasks, alpha, steps):
    P = _inner_power(tasks.A, alpha, steps)
    return P @ tasks.A @ P


def quadratic_maml_objective(w, tasks: QuadraticTask, alpha, steps: int = 1):
    r"""$F(w)=\frac1n\sum_i\tfrac12(w-b_i)^\top C_i(w-b_i)$, $C_i=(I-\alpha A_i)^KA_i(I-\alpha A_i)^K$ ($K$-step MAML)."""
    steps = _check_alpha_steps("quadratic_maml_objective", alpha, steps)
    t = _batched(tasks)
    C = _maml_matrices(t, alpha, steps)
    r = w[None, :] - t.b
    return jnp.mean(0.5 * jnp.einsum("ni,nij,nj->n", r, C, r))


def quadratic_maml_grad(w, tasks: QuadraticTask, alpha, steps: int = 1):
    r"""Exact $\nabla F(w)=\frac1n\sum_i(I-\alpha A_i)^KA_i(I-\alpha A_i)^K(w-b_i)$ ($K$-step MAML)."""
    steps = _check_alpha_steps("quadratic_maml_grad", alpha, steps)
    t = _batched(tasks)
    return _mean_mv(_maml_matrices(t, alpha, steps), w, t.b)


def quadratic_maml_hessian(tasks: QuadraticTask, alpha, steps: int = 1):
    r"""$\nabla^2F=\frac1n\sum_iC_i$ (constant); its largest eigenvalue is the smoothness $L_F$ of $F$."""
    steps = _check_alpha_steps("quadratic_maml_hessian", alpha, steps)
    return jnp.mean(_maml_matrices(_batched(tasks), alpha, steps), axis=0)


def quadratic_maml_minimizer(tasks: QuadraticTask, alpha, steps: int = 1):
    r"""$w^\star_{MAML}=(\sum_iC_i)^{-1}\sum_iC_ib_i$ (linear solve)."""
    steps = _check_alpha_steps("quadratic_maml_minimizer", alpha, steps)
    t = _batched(tasks)
    return _solve_mean(_maml_matrices(t, alpha, steps), t.b)


def quadratic_fomaml_grad(w, tasks: QuadraticTask, alpha, steps: int = 1):
    r"""FO-MAML direction $\frac1n\sum_iA_i(I-\alpha A_i)^K(w-b_i)$ (gradient at the last inner iterate)."""
    steps = _check_alpha_steps("quadratic_fomaml_grad", alpha, steps)
    t = _batched(tasks)
    return _mean_mv(t.A @ _inner_power(t.A, alpha, steps), w, t.b)


def quadratic_fomaml_fixed_point(tasks: QuadraticTask, alpha, steps: int = 1):
    r"""Full-batch FO-MAML limit $w_{FO}=(\sum_iA_iP_i)^{-1}\sum_iA_iP_ib_i$, $P_i=(I-\alpha A_i)^K$.

    At $w_{FO}$ the MAML gradient is
    $\nabla F(w_{FO})=-\alpha\,\frac1n\sum_i(A_i-\bar A)\nabla f_i(U_i(w_{FO}))$ for $K=1$, the FO-MAML
    floor (Book: {prf:ref}`fallah2020-lem-fomaml-floor`).
    """
    steps = _check_alpha_steps("quadratic_fomaml_fixed_point", alpha, steps)
    t = _batched(tasks)
    return _solve_mean(t.A @ _inner_power(t.A, alpha, steps), t.b)


# --------------------------------------------------------------------------- Moreau / iMAML / Reptile
def _prox_matrices(A, lam):
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    return jnp.linalg.inv(eye[None] + lam * A)  # (I + lam A)^{-1}


def quadratic_prox(w, tasks: QuadraticTask, lam):
    r"""$\mathrm{prox}_{\lambda f_i}(w)=(I+\lambda A_i)^{-1}(w+\lambda A_ib_i)$; shape (n, d) (or (d,) for one task)."""
    check_positive("quadratic_prox", "lam", lam)
    single = jnp.ndim(tasks.A) == 2
    t = _batched(tasks)
    R = _prox_matrices(t.A, lam)
    p = jnp.einsum("nij,nj->ni", R, w[None, :] + lam * jnp.einsum("nij,nj->ni", t.A, t.b))
    return p[0] if single else p


def quadratic_moreau_objective(w, tasks: QuadraticTask, lam):
    r"""$\frac1n\sum_iM_{\lambda f_i}(w)$, $M_{\lambda f}(w)=\min_u f(u)+\|u-w\|^2/(2\lambda)=\tfrac12(w-b)^\top\tilde A(w-b)$, $\tilde A=A(I+\lambda A)^{-1}$."""
    check_positive("quadratic_moreau_objective", "lam", lam)
    t = _batched(tasks)
    At = t.A @ _prox_matrices(t.A, lam)
    r = w[None, :] - t.b
    return jnp.mean(0.5 * jnp.einsum("ni,nij,nj->n", r, At, r))


def quadratic_moreau_grad(w, tasks: QuadraticTask, lam):
    r"""$\nabla\frac1n\sum_iM_{\lambda f_i}(w)=\frac1n\sum_iA_i(I+\lambda A_i)^{-1}(w-b_i)$."""
    check_positive("quadratic_moreau_grad", "lam", lam)
    t = _batched(tasks)
    return _mean_mv(t.A @ _prox_matrices(t.A, lam), w, t.b)


def quadratic_moreau_minimizer(tasks: QuadraticTask, lam):
    r"""Minimiser $(\sum_i\tilde A_i)^{-1}\sum_i\tilde A_ib_i$ of the Moreau objective, $\tilde A_i=A_i(I+\lambda A_i)^{-1}$."""
    check_positive("quadratic_moreau_minimizer", "lam", lam)
    t = _batched(tasks)
    return _solve_mean(t.A @ _prox_matrices(t.A, lam), t.b)


def quadratic_imaml_grad(w, tasks: QuadraticTask, lam):
    r"""Implicit-MAML gradient $\frac1n\sum_i(I+\lambda A_i)^{-1}A_i(p_i-b_i)$, $p_i=\mathrm{prox}_{\lambda f_i}(w)$.

    Equals $\frac1n\sum_iA_i(I+\lambda A_i)^{-2}(w-b_i)$ (support = query = Hessian batch).
    """
    check_positive("quadratic_imaml_grad", "lam", lam)
    t = _batched(tasks)
    R = _prox_matrices(t.A, lam)
    return _mean_mv(R @ t.A @ R, w, t.b)


def quadratic_reptile_grad(w, tasks: QuadraticTask, alpha, steps: int = 1):
    r"""Reptile direction $\frac1n\sum_i(w-U_i^K(w))/(\alpha K)=\frac1n\sum_i(I-(I-\alpha A_i)^K)(w-b_i)/(\alpha K)$."""
    steps = _check_alpha_steps("quadratic_reptile_grad", alpha, steps)
    t = _batched(tasks)
    eye = jnp.eye(t.A.shape[-1], dtype=t.A.dtype)
    return _mean_mv((eye[None] - _inner_power(t.A, alpha, steps)) / (alpha * steps), w, t.b)


# --------------------------------------------------------------------------- constants
def quadratic_smoothness(tasks: QuadraticTask):
    r"""$L=\max_i\|A_i\|_2$ (each $f_i$ is $L$-smooth; $\rho=0$)."""
    t = _batched(tasks)
    return jnp.max(jnp.abs(jnp.linalg.eigvalsh(t.A)))


def quadratic_strong_convexity(tasks: QuadraticTask):
    r"""$\mu=\min_i\lambda_{\min}(A_i)$."""
    t = _batched(tasks)
    return jnp.min(jnp.linalg.eigvalsh(t.A))


def quadratic_hessian_dissimilarity(tasks: QuadraticTask):
    r"""$\gamma_H=\sqrt{\frac1n\sum_i\|A_i-\bar A\|_2^2}$ (spectral norm), $\bar A=\frac1n\sum_iA_i$."""
    t = _batched(tasks)
    D = t.A - jnp.mean(t.A, axis=0, keepdims=True)
    return jnp.sqrt(jnp.mean(jnp.max(jnp.abs(jnp.linalg.eigvalsh(D)), axis=-1) ** 2))


def quadratic_gradient_dissimilarity(w, tasks: QuadraticTask):
    r"""$\sigma(w)=\sqrt{\frac1n\sum_i\|\nabla f_i(w)-\nabla f(w)\|^2}$ with $\nabla f_i(w)=A_i(w-b_i)$, $f=\frac1n\sum_if_i$."""
    t = _batched(tasks)
    g = jnp.einsum("nij,nj->ni", t.A, w[None, :] - t.b)
    return jnp.sqrt(jnp.mean(jnp.sum((g - jnp.mean(g, axis=0)) ** 2, axis=-1)))
