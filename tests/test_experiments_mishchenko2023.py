"""Unit tests of the chapter driver ``mathlib.experiments.mishchenko2023`` (fast, closed forms)."""

from __future__ import annotations

from functools import partial

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import mathlib as ml
from mathlib.experiments import mishchenko2023 as ex


@pytest.fixture(scope="module")
def tasks():
    return ml.sample_quadratic_tasks(jax.random.key(3), 6, 4, eig_range=(0.2, 1.0), rotation_spread=1.0, dtype=jnp.float64)


def qloss(u, t):
    return ml.quadratic_loss(u, ml.QuadraticTask(*t))


def test_envelope_constants():
    c = ex.envelope_constants(10.0, 0.1, 1.0)
    assert c["L_M"] == pytest.approx(10 / 11)
    assert c["mu_M"] == pytest.approx(0.1 / 1.1)
    assert c["kappa_M"] == pytest.approx(100 * 1.1 / 11)
    np.testing.assert_allclose(ex.envelope_eigs([1.0, 3.0], 0.5), [1 / 1.5, 3 / 2.5])


def test_sstep_polynomial_limits(tasks):
    A = tasks.A
    P1 = ex.sstep_polynomial(A, 0.5, 1)
    np.testing.assert_allclose(P1, jnp.eye(4)[None] - 0.5 * A, atol=1e-14)
    P = ex.sstep_polynomial(A, 0.5, 80)  # lam L = 0.5: converges to the resolvent
    np.testing.assert_allclose(P, jnp.linalg.inv(jnp.eye(4)[None] + 0.5 * A), atol=1e-12)


def test_sstep_direction_matches_mathlib_estimators():
    X, Y = ex.digits_tasks(0, 1, 20)
    batch = (X[0], Y[0])
    loss = partial(ex.ridge_logistic, l2=0.05)
    ep = ml.Episode(batch, batch, None)
    w = 0.1 * jnp.ones(X.shape[-1])
    lam = 0.05
    np.testing.assert_allclose(ex.sstep_direction(loss, w, batch, lam, 1), ml.fomaml_grad(loss, w, ep, lam, 1), atol=1e-14)
    for s in (1, 2, 5):
        np.testing.assert_allclose(ex.sstep_direction(loss, w, batch, lam, s), ml.moreau_grad(loss, w, ep, lam, s + 1, lr=lam), atol=1e-13)


def test_quadratic_sstep_closed_form_and_perturbed_point(tasks):
    w = jnp.arange(4.0) / 3
    lam = 0.7
    for s in (1, 3):
        direct = jax.vmap(lambda A, b: ex.sstep_direction(qloss, w, (A, b), lam, s))(tasks.A, tasks.b).mean(0)
        np.testing.assert_allclose(ex.quadratic_sstep_grad(w, tasks, lam, s), direct, atol=1e-13)
        z, y = ex.perturbed_point(qloss, w, (tasks.A[0], tasks.b[0]), lam, s)
        np.testing.assert_allclose(ml.quadratic_prox(y, ml.QuadraticTask(tasks.A[0], tasks.b[0]), lam), z, atol=1e-13)
        ws = ex.quadratic_sstep_fixed_point(tasks, lam, s)
        np.testing.assert_allclose(ex.quadratic_sstep_grad(ws, tasks, lam, s), 0.0, atol=1e-12)


def test_minimizers_are_stationary(tasks):
    lam = 0.4
    m = ex.minimizers(tasks, lam)
    np.testing.assert_allclose(ml.quadratic_moreau_grad(m["moreau"], tasks, lam), 0.0, atol=1e-12)
    np.testing.assert_allclose(ml.quadratic_imaml_grad(m["imaml"], tasks, lam), 0.0, atol=1e-12)
    np.testing.assert_allclose(ml.quadratic_maml_grad(m["maml"], tasks, lam, 1), 0.0, atol=1e-12)
    np.testing.assert_allclose(ml.quadratic_fomaml_grad(m["fomaml"], tasks, lam, 1), 0.0, atol=1e-12)
    grad_joint = jnp.einsum("nij,nj->ni", tasks.A, m["joint"][None] - tasks.b).mean(0)
    np.testing.assert_allclose(grad_joint, 0.0, atol=1e-12)


def test_stationary_second_moment_full_batch_and_scalar():
    # B = n: no variance, the error is the bias ||w_s - w*||^2
    A = jnp.array([[[1.0]], [[0.3]], [[0.6]]])
    b = jnp.array([[1.0], [-2.0], [0.5]])
    t = ml.QuadraticTask(A, b)
    lam, beta, s = 0.5, 0.3, 1
    bias = float(jnp.sum((ex.quadratic_sstep_fixed_point(t, lam, s) - ml.quadratic_moreau_minimizer(t, lam)) ** 2))
    assert ex.stationary_second_moment(t, lam, s, beta, 3) == pytest.approx(bias, rel=1e-10)
    # scalar, B = 1: Sigma = beta^2 E c^2 / (1 - E (1 - beta G)^2)
    G = np.asarray(A[:, 0, 0]) * (1 - lam * np.asarray(A[:, 0, 0]))
    ws = float(ex.quadratic_sstep_fixed_point(t, lam, s)[0])
    c = G * (ws - np.asarray(b[:, 0]))
    sigma = beta**2 * np.mean(c**2) / (1 - np.mean((1 - beta * G) ** 2))
    assert ex.stationary_second_moment(t, lam, s, beta, 1) == pytest.approx(bias + sigma, rel=1e-10)


