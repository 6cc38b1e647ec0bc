"""Unit tests for the wang2020 driver (mathlib/experiments/wang2020.py): closed forms and identities."""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import mathlib as ml  # noqa: E402
from mathlib.experiments import wang2020 as ex  # noqa: E402


def _small_problem(m=6, T=5, K=4, Q=3):
    tr = ex.sinusoid_tasks(jax.random.key(0), T, K, Q)
    phi = ex.relu_features(jax.random.key(1), m)
    return phi(tr["xs"]), tr["ys"], phi(tr["xq"]), tr["yq"]


def test_linear_system_matches_inner_step_objective():
    PS, yS, PQ, yQ = _small_problem()
    A, b = ex.linear_maml_system(PS, yS, PQ, yQ, 0.7)
    w = jax.random.normal(jax.random.key(2), (PS.shape[-1],), jnp.float64)
    closed = 0.5 * jnp.mean((jnp.einsum("tqm,m->tq", A, w) - b) ** 2)
    assert abs(float(closed - ex.linear_maml_objective(w, PS, yS, PQ, yQ, 0.7))) < 1e-12
    # numpy twin used by the width sweep agrees
    A2, b2 = ex._np_system(np.asarray(PS), np.asarray(yS), np.asarray(PQ), np.asarray(yQ), 0.7)
    assert np.allclose(A2, A) and np.allclose(b2, b)


def test_linear_minimizer_is_stationary():
    PS, yS, PQ, yQ = _small_problem(T=20)
    A, b = ex.linear_maml_system(PS, yS, PQ, yQ, 0.5)
    w, val, lmin, lmax = ex.linear_maml_minimizer(A, b)
    g = jax.grad(ex.linear_maml_objective)(w, PS, yS, PQ, yQ, 0.5)
    assert float(jnp.linalg.norm(g)) < 1e-9 and lmin > -1e-12 and lmax > lmin


def test_population_gd_reaches_closed_form_minimizer():
    tasks = ml.sample_linear_regression_tasks(jax.random.key(0), 6, 3, dtype=jnp.float64)
    q = ml.linreg_as_quadratic(tasks)
    alpha = 0.2
    W0 = 3.0 * jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    L = float(jnp.max(jnp.linalg.eigvalsh(ml.quadratic_maml_hessian(q, alpha))))
    W, F, G = ex.population_maml_gd(tasks, alpha, W0, 500, 1.0 / L)
    assert np.max(np.abs(np.asarray(W) - np.asarray(ml.quadratic_maml_minimizer(q, alpha)))) < 1e-9


def test_np_features_and_representation_error():
    grid = np.linspace(-5, 5, 50)
    P = ex._np_features(0, 7, grid)
    assert P.shape == (50, 7) and (P >= 0).all()
    # the span of many features fits a sinusoid well; 1 feature cannot
    e_small = ex.representation_error(0, 1, np.array([2.0]), np.array([0.3]), grid)
    e_big = ex.representation_error(0, 40, np.array([2.0]), np.array([0.3]), grid)
    assert e_big < 0.1 * e_small


def test_linearised_network_minimum_matches_direct_lstsq():
    tasks = ex.sinusoid_tasks(jax.random.key(0), 4, 3, 3)
    p0 = ex.init_two_layer(jax.random.key(1), 6, 4)
    val = ex.linearised_maml_minimum(p0, tasks, 0.05)
    assert val >= 0.0
    # masked units carry zero features
    F = ex.ntk_features(p0, tasks["xs"])
    assert F.shape[-1] == 18 and float(jnp.abs(F[..., 4:6]).max()) == 0.0


def test_project_ball_and_centred_grid():
    th = jnp.array([[3.0, 4.0]])
    assert abs(float(jnp.linalg.norm(ex.project_ball(th, 1.0))) - 1.0) < 1e-12
    assert float(jnp.max(jnp.abs(ex.project_ball(th * 0.1, 1.0) - th * 0.1))) == 0.0
    G = ex.centred_grid(3, 2, 5)
    assert np.allclose(np.asarray(G).sum(-1), 0.0)
    assert float(jnp.max(jnp.linalg.norm(G.reshape(G.shape[0], -1), axis=1))) <= 1.0 + 1e-12


def test_maml_rl_gradient_and_pdl_identity():
    mdps = ml.sample_mdp_tasks(jax.random.key(0), 3, 3, 2, dtype=jnp.float64)
    th = 0.3 * jax.random.normal(jax.random.key(1), (3, 2), jnp.float64)
    check_grads(lambda t: ex.maml_rl_objective(t, mdps, 0.5), (th,), order=1, modes=("rev",))
    d = ex.adapted_policy_diagnostics(th, mdps, 0.5)
    assert np.max(np.abs(d["gap"] - d["pdl"])) < 1e-10
    assert (d["gap"] >= -1e-12).all() and (d["bound"] >= d["gap"] - 1e-12).all() and (d["C"] >= 1 - 1e-12).all()
    J = jax.vmap(ml.optimal_value)(mdps)
    Jad = jax.vmap(lambda m: ml.policy_value(th + 0.5 * jax.grad(ml.policy_value)(th, m), m))(mdps)
    assert np.allclose(np.asarray(J - Jad), d["gap"], atol=1e-10)


def test_logcosh_counterexample_structure():
    c = jnp.array([-2.0, 0.0, 1.0])
    w, F, d2 = ex.logcosh_local_minima(c, 0.5, n=4001)
    assert len(w) == 1 and d2 > -1e-10
    w, F, d2 = ex.logcosh_local_minima(c, 2.0, n=4001)
    assert len(w) == 2 and F[1] > F[0] + 1e-3 and d2 < 0


def test_width_sweep_groups_widths_and_reassembles_columns(monkeypatch):
    """Implementation check of ``bucket``: which widths share a padded program, and that each
    result lands in its (seed, width) cell. The compiled sweep is replaced by a stand-in that
    encodes its inputs (compiling the real one three times would cost tens of seconds; that the
    padding changes values only by round-off holds because masked units have zero features and
    zero gradients, and the initialisation is drawn at ``max_width`` whatever the group)."""
    calls = []

    def fake(keys, ms, M, padded, tasks, alpha, steps, lr):
        calls.append((int(M), int(padded), [int(m) for m in ms]))
        seeds = jnp.asarray([int(jax.random.key_data(k)[-1]) for k in keys], jnp.float64)
        code = 1000.0 * seeds + ms + padded / 10000.0
        return code, code + 1, code + 2, jnp.tile(code[:, None], (1, steps)), code + 3, code + 4

    monkeypatch.setattr(ex, "_width_sweep", fake)
    widths, seeds = [8, 16, 128, 256], [3, 5]
    out = ex.width_sweep_two_layer(None, widths, seeds, 0.05, 2, 1e-2, bucket=64)
    assert sorted((c[1], c[2]) for c in calls) == [(64, [8, 16, 8, 16]), (128, [128, 128]), (256, [256, 256])]
    assert all(c[0] == 256 for c in calls)
    for i, s in enumerate(seeds):
        for j, m in enumerate(widths):
            padded = 64 if m <= 64 else m
            assert out["nn"][i, j] == 1000.0 * s + m + padded / 10000.0
            assert out["lin_run"][i, j] == out["nn"][i, j] + 4 and out["curves"].shape == (2, 4, 2)
    calls.clear()
    ex.width_sweep_two_layer(None, widths, seeds, 0.05, 2, 1e-2)
    assert [(c[1], len(c[2])) for c in calls] == [(256, 8)]
