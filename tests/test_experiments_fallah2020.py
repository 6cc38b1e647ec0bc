"""Unit tests of the chapter driver ``mathlib.experiments.fallah2020`` (fast; closed forms and derived bounds)."""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import pytest

import mathlib as ml
from mathlib.experiments import fallah2020 as ex


@pytest.fixture(scope="module")
def cosine():
    tasks = ml.sample_cosine_tasks(jax.random.key(3), 6, 2, amp=0.5, freq=1.0)
    c = ml.cosine_constants(tasks)
    return tasks, float(c.L), float(c.rho)


def test_task_gradient_lemma(cosine):
    """Lemma fallah2020-lem-task-grad: E_i|grad f_i(w)| <= (|grad F(w)| + sigma(w)) / m at random points."""
    tasks, L, _ = cosine
    alpha = 1.0 / (6.0 * L)
    m = 2.0 - (1.0 + alpha * L) ** 2
    for w in ex.radial_points(jax.random.key(0), 20, 2, 0.1, 100.0):
        tg = jax.vmap(lambda t: jax.grad(ml.cosine_loss)(w, t))(tasks)
        sigma = float(jnp.sqrt(jnp.mean(jnp.sum((tg - tg.mean(0)) ** 2, -1))))
        gF = float(jnp.linalg.norm(ml.exact_meta_gradient(ml.cosine_loss, w, tasks, alpha)))
        assert float(jnp.mean(jnp.linalg.norm(tg, axis=-1))) <= (gF + sigma) / m * (1 + 1e-12)


def test_cosine_rho2_bounds_third_derivative(cosine):
    """cosine_rho2: |T(x)[v,v] - T(y)[v,v]| <= rho_2 |x - y| |v|^2 for the third derivative T of one task."""
    tasks, _, _ = cosine
    t0 = jax.tree_util.tree_map(lambda a: a[0], tasks)
    rho2 = ex.cosine_rho2(tasks)

    def t3(x, v):  # third derivative applied to (v, v): d/ds H(x + s v) v
        return jax.jvp(lambda y: jax.hessian(ml.cosine_loss)(y, t0) @ v, (x,), (v,))[1]

    key = jax.random.key(1)
    worst = 0.0
    for k in range(20):
        kx, ky, kv = jax.random.split(jax.random.fold_in(key, k), 3)
        x, y, v = (jax.random.normal(kk, (2,)) for kk in (kx, ky, kv))
        worst = max(worst, float(jnp.linalg.norm(t3(x, v) - t3(y, v)) / (jnp.linalg.norm(x - y) * jnp.linalg.norm(v) ** 2)))
    assert worst <= rho2 * (1 + 1e-9)
    assert worst >= 0.05 * rho2  # not vacuous


def test_logistic_rho2_max_of_sigmoid_third_derivative():
    """logistic_rho2 uses max|sigma'''| = 1/8: check it on a grid, and the constant on a batch."""
    z = jnp.linspace(-10, 10, 20001)
    s = jax.nn.sigmoid(z)
    d3 = s * (1 - s) * (1 - 6 * s + 6 * s**2)
    assert abs(float(jnp.max(jnp.abs(d3))) - 0.125) < 1e-8
    x = jnp.ones((4, 3))
    assert ex.logistic_rho2((x, None)) == pytest.approx(0.125 * 9.0)


def test_hf_target_rule_within_eps(cosine):
    """Proposition fallah2020-prop-hf-delta: the HF-MAML direction with delta_i = 2 eps/(alpha rho |v_i|^2) is within
    eps of MAML's, for far and near points."""
    tasks, L, rho = cosine
    alpha = 1.0 / (6.0 * L)
    ep = ml.Episode.deterministic(tasks)
    for eps in (1e-2, 1e-5):
        for w in ex.radial_points(jax.random.key(2), 5, 2, 0.1, 50.0):
            g = ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, ep, alpha=alpha)
            h = ml.meta_gradient(ex.hf_maml_target_grad, ml.cosine_loss, w, ep, alpha=alpha, eps=eps, rho=rho)
            assert float(jnp.linalg.norm(h - g)) <= eps


