"""What a researcher hits first (issue 8, item 8): each test failed before its fix.

Implementation checks: derivatives of first-order estimates (no stop_gradient), accuracy with one-hot
labels, batched vs single episodes, test-time adaptation, continued training draws new episodes,
exact_meta_gradient on an Episode, shot-count names, ANIL by mask, error names, history keys.
"""

import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

DIM = 3


@pytest.fixture(scope="module")
def cos():
    tasks = ml.sample_cosine_tasks(jax.random.key(31), 4, DIM, amp=0.5, freq=1.5)
    w = jax.random.normal(jax.random.key(32), (DIM,))
    return tasks, w, ml.Episode.deterministic(tasks)


def _fd(f, x, h=1e-5):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("name,hyper,var", [
    ("fomaml", dict(steps=2), "alpha"),
    ("sign_maml", dict(steps=2), "alpha"),
    ("imaml", dict(steps=30, cg_steps=20), "lam"),
])
def test_first_order_estimates_are_differentiable(cos, name, hyper, var):
    _, w, eps = cos

    def sq(x):  # |g(x)|^2, g the estimate as a function of alpha (or lam)
        g = ml.meta_gradient(ml.ESTIMATORS[name], ml.cosine_loss, w, eps, **{var: x}, **hyper)
        return jnp.sum(g * g)

    x0 = 0.1
    ad = jax.grad(sq)(x0)
    fd = _fd(sq, x0)
    assert abs(float(fd)) > 1e-3  # the derivative is not zero ...
    np.testing.assert_allclose(ad, fd, rtol=1e-5)  # ... and autodiff gets it (it gave 0 before)
    # and with respect to w (the Jacobian of the FO estimate, not the identity-free zero)
    J = jax.jacobian(lambda p: ml.meta_gradient(ml.ESTIMATORS[name], ml.cosine_loss, p, eps, **{var: x0}, **hyper))(w)
    v = jnp.array([1.0, -0.5, 0.25])
    Jfd = _fd(lambda t: ml.meta_gradient(ml.ESTIMATORS[name], ml.cosine_loss, w + t * v, eps, **{var: x0}, **hyper), 0.0)
    np.testing.assert_allclose(J @ v, Jfd, rtol=1e-5, atol=1e-8)


def test_fo_anil_is_differentiable():
    key = jax.random.key(0)
    params = ml.init_body_head(key, (1, 8, 8, 1), dtype=jnp.float64)
    ep = ml.sample_sinusoid_episodes(jax.random.key(1), 3, 5, 5, dtype=jnp.float64)

    def sq(a):
        g = ml.meta_gradient(ml.anil_grad, ml.body_head_mse_loss, params, ep, alpha=a, steps=2, first_order=True)
        return ml.tree_vdot(g, g)

    np.testing.assert_allclose(jax.grad(sq)(0.1), _fd(sq, 0.1), rtol=1e-5)
    assert abs(float(jax.grad(sq)(0.1))) > 1e-6


def test_accuracy_one_hot_and_binary():
    logits = jnp.array([[2.0, 0.1, -1.0], [0.0, 3.0, 1.0]])
    labels = jnp.array([0, 1])
    assert float(ml.accuracy(logits, labels)) == 1.0
    assert float(ml.accuracy(logits, jax.nn.one_hot(labels, 3))) == 1.0  # was 0.5
    assert float(ml.accuracy(logits, jax.nn.one_hot(jnp.array([0, 2]), 3))) == 0.5
    assert float(ml.accuracy(jnp.array([1.0, -2.0, 0.5]), jnp.array([1, 0, 0]))) == pytest.approx(2 / 3)
    assert float(ml.accuracy(jnp.array([[1.0], [-2.0]]), jnp.array([[1], [0]]))) == 1.0


def test_single_episode_is_not_silently_vmapped():
    params = ml.init_mlp(jax.random.key(0), (1, 8, 1), dtype=jnp.float64)
    batch = ml.sample_sinusoid_episodes(jax.random.key(1), 2, 5, 10, dtype=jnp.float64)
    single = jax.tree_util.tree_map(lambda x: x[0], batch)
    est = ml.make_estimator("maml", alpha=0.01)
    with pytest.raises(ValueError, match=r"one leading task axis.*support \[5\], query \[10\].*batched=False"):
        ml.meta_gradient(est, ml.mlp_mse_loss, params, single)
    g1 = ml.meta_gradient(est, ml.mlp_mse_loss, params, single, batched=False)
    ref = est(ml.mlp_mse_loss, params, single)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert ml.task_gradients(est, ml.mlp_mse_loss, params, single, batched=False)[0]["w"].shape[0] == 1