def test_kink_prox_and_jump():
    L, lam = 10.0, 1.0
    loss = lambda w, batch: ex.kink_f(w, L)
    for x in (0.5, 1.9, 2.1, 3.0):
        p = ml.prox_solve(loss, jnp.asarray(x), None, lam, 400, smoothness=L)
        assert float(p) == pytest.approx(float(ex.kink_prox(jnp.asarray(x), lam, L)), abs=1e-12)
    g = jax.grad(lambda x: ex.kink_imaml_value(x, lam, L))
    assert float(g(2.0 - 1e-9)) == pytest.approx(0.5, abs=1e-6)
    assert float(g(2.0 + 1e-9)) == pytest.approx(1 / 11, abs=1e-6)
    check_grads(lambda x: ex.kink_moreau_value(x, lam, L), (jnp.asarray(1.3),), order=2, modes=["rev"])
    check_grads(lambda x: ex.kink_moreau_value(x, lam, L), (jnp.asarray(2.7),), order=2, modes=["rev"])


def test_smooth_kink_curvature_leading_order():
    val, _ = ex.smooth_kink_min_curvature(1.0, 10.0, 1e-4)
    assert val / ex.smooth_kink_prediction(1.0, 10.0, 1e-4) == pytest.approx(1.0, rel=0.02)


def test_ridge_logistic_gradients():
    X, Y = ex.digits_tasks(1, 1, 10)
    check_grads(lambda w: ex.ridge_logistic(w, (X[0], Y[0]), 0.05), (0.01 * jnp.ones(X.shape[-1]),), order=2, modes=["rev"])


def test_bounds_nan_outside_conditions():
    assert np.isnan(ex.naive_radius(0.9, 1.0, 0.01, 1, 1.0))
    assert np.isfinite(ex.perturbed_radius(0.1, 1.0, 0.5, 3, 1.0))
    assert np.isnan(ex.stochastic_bound(0.5, 1.0, 0.1, 4, 1.0, 1.0, 1.0, 1, 20))


def test_fit_ratio_exact_geometric():
    s = np.arange(1, 8)
    assert ex.fit_ratio(s, 3 * 0.4**s) == pytest.approx(0.4)


def test_bound_formulas_match_the_theorems():
    # lam L = 0.5, kappa = 10: kappa_M = 10 * 1.05 / 1.5 = 7 (the chapter's quadratic family)
    lam, L, mu, sig = 0.5, 1.0, 0.1, 2.0
    k = 10 * 1.05 / 1.5
    assert ex.envelope_constants(L, mu, lam)["kappa_M"] == pytest.approx(k)
    s = 3
    q = k * 0.5 ** (s + 1)
    assert float(ex.naive_radius(lam, L, mu, s, sig)) == pytest.approx(k * lam * 0.5**s * sig / (1 - q))
    assert float(ex.perturbed_radius(lam, L, mu, s, sig)) == pytest.approx(np.sqrt(24 * k) * lam * 0.5**s * sig)
    assert np.isnan(ex.perturbed_radius(lam, L, mu, 2, sig))  # 24 * 7 * 0.5**6 > 1
    LM, muM, n, B, beta = 1 / 1.5, 0.1 / 1.05, 20, 20, 0.4
    s = 4  # 72 * 7 * 0.5**10 <= 1; B = n: no variance term, no step condition from c_B
    assert float(ex.stochastic_bound(lam, L, mu, s, sig, 1.0, beta, B, n)) == pytest.approx(36 * k * lam**2 * 0.5 ** (2 * s) * sig**2)
    B, beta = 5, 0.05  # c_B = 15/95; beta <= mu_M / (24 c_B L_M^2) = 0.0566
    cB = (n - B) / (B * (n - 1))
    assert beta <= muM / (24 * cB * LM**2)
    val = 36 * k * lam**2 * 0.5 ** (2 * s) * sig**2 + 12 * beta * cB * 1.5**2 / muM
    assert float(ex.stochastic_bound(lam, L, mu, s, sig, 1.5, beta, B, n)) == pytest.approx(val)
    assert np.isnan(ex.stochastic_bound(lam, L, mu, s, sig, 1.5, 0.1, B, n))
    assert float(ex.cg_bound(4.0, 3)) == pytest.approx(2 * (1 / 3) ** 3)
