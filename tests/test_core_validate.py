"""Bad input raises ValueError/TypeError naming the function, the argument and the expectation."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402
import mathlib.validate as mv  # noqa: E402

TASK = ml.QuadraticTask(jnp.eye(2), jnp.zeros(2))
EP = ml.Episode.deterministic(TASK)
W = jnp.ones(2)
L = ml.quadratic_loss


@pytest.mark.parametrize(
    "call, exc, pattern",
    [
        (lambda: ml.hf_maml_grad(L, W, EP, alpha=0.1, delta=-0.1), ValueError, r"hf_maml_grad: argument 'delta' must be > 0.*-0\.1"),
        (lambda: ml.hf_maml_grad(L, W, EP, alpha=0.1, delta=0.0), ValueError, r"'delta' must be > 0"),
        (lambda: ml.chayti_grad(L, W, EP, alpha=0.1, delta=-1.0), ValueError, r"chayti_grad: argument 'delta'"),
        (lambda: ml.fd_hvp(L, W, TASK, W, -1e-3), ValueError, r"fd_hvp: argument 'delta'"),
        (lambda: ml.maml_grad(L, W, EP, alpha=0.1, steps=0), ValueError, r"maml_grad: argument 'steps' must be an integer >= 1, got 0"),
        (lambda: ml.fomaml_grad(L, W, EP, alpha=0.1, steps=2.0), TypeError, r"fomaml_grad: argument 'steps' must be an integer"),
        (lambda: ml.adapt_gd(L, W, TASK, 0.1, True), TypeError, r"adapt_gd: argument 'steps'"),
        (lambda: ml.maml_grad(L, W, EP, alpha=-0.1), ValueError, r"maml_grad: argument 'alpha' must be > 0"),
        (lambda: ml.maml_grad(L, W, EP, alpha=float("nan")), ValueError, r"argument 'alpha'"),
        (lambda: ml.reptile_grad(L, W, EP, alpha=0.0), ValueError, r"reptile_grad: argument 'alpha'"),
        (lambda: ml.moreau_grad(L, W, EP, lam=-1.0, steps=3), ValueError, r"moreau_grad: argument 'lam'"),
        (lambda: ml.imaml_grad(L, W, EP, lam=0.1, steps=3, cg_steps=0), ValueError, r"imaml_grad: argument 'cg_steps'"),
        (lambda: ml.prox_solve(L, W, TASK, 0.1, 3, lr=-1.0), ValueError, r"prox_solve: argument 'lr'"),
        (lambda: ml.hf_maml_grad(L, W, EP, alpha=0.1, delta=0.1, scheme="backward"), ValueError,
         r"hf_maml_grad: argument 'scheme' must be one of \('forward', 'central'\), got 'backward'"),
        (lambda: ml.hf_maml_grad(L, W, EP, alpha=0.1, delta=0.1, delta_rule="auto"), ValueError, r"'delta_rule'"),
        (lambda: ml.chayti_grad(L, W, EP, alpha=0.1, delta=0.1, scheme="symmetric"), ValueError, r"chayti_grad: argument 'scheme'"),
        (lambda: ml.maml_grad(L, W, (TASK, TASK), alpha=0.1), TypeError, r"maml_grad: argument 'episode' must be a mathlib.Episode"),
        (lambda: ml.anil_grad(L, W, EP, alpha=0.1), ValueError, r"anil_grad: argument 'params' must be a dict with keys 'body' and 'head'"),
        (lambda: ml.make_estimator("mamal", alpha=0.1), ValueError, r"make_estimator: argument 'name' must be one of"),
        (lambda: ml.make_estimator("maml", alpha=0.1, delta=0.1), TypeError, r"unknown hyper-parameter 'delta' for 'maml'"),
        (lambda: ml.make_estimator("hf_maml", alpha=0.1), TypeError, r"'hf_maml' requires hyper-parameter\(s\) \('delta',\)"),
        (lambda: ml.make_estimator("maml", alpha=-0.5), ValueError, r"make_estimator: argument 'alpha' must be > 0.*-0\.5"),
        (lambda: ml.make_estimator("imaml", lam=0.1, steps=0, cg_steps=2), ValueError, r"'steps'"),
        (lambda: ml.outer_optimizer("rmsprop", 0.1), ValueError, r"outer_optimizer: argument 'name'"),
        (lambda: ml.outer_optimizer("sgd", -0.1), ValueError, r"outer_optimizer: argument 'lr'"),
        (lambda: ml.outer_optimizer("normalized_sgd_momentum", 0.1, beta=1.0), ValueError, r"argument 'beta' must be in \[0, 1\), got 1\.0"),
        (lambda: ml.outer_optimizer("clipped_sgd", 0.1), TypeError, r"'clipped_sgd' requires argument 'max_norm'"),
        (lambda: ml.fallah_step_size(L, W, TASK, -1.0, 0.0, 0.1, 0.1), ValueError, r"fallah_step_size: argument 'L'"),
        (lambda: ml.sample_quadratic_tasks(jax.random.key(0), 0, 3), ValueError, r"sample_quadratic_tasks: argument 'num_tasks'"),
        (lambda: ml.sample_quadratic_tasks(jax.random.key(0), 3, 3, eig_range=(2.0, 1.0)), ValueError, r"argument 'eig_range\[1\]' must be in \[2"),
        (lambda: ml.sample_quadratic_tasks(jax.random.key(0), 3, 3, eig_range=(0.0, 1.0)), ValueError, r"argument 'eig_range\[0\]' must be in \(0"),
        (lambda: ml.quadratic_maml_grad(W, ml.QuadraticTask(jnp.ones((2, 3, 3)), jnp.ones((2, 2))), 0.1), ValueError, r"'A' must have shape \(n, d, d\) and 'b' shape \(n, d\)"),
        (lambda: ml.quadratic_maml_grad(W, TASK, 0.1, steps=0), ValueError, r"quadratic_maml_grad: argument 'steps'"),
        (lambda: ml.sample_cosine_tasks(jax.random.key(0), 3, 2, freq=0.0), ValueError, r"sample_cosine_tasks: argument 'freq'"),
        (lambda: ml.run_deterministic(ml.make_estimator("maml", alpha=0.1), L, W, TASK, -1.0, 10), ValueError, r"run_deterministic: argument 'beta'"),
        (lambda: ml.train(ml.make_estimator("maml", alpha=0.1), L, jnp.array([1.0, jnp.nan]), ml.outer_optimizer("sgd", 0.1),
                          lambda k: EP, 10, jax.random.key(0)), ValueError, r"train: argument 'params' must be finite, got 1 non-finite"),
        (lambda: ml.train(ml.make_estimator("maml", alpha=0.1), L, W, ml.outer_optimizer("sgd", 0.1), lambda k: EP, 0,
                          jax.random.key(0)), ValueError, r"train: argument 'num_steps'"),
    ],
)
def test_bad_input_messages(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_validators_directly():
    with pytest.raises(ValueError, match=r"f: argument 'x' must have shape \(3, \*\), got \(2, 2\)"):
        mv.check_shape("f", "x", jnp.zeros((2, 2)), (3, None))
    assert mv.check_shape("f", "x", jnp.zeros((3, 5)), (3, None)).shape == (3, 5)
    with pytest.raises(ValueError, match=r"f: argument 'v' must have the same shapes as 'params'"):
        mv.check_same_shape("f", "v", {"a": jnp.zeros(2)}, "params", {"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match=r"f: argument 'v' must have the same pytree structure as 'params'"):
        mv.check_same_shape("f", "v", [jnp.zeros(2)], "params", {"a": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"f: argument 'x' must be finite, got 2 non-finite"):
        mv.check_finite("f", "x", {"a": jnp.array([np.inf, 1.0, -np.inf])})
    with pytest.raises(ValueError, match=r"f: argument 'a' must be in \(0, 1\], got 1\.5"):
        mv.check_in_range("f", "a", 1.5, 0.0, 1.0, low_inclusive=False)
    with pytest.raises(TypeError, match=r"f: argument 'a' must be a real scalar"):
        mv.check_positive("f", "a", jnp.ones(3))
    with pytest.raises(ValueError, match=r"f: argument 'a' must be >= 0"):
        mv.check_nonnegative("f", "a", -1)
    # traced values are accepted (checks are Python-level only)
    assert jax.jit(lambda a: mv.check_positive("f", "a", a) * 2)(-1.0) == -2.0


def test_float32_follows_input_dtype():
    t = ml.sample_quadratic_tasks(jax.random.key(0), 3, 2, dtype=jnp.float32)
    assert t.A.dtype == jnp.float32
    w = jnp.ones(2, jnp.float32)
    for name, h in [("maml", dict(alpha=0.1)), ("hf_maml", dict(alpha=0.1, delta=1e-2)), ("imaml", dict(lam=0.1, steps=3, cg_steps=2))]:
        g = ml.meta_gradient(ml.make_estimator(name, **h), ml.quadratic_loss, w, ml.Episode.deterministic(t))
        assert g.dtype == jnp.float32
        np.testing.assert_allclose(g, ml.quadratic_maml_grad(w, t, 0.1, 1) if name != "imaml" else g, rtol=1e-4)
