"""Every estimator against its closed form on quadratic tasks (float64), K = 1 and K = 3."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

DIM, N, ALPHA = 5, 12, 0.15
TOL = 1e-12


@pytest.fixture(scope="module")
def setup():
    tasks = ml.sample_quadratic_tasks(jax.random.key(1), N, DIM, eig_range=(0.5, 3.0), b_scale=1.5)
    w = jax.random.normal(jax.random.key(2), (DIM,))
    return tasks, w, ml.Episode.deterministic(tasks)


def jmg(est, loss, w, eps, **h):
    """Jitted meta-gradient (one compilation instead of op-by-op dispatch)."""
    return jax.jit(lambda p, e: ml.meta_gradient(est, loss, p, e, **h))(w, eps)


def mg(est, w, eps, **h):
    return jmg(est, ml.quadratic_loss, w, eps, **h)


def close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    err = np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b)))
    assert err < tol, err


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_matches_closed_form_and_autodiff_objective(setup, steps):
    tasks, w, eps = setup
    ref = ml.quadratic_maml_grad(w, tasks, ALPHA, steps)
    close(mg(ml.maml_grad, w, eps, alpha=ALPHA, steps=steps), ref)
    # explicit HVP recursion with a separate (here identical) Hessian batch
    close(mg(ml.maml_grad, w, ml.Episode(tasks, tasks, tasks), alpha=ALPHA, steps=steps), ref)
    close(ml.exact_meta_gradient(ml.quadratic_loss, w, tasks, ALPHA, steps), ref)
    close(jax.grad(ml.quadratic_maml_objective)(w, tasks, ALPHA, steps), ref)
    obj = jnp.mean(jax.vmap(lambda e: ml.maml_objective(ml.quadratic_loss, w, e, ALPHA, steps))(eps))
    close(obj, ml.quadratic_maml_objective(w, tasks, ALPHA, steps))
    # sanity: the MAML gradient is not the FO-MAML one on heterogeneous tasks
    assert np.max(np.abs(ref - ml.quadratic_fomaml_grad(w, tasks, ALPHA, steps))) > 1e-3


def test_maml_minimizer_is_stationary(setup):
    tasks, _, _ = setup
    for steps in (1, 3):
        wst = ml.quadratic_maml_minimizer(tasks, ALPHA, steps)
        assert np.linalg.norm(ml.quadratic_maml_grad(wst, tasks, ALPHA, steps)) < 1e-13


def test_maml_separate_hessian_batch_is_fallah_algorithm_1():
    """K=1 with independent D_in, D_o, D_h: (I - a H(w; D_h)) grad f(w - a grad f(w; D_in); D_o)."""
    tasks = ml.sample_linear_regression_tasks(jax.random.key(3), 4, DIM)
    eps = ml.sample_regression_episodes(jax.random.key(4), tasks, 7, 9, 3)
    w = jnp.linspace(-1.0, 1.0, DIM)

    def by_hand(ep):
        Xi, yi = ep.support
        Xo, yo = ep.query
        Xh, _ = ep.hessian
        u = w - ALPHA * Xi.T @ (Xi @ w - yi) / Xi.shape[0]
        v = Xo.T @ (Xo @ u - yo) / Xo.shape[0]
        return v - ALPHA * (Xh.T @ Xh / Xh.shape[0]) @ v

    ref = jax.jit(lambda e: jnp.mean(jax.vmap(by_hand)(e), axis=0))(eps)
    close(jmg(ml.maml_grad, ml.mse_loss, w, eps, alpha=ALPHA), ref)
    for scheme in ("central", "forward"):  # HF-MAML uses D_h for both FD gradients; exact on quadratic losses
        close(jmg(ml.hf_maml_grad, ml.mse_loss, w, eps, alpha=ALPHA, delta=0.3, scheme=scheme), ref, 1e-10)
    # and the Hessian batch matters (otherwise the test above could not fail)
    g_same = jmg(ml.maml_grad, ml.mse_loss, w, eps._replace(hessian=None), alpha=ALPHA)
    assert np.max(np.abs(g_same - ref)) > 1e-4


@pytest.mark.parametrize("steps", [1, 3])
def test_fomaml_closed_form(setup, steps):
    tasks, w, eps = setup
    close(mg(ml.fomaml_grad, w, eps, alpha=ALPHA, steps=steps), ml.quadratic_fomaml_grad(w, tasks, ALPHA, steps))


def test_fomaml_equals_maml_on_linear_tasks():
    """Zero Hessian everywhere: every Jacobian factor is I, so FO-MAML = MAML (and != on quadratics)."""
    c = jax.random.normal(jax.random.key(5), (N, DIM))

    def lin(w, ci):
        return jnp.dot(ci, w) + 0.1 * jnp.sum(ci)

    w = jnp.ones(DIM)
    eps = ml.Episode.deterministic(c)
    for steps in (1, 3):
        a = ml.meta_gradient(ml.maml_grad, lin, w, eps, alpha=ALPHA, steps=steps)
        b = ml.meta_gradient(ml.fomaml_grad, lin, w, eps, alpha=ALPHA, steps=steps)
        close(a, b)
        close(b, jnp.mean(c, axis=0))


@pytest.mark.parametrize("scheme", ["central", "forward"])
@pytest.mark.parametrize("delta_rule", ["fixed", "per_task"])
def test_hf_maml_exact_on_quadratics(setup, scheme, delta_rule):
    tasks, w, eps = setup
    ref = ml.quadratic_maml_grad(w, tasks, ALPHA, 1)
    for delta in (1e-3, 1e-1, 1.0):
        got = mg(ml.hf_maml_grad, w, eps, alpha=ALPHA, delta=delta, scheme=scheme, delta_rule=delta_rule)
        close(got, ref, tol=1e-9)


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_chayti_exact_on_quadratics(setup, scheme):
    tasks, w, eps = setup
    ref = ml.quadratic_maml_grad(w, tasks, ALPHA, 1)
    for delta in (1e-2, 0.5):
        close(mg(ml.chayti_grad, w, eps, alpha=ALPHA, delta=delta, scheme=scheme), ref, tol=1e-10)


def test_moreau_identities_and_closed_form(setup):
    tasks, w, eps = setup
    lam = 0.2  # lam * L < 1 so the default fixed-point prox iteration converges
    L = float(ml.quadratic_smoothness(tasks))
    assert lam * L < 1
    ref = ml.quadratic_moreau_grad(w, tasks, lam)
    close(mg(ml.moreau_grad, w, eps, lam=lam, steps=200), ref, tol=1e-11)
    close(mg(ml.moreau_grad, w, eps, lam=lam, steps=200, smoothness=L), ref, tol=1e-11)
    # (w - prox(w))/lam = grad f(prox(w)) and prox closed form, task by task
    P = ml.quadratic_prox(w, tasks, lam)
    P_num = jax.vmap(lambda t: ml.prox_solve(ml.quadratic_loss, w, t, lam, 200))(tasks)
    close(P_num, P, tol=1e-11)
    close((w[None] - P) / lam, jax.vmap(jax.grad(ml.quadratic_loss))(P, tasks), tol=1e-11)
    # gradient of the closed-form envelope
    close(jax.grad(ml.quadratic_moreau_objective)(w, tasks, lam), ref)
    # large lam: fixed-point iteration diverges, smoothness-aware step converges
    lam_big = 3.0 / L
    close(mg(ml.moreau_grad, w, eps, lam=lam_big, steps=400, smoothness=L), ml.quadratic_moreau_grad(w, tasks, lam_big), 1e-10)
    # K-step fixed-point iteration with lr = lam equals grad f at the (K-1)-th iterate: K=2 is FO-MAML
    close(mg(ml.moreau_grad, w, eps, lam=ALPHA, steps=2), ml.quadratic_fomaml_grad(w, tasks, ALPHA, 1))


def test_imaml_equals_implicit_gradient(setup):
    tasks, w, eps = setup
    lam = 0.2
    ref = ml.quadratic_imaml_grad(w, tasks, lam)
    got = mg(ml.imaml_grad, w, eps, lam=lam, steps=200, cg_steps=DIM)
    close(got, ref, tol=1e-10)
    # explicit formula task by task: (I + lam A)^{-1} A (p - b)
    P = ml.quadratic_prox(w, tasks, lam)
    I = jnp.eye(DIM)
    manual = jnp.mean(jax.vmap(lambda A, b, p: jnp.linalg.solve(I + lam * A, A @ (p - b)))(tasks.A, tasks.b, P), 0)
    close(ref, manual)
    # too few CG iterations is visibly inexact (the test can fail)
    rough = mg(ml.imaml_grad, w, eps, lam=lam, steps=200, cg_steps=1)
    assert np.max(np.abs(rough - ref)) > 1e-6


@pytest.mark.parametrize("steps", [1, 3])
def test_reptile_closed_form(setup, steps):
    tasks, w, eps = setup
    close(mg(ml.reptile_grad, w, eps, alpha=ALPHA, steps=steps), ml.quadratic_reptile_grad(w, tasks, ALPHA, steps))
    if steps == 1:  # K = 1: joint-training gradient
        close(ml.quadratic_reptile_grad(w, tasks, ALPHA, 1), jnp.mean(jax.vmap(jax.grad(ml.quadratic_loss))(jnp.broadcast_to(w, (N, DIM)), tasks), 0))


def test_fomaml_fixed_point_is_fixed_point(setup):
    tasks, _, _ = setup
    for steps in (1, 3):
        wfo = ml.quadratic_fomaml_fixed_point(tasks, ALPHA, steps)
        assert np.linalg.norm(ml.quadratic_fomaml_grad(wfo, tasks, ALPHA, steps)) < 1e-13
        assert np.linalg.norm(ml.quadratic_maml_grad(wfo, tasks, ALPHA, steps)) > 1e-3


def test_shared_hessian_no_floor():
    tasks = ml.sample_quadratic_tasks(jax.random.key(7), N, DIM, shared_hessian=True)
    wfo = ml.quadratic_fomaml_fixed_point(tasks, ALPHA, 1)
    assert float(ml.quadratic_hessian_dissimilarity(tasks)) < 1e-14
    assert np.linalg.norm(ml.quadratic_maml_grad(wfo, tasks, ALPHA, 1)) < 1e-13


def test_rotation_spread_controls_hessian_dissimilarity():
    g = [
        float(ml.quadratic_hessian_dissimilarity(ml.sample_quadratic_tasks(jax.random.key(8), N, DIM, rotation_spread=s)))
        for s in (0.0, 0.05, 0.3, 1.0)
    ]
    assert g[0] < 1e-12 and g[1] < g[2] < g[3]
    t = ml.sample_quadratic_tasks(jax.random.key(8), N, DIM, eig_range=(0.5, 3.0))
    assert abs(float(ml.quadratic_smoothness(t)) - 3.0) < 1e-12 and abs(float(ml.quadratic_strong_convexity(t)) - 0.5) < 1e-12
    t2 = t._replace(b=2 * t.b)
    w = jnp.zeros(DIM)
    assert abs(2 * ml.quadratic_gradient_dissimilarity(w, t) - ml.quadratic_gradient_dissimilarity(w, t2)) < 1e-12
    close(ml.gradient_dissimilarity(ml.quadratic_loss, w, t), ml.quadratic_gradient_dissimilarity(w, t))
    close(ml.hessian_dissimilarity(ml.quadratic_loss, w, t), ml.quadratic_hessian_dissimilarity(t))


def test_make_estimator_registry(setup):
    tasks, w, eps = setup
    cases = {
        "maml": dict(alpha=ALPHA, steps=3),
        "fomaml": dict(alpha=ALPHA, steps=2),
        "hf_maml": dict(alpha=ALPHA, delta=1e-3),
        "chayti": dict(alpha=ALPHA, delta=1e-3),
        "moreau": dict(lam=0.2, steps=5),
        "imaml": dict(lam=0.2, steps=5, cg_steps=3),
        "sign_maml": dict(alpha=0.01, steps=2),
        "reptile": dict(alpha=ALPHA, steps=2),
    }
    costs = {"maml": (4, 3), "fomaml": (3, 0), "hf_maml": (4, 0), "chayti": (3, 0), "moreau": (5, 0),
             "imaml": (6, 3), "sign_maml": (3, 0), "reptile": (2, 0)}
    for name, h in cases.items():
        est = ml.make_estimator(name, **h)
        assert est.name == name and (est.grads_per_task, est.hvps_per_task) == costs[name]
        fn = ml.ESTIMATORS[name]
        close(jax.jit(lambda p, e: ml.meta_gradient(est, ml.quadratic_loss, p, e))(w, eps), mg(fn, w, eps, **h))
    assert np.isfinite(float(est.objective(ml.quadratic_loss, w, ml.Episode.deterministic(jax.tree_util.tree_map(lambda x: x[0], tasks)))))
    assert set(ml.cost_table(steps=3)) >= {"maml", "fomaml", "hf_maml", "chayti_forward", "chayti_central", "imaml"}
    assert ml.cost_table(steps=3)["maml"] == {"grads": 4, "hvps": 3, "equiv": 10}