def test_linreg_noise_constants_sigma_tilde_closed_form():
    """sigma_tilde's closed form agrees with a Monte-Carlo estimate of the per-sample gradient variance."""
    tasks = ex.correlated_linreg_tasks(jax.random.key(0), 3, 3)
    w = jnp.zeros(3)
    c = ex.linreg_noise_constants(tasks, 0.1, w, seed=0, num_samples=500)
    rng = np.random.default_rng(0)
    worst = 0.0
    for i in range(3):
        x = rng.standard_normal((200000, 3)) @ np.asarray(tasks.cov_chol[i]).T
        y = x @ np.asarray(tasks.theta[i]) + float(tasks.noise_std[i]) * rng.standard_normal(200000)
        g = x * (x @ np.asarray(w) - y)[:, None]
        worst = max(worst, float(np.sum(g.var(axis=0))))
    assert c["sigma_tilde"] ** 2 == pytest.approx(worst, rel=0.03)
    assert c["dh_condition"] == int(np.ceil(2 * 0.1**2 * c["sigma_h"] ** 2))


def test_batch_bias_prediction_support_arm_matches_core():
    """The D_h = D_in prediction is grad F-hat - grad F of the core's closed form (two independent derivations agree
    in sign and size with the lemma's formula)."""
    tasks = ex.correlated_linreg_tasks(jax.random.key(1), 4, 3)
    w = jnp.ones(3)
    alpha, n = 0.1, 5
    pred = ex.linreg_batch_bias_prediction(tasks, alpha, w, n, 2)["support"]
    S, th = np.asarray(tasks.cov), np.asarray(tasks.theta)
    manual = np.mean([alpha**2 / n * (S[i] @ S[i] @ S[i] + np.trace(S[i] @ S[i]) * S[i]) @ (np.asarray(w) - th[i])
                      for i in range(4)], axis=0)
    np.testing.assert_allclose(pred, manual, rtol=1e-10, atol=1e-14)


def test_step_rule_runs_argument_checks(cosine):
    tasks, L, rho = cosine
    with pytest.raises(ValueError):
        ex.step_rule_runs(tasks, ml.cosine_loss, 0.1, L, rho, jnp.zeros((1, 2)), 5)
    with pytest.raises(ValueError):
        ex.step_rule_runs(tasks, ml.cosine_loss, 0.1, L, rho, jnp.zeros((1, 2)), 5, c=1.0, beta=0.1)
    with pytest.raises(ValueError):
        ex.det_theorem_count_bound(np.ones(3), np.ones(3), np.ones(3), 1.0, 1.0, 0.5, 1.0, 0.1)


@pytest.fixture(scope="module")
def logistic_family():
    loss, data, L, rho = ex.logistic_meta_family(jax.random.key(5), 4, 30, 3)
    return loss, data, L, rho


def test_logistic_direction_equals_core_estimators(logistic_family):
    """logistic_direction with (c_maml, c_hf) = (1,0), (0,1), (0,0) is maml_grad (independent D_h), hf_maml_target_grad
    and fomaml_grad; with full-data batches its task mean is exact_meta_gradient; the HF direction is within eps of
    MAML's (derived rule, rho valid for any sub-batch). One jitted program (eager calls compile op by op)."""
    loss, data, L, rho = logistic_family
    alpha, eps = 0.5 / L, 1e-4

    @jax.jit
    def pairs(data, w):
        x, y = data
        ep = ml.Episode((x[0, :8], y[0, :8]), (x[0, 8:16], y[0, 8:16]), (x[0, 16:24], y[0, 16:24]))
        d = lambda cm, ch: ex.logistic_direction(loss, w, ep, alpha, eps, rho, cm, ch)  # noqa: E731
        return [(d(1.0, 0.0), ml.maml_grad(loss, w, ep, alpha)),
                (d(0.0, 1.0), ex.hf_maml_target_grad(loss, w, ep, alpha, eps, rho)),
                (d(0.0, 0.0), ml.fomaml_grad(loss, w, ep, alpha)),
                (ex._logistic_exact_grad(loss, w, data, alpha), ml.exact_meta_gradient(loss, w, data, alpha)),
                (jnp.linalg.norm(d(0.0, 1.0) - d(1.0, 0.0)), jnp.asarray(eps))]

    out = pairs(data, jnp.array([0.3, -1.0, 2.0]))
    for got, want in out[:4]:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert float(out[4][0]) <= eps