def test_estimator_adapt_is_the_inner_map(cos):
    tasks, w, _ = cos
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    L = ml.cosine_loss
    cases = [
        (ml.make_estimator("maml", alpha=0.1, steps=3), ml.adapt_gd(L, w, t0, 0.1, 3)),
        (ml.make_estimator("reptile", alpha=0.1, steps=2), ml.adapt_gd(L, w, t0, 0.1, 2)),
        (ml.make_estimator("hf_maml", alpha=0.1, delta=1e-3), ml.adapt_gd(L, w, t0, 0.1, 1)),
        (ml.make_estimator("sign_maml", alpha=0.01, steps=2), ml.adapt_sign(L, w, t0, 0.01, 2)),
        (ml.make_estimator("moreau", lam=0.1, steps=5), ml.prox_solve(L, w, t0, 0.1, 5)),
    ]
    for est, ref in cases:
        np.testing.assert_allclose(est.adapt(L, w, t0), ref, rtol=1e-13)
    # the estimator's objective is the query loss at the adapted point
    e = cases[0][0]
    np.testing.assert_allclose(e.objective(L, w, ml.Episode.deterministic(t0)), L(e.adapt(L, w, t0), t0), rtol=1e-13)


def test_train_continued_draws_new_episodes():
    tasks = ml.sample_quadratic_tasks(jax.random.key(0), 8, DIM)

    def sample(key):
        idx = jax.random.randint(key, (2,), 0, 8)
        return ml.Episode.deterministic(jax.tree_util.tree_map(lambda x: x[idx], tasks))

    est, opt, key = ml.make_estimator("maml", alpha=0.1), optax.sgd(0.05), jax.random.key(7)
    s1, h1 = ml.train(est, ml.quadratic_loss, jnp.ones(DIM), opt, sample, 10, key, chunk_size=4)
    s2, h2 = ml.train(est, ml.quadratic_loss, None, opt, sample, 6, key, state=s1, chunk_size=4)
    s3, h3 = ml.train(est, ml.quadratic_loss, jnp.ones(DIM), opt, sample, 16, key, chunk_size=4)
    np.testing.assert_allclose(s2.params, s3.params, rtol=1e-12)  # = one run of 16 steps (was a replay)
    np.testing.assert_allclose(np.concatenate([h1["meta_loss"], h2["meta_loss"]]), h3["meta_loss"], rtol=1e-12)
    assert list(h2["step"]) == list(range(10, 16))


def test_train_history_keys_match_docstring():
    tasks = ml.sample_quadratic_tasks(jax.random.key(0), 3, DIM)
    plain = lambda loss, p, ep: ml.maml_grad(loss, p, ep, 0.1)  # noqa: E731
    _, h = ml.run_deterministic(plain, ml.quadratic_loss, jnp.ones(DIM), tasks, 0.1, 3)
    assert {"step", "meta_loss", "grad_norm", "param_norm"} <= set(h) and np.isnan(h["meta_loss"]).all()


