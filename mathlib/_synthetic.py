r"""Synthetic task families with known constants: cosine-perturbed quadratics and linear regression.

(a) ``CosineTask``: smooth, non-quadratic, Hessian-Lipschitz, unbounded gradients,
$$f(w)=\tfrac12(w-c)^\top A(w-c)+a\sum_{j=1}^m\cos\!\big(k\,u_j^\top(w-c)\big).$$
(b) ``LinRegTask``: $y=x^\top\theta+\varepsilon$, $x\sim\mathcal N(0,\Sigma)$, $\varepsilon\sim\mathcal N(0,s^2)$,
with squared loss; the population loss is the quadratic $\tfrac12(w-\theta)^\top\Sigma(w-\theta)+\tfrac12s^2$,
so $\nabla F$ of (population) MAML is exact, and so is the gradient of the objective with a
*stochastic* inner step (Gaussian fourth moments), which exposes the bias of the stochastic inner step.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mathlib._core import Episode
from mathlib._quadratic import QuadraticTask, sample_quadratic_tasks
from mathlib._validate import check_int, check_matmul_shapes, check_nonnegative, check_positive, renamed_argument
from mathlib._models import _flat_random

__all__ = [
    "CosineTask",
    "cosine_loss",
    "sample_cosine_tasks",
    "SmoothnessConstants",
    "cosine_constants",
    "LinRegTask",
    "sample_linear_regression_tasks",
    "sample_regression_batch",
    "sample_regression_episodes",
    "mse_loss",
    "linreg_population_loss",
    "linreg_population_grad",
    "linreg_population_hessian",
    "linreg_as_quadratic",
    "linreg_maml_objective",
    "linreg_maml_grad",
]


# ============================================================================ cosine tasks
class CosineTask(NamedTuple):
    r"""$f(w)=\tfrac12(w-c)^\top A(w-c)+\text{amp}\sum_j\cos(\text{freq}\,u_j^\top(w-c))$; ``U`` has columns $u_j$.

    Shapes (one task): ``A`` (d, d), ``c`` (d,), ``U`` (d, m), ``amp`` (), ``freq`` (). Batched: leading task axis.
    """

    A: jax.Array
    c: jax.Array
    U: jax.Array
    amp: jax.Array
    freq: jax.Array


def cosine_loss(w, task: CosineTask):
    r"""$f(w)=\tfrac12(w-c)^\top A(w-c)+a\sum_j\cos(k\,u_j^\top(w-c))$ for one task; ``w`` of shape (d,)."""
    if jnp.shape(w) != jnp.shape(task.c):
        raise ValueError(
            f"cosine_loss: shape mismatch: w has shape {jnp.shape(w)} but the task's c has shape "
            f"{jnp.shape(task.c)} (A {jnp.shape(task.A)}); pass one unbatched task and w of shape (d,)"
        )
    r = w - task.c
    return 0.5 * jnp.dot(r, task.A @ r) + task.amp * jnp.sum(jnp.cos(task.freq * (task.U.T @ r)))


def sample_cosine_tasks(
    key,
    num_tasks: int,
    dim: int,
    *,
    num_directions: int | None = None,
    amp: float = 0.5,
    freq: float = 1.0,
    eig_range=(0.5, 2.0),
    rotation_spread: float = 1.0,
    shared_hessian: bool = False,
    center_scale: float = 1.0,
    shared_directions: bool = True,
    dtype=None,
) -> CosineTask:
    r"""Sample cosine-perturbed quadratic tasks (batched ``CosineTask``).

    $(A_i,c_i)$ come from :func:`sample_quadratic_tasks` (``eig_range``, ``rotation_spread``,
    ``shared_hessian``, ``b_scale=center_scale``); the $m$ = ``num_directions`` (default ``dim``)
    directions $u_j$ are unit Gaussian vectors, shared by all tasks if ``shared_directions``.
    Constants: see :func:`cosine_constants`.
    """
    fn = "sample_cosine_tasks"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    dim = check_int(fn, "dim", dim)
    m = dim if num_directions is None else check_int(fn, "num_directions", num_directions)
    check_nonnegative(fn, "amp", amp)
    check_positive(fn, "freq", freq)
    k_q, k_u = jax.random.split(key)
    q = sample_quadratic_tasks(
        k_q, num_tasks, dim, eig_range=eig_range, rotation_spread=rotation_spread,
        shared_hessian=shared_hessian, b_scale=center_scale, dtype=dtype,
    )
    dt = q.A.dtype
    shape = (1 if shared_directions else num_tasks, dim, m)
    U = _flat_random(jax.random.normal, k_u, shape, dtype=dt)
    U = U / jnp.linalg.norm(U, axis=1, keepdims=True)
    U = jnp.broadcast_to(U, (num_tasks, dim, m))
    full = lambda v: jnp.full((num_tasks,), v, dtype=dt)  # noqa: E731
    return CosineTask(q.A, q.b, U, full(amp), full(freq))


class SmoothnessConstants(NamedTuple):
    """Global constants of a task family: ``L`` (gradient Lipschitz), ``rho`` (Hessian Lipschitz),
    ``mu`` (lower bound on the Hessian's smallest eigenvalue; negative means possibly nonconvex)."""

    L: jax.Array
    rho: jax.Array
    mu: jax.Array


def cosine_constants(tasks: CosineTask) -> SmoothnessConstants:
    r"""Bounds for cosine tasks, maximised over the tasks (derived here).

    $\nabla^2f(w)=A-a k^2\,U\,\mathrm{diag}(\cos(kU^\top(w-c)))\,U^\top$ and
    $\|U D U^\top\|_2\le\|U\|_2^2\max_j|D_{jj}|$, hence

    * $L=\max_i\big(\|A_i\|_2+a_ik_i^2\|U_i\|_2^2\big)$ and $\mu=\min_i\big(\lambda_{\min}(A_i)-a_ik_i^2\|U_i\|_2^2\big)$;
    * $|\cos(k\,u_j^\top x)-\cos(k\,u_j^\top y)|\le k\|u_j\|\|x-y\|$ gives
      $\rho=\max_i a_ik_i^3\|U_i\|_2^2\max_j\|u_{ij}\|$ ($=a k^3\|U\|_2^2$ for unit $u_j$).

    Gradients $A(w-c)-ak\,U\sin(kU^\top(w-c))$ are unbounded (linear growth).
    """
    A, U = jnp.asarray(tasks.A), jnp.asarray(tasks.U)
    if A.ndim == 2:
        A, U = A[None], U[None]
    amp, freq = jnp.reshape(tasks.amp, (-1,)), jnp.reshape(tasks.freq, (-1,))
    eA = jnp.linalg.eigvalsh(A)
    u2 = jnp.linalg.norm(U, ord=2, axis=(-2, -1)) ** 2
    umax = jnp.max(jnp.linalg.norm(U, axis=-2), axis=-1)
    L = jnp.max(jnp.max(jnp.abs(eA), axis=-1) + amp * freq**2 * u2)
    mu = jnp.min(eA[..., 0] - amp * freq**2 * u2)
    rho = jnp.max(amp * freq**3 * u2 * umax)
    return SmoothnessConstants(L, rho, mu)


# ============================================================================ linear regression
class LinRegTask(NamedTuple):
    r"""Linear-regression task $y=x^\top\theta+\varepsilon$, $x\sim\mathcal N(0,\Sigma)$, $\varepsilon\sim\mathcal N(0,s^2)$.

    Fields: ``theta`` (d,), ``cov`` $\Sigma$ (d, d), ``cov_chol`` (lower Cholesky factor of $\Sigma$),
    ``noise_std`` $s$ (). Batched: leading task axis.
    """

    theta: jax.Array
    cov: jax.Array
    cov_chol: jax.Array
    noise_std: jax.Array


def sample_linear_regression_tasks(
    key,
    num_tasks: int,
    dim: int,
    *,
    eig_range=(0.5, 2.0),
    rotation_spread: float = 1.0,
    shared_covariance: bool = False,
    theta_scale: float = 1.0,
    theta_mean_scale: float = 0.0,
    noise_std: float = 0.5,
    dtype=None,
) -> LinRegTask:
    r"""Sample tasks with feature covariances $\Sigma_i$ (Hessian heterogeneity) and parameters $\theta_i$.

    $(\Sigma_i,\theta_i-\bar\theta)$ come from :func:`sample_quadratic_tasks` (``eig_range``,
    ``rotation_spread``, ``shared_hessian=shared_covariance``, ``b_scale=theta_scale``);
    $\bar\theta\sim\mathcal N(0,\text{theta\_mean\_scale}^2I)$ is shared; noise std $s$ = ``noise_std``.
    """
    fn = "sample_linear_regression_tasks"
    check_nonnegative(fn, "noise_std", noise_std)
    check_nonnegative(fn, "theta_mean_scale", theta_mean_scale)
    k_q, k_m = jax.random.split(key)
    q = sample_quadratic_tasks(
        k_q, num_tasks, dim, eig_range=eig_range, rotation_spread=rotation_spread,
        shared_hessian=shared_covariance, b_scale=theta_scale, dtype=dtype,
    )
    mean = theta_mean_scale * jax.random.normal(k_m, (dim,), dtype=q.A.dtype)
    chol = jnp.linalg.cholesky(q.A)
    return LinRegTask(q.b + mean[None], q.A, chol, jnp.full((q.A.shape[0],), noise_std, dtype=q.A.dtype))


def sample_regression_batch(key, task: LinRegTask, n: int):
    r"""``(X, y)`` with $n$ i.i.d. rows $x\sim\mathcal N(0,\Sigma)$, $y=x^\top\theta+\varepsilon$ (one unbatched task)."""
    return _regression_batch(key, task, check_int("sample_regression_batch", "n", n))


@partial(jax.jit, static_argnums=(2,))
def _regression_batch(key, task, n):
    kx, ke = jax.random.split(key)
    d = task.theta.shape[-1]
    z = _flat_random(jax.random.normal, kx, (n, d), dtype=task.cov.dtype)
    X = z @ task.cov_chol.T
    y = X @ task.theta + task.noise_std * jax.random.normal(ke, (n,), dtype=task.cov.dtype)
    return X, y


def sample_regression_episodes(key, tasks: LinRegTask, k_support: int | None = None, k_query: int | None = None,
                               k_hessian: int | None = None, *, n_support=None, n_query=None, n_hessian=None):
    r"""Batched ``Episode`` with independent batches $D_{in}$, $D_o$ (and $D_h$ if ``k_hessian``) per task.

    ``k_support``, ``k_query``, ``k_hessian``: examples per task in each batch (the shot counts of
    every mathlib sampler; the old names ``n_support``, ``n_query``, ``n_hessian`` still work, with a
    ``DeprecationWarning``). With ``k_hessian=None`` the episode's ``hessian`` is None ($D_h=D_{in}$).
    Traceable (usable as ``sample_episodes`` in :func:`train` via ``functools.partial``).
    """
    fn = "sample_regression_episodes"
    n_support = check_int(fn, "k_support", renamed_argument(fn, "k_support", k_support, "n_support", n_support))
    n_query = check_int(fn, "k_query", renamed_argument(fn, "k_query", k_query, "n_query", n_query))
    n_hessian = renamed_argument(fn, "k_hessian", k_hessian, "n_hessian", n_hessian)
    if n_hessian is not None:
        n_hessian = check_int(fn, "k_hessian", n_hessian)
    return _regression_episodes(key, tasks, n_support, n_query, n_hessian)


@partial(jax.jit, static_argnums=(2, 3, 4))
def _regression_episodes(key, tasks, n_support, n_query, n_hessian):
    n_tasks, d = tasks.theta.shape
    sizes = (n_support, n_query, 0 if n_hessian is None else n_hessian)
    total = sum(sizes)
    kx, ke = jax.random.split(key)
    z = _flat_random(jax.random.normal, kx, (n_tasks, total, d), dtype=tasks.cov.dtype)  # same values, faster compile
    X = jnp.einsum("tnk,tjk->tnj", z, tasks.cov_chol)
    eps = _flat_random(jax.random.normal, ke, (n_tasks, total), dtype=tasks.cov.dtype)
    y = jnp.einsum("tnj,tj->tn", X, tasks.theta) + tasks.noise_std[:, None] * eps
    cuts = (0, sizes[0], sizes[0] + sizes[1], total)
    parts = [(X[:, a:b], y[:, a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    return Episode(parts[0], parts[1], None if n_hessian is None else parts[2])


def mse_loss(w, batch):
    r"""Linear-regression loss $\frac1{2n}\sum_k(x_k^\top w-y_k)^2$ on a batch ``(X, y)``; ``w`` of shape (d,).

    Has the $\frac12$ of the closed forms ($\nabla^2=\frac1nX^\top X$); :func:`mathlib.mse` (used by the
    network losses) has none: ``mse_loss(w, (X, y)) == 0.5 * mse(X @ w, y)``.
    """
    X, y = batch
    check_matmul_shapes("mse_loss", "X", X, "w", w)
    r = X @ w - y
    return 0.5 * jnp.mean(r * r)


def linreg_population_loss(w, task: LinRegTask):
    r"""$f(w)=\E\,\tfrac12(x^\top w-y)^2=\tfrac12(w-\theta)^\top\Sigma(w-\theta)+\tfrac12s^2$ (one task)."""
    r = w - task.theta
    return 0.5 * jnp.dot(r, task.cov @ r) + 0.5 * task.noise_std**2


def linreg_population_grad(w, task: LinRegTask):
    r"""$\nabla f(w)=\Sigma(w-\theta)$ (one task)."""
    return task.cov @ (w - task.theta)


def linreg_population_hessian(task: LinRegTask):
    r"""$\nabla^2f=\Sigma$."""
    return task.cov


def linreg_as_quadratic(tasks: LinRegTask) -> QuadraticTask:
    r"""``QuadraticTask(Sigma, theta)``: the population losses up to the constant $\tfrac12s^2$.

    So ``quadratic_maml_grad(w, linreg_as_quadratic(tasks), alpha, K)`` is the exact $\nabla F$ of
    population MAML (inner steps on the population loss).
    """
    return QuadraticTask(tasks.cov, tasks.theta)


def _linreg_parts(w, tasks, alpha):
    S, th = jnp.asarray(tasks.cov), jnp.asarray(tasks.theta)
    if S.ndim == 2:
        S, th = S[None], th[None]
    s2 = jnp.reshape(jnp.asarray(tasks.noise_std) ** 2, (-1,))
    r = w[None, :] - th
    eye = jnp.eye(S.shape[-1], dtype=S.dtype)
    P = eye[None] - alpha * S
    return S, r, P, s2


def linreg_maml_objective(w, tasks: LinRegTask, alpha, n_in: int | None = None):
    r"""One-step MAML objective on linear-regression tasks, exact.

    * ``n_in=None``: population $F(w)=\frac1n\sum_i f_i(w-\alpha\nabla f_i(w))$
      $=\frac1n\sum_i\tfrac12r_i^\top P_i\Sigma_iP_ir_i+\tfrac12s^2$, $r_i=w-\theta_i$, $P_i=I-\alpha\Sigma_i$.
    * ``n_in``$=n$: the practical objective with a stochastic inner step on $n$ fresh samples,
      $\hat F(w)=\frac1n\sum_i\E_{D}f_i(w-\alpha\tilde\nabla f_i(w;D))$; for Gaussian features
      $\mathrm{Cov}(\tilde\nabla f_i)=\frac1n(\Sigma rr^\top\Sigma+(r^\top\Sigma r+s^2)\Sigma)$, so
      $\hat F=F+\frac{\alpha^2}{2n}\frac1n\sum_i\big(r_i^\top\Sigma_i^3r_i+(r_i^\top\Sigma_ir_i+s^2)\,\mathrm{tr}\Sigma_i^2\big)$.
    """
    check_positive("linreg_maml_objective", "alpha", alpha)
    S, r, P, s2 = _linreg_parts(w, tasks, alpha)
    C = P @ S @ P
    val = 0.5 * jnp.einsum("ni,nij,nj->n", r, C, r) + 0.5 * s2
    if n_in is not None:
        n = check_int("linreg_maml_objective", "n_in", n_in)
        S2 = S @ S
        extra = jnp.einsum("ni,nij,nj->n", r, S2 @ S, r) + (jnp.einsum("ni,nij,nj->n", r, S, r) + s2) * jnp.trace(S2, axis1=1, axis2=2)
        val = val + alpha**2 / (2.0 * n) * extra
    return jnp.mean(val)


def linreg_maml_grad(w, tasks: LinRegTask, alpha, n_in: int | None = None):
    r"""Gradient of :func:`linreg_maml_objective`.

    * ``n_in=None``: $\nabla F=\frac1n\sum_iP_i\Sigma_iP_ir_i$. This is also the *expectation* of the
      stochastic MAML estimator of Fallah et al. Alg. 1 with independent $D_{in},D_o,D_h$
      (the estimator is linear in each batch's second moments).
    * ``n_in``$=n$: $\nabla\hat F=\nabla F+\frac{\alpha^2}{n}\frac1n\sum_i(\Sigma_i^3+\mathrm{tr}(\Sigma_i^2)\Sigma_i)r_i$,
      the expectation of the autodiff MAML gradient with $D_h=D_{in}$ (``hessian=None``) and an
      independent $D_o$. The difference is the $O(\alpha^2/n)$ bias of the stochastic inner step
      (Book: {prf:ref}`fallah2020-lem-independent-batches`).
    """
    check_positive("linreg_maml_grad", "alpha", alpha)
    S, r, P, _ = _linreg_parts(w, tasks, alpha)
    M = P @ S @ P
    if n_in is not None:
        n = check_int("linreg_maml_grad", "n_in", n_in)
        S2 = S @ S
        M = M + alpha**2 / n * (S2 @ S + jnp.trace(S2, axis1=1, axis2=2)[:, None, None] * S)
    return jnp.mean(jnp.einsum("nij,nj->ni", M, r), axis=0)