def test_logistic_runs_argument_checks(logistic_family):
    loss, data, L, rho = logistic_family
    keys = jax.random.split(jax.random.key(0), 1)
    with pytest.raises(ValueError, match="multiple of eval_every"):
        ex.logistic_stochastic_runs(loss, data, 0.1, 0.1, rho, 1e-3, [2], 4, 15, 10, keys)


def test_one_step_correction_equals_core_estimators():
    """The sinusoid runs' directions v - alpha c (_one_step_correction) are the core maml_grad (autodiff, and with an
    independent Hessian batch), hf_maml_grad (delta_rule="per_task") and fomaml_grad (one jitted program)."""
    import functools

    loss = functools.partial(ml.mlp_mse_loss, activation="tanh")
    p = ml.init_mlp(jax.random.key(0), (1, 8, 8, 1), activation="tanh", dtype=jnp.float64)
    ep = ml.sample_sinusoid_episodes(jax.random.key(1), 1, 5, 5, k_hessian=6, dtype=jnp.float64)
    ep = jax.tree_util.tree_map(lambda x: x[0], ep)
    alpha, delta = 0.05, 1e-3

    @jax.jit
    def pairs(p, sup, qry, hes):
        g = jax.grad(loss)
        v = g(jax.tree_util.tree_map(lambda a, b: a - alpha * b, p, g(p, sup)), qry)

        def direction(method, kh):
            c = ex._one_step_correction(loss, p, sup, hes, v, method=method, k_hessian=kh, delta=delta)
            return jax.tree_util.tree_map(lambda a, b: a - alpha * b, v, c)

        h4 = jax.tree_util.tree_map(lambda x: x[:4], hes)
        return [(direction("maml", 0), ml.maml_grad(loss, p, ml.Episode(sup, qry, None), alpha)),
                (direction("maml", 4), ml.maml_grad(loss, p, ml.Episode(sup, qry, h4), alpha)),
                (direction("hf_maml", 0), ml.hf_maml_grad(loss, p, ml.Episode(sup, qry, None), alpha, delta,
                                                          delta_rule="per_task")),
                (direction("fomaml", 0), ml.fomaml_grad(loss, p, ml.Episode(sup, qry, None), alpha))]

    for got, want in pairs(p, ep.support, ep.query, ep.hessian):
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_linreg_direction_equals_core_estimators():
    """_linreg_direction with (c_maml, c_hf) = (1,0), (0,1), (0,0) is maml_grad, hf_maml_grad (fixed delta) and
    fomaml_grad with an independent Hessian batch; without one (FO-MAML group) it is fomaml_grad."""
    tasks = ex.correlated_linreg_tasks(jax.random.key(0), 3, 4)
    ep = ml.sample_regression_episodes(jax.random.key(1), tasks, 5, 5, 3)
    alpha, delta = 0.1, 1e-3

    @jax.jit
    def pairs(ep, w):
        e = jax.tree_util.tree_map(lambda x: x[0], ep)
        fo = ml.fomaml_grad(ml.mse_loss, w, e, alpha)
        return [(ex._linreg_direction(w, e, alpha, delta, 1.0, 0.0), ml.maml_grad(ml.mse_loss, w, e, alpha)),
                (ex._linreg_direction(w, e, alpha, delta, 0.0, 1.0), ml.hf_maml_grad(ml.mse_loss, w, e, alpha, delta)),
                (ex._linreg_direction(w, e, alpha, delta, 0.0, 0.0), fo),
                (ex._linreg_direction(w, ml.Episode(e.support, e.query, None), alpha, delta, 0.0, 0.0), fo)]

    for got, want in pairs(ep, jnp.array([0.5, -1.0, 0.2, 2.0])):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