def test_exact_meta_gradient_accepts_an_episode():
    params = ml.init_mlp(jax.random.key(0), (1, 8, 1), dtype=jnp.float64)
    ep = ml.sample_sinusoid_episodes(jax.random.key(1), 3, 5, 7, dtype=jnp.float64)
    g = ml.exact_meta_gradient(ml.mlp_mse_loss, params, ep, 0.01, 2)
    ref = ml.meta_gradient(ml.maml_grad, ml.mlp_mse_loss, params, ep, alpha=0.01, steps=2)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_shot_count_names_and_deprecations():
    tasks = ml.sample_linear_regression_tasks(jax.random.key(0), 3, DIM)
    ep = ml.sample_regression_episodes(jax.random.key(1), tasks, k_support=4, k_query=5, k_hessian=6)
    assert ep.support[0].shape == (3, 4, DIM) and ep.query[0].shape == (3, 5, DIM) and ep.hessian[0].shape == (3, 6, DIM)
    with pytest.warns(DeprecationWarning, match="'n_support' is deprecated, use 'k_support'"):
        old = ml.sample_regression_episodes(jax.random.key(1), tasks, n_support=4, n_query=5, n_hessian=6)
    np.testing.assert_array_equal(old.support[0], ep.support[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ml.sample_regression_episodes(jax.random.key(1), tasks, 4, 5)  # positional: no warning
    d = ml.digits_dataset()
    with pytest.warns(DeprecationWarning, match="'k_shot' is deprecated"):
        a = ml.sample_nway_kshot(jax.random.key(2), d.X, d.y, d.test_classes, 3, k_shot=2, k_query=1)
    b = ml.sample_nway_kshot(jax.random.key(2), d.X, d.y, d.test_classes, 3, k_support=2, k_query=1)
    np.testing.assert_array_equal(a.support[0], b.support[0])
    with pytest.raises(TypeError, match="not both"):
        ml.sample_nway_kshot(jax.random.key(2), d.X, d.y, d.test_classes, 3, k_support=2, k_query=1, k_shot=2)


def test_anil_by_mask_matches_body_head():
    params = ml.init_body_head(jax.random.key(0), (1, 8, 8, 1), dtype=jnp.float64)
    ep = ml.sample_sinusoid_episodes(jax.random.key(1), 3, 5, 5, dtype=jnp.float64)
    mask = {"body": jax.tree_util.tree_map(lambda _: False, params["body"]),
            "head": jax.tree_util.tree_map(lambda _: True, params["head"])}
    for fo in (False, True):
        ref = ml.meta_gradient(ml.anil_grad, ml.body_head_mse_loss, params, ep, alpha=0.1, steps=2, first_order=fo)
        est = ml.make_estimator("anil", alpha=0.1, steps=2, first_order=fo, mask=mask)
        got = ml.meta_gradient(est, ml.body_head_mse_loss, params, ep)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)
    assert hash(est) == hash(ml.make_estimator("anil", alpha=0.1, steps=2, first_order=True, mask=mask))
    # any pytree: adapt only the last layer of a plain MLP (a list), given as a function of params
    mlp = ml.init_mlp(jax.random.key(2), (1, 8, 1), dtype=jnp.float64)
    last = lambda p: [{"w": False, "b": False}, {"w": True, "b": True}]  # noqa: E731
    s0 = jax.tree_util.tree_map(lambda x: x[0], ep.support)
    out = ml.adapt_masked(ml.mlp_mse_loss, mlp, s0, 0.1, 1, mask=last)
    g = jax.grad(ml.mlp_mse_loss)(mlp, s0)
    np.testing.assert_array_equal(out[0]["w"], mlp[0]["w"])
    np.testing.assert_allclose(out[1]["w"], mlp[1]["w"] - 0.1 * g[1]["w"], rtol=1e-13)
    with pytest.raises(ValueError, match="adapt_masked: argument 'mask' must have the structure"):
        ml.adapt_masked(ml.mlp_mse_loss, mlp, s0, 0.1, 1, mask={"head": True})


def test_make_estimator_errors_name_make_estimator():
    with pytest.raises(TypeError, match=r"^make_estimator: argument 'steps' must be an integer"):
        ml.make_estimator("maml", alpha=0.1, steps=5.0)
    with pytest.raises(ValueError, match=r"^make_estimator: argument 'alpha' must be > 0"):
        ml.make_estimator("fomaml", alpha=-1.0)


def test_cost_table_is_the_registry():
    t = ml.cost_table(steps=3, cg_steps=4)
    for name, h in (("maml", dict(alpha=0.1, steps=3)), ("imaml", dict(lam=0.1, steps=3, cg_steps=4)),
                    ("anil", dict(alpha=0.1, steps=3))):
        e = ml.make_estimator(name, **h)
        assert (t[name]["grads"], t[name]["hvps"]) == (e.grads_per_task, e.hvps_per_task)


def test_api_reference_page_lists_every_public_name():
    import importlib.util
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "book" / "reference" / "api.md").read_text()
    listed = set(re.findall(r"^\.\. (?:autofunction|autoclass|py:data):: mathlib\.(\w+)$", text, re.M))
    assert listed == set(ml.__all__), (set(ml.__all__) - listed, listed - set(ml.__all__))
    # the docstring hook turns MyST math and roles into reST for autodoc
    spec = importlib.util.spec_from_file_location("mathlib_api", root / "book" / "reference" / "_ext" / "mathlib_api.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.convert("cost $K+1$ and\n$$F(w)=f(U)\n + 1$$ see {prf:ref}`a-b`.")
    assert out == "cost \\ :math:`K+1`\\  and\n\\ :math:`\\displaystyle F(w)=f(U) + 1`\\  see :prf:ref:`a-b`."


def test_jit_sample_is_the_eager_sampler_compiled_once():
    """jit_sample gives the eager sampler's draws (to round-off) and compiles once per static args."""
    import numpy as np

    key = jax.random.key(4)
    eager = ml.sample_quadratic_tasks(key, 5, 3)
    fast = ml.jit_sample(ml.sample_quadratic_tasks, key, 5, 3)
    np.testing.assert_allclose(np.asarray(fast.A), np.asarray(eager.A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(fast.b), np.asarray(eager.b), rtol=1e-12, atol=1e-12)
    from mathlib._core import _compiled_sampler

    before = _compiled_sampler.cache_info().misses
    ml.jit_sample(ml.sample_quadratic_tasks, jax.random.key(5), 5, 3)
    assert _compiled_sampler.cache_info().misses == before  # a new key reuses the program
    with pytest.raises(TypeError, match="jit_sample: arguments after 'key' must be hashable"):
        ml.jit_sample(ml.sample_quadratic_tasks, key, 5, 3, eig_range=[0.1, 1.0])
