"""Training loops and outer optimisers: convergence to closed forms, floors, divergence detection."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

DIM, N, ALPHA = 4, 10, 0.2


@pytest.fixture(scope="module")
def quad():
    tasks = ml.sample_quadratic_tasks(jax.random.key(41), N, DIM, eig_range=(0.5, 2.0), b_scale=2.0)
    LF = float(jnp.linalg.eigvalsh(ml.quadratic_maml_hessian(tasks, ALPHA, 1))[-1])
    return tasks, LF


def test_run_deterministic_maml_and_fomaml_floor(quad):
    tasks, LF = quad
    exact = lambda p: ml.quadratic_maml_grad(p, tasks, ALPHA, 1)  # noqa: E731
    w0 = jnp.zeros(DIM)
    _, h = ml.run_deterministic(ml.make_estimator("maml", alpha=ALPHA), ml.quadratic_loss, w0, tasks, 1.0 / LF, 400,
                                exact_grad_fn=exact, chunk_size=200)
    assert h["exact_grad_norm"].shape == (400,) and h["exact_grad_norm"][-1] < 1e-10
    assert h["exact_grad_norm"][0] > 1e-1
    np.testing.assert_allclose(h["grad_norm"], h["exact_grad_norm"], rtol=1e-8, atol=1e-14)
    # FO-MAML plateaus at the closed-form fixed point's |grad F|
    floor = float(jnp.linalg.norm(exact(ml.quadratic_fomaml_fixed_point(tasks, ALPHA, 1))))
    assert floor > 1e-3
    s, h = ml.run_deterministic(ml.make_estimator("fomaml", alpha=ALPHA), ml.quadratic_loss, w0, tasks, 1.0 / LF, 400,
                                exact_grad_fn=exact, chunk_size=200)
    assert abs(h["exact_grad_norm"][-1] / floor - 1) < 0.01
    np.testing.assert_allclose(s.params, ml.quadratic_fomaml_fixed_point(tasks, ALPHA, 1), rtol=1e-8)
    # HF-MAML is exact on quadratics, so it converges like MAML
    _, h = ml.run_deterministic(ml.make_estimator("hf_maml", alpha=ALPHA, delta=0.1), ml.quadratic_loss, w0, tasks,
                                1.0 / LF, 400, exact_grad_fn=exact, chunk_size=200)
    assert h["exact_grad_norm"][-1] < 1e-10
    # continuing from a state keeps the step counter and the trajectory
    est = ml.make_estimator("maml", alpha=ALPHA)
    s1, _ = ml.run_deterministic(est, ml.quadratic_loss, w0, tasks, 1.0 / LF, 10)
    s2, h2 = ml.run_deterministic(est, ml.quadratic_loss, None, tasks, 1.0 / LF, 5, state=s1)
    s3, _ = ml.run_deterministic(est, ml.quadratic_loss, w0, tasks, 1.0 / LF, 15)
    assert list(h2["step"]) == [10, 11, 12, 13, 14] and int(s2.step) == 15
    np.testing.assert_allclose(s2.params, s3.params, rtol=1e-13)


def test_divergence_raises_with_step(quad):
    tasks, LF = quad
    with pytest.raises(FloatingPointError, match=r"non-finite at step \d+"):
        ml.run_deterministic(ml.make_estimator("maml", alpha=ALPHA), ml.quadratic_loss, jnp.ones(DIM), tasks, 50.0 / LF,
                             3000, chunk_size=500, max_growth=None)


def test_divergence_step_is_first_nonfinite():
    # scalar quadratic f(w) = w^2/2, GD on f with step 3: w_k = (-2)^k. The first non-finite recorded
    # quantity is |g_k|^2 = 4^k if the norm is computed as sqrt(g.g) (4^k >= 2^1024 first at k = 512),
    # else the loss 4^k/2 one step later (k = 513); which one depends on XLA's simplification of sqrt(g*g).
    tasks = ml.QuadraticTask(jnp.ones((1, 1, 1)), jnp.zeros((1, 1)))
    est = ml.make_estimator("reptile", alpha=1e-3, steps=1)  # = plain gradient for K = 1
    k_inf = 512
    with pytest.raises(FloatingPointError, match=rf"non-finite at step ({k_inf}|{k_inf + 1})\b"):
        ml.run_deterministic(est, ml.quadratic_loss, jnp.ones(1), tasks, 3.0, 2000, chunk_size=300, max_growth=None)


def test_train_stochastic_linreg_with_adaptive_step():
    tasks = ml.sample_linear_regression_tasks(jax.random.key(42), 30, DIM, noise_std=0.3, theta_mean_scale=3.0)
    q = ml.linreg_as_quadratic(tasks)
    L, alpha = float(ml.quadratic_smoothness(q)), 0.1

    def sample(key):
        kt, kb = jax.random.split(key)
        idx = jax.random.randint(kt, (8,), 0, 30)
        sub = jax.tree_util.tree_map(lambda x: x[idx], tasks)
        return ml.sample_regression_episodes(kb, sub, 10, 10, 5)

    step_fn = lambda w, k: ml.fallah_step_size(ml.mse_loss, w, sample(k), L, 0.0, alpha, 1.0)  # noqa: E731
    state, h = ml.train(ml.make_estimator("maml", alpha=alpha), ml.mse_loss, jnp.zeros(DIM), ml.outer_optimizer("sgd", 1.0),
                        sample, 300, jax.random.key(0), exact_grad_fn=lambda w: ml.quadratic_maml_grad(w, q, alpha, 1),
                        exact_loss_fn=lambda w: ml.linreg_maml_objective(w, tasks, alpha), step_size_fn=step_fn,
                        chunk_size=150, record_params=True)
    assert set(h) >= {"step", "meta_loss", "grad_norm", "exact_grad_norm", "exact_loss", "step_size", "params"}
    assert h["params"].shape == (300, DIM) and int(state.step) == 300
    np.testing.assert_allclose(h["step_size"], 1.0 / (4 * L))  # rho = 0: constant c / (4L)
    assert h["exact_grad_norm"][-50:].mean() < 0.2 * h["exact_grad_norm"][0]
    assert h["exact_loss"][-1] < h["exact_loss"][0]


def test_outer_optimizers():
    g1, g2 = jnp.array([3.0, 4.0]), jnp.array([0.0, 1.0])
    w = jnp.zeros(2)
    opt = ml.outer_optimizer("normalized_sgd_momentum", 0.5, beta=0.8)
    st = opt.init(w)
    u1, st = opt.update(g1, st, w)
    m1 = 0.2 * g1
    np.testing.assert_allclose(u1, -0.5 * m1 / jnp.linalg.norm(m1), rtol=1e-10)
    u2, st = opt.update(g2, st, w)
    m2 = 0.8 * m1 + 0.2 * g2
    np.testing.assert_allclose(u2, -0.5 * m2 / jnp.linalg.norm(m2), rtol=1e-10)
    opt = ml.outer_optimizer("clipped_sgd", 0.1, max_norm=1.0)
    u, _ = opt.update(g1, opt.init(w), w)
    np.testing.assert_allclose(u, -0.1 * g1 / 5.0, rtol=1e-12)
    u, _ = opt.update(0.1 * g1, opt.init(w), w)
    np.testing.assert_allclose(u, -0.01 * g1, rtol=1e-12)
    for name in ("sgd", "adam"):
        o = ml.outer_optimizer(name, 0.1)
        u, _ = o.update(g1, o.init(w), w)
        assert np.all(np.asarray(u) < 0)
