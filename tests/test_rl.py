"""Tabular MDPs: exact policy evaluation, policy gradient, meta-RL through the core estimators."""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

KEY = jax.random.key(0)
S, A = 5, 3


@pytest.fixture(scope="module")
def mdps():
    return ml.sample_mdp_tasks(KEY, 6, S, A, spread=0.7, gamma=0.9, dtype=jnp.float64)


def _task(mdps, i):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a)[i]), mdps)


def _bellman_iterative(theta, mdp, iters=400):
    """Iterative policy evaluation V <- r_pi + gamma P_pi V (numpy, independent of the library)."""
    pi = np.exp(theta - theta.max(1, keepdims=True))
    pi /= pi.sum(1, keepdims=True)
    P, r, g = np.asarray(mdp.P), np.asarray(mdp.r), float(mdp.gamma)
    V = np.zeros(P.shape[0])
    for _ in range(iters):
        V = (pi * (r + g * P @ V)).sum(1)
    return V


def test_sampler_shapes_stochastic_and_family(mdps):
    assert mdps.P.shape == (6, S, A, S) and mdps.r.shape == (6, S, A)
    assert mdps.gamma.shape == (6,) and mdps.mu0.shape == (6, S)
    P = np.asarray(mdps.P)
    assert P.min() >= 0 and np.allclose(P.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(mdps.mu0).sum(-1), 1.0)
    np.testing.assert_allclose(mdps.gamma, 0.9)
    # deterministic by key; spread = 0 gives identical tasks; shared structure across keys
    again = ml.sample_mdp_tasks(KEY, 6, S, A, spread=0.7, dtype=jnp.float64)
    np.testing.assert_array_equal(again.P, mdps.P)
    same = ml.sample_mdp_tasks(jax.random.key(5), 6, S, A, spread=0.0, dtype=jnp.float64)
    np.testing.assert_allclose(same.P[0], same.P[2], rtol=0, atol=0)
    other = ml.sample_mdp_tasks(jax.random.key(6), 6, S, A, spread=0.0, dtype=jnp.float64)
    np.testing.assert_array_equal(same.r, other.r)
    fam = ml.sample_mdp_tasks(jax.random.key(6), 6, S, A, family_seed=1, spread=0.0, dtype=jnp.float64)
    assert not np.array_equal(fam.r[0], other.r[0])
    # task dissimilarity grows with spread
    assert float(np.std(np.asarray(mdps.r), axis=0).mean()) > 0.3
    small = ml.sample_mdp_tasks(jax.random.key(5), 6, S, A, spread=0.01, dtype=jnp.float64)
    assert float(np.std(np.asarray(small.r), axis=0).mean()) < 0.02
    f32 = ml.sample_mdp_tasks(KEY, 6, S, A)
    assert f32.P.dtype == jnp.float32 and ml.policy_value(jnp.zeros((S, A), jnp.float32), _task(f32, 0)).dtype == jnp.float32


def test_diagonally_dominant_solve_matches_lapack_and_autodiff():
    """Implementation check: the LAPACK-free solve behind every policy evaluation agrees with
    ``numpy.linalg.solve`` for M = I - gamma P and its transpose (row / column dominant), its
    first derivatives pass ``check_grads`` and its second derivatives equal those of the LAPACK solve."""
    from jax.test_util import check_grads

    from mathlib._rl import solve_diagonally_dominant

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 20):          # 20: the fori_loop path above 16 states
        P = rng.random((n, n)) ** 4
        P /= P.sum(1, keepdims=True)
        M = np.eye(n) - 0.97 * P
        b = rng.standard_normal(n)
        for Mx in (M, M.T):
            x = np.asarray(solve_diagonally_dominant(jnp.asarray(Mx), jnp.asarray(b)))
            np.testing.assert_allclose(x, np.linalg.solve(Mx, b), rtol=1e-12, atol=1e-12)
    P = rng.random((3, 3))
    M = np.eye(3) - 0.9 * P / P.sum(1, keepdims=True)       # the chapter's size and discount
    args = (jnp.asarray(M), jnp.asarray(b[:3]))
    check_grads(solve_diagonally_dominant, args, order=1, modes=("fwd", "rev"))
    for d in (jax.jacfwd, jax.jacrev):      # second derivatives agree with those of the LAPACK solve
        mine, ref = d(d(solve_diagonally_dominant))(*args), d(d(jnp.linalg.solve))(*args)
        np.testing.assert_allclose(mine, ref, rtol=1e-10, atol=1e-12)


