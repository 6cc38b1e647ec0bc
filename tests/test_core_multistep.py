"""Multi-step HF-MAML and Chayti estimators (issue 8, item 3): K > 1 against exact K-step MAML, float64.

Implementation checks (finite-difference HVPs along the inner path): exact on quadratics for any delta;
on a non-quadratic task the error against ``maml_grad(steps=K)`` is O(delta) (forward) and O(delta^2)
(central), checked by the log-log slope over a delta sweep.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

DIM, N, K = 3, 5, 3


def slope(x, y):
    return np.polyfit(np.log(x), np.log(y), 1)[0]


@pytest.fixture(scope="module")
def cos_setup():
    tasks = ml.sample_cosine_tasks(jax.random.key(21), N, DIM, amp=0.5, freq=1.5)
    alpha = 0.3 / float(ml.cosine_constants(tasks).L)
    w = jax.random.normal(jax.random.key(22), (DIM,))
    return tasks, alpha, w


def _sweep(est, loss, w, eps, deltas, **h):  # vmap over delta: one compilation per estimator
    return jax.vmap(lambda d: ml.meta_gradient(est, loss, w, eps, delta=d, **h))(jnp.asarray(deltas))


def test_multistep_delta_order_against_exact_maml(cos_setup):
    tasks, alpha, w = cos_setup
    eps = ml.Episode.deterministic(tasks)
    ref = ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, eps, alpha=alpha, steps=K)
    one = ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, eps, alpha=alpha, steps=1)
    assert float(jnp.linalg.norm(ref - one)) > 1e-2  # K = 3 differs from K = 1: the test can tell them apart
    deltas = np.logspace(-3, -1.5, 4)
    for est, scheme, order in ((ml.hf_maml_grad, "central", 2), (ml.hf_maml_grad, "forward", 1),
                               (ml.chayti_grad, "forward", 1), (ml.chayti_grad, "central", 2)):
        g = _sweep(est, ml.cosine_loss, w, eps, deltas, alpha=alpha, scheme=scheme, steps=K)
        err = np.linalg.norm(np.asarray(g - ref[None]), axis=1)
        assert abs(slope(deltas, err) - order) < 0.15, (est.__name__, scheme, err)
        assert err[0] < (1e-5 if order == 2 else 1e-2), err


def test_multistep_separate_hessian_batch_matches_maml(cos_setup):
    # D_h != D_in: HF-MAML's recursion uses D_h for every factor, exactly like maml_grad with a hessian batch
    tasks, alpha, w = cos_setup
    other = ml.sample_cosine_tasks(jax.random.key(23), N, DIM, amp=0.5, freq=1.5)
    eps = ml.Episode(tasks, tasks, other)
    ref = ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, eps, alpha=alpha, steps=K)
    deltas = np.logspace(-3, -1.5, 4)
    g = _sweep(ml.hf_maml_grad, ml.cosine_loss, w, eps, deltas, alpha=alpha, steps=K)
    err = np.linalg.norm(np.asarray(g - ref[None]), axis=1)
    assert abs(slope(deltas, err) - 2) < 0.15 and err[0] < 1e-5, err


def test_multistep_exact_on_quadratics_and_k1_unchanged():
    tasks = ml.sample_quadratic_tasks(jax.random.key(5), N, DIM)
    eps, w, alpha = ml.Episode.deterministic(tasks), jnp.ones(DIM), 0.2
    ref = ml.quadratic_maml_grad(w, tasks, alpha, K)
    for est in (ml.hf_maml_grad, ml.chayti_grad):
        for scheme in ml.FD_SCHEMES:
            g = ml.meta_gradient(est, ml.quadratic_loss, w, eps, alpha=alpha, delta=0.5, scheme=scheme, steps=K)
            np.testing.assert_allclose(g, ref, rtol=1e-10)
    # registry: steps is accepted, costs follow the formulas, adapt() is the K-step inner map
    e = ml.make_estimator("hf_maml", alpha=alpha, delta=1e-3, steps=K)
    assert (e.grads_per_task, e.hvps_per_task) == (3 * K + 1, 0)
    assert ml.make_estimator("chayti", alpha=alpha, delta=1e-3, steps=K).grads_per_task == 2 * K + 1
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    np.testing.assert_allclose(e.adapt(ml.quadratic_loss, w, t0), ml.adapt_gd(ml.quadratic_loss, w, t0, alpha, K))
