"""Estimators on smooth non-quadratic tasks: autodiff checks, FD-HVP rates, HF->MAML, Sign-MAML, ANIL."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import mathlib as ml  # noqa: E402

DIM, N = 3, 6


@pytest.fixture(scope="module")
def cos_setup():
    tasks = ml.sample_cosine_tasks(jax.random.key(11), N, DIM, amp=0.5, freq=1.5)
    consts = ml.cosine_constants(tasks)
    alpha = 0.3 / float(consts.L)
    w = jax.random.normal(jax.random.key(12), (DIM,))
    return tasks, consts, alpha, w, ml.Episode.deterministic(tasks)


def slope(x, y):
    return np.polyfit(np.log(x), np.log(y), 1)[0]


def test_check_grads_maml_objective(cos_setup):
    tasks, _, alpha, w, eps = cos_setup

    def F(p):
        return jnp.mean(jax.vmap(lambda e: ml.maml_objective(ml.cosine_loss, p, e, alpha, 2))(eps))

    check_grads(jax.jit(F), (w,), order=2, modes=("fwd", "rev"))
    # maml_grad is the gradient of that objective, also through the explicit HVP recursion
    g = jax.grad(F)(w)
    np.testing.assert_allclose(ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, eps, alpha=alpha, steps=2), g, rtol=1e-12, atol=1e-13)
    sep = ml.Episode(tasks, tasks, tasks)
    np.testing.assert_allclose(ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, sep, alpha=alpha, steps=2), g, rtol=1e-12, atol=1e-13)


def test_cosine_constants_hold(cos_setup):
    tasks, c, _, _, _ = cos_setup
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    H = jax.jit(jax.vmap(jax.hessian(ml.cosine_loss), in_axes=(0, None)))
    xs = 3.0 * jax.random.normal(jax.random.key(13), (400, DIM))
    ys = xs + 0.3 * jax.random.normal(jax.random.key(14), (400, DIM))
    Hx, Hy = H(xs, t0), H(ys, t0)
    norms = np.linalg.norm(np.asarray(Hx), ord=2, axis=(1, 2))
    lip = np.linalg.norm(np.asarray(Hx - Hy), ord=2, axis=(1, 2)) / np.linalg.norm(np.asarray(xs - ys), axis=1)
    mins = np.linalg.eigvalsh(np.asarray(Hx))[:, 0]
    assert norms.max() <= float(c.L) * (1 + 1e-12) and norms.max() > 0.5 * float(c.L)
    assert lip.max() <= float(c.rho) * (1 + 1e-12) and lip.max() > 0.1 * float(c.rho)
    assert mins.min() >= float(c.mu) - 1e-12
    g = jax.vmap(jax.grad(ml.cosine_loss), in_axes=(0, None))(1e3 * xs, t0)
    assert np.linalg.norm(g, axis=1).max() > 100  # unbounded gradients


def test_fd_hvp_rates(cos_setup):
    tasks, _, _, w, _ = cos_setup
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    v = jax.random.normal(jax.random.key(15), (DIM,))
    v = v / jnp.linalg.norm(v)
    exact = ml.hvp(ml.cosine_loss, w, t0, v)
    np.testing.assert_allclose(exact, jax.hessian(ml.cosine_loss)(w, t0) @ v, rtol=1e-12)
    deltas = np.logspace(-3.5, -1.5, 6)
    def errs(scheme):  # vmap over delta: one compilation for the whole sweep
        fd = jax.vmap(lambda d: ml.fd_hvp(ml.cosine_loss, w, t0, v, d, scheme))(jnp.asarray(deltas))
        return np.linalg.norm(np.asarray(fd - exact[None]), axis=1)

    err_c, err_f = errs("central"), errs("forward")
    assert 1.8 <= slope(deltas, err_c) <= 2.2, err_c
    assert 0.9 <= slope(deltas, err_f) <= 1.1, err_f
    # quadratic: both exact to round-off
    q = ml.sample_quadratic_tasks(jax.random.key(16), 1, DIM)
    q0 = jax.tree_util.tree_map(lambda x: x[0], q)
    for scheme in ("central", "forward"):
        np.testing.assert_allclose(ml.fd_hvp(ml.quadratic_loss, w, q0, v, 0.3, scheme), q0.A @ v, rtol=1e-12, atol=1e-13)


def test_fd_hvp_on_pytrees():
    def loss(p, x):
        return jnp.sum(jnp.sin(p["a"] * x)) + jnp.sum(p["b"] ** 3) * jnp.sum(p["a"] ** 2)

    p = {"a": jnp.array([0.3, -0.7]), "b": jnp.array([[1.0, 2.0], [0.5, -1.0]])}
    v = jax.tree_util.tree_map(jnp.ones_like, p)
    x = jnp.array([1.0, 2.0])
    ex = ml.hvp(loss, p, x, v)
    fd = ml.fd_hvp(loss, p, x, v, 1e-4, "central")
    for k in p:
        np.testing.assert_allclose(fd[k], ex[k], rtol=1e-6, atol=1e-7)


def test_hf_maml_and_chayti_converge_to_maml(cos_setup):
    _, c, alpha, w, eps = cos_setup
    ref = ml.meta_gradient(ml.maml_grad, ml.cosine_loss, w, eps, alpha=alpha)
    deltas = np.logspace(-3, -1, 5)

    def err(est, **h):  # vmap over delta: one compilation for the whole sweep
        g = jax.vmap(lambda d: ml.meta_gradient(est, ml.cosine_loss, w, eps, alpha=alpha, delta=d, **h))(jnp.asarray(deltas))
        return np.linalg.norm(np.asarray(g - ref[None]), axis=1)

    e_c = err(ml.hf_maml_grad, scheme="central")
    e_f = err(ml.chayti_grad, scheme="forward")
    e_s = err(ml.chayti_grad, scheme="central")
    assert 1.8 <= slope(deltas, e_c) <= 2.2, e_c
    assert 0.9 <= slope(deltas, e_f) <= 1.1, e_f
    np.testing.assert_allclose(e_s, e_c, rtol=1e-6)  # symmetric Chayti == central HF-MAML (D_h = D_in)
    # per-task delta with delta = 1/(6 rho alpha): the theorem's choice, a constant-relative perturbation
    g_pt = ml.meta_gradient(ml.hf_maml_grad, ml.cosine_loss, w, eps, alpha=alpha, delta=1 / (6 * float(c.rho) * alpha), delta_rule="per_task")
    assert np.isfinite(np.asarray(g_pt)).all()
    v_norm_err = float(jnp.linalg.norm(g_pt - ref))
    assert v_norm_err > e_c[0]  # coarser than a small fixed delta


def test_sign_maml_autodiff_equals_first_order(cos_setup):
    tasks, _, _, w, eps = cos_setup
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    a = 0.05
    ad = jax.grad(lambda p: ml.cosine_loss(ml.adapt_sign(ml.cosine_loss, p, t0, a, 4), t0))(w)
    fo = ml.sign_maml_grad(ml.cosine_loss, w, ml.Episode.deterministic(t0), alpha=a, steps=4)
    np.testing.assert_array_equal(np.asarray(ad), np.asarray(fo))
    J = jax.jacobian(lambda p: ml.adapt_sign(ml.cosine_loss, p, t0, a, 4))(w)
    np.testing.assert_array_equal(np.asarray(J), np.eye(DIM))
    # contrast: for the GD inner loop the first-order gradient is NOT the autodiff gradient
    gd = ml.maml_grad(ml.cosine_loss, w, ml.Episode.deterministic(t0), alpha=0.2, steps=4)
    fo_gd = ml.fomaml_grad(ml.cosine_loss, w, ml.Episode.deterministic(t0), alpha=0.2, steps=4)
    assert float(jnp.max(jnp.abs(gd - fo_gd))) > 1e-3


def _anil_problem():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(21), 4)
    params = {"body": 0.5 * jax.random.normal(k1, (4, 3)), "head": jax.random.normal(k2, (4,))}
    X = jax.random.normal(k3, (2, 10, 3))  # support, query
    y = jnp.sin(X @ jnp.array([1.0, -0.5, 0.3])) + 0.1 * jax.random.normal(k4, (2, 10))

    def loss(p, batch):
        Xb, yb = batch
        return 0.5 * jnp.mean((jnp.tanh(Xb @ p["body"].T) @ p["head"] - yb) ** 2)

    return params, loss, ml.Episode((X[0], y[0]), (X[1], y[1]))


def test_anil_exact_and_first_order():
    params, loss, ep = _anil_problem()
    alpha, K = 0.3, 3

    @jax.jit
    def objective(body, head):  # head-only adaptation written by hand (Python loop)
        h = head
        for _ in range(K):
            h = h - alpha * jax.grad(lambda hh: loss({"body": body, "head": hh}, ep.support))(h)
        return loss({"body": body, "head": h}, ep.query)

    g = ml.anil_grad(loss, params, ep, alpha=alpha, steps=K)
    gb, gh = jax.grad(objective, argnums=(0, 1))(params["body"], params["head"])
    np.testing.assert_allclose(g["head"], gh, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g["body"], gb, rtol=1e-12, atol=1e-14)
    # body gradient against central finite differences of the objective
    eps_fd = 1e-5
    fd = np.zeros(params["body"].shape)
    for idx in np.ndindex(*fd.shape):
        e = jnp.zeros_like(params["body"]).at[idx].set(eps_fd)
        fd[idx] = (objective(params["body"] + e, params["head"]) - objective(params["body"] - e, params["head"])) / (2 * eps_fd)
    np.testing.assert_allclose(np.asarray(g["body"]), fd, rtol=1e-6, atol=1e-9)
    assert np.abs(fd).max() > 1e-3
    # first-order ANIL: gradient at the adapted point; differs from exact in body and head
    fo = ml.anil_grad(loss, params, ep, alpha=alpha, steps=K, first_order=True)
    adapted = ml.adapt_head(loss, params, ep.support, alpha, K)
    ref = jax.grad(loss)(adapted, ep.query)
    for k in ("body", "head"):
        np.testing.assert_allclose(fo[k], ref[k], rtol=1e-13)
        assert float(jnp.max(jnp.abs(fo[k] - g[k]))) > 1e-5
    np.testing.assert_array_equal(adapted["body"], params["body"])


def test_moreau_and_imaml_nonquadratic(cos_setup):
    tasks, c, _, w, _ = cos_setup
    t0 = jax.tree_util.tree_map(lambda x: x[0], tasks)
    ep = ml.Episode.deterministic(t0)
    lam = 0.5 / float(c.L)
    p = ml.prox_solve(ml.cosine_loss, w, t0, lam, 200)
    g = ml.moreau_grad(ml.cosine_loss, w, ep, lam=lam, steps=200)
    np.testing.assert_allclose(g, jax.grad(ml.cosine_loss)(p, t0), rtol=1e-10, atol=1e-12)
    # prox optimality: u minimises f(u) + |u-w|^2/(2 lam)
    np.testing.assert_allclose(jax.grad(lambda u: ml.cosine_loss(u, t0) + jnp.sum((u - w) ** 2) / (2 * lam))(p), 0.0, atol=1e-12)
    # implicit gradient = unrolled autodiff through a converged prox solver
    unrolled = jax.grad(lambda x: ml.cosine_loss(ml.prox_solve(ml.cosine_loss, x, t0, lam, 200), t0))(w)
    np.testing.assert_allclose(ml.imaml_grad(ml.cosine_loss, w, ep, lam=lam, steps=200, cg_steps=DIM), unrolled, rtol=1e-9, atol=1e-12)


def test_smoothness_diagnostics(cos_setup):
    tasks, c, alpha, _, _ = cos_setup
    F = lambda p: ml.exact_meta_objective(ml.cosine_loss, p, tasks, alpha, 1)  # noqa: E731
    hess = jax.jit(jax.hessian(F))
    for scale in (1.0, 30.0):
        w = scale * jax.random.normal(jax.random.key(31), (DIM,))
        top = np.abs(np.linalg.eigvalsh(np.asarray(hess(w)))).max()
        if scale == 1.0:
            est = float(ml.smoothness_power_iteration(F, w, 100))
            assert abs(est - top) < 1e-6 * top
        bound = float(ml.local_smoothness_bound(ml.cosine_loss, w, tasks, c.L, c.rho, alpha))
        assert top <= bound