def test_exact_evaluation_matches_iterative_bellman(mdps):
    theta = jax.random.normal(jax.random.key(1), (S, A), jnp.float64)
    for i in range(3):
        mdp = _task(mdps, i)
        V = np.asarray(ml.state_values(theta, mdp))
        np.testing.assert_allclose(V, _bellman_iterative(np.asarray(theta), mdp), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ml.policy_value(theta, mdp), np.asarray(mdp.mu0) @ V, rtol=1e-12)
        np.testing.assert_allclose(ml.policy_loss(theta, mdp), -np.asarray(mdp.mu0) @ V, rtol=1e-12)
        d = np.asarray(ml.discounted_visitation(theta, mdp))
        np.testing.assert_allclose(d.sum(), 1 / (1 - 0.9), rtol=1e-12)
        pi = np.asarray(ml.policy_probs(theta))
        np.testing.assert_allclose(d @ (pi * np.asarray(mdp.r)).sum(1), ml.policy_value(theta, mdp), rtol=1e-10)


def test_policy_gradient_vs_finite_differences_and_pg_theorem(mdps):
    mdp = _task(mdps, 2)
    theta = jax.random.normal(jax.random.key(2), (S, A), jnp.float64)
    g = np.asarray(jax.jit(jax.grad(ml.policy_value))(theta, mdp))
    J = jax.jit(ml.policy_value)
    h = 1e-5
    fd = np.zeros((S, A))
    for s in range(S):
        for a in range(A):
            e = jnp.zeros((S, A)).at[s, a].set(h)
            fd[s, a] = (float(J(theta + e, mdp)) - float(J(theta - e, mdp))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g, ml.policy_gradient_theorem(theta, mdp), rtol=1e-10, atol=1e-12)
    # softmax invariance: adding a constant per state changes nothing -> gradient rows sum to 0
    np.testing.assert_allclose(g.sum(1), 0.0, atol=1e-12)
    assert np.abs(g).max() > 1e-3


def test_optimal_value_bounds_policies(mdps):
    mdp = _task(mdps, 0)
    Jstar = float(ml.optimal_value(mdp))
    # value iteration as an independent reference
    P, r = np.asarray(mdp.P), np.asarray(mdp.r)
    V = np.zeros(S)
    for _ in range(600):
        V = (r + 0.9 * P @ V).max(1)
    np.testing.assert_allclose(Jstar, np.asarray(mdp.mu0) @ V, rtol=1e-10)
    thetas = jax.random.normal(jax.random.key(3), (50, S, A), jnp.float64) * 3
    Js = jax.vmap(lambda t: ml.policy_value(t, mdp))(thetas)
    assert float(Js.max()) <= Jstar + 1e-12
    # a near-greedy softmax policy gets close to J*
    Q = (r + 0.9 * P @ V)
    assert Jstar - float(ml.policy_value(jnp.asarray(40.0 * (Q == Q.max(1, keepdims=True))), mdp)) < 1e-6


def test_meta_rl_through_core_estimators(mdps):
    """MAML on RL: the task is the MDP as the batch; one inner PG ascent step on J."""
    theta = jnp.zeros((S, A), jnp.float64)
    alpha = 0.5
    est = ml.make_estimator("maml", alpha=alpha)
    eps = ml.Episode.deterministic(mdps)
    g = jax.jit(lambda t, e: ml.meta_gradient(est, ml.policy_loss, t, e))(theta, eps)

    def meta_obj(t):
        def one(m):
            adapted = t + alpha * jax.grad(ml.policy_value)(t, m)
            return -ml.policy_value(adapted, m)

        return jnp.mean(jax.vmap(one)(mdps))

    np.testing.assert_allclose(g, jax.jit(jax.grad(meta_obj))(theta), rtol=1e-10, atol=1e-12)
    assert np.abs(np.asarray(g)).max() > 1e-3


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="'gamma'"):
        ml.sample_mdp_tasks(KEY, 2, 3, 2, gamma=1.0)
    with pytest.raises(ValueError, match="'num_states'"):
        ml.sample_mdp_tasks(KEY, 2, 0, 2)
    with pytest.raises(ValueError, match="'spread'"):
        ml.sample_mdp_tasks(KEY, 2, 3, 2, spread=-0.1)
    mdps = ml.sample_mdp_tasks(KEY, 2, 3, 2)
    with pytest.raises(ValueError, match="'theta'"):
        ml.policy_value(jnp.zeros((3, 2)), mdps)  # batched MDP without vmap
    with pytest.raises(ValueError, match="'theta'"):
        ml.policy_value(jnp.zeros((2, 3)), _task(mdps, 0))
