"""No silent failures (issue 8, item 4): prox divergence, CG tolerance/residual, divergence in train, shape errors.

Every test here failed before the fix it guards (implementation checks of error paths and closed forms).
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

DIM = 3


@pytest.fixture(scope="module")
def tasks():
    # eigenvalues in [0.5, 2]: L = 2, so lam = 1 gives lam * L = 2 >= 1 (the default prox step diverges)
    return ml.sample_quadratic_tasks(jax.random.key(3), 4, DIM, eig_range=(0.5, 2.0), b_scale=1.0)


def _one(tasks, i=0):
    return jax.tree_util.tree_map(lambda x: x[i], tasks)


def test_prox_default_step_divergence_is_an_error(tasks):
    t, w = _one(tasks), jnp.ones(DIM)
    with pytest.raises(FloatingPointError, match=r"prox_solve: the prox iteration diverged.*smoothness=L"):
        ml.prox_solve(ml.quadratic_loss, w, t, 1.0, 8)
    # under jit the result is NaN instead of garbage ...
    u = jax.jit(lambda w: ml.prox_solve(ml.quadratic_loss, w, t, 1.0, 8))(w)
    assert np.all(np.isnan(np.asarray(u)))
    # ... and so is the Moreau estimate through meta_gradient, which train then reports
    est = ml.make_estimator("moreau", lam=1.0, steps=8)
    g = jax.jit(lambda w: ml.meta_gradient(est, ml.quadratic_loss, w, ml.Episode.deterministic(tasks)))(w)
    assert np.all(np.isnan(np.asarray(g)))
    with pytest.raises(FloatingPointError, match="non-finite at step 0"):
        ml.run_deterministic(est, ml.quadratic_loss, w, tasks, 0.1, 5)
    # check=False: the raw (diverged) iterate, far from the prox
    raw = ml.prox_solve(ml.quadratic_loss, w, t, 1.0, 8, check=False)
    assert np.linalg.norm(raw - ml.quadratic_prox(w, t, 1.0)) > 1.0


def test_prox_with_smoothness_converges_for_large_lam(tasks):
    t, w = _one(tasks), jnp.ones(DIM)
    for lam in (1.0, 10.0):  # lam * L = 2 and 20
        u, res = ml.prox_solve(ml.quadratic_loss, w, t, lam, 400, smoothness=2.0, return_residual=True)
        np.testing.assert_allclose(u, ml.quadratic_prox(w, t, lam), rtol=1e-9, atol=1e-10)
        assert res < 1e-9
    # moreau_grad with smoothness matches the closed form even at lam * L = 20
    est = ml.make_estimator("moreau", lam=10.0, steps=400, smoothness=2.0)
    g = ml.meta_gradient(est, ml.quadratic_loss, w, ml.Episode.deterministic(tasks))
    np.testing.assert_allclose(g, ml.quadratic_moreau_grad(w, tasks, 10.0), rtol=1e-8)
    # a convergent default-step run (lam * L = 0.4 < 1) is not flagged
    u = ml.prox_solve(ml.quadratic_loss, w, t, 0.2, 60)
    np.testing.assert_allclose(u, ml.quadratic_prox(w, t, 0.2), rtol=1e-10)


def test_imaml_cg_tol_and_residual(tasks):
    t, w = _one(tasks), jnp.ones(DIM)
    ep = ml.Episode.deterministic(t)
    exact = ml.quadratic_imaml_grad(w, t, 0.3)
    g, res = ml.imaml_grad(ml.quadratic_loss, w, ep, 0.3, 200, 50, cg_tol=1e-10, return_residual=True)
    assert float(res) <= 1e-10
    np.testing.assert_allclose(g, exact, rtol=1e-8)
    g1, res1 = ml.imaml_grad(ml.quadratic_loss, w, ep, 0.3, 200, 1, return_residual=True)
    assert float(res1) > 1e-4  # one CG step is not enough, and the residual says so
    # the residual is the relative residual of the linear system (checked against a dense solve)
    H = t.A
    b = jax.grad(ml.quadratic_loss)(ml.prox_solve(ml.quadratic_loss, w, t, 0.3, 200), t)
    r = (jnp.eye(DIM) + 0.3 * H) @ g1 - b
    np.testing.assert_allclose(res1, jnp.linalg.norm(r) / jnp.linalg.norm(b), rtol=1e-8)
    est = ml.make_estimator("imaml", lam=0.3, steps=200, cg_steps=50, cg_tol=1e-10)
    np.testing.assert_allclose(est(ml.quadratic_loss, w, ep), exact, rtol=1e-8)
    with pytest.raises(ValueError, match="cg_tol"):
        ml.make_estimator("imaml", lam=0.3, steps=2, cg_steps=2, cg_tol=-1.0)


def test_train_reports_growth_with_step_and_last_values(tasks):
    # GD with step 3 on f(w) = w^2/2: w_k = (-2)^k, |g_k| = 2^k; 2^k > 1e3 * max(1, 1) first at k = 10
    one = ml.QuadraticTask(jnp.ones((1, 1, 1)), jnp.zeros((1, 1)))
    est = ml.make_estimator("reptile", alpha=1e-3, steps=1)
    with pytest.raises(FloatingPointError, match=r"diverged at step 10\b.*at step 9: meta-loss .*estimate norm 512.*parameter norm 512"):
        ml.run_deterministic(est, ml.quadratic_loss, jnp.ones(1), one, 3.0, 200, chunk_size=7, max_growth=1e3)
    # default threshold 1e6: 2^k > 1e6 first at k = 20; a run that studies divergence can switch it off
    with pytest.raises(FloatingPointError, match=r"diverged at step 20\b"):
        ml.run_deterministic(est, ml.quadratic_loss, jnp.ones(1), one, 3.0, 200)
    _, h = ml.run_deterministic(est, ml.quadratic_loss, jnp.ones(1), one, 3.0, 30, max_growth=None)
    np.testing.assert_allclose(h["grad_norm"][-1], 2.0**29, rtol=1e-9)


def test_shape_errors_name_both_shapes(tasks):
    t = _one(tasks)
    with pytest.raises(ValueError, match=r"quadratic_loss: shape mismatch: w has shape \(4,\) but the task's b has shape \(3,\)"):
        ml.quadratic_loss(jnp.ones(4), t)
    est = ml.make_estimator("maml", alpha=0.1)
    with pytest.raises(ValueError, match=r"shape \(4,\).*\(3,\)"):
        ml.meta_gradient(est, ml.quadratic_loss, jnp.ones(4), ml.Episode.deterministic(tasks))
    params = ml.init_mlp(jax.random.key(0), (2, 8, 1))
    x = jnp.ones((5, 1))
    with pytest.raises(ValueError, match=r"linear_apply: shape mismatch: input x has shape \(5, 1\) but weight w has shape \(2, 8\)"):
        ml.mlp_mse_loss(params, (x, jnp.ones((5, 1))))
    with pytest.raises(ValueError, match=r"logistic_loss: shape mismatch: x has shape \(5, 3\) but w has shape \(2,\)"):
        ml.logistic_loss(jnp.ones(2), (jnp.ones((5, 3)), jnp.ones(5)))
    with pytest.raises(ValueError, match=r"mse_loss: shape mismatch"):
        ml.mse_loss(jnp.ones(2), (jnp.ones((5, 3)), jnp.ones(5)))
