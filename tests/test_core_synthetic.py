"""Linear-regression tasks: exact population quantities and the bias of the stochastic inner step."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mathlib as ml  # noqa: E402

DIM = 3


def _mc_mean(samples):
    s = np.asarray(samples)
    return s.mean(0), s.std(0, ddof=1) / np.sqrt(s.shape[0])


def test_linreg_population_loss_and_batches():
    tasks = ml.sample_linear_regression_tasks(jax.random.key(51), 2, DIM, noise_std=0.7)
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    np.testing.assert_allclose(t0.cov_chol @ t0.cov_chol.T, t0.cov, rtol=1e-12)
    X, y = ml.sample_regression_batch(jax.random.key(52), t0, 200_000)
    w = jnp.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(np.cov(np.asarray(X).T), t0.cov, atol=0.03)
    assert abs(float(ml.mse_loss(w, (X, y)) / ml.linreg_population_loss(w, t0)) - 1) < 0.02
    np.testing.assert_allclose(jax.grad(ml.linreg_population_loss)(w, t0), ml.linreg_population_grad(w, t0), rtol=1e-12)
    np.testing.assert_allclose(jax.hessian(ml.linreg_population_loss)(w, t0), ml.linreg_population_hessian(t0), rtol=1e-12)
    # the population MAML objective is the quadratic one plus the noise constant
    np.testing.assert_allclose(
        ml.linreg_maml_objective(w, tasks, 0.2),
        ml.quadratic_maml_objective(w, ml.linreg_as_quadratic(tasks), 0.2) + 0.5 * 0.7**2, rtol=1e-12)
    np.testing.assert_allclose(jax.grad(ml.linreg_maml_objective)(w, tasks, 0.2, 2), ml.linreg_maml_grad(w, tasks, 0.2, 2), rtol=1e-12)


def test_stochastic_maml_expectations():
    """Alg. 1 (independent D_h) is unbiased for grad F; autodiff with D_h = D_in is unbiased for grad F_hat."""
    tasks = ml.sample_linear_regression_tasks(jax.random.key(53), 1, DIM, noise_std=0.5, eig_range=(0.5, 1.5))
    alpha, n_in, M = 0.4, 2, 40_000
    w = jnp.array([1.0, -2.0, 0.5])
    rep = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (M,) + x.shape[1:]), tasks)
    eps = ml.sample_regression_episodes(jax.random.key(54), rep, n_in, 3, 2)
    g_alg1 = ml.task_gradients(ml.maml_grad, ml.mse_loss, w, eps, alpha=alpha)
    g_same = ml.task_gradients(ml.maml_grad, ml.mse_loss, w, eps._replace(hessian=None), alpha=alpha)
    g_fo = ml.task_gradients(ml.fomaml_grad, ml.mse_loss, w, eps, alpha=alpha)
    gF, gFhat = ml.linreg_maml_grad(w, tasks, alpha), ml.linreg_maml_grad(w, tasks, alpha, n_in)
    q = ml.linreg_as_quadratic(tasks)
    gap = float(jnp.linalg.norm(gF - gFhat))
    for samples, target, other in ((g_alg1, gF, gFhat), (g_same, gFhat, gF), (g_fo, ml.quadratic_fomaml_grad(w, q, alpha), None)):
        m, se = _mc_mean(samples)
        assert np.all(np.abs(m - np.asarray(target)) < 5 * se + 1e-12), (m, target, se)
        if other is not None:
            assert np.linalg.norm(m - np.asarray(other)) > 10 * np.linalg.norm(se)
    assert gap > 0.1
    # and the value of the practical objective with a stochastic inner step
    def adapted_value(ep):
        u = ml.adapt_gd(ml.mse_loss, w, ep.support, alpha, 1)
        return ml.linreg_population_loss(u, jax.tree_util.tree_map(lambda x: x[0], tasks))

    vals = jax.vmap(adapted_value)(eps)
    m, se = _mc_mean(vals)
    assert abs(m - float(ml.linreg_maml_objective(w, tasks, alpha, n_in))) < 5 * se
    assert abs(m - float(ml.linreg_maml_objective(w, tasks, alpha))) > 10 * se
