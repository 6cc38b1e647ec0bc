r"""Small tabular MDPs with exact, differentiable policy evaluation (meta-RL without sampling).

A task is a :class:`TabularMDP` $(P, r, \gamma, \mu_0)$; a tabular softmax policy has logits
$\theta \in \R^{S\times A}$, $\pi_\theta(a\mid s) = e^{\theta_{sa}} / \sum_b e^{\theta_{sb}}$.
The exact discounted return

$$J(\theta) = \mu_0^\top (I - \gamma P_\pi)^{-1} r_\pi,\qquad
  P_\pi[s, s'] = \textstyle\sum_a \pi(a\mid s) P[s, a, s'],\quad r_\pi[s] = \sum_a \pi(a\mid s) r[s, a],$$

is computed with one linear solve and differentiated by JAX, so $\nabla J$ and $\nabla^2 J$ are
exact. :func:`policy_loss` $= -J$ follows the core calling convention ``loss(params, batch)``
with the MDP as the batch, so MAML for RL is

```python
mdps = ml.sample_mdp_tasks(key, 16, 5, 3)
g = ml.meta_gradient(ml.make_estimator("maml", alpha=0.5), ml.policy_loss, theta, ml.Episode.deterministic(mdps))
```

(an inner *gradient step on* $-J$ is an inner policy-gradient *ascent* step on $J$). This is the
exact tabular version of the meta-RL setting of {cite}`wang2020`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mathlib._models import _check_float_dtype, _flat_random
from mathlib._validate import check_in_range, check_int, check_nonnegative

__all__ = [
    "TabularMDP",
    "sample_mdp_tasks",
    "policy_probs",
    "state_values",
    "action_values",
    "discounted_visitation",
    "policy_value",
    "policy_loss",
    "policy_gradient_theorem",
    "optimal_value",
]


class TabularMDP(NamedTuple):
    r"""A finite discounted MDP (fields may carry a leading task axis).

    Attributes:
      P: transition probabilities ``P[s, a, s']``, shape ``(S, A, S)``, rows sum to one.
      r: expected rewards ``r[s, a]``, shape ``(S, A)``.
      gamma: discount factor in [0, 1), a scalar array (shape ``()``, or ``(T,)`` when batched).
      mu0: initial state distribution, shape ``(S,)``.
    """

    P: jax.Array
    r: jax.Array
    gamma: jax.Array
    mu0: jax.Array


def sample_mdp_tasks(
    key: jax.Array,
    num_tasks: int,
    num_states: int,
    num_actions: int,
    *,
    spread: float = 0.5,
    gamma: float = 0.9,
    family_seed: int = 0,
    dtype=jnp.float32,
) -> TabularMDP:
    r"""A family of related MDPs: shared structure plus a task-specific perturbation.

    The shared structure is drawn once from ``jax.random.key(family_seed)`` (the same for every
    call): transition logits $L_0[s, a, s'] \sim N(0, 1)$ and rewards $r_0[s, a] \sim N(0, 1)$.
    Task $i$ (from ``key``) has

    $$P_i[s, a, \cdot] = \mathrm{softmax}(L_0[s, a, \cdot] + \text{spread}\cdot\xi_i[s, a, \cdot]),\qquad
      r_i = r_0 + \text{spread}\cdot\eta_i,$$

    with $\xi_i, \eta_i$ standard normal, a common discount ``gamma`` and the uniform initial
    distribution. ``spread = 0`` gives identical tasks (task dissimilarity grows with ``spread``).

    Returns:
      A batched :class:`TabularMDP` with leading axis ``num_tasks``.
    """
    fn = "sample_mdp_tasks"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    S = check_int(fn, "num_states", num_states)
    A = check_int(fn, "num_actions", num_actions)
    check_nonnegative(fn, "spread", spread)
    check_in_range(fn, "gamma", gamma, 0.0, 1.0, high_inclusive=False)
    family_seed = check_int(fn, "family_seed", family_seed, minimum=0)
    dt = _check_float_dtype(dtype, fn)
    return _sample_mdp_tasks(key, jax.random.key(family_seed), num_tasks, S, A, spread, gamma, dt)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 7))
def _sample_mdp_tasks(key, family_key, num_tasks, S, A, spread, gamma, dt):
    # one random call per key (each threefry call site costs compile time)
    base = _flat_random(jax.random.normal, family_key, (S, A, S + 1), dtype=dt)
    noise = spread * _flat_random(jax.random.normal, key, (num_tasks, S, A, S + 1), dtype=dt)
    logits = base[..., :S] + noise[..., :S]
    r = base[..., S] + noise[..., S]
    return TabularMDP(
        P=jax.nn.softmax(logits, axis=-1),
        r=r,
        gamma=jnp.full((num_tasks,), gamma, dt),
        mu0=jnp.full((num_tasks, S), 1.0 / S, dt),
    )


def _check_theta(fn: str, theta, mdp: TabularMDP):
    if jnp.shape(theta) != jnp.shape(mdp.r):
        raise ValueError(
            f"{fn}: argument 'theta' must have the shape (num_states, num_actions) = {jnp.shape(mdp.r)} "
            f"of 'mdp.r', got {jnp.shape(theta)} (vmap over a batch of MDPs)"
        )


_UNROLL_MAX = 16   # up to this many states the elimination is traced entry by entry (fastest to compile)


def _eliminate(M, b):
    # Gaussian elimination without pivoting on [M | b], then back substitution
    n = M.shape[-1]
    if n <= _UNROLL_MAX:
        A = [[M[i, j] for j in range(n)] + [b[i]] for i in range(n)]
        for k in range(n - 1):
            for i in range(k + 1, n):
                f = A[i][k] / A[k][k]
                A[i] = [A[i][j] - f * A[k][j] if j > k else A[i][j] for j in range(n + 1)]
        x = [None] * n
        for i in reversed(range(n)):
            s = A[i][n]
            for j in range(i + 1, n):
                s = s - A[i][j] * x[j]
            x[i] = s / A[i][i]
        return jnp.stack(x)
    Ab = jnp.concatenate([M, b[:, None]], axis=-1)
    rows = jnp.arange(n)

    def eliminate(k, Ab):
        pivot = jax.lax.dynamic_index_in_dim(Ab, k, 0, keepdims=False)
        return Ab - jnp.where(rows > k, Ab[:, k] / pivot[k], 0)[:, None] * pivot[None, :]

    Ab = jax.lax.fori_loop(0, n - 1, eliminate, Ab)
    U, c = Ab[:, :n], Ab[:, n]

    def substitute(j, x):
        i = n - 1 - j
        return x.at[i].set((c[i] - U[i] @ x) / U[i, i])

    return jax.lax.fori_loop(0, n, substitute, jnp.zeros(n, Ab.dtype))


def solve_diagonally_dominant(M: jax.Array, b: jax.Array) -> jax.Array:
    r"""Solve $Mx=b$ by Gaussian elimination without pivoting, in plain ``jax.numpy``.

    Every system of this module has $M=I-\gamma P_\pi$ (or its transpose) with $P_\pi$ row
    stochastic and $\gamma<1$: $M$ is strictly diagonally dominant by rows,
    $M_{ss}-\sum_{t\ne s}|M_{st}| \ge 1-\gamma>0$, so $M^\top$ is by columns, and elimination without
    pivoting is backward stable for both (growth factor at most 2). Derivatives are implicit
    (``jax.lax.custom_linear_solve``: the derivative of a solve is a solve with $M$ or $M^\top$), as for
    ``jnp.linalg.solve``; up to 16 states the elimination is unrolled entry by entry, above that it is
    a ``fori_loop`` over rows. ``M`` is ``(S, S)`` and ``b`` is ``(S,)``; ``jax.vmap`` for batches.

    Why not ``jnp.linalg.solve``: with jaxlib 0.10.2 on CPU, a vmapped batch of tens of thousands of
    these small LAPACK LU solves (the grid search of wang2020's notebook 03 in full mode), dispatched
    asynchronously, deadlocked: the host waited in ``BlockUntilReady`` with every XLA thread idle
    (6 of 6 runs of a one-call reproduction hung; none did with this function). For $S=3$ it also
    compiles no slower and runs faster than the LAPACK call.
    """
    return jax.lax.custom_linear_solve(lambda x: M @ x, b, solve=lambda _, c: _eliminate(M, c),
                                       transpose_solve=lambda _, c: _eliminate(M.T, c))


def policy_probs(theta: jax.Array) -> jax.Array:
    r"""Tabular softmax policy $\pi_\theta(a\mid s) = \mathrm{softmax}(\theta_{s,\cdot})_a$, shape ``(S, A)``."""
    return jax.nn.softmax(theta, axis=-1)


@jax.jit
def _markov_chain(theta, mdp):
    pi = policy_probs(theta)
    P_pi = jnp.einsum("sa,sat->st", pi, mdp.P)
    r_pi = jnp.sum(pi * mdp.r, axis=-1)
    M = jnp.eye(P_pi.shape[0], dtype=P_pi.dtype) - mdp.gamma * P_pi
    return pi, M, r_pi


def state_values(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""Exact $V^\pi = (I - \gamma P_\pi)^{-1} r_\pi$ (one linear solve), shape ``(S,)``."""
    _check_theta("state_values", theta, mdp)
    return _state_values(theta, mdp)


@jax.jit
def _state_values(theta, mdp):
    _, M, r_pi = _markov_chain(theta, mdp)
    return solve_diagonally_dominant(M, r_pi)


def action_values(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""Exact $Q^\pi[s, a] = r[s, a] + \gamma \sum_{s'} P[s, a, s'] V^\pi[s']$, shape ``(S, A)``."""
    _check_theta("action_values", theta, mdp)
    return _action_values(theta, mdp)


@jax.jit
def _action_values(theta, mdp):
    V = _state_values(theta, mdp)
    return mdp.r + mdp.gamma * jnp.einsum("sat,t->sa", mdp.P, V)


def discounted_visitation(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""Unnormalised discounted state visitation $d^\pi = \sum_t \gamma^t \Pr(s_t = \cdot) = (I - \gamma P_\pi)^{-\top}\mu_0$.

    It sums to $1/(1-\gamma)$ and $J = \langle d^\pi, r_\pi\rangle$.
    """
    _check_theta("discounted_visitation", theta, mdp)
    return _visitation(theta, mdp)


@jax.jit
def _visitation(theta, mdp):
    _, M, _ = _markov_chain(theta, mdp)
    return solve_diagonally_dominant(M.T, mdp.mu0)


def policy_value(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""Exact expected discounted return $J(\theta) = \mu_0^\top (I - \gamma P_\pi)^{-1} r_\pi$ (differentiable).

    ``theta`` has shape ``(S, A)`` and ``mdp`` is one (unbatched) MDP; ``jax.vmap`` over a
    batch of MDPs. Exact up to the conditioning of $I - \gamma P_\pi$ (condition number
    $\le (1+\gamma)/(1-\gamma)$ in the $\infty$-norm).
    """
    _check_theta("policy_value", theta, mdp)
    return _policy_value(theta, mdp)


@jax.jit
def _policy_value(theta, mdp):
    _, M, r_pi = _markov_chain(theta, mdp)
    return mdp.mu0 @ solve_diagonally_dominant(M, r_pi)


def policy_loss(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""Meta-RL loss $f(\theta) = -J(\theta)$ in the core convention ``loss(params, batch)`` (batch = the MDP)."""
    return -policy_value(theta, mdp)


def policy_gradient_theorem(theta: jax.Array, mdp: TabularMDP) -> jax.Array:
    r"""$\nabla_\theta J$ from the policy-gradient theorem for the tabular softmax policy.

    $$\frac{\partial J}{\partial \theta_{s,a}} = d^\pi(s)\,\pi(a\mid s)\,\big(Q^\pi(s, a) - V^\pi(s)\big),$$

    with $d^\pi$ from :func:`discounted_visitation`. An independent check of ``jax.grad(policy_value)``.
    """
    _check_theta("policy_gradient_theorem", theta, mdp)
    return _pg_theorem(theta, mdp)


@jax.jit
def _pg_theorem(theta, mdp):
    pi = policy_probs(theta)
    Q = _action_values(theta, mdp)
    V = jnp.sum(pi * Q, axis=-1)
    d = _visitation(theta, mdp)
    return d[:, None] * pi * (Q - V[:, None])


def optimal_value(mdp: TabularMDP, *, num_iters: int = 100) -> jax.Array:
    r"""Optimal return $J^\star = \mu_0^\top V^\star$ by policy iteration with exact evaluation.

    Policy iteration improves greedily, $\pi_{k+1}(s) = \argmax_a Q^{\pi_k}(s, a)$, and reaches an
    optimal policy after finitely many improvements (at most the number of deterministic policies;
    in practice a handful for small MDPs). ``num_iters`` improvements are run (fixed count, jit
    friendly); the result is exact once the greedy policy is stable.
    """
    num_iters = check_int("optimal_value", "num_iters", num_iters)
    return _optimal_value(mdp, num_iters)


@functools.partial(jax.jit, static_argnums=1)
def _optimal_value(mdp, num_iters):
    S = jnp.shape(mdp.r)[0]
    def evaluate(a_idx):
        P_pi = jnp.take_along_axis(mdp.P, a_idx[:, None, None], axis=1)[:, 0, :]
        r_pi = jnp.take_along_axis(mdp.r, a_idx[:, None], axis=1)[:, 0]
        V = solve_diagonally_dominant(jnp.eye(S, dtype=mdp.r.dtype) - mdp.gamma * P_pi, r_pi)
        return V

    def step(_, a_idx):
        V = evaluate(a_idx)
        Q = mdp.r + mdp.gamma * jnp.einsum("sat,t->sa", mdp.P, V)
        return jnp.argmax(Q, axis=-1)

    a_idx = jax.lax.fori_loop(0, num_iters, step, jnp.argmax(mdp.r, axis=-1))
    return mdp.mu0 @ evaluate(a_idx)
