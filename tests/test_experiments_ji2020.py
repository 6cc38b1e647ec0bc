"""Unit tests for the ANIL chapter's drivers (``mathlib.experiments.ji2020``): small, float64, closed forms."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import numpy as np
import pytest

import mathlib as ml
from mathlib.experiments import ji2020 as ex

N_WAY, D_IN, D_Z = 3, 6, 4


def _episode(key, n_sup=6, n_qry=9):
    kx, ky, kq, kr = jax.random.split(key, 4)
    xs = jax.random.normal(kx, (n_sup, D_IN), jnp.float64)
    xq = jax.random.normal(kq, (n_qry, D_IN), jnp.float64)
    ys = jnp.arange(n_sup) % N_WAY
    yq = jnp.arange(n_qry) % N_WAY
    return ml.Episode((xs, ys), (xq, yq))


def _params(key, head_hidden=()):
    return ex.init_params(key, dims=(D_IN, D_Z), n_way=N_WAY, head_hidden=head_hidden, dtype=jnp.float64)


def _rel(a, b):
    return float(ml.tree_norm(ml.tree_sub(a, b)) / ml.tree_norm(b))


def test_masked_and_recursion_equal_core_anil_grad():
    # nonconvex head (a hidden layer): the linear (SC) head is checked the same way in notebook 03
    # (records ji2020-impl-check-*, asserted by test_claim3_implicit_limit_implementation)
    loss = ex.head_loss(0.0)
    p, ep = _params(jax.random.key(0), (5,)), _episode(jax.random.key(1))
    # one compiled program for the four computations (eagerly, every small operation compiles on its own)
    four = jax.jit(lambda p, ep: (ml.anil_grad(loss, p, ep, alpha=0.5, steps=2),
                                  ex.masked_anil_grad(loss, p, ep, 0.5, 2, 3),
                                  ex.anil_grad_recursion(loss, p, ep, 0.5, 2),
                                  ex.masked_anil_grad(loss, p, ep, 0.5, 0, 1),
                                  jax.grad(loss)(p, ep.query)))
    ref, masked, recursion, g0, plain = four(p, ep)
    assert _rel(masked, ref) < 1e-12
    assert _rel(recursion, ref) < 1e-12
    # N = 0 in the masked scan: no adaptation at all
    assert _rel(g0, plain) < 1e-12


def test_jacobian_path_strongly_convex_attains_envelope():
    # softmax is shift invariant: the L2 term alone acts on the shift directions, so the
    # envelope (1 - alpha*l2)^t is attained exactly when alpha <= 2 / (L + l2)
    l2, alpha = 0.2, 0.8
    r = ex.jacobian_path(ex.head_loss(l2), _params(jax.random.key(2)), _episode(jax.random.key(3)).support, alpha, 12)
    t = np.arange(13)
    np.testing.assert_allclose(r["jac_norm"], (1 - alpha * l2) ** t, rtol=1e-10)
    assert r["lam_min"].min() == pytest.approx(l2, rel=1e-8)
    assert r["lam_max"].max() <= 1.0 + l2  # the derived smoothness bound for unit features


def test_jacobian_path_matches_jacfwd_of_adapt_head():
    loss = ex.head_loss(0.0)
    p, ep = _params(jax.random.key(4), (5,)), _episode(jax.random.key(5))
    r = ex.jacobian_path(loss, p, ep.support, 0.7, 4)
    u0, unravel = ravel_pytree(p["head"])

    def adapt(u):
        out = ml.adapt_head(loss, {"body": p["body"], "head": unravel(u)}, ep.support, 0.7, 4)
        return ravel_pytree(out["head"])[0]

    J = jax.jit(jax.jacfwd(adapt))(u0)
    assert r["jac_norm"][-1] == pytest.approx(float(jnp.linalg.norm(J, 2)), rel=1e-10)


def test_implicit_body_grad_matches_finite_differences():
    loss = ex.head_loss(0.3)
    p, ep = _params(jax.random.key(6)), _episode(jax.random.key(7))
    g, h_star, res = ex.implicit_body_grad(loss, p, ep)
    assert res < 1e-12

    def outer(body):  # phi -> l_D(phi, h*(phi)), h*(phi) by Newton (the jitted core of implicit_body_grad)
        _, hs, _ = ex._implicit_body_grad(loss, {"body": body, "head": p["head"]}, ep, 30)
        return loss({"body": body, "head": hs}, ep.query)

    @jax.jit  # one compiled program (eagerly, every small operation compiles on its own)
    def central(body, v, d):
        return (outer(ml.tree_axpy(d, v, body)) - outer(ml.tree_axpy(-d, v, body))) / (2 * d), ml.tree_vdot(g, v)

    v = jax.tree_util.tree_map(lambda x: jax.random.normal(jax.random.key(8), x.shape, x.dtype), p["body"])
    fd, exact = central(p["body"], v, 1e-5)
    assert float(exact) == pytest.approx(float(fd), rel=1e-6)


def test_implicit_error_sweep_decays_and_reports_rates():
    loss = ex.head_loss(0.3)
    p, ep = _params(jax.random.key(9)), _episode(jax.random.key(10))
    ns = np.arange(1, 41)
    r = ex.implicit_error_sweep(loss, p, ep, 1.0, ns)
    assert r["rel_err"][-1] < 1e-3 * r["rel_err"][0]
    assert r["rho_head"] == pytest.approx(1 - 1.0 * 0.3, rel=1e-8)  # the L2 weight is the smallest curvature
    assert r["rho_body"] <= r["rho_head"] + 1e-12
    assert r["n_invisible"] == D_Z + 1  # one shift direction per feature coordinate and the bias


def test_fit_geometric_ratio_exact():
    n = np.arange(1, 20)
    assert ex.fit_geometric_ratio(n, 3.0 * 0.7**n) == pytest.approx(0.7, rel=1e-12)
    assert ex.fit_geometric_ratio(n, 3.0 * 0.7**n, tail=5) == pytest.approx(0.7, rel=1e-12)
    with pytest.raises(ValueError):
        ex.fit_geometric_ratio([1], [1.0])


def test_train_deterministic_first_gradient_and_descent():
    loss = ex.head_loss(0.1)
    keys = jax.random.split(jax.random.key(11), 2)
    p0 = jax.vmap(lambda k: _params(k))(keys)
    eps = jax.vmap(_episode)(jax.random.split(jax.random.key(12), 3))
    # two N groups (N = 1, 2) with different step sizes, one of them repeated
    r = ex.train_deterministic(loss, p0, eps, [0.5, 0.25, 0.5], [2, 1, 1], 2, 0.2, 8)
    assert r["grad_sq"].shape == (3, 2, 8)
    p00 = jax.tree_util.tree_map(lambda x: x[0], p0)
    est = lambda lo, pp, e: ml.anil_grad(lo, pp, e, alpha=0.5, steps=2)  # noqa: E731
    g = jax.jit(lambda pp: ml.meta_gradient(est, loss, pp, eps))(p00)
    assert r["grad_sq"][0, 0, 0] == pytest.approx(float(ml.tree_vdot(g, g)), rel=1e-10)
    assert np.all(r["loss"][..., -1] < r["loss"][..., 0])
    np.testing.assert_allclose(r["grad_sq"], r["grad_sq_body"] + r["grad_sq_head"], rtol=1e-12)


def test_train_deterministic_continues_from_returned_params():
    # per_config continuation from the returned parameters = the same run, longer (notebook 02's quick long run)
    loss = ex.head_loss(0.1)
    p0 = jax.vmap(lambda k: _params(k))(jax.random.split(jax.random.key(11), 2))
    eps = jax.vmap(_episode)(jax.random.split(jax.random.key(12), 3))
    a, n = [0.5, 0.25, 0.5], [2, 1, 1]
    whole = ex.train_deterministic(loss, p0, eps, a, n, 2, 0.2, 8)
    first = ex.train_deterministic(loss, p0, eps, a, n, 2, 0.2, 5, return_params=True)
    sub = [2, 0]   # a subset of the configurations, in another order
    pc = jax.tree_util.tree_map(lambda x: x[np.array(sub)], first["params"])
    rest = ex.train_deterministic(loss, pc, eps, [a[c] for c in sub], [n[c] for c in sub], 2, 0.2, 3, per_config=True)
    np.testing.assert_allclose(rest["loss"], whole["loss"][sub][..., 5:], rtol=1e-10)
    np.testing.assert_allclose(first["loss"], whole["loss"][..., :5], rtol=1e-12)


def test_train_deterministic_per_init_episodes_and_one_compilation():
    """Implementation check: with per_init_episodes each initialisation trains on its own task set,
    exactly as separate calls would (notebook 05's sweep over task families), and repeated calls of
    the same shape reuse the cached program instead of compiling again."""
    loss = ex.head_loss(0.1)
    p0 = jax.vmap(lambda k: _params(k))(jax.random.split(jax.random.key(11), 2))
    eps_a = jax.vmap(_episode)(jax.random.split(jax.random.key(12), 3))
    eps_b = jax.vmap(_episode)(jax.random.split(jax.random.key(13), 3))
    a, n = [0.5, 0.25], [2, 1]
    both = ex.train_deterministic(loss, p0, jax.tree_util.tree_map(lambda x, y: jnp.stack([x, y]), eps_a, eps_b),
                                  a, n, 2, 0.2, 4, per_init_episodes=True)
    for i, eps in enumerate((eps_a, eps_b)):
        alone = ex.train_deterministic(loss, jax.tree_util.tree_map(lambda x: x[i:i + 1], p0), eps, a, n, 2, 0.2, 4)
        np.testing.assert_allclose(both["loss"][:, i], alone["loss"][:, 0], rtol=1e-12)
    # different task sets give different runs (the axis is not ignored)
    assert not np.allclose(both["loss"][:, 0], both["loss"][:, 1])
    before = ex._train_program.cache_info()
    ex.train_deterministic(loss, p0, eps_b, a, n, 2, 0.2, 4)
    compiled = ex._train_program(loss, 2, 0.2, 4, False, False)._cache_size()
    ex.train_deterministic(loss, p0, eps_a, a, n, 2, 0.2, 4)
    after = ex._train_program.cache_info()
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 2
    # the second call of the same shapes, other task values: no new XLA compilation
    assert ex._train_program(loss, 2, 0.2, 4, False, False)._cache_size() == compiled
    with pytest.raises(ValueError, match="'episodes'"):
        ex.train_deterministic(loss, p0, eps_a, a, n, 2, 0.2, 4, per_init_episodes=True)
    with pytest.raises(ValueError, match="'per_config'"):
        ex.train_deterministic(loss, p0, eps_a, a, n, 2, 0.2, 4, per_config=True, per_init_episodes=True)


def test_train_deterministic_does_not_depend_on_the_number_of_threads():
    """Implementation check: the N groups run as separate calls of one program (compiled once),
    concurrently with threads > 1; every array is bit for bit that of the serial run, and each
    configuration's run is that configuration trained alone (a reassembly that permuted the
    configurations would fail), also when every configuration starts from its own parameters."""
    loss = ex.head_loss(0.0)
    p0 = jax.vmap(lambda k: _params(k, head_hidden=(4,)))(jax.random.split(jax.random.key(21), 2))
    eps = jax.vmap(_episode)(jax.random.split(jax.random.key(22), 3))
    a, n = [0.5, 0.25, 0.5, 0.1], [3, 1, 2, 3]
    one = ex.train_deterministic(loss, p0, eps, a, n, 3, 0.2, 5, threads=1, return_params=True)
    many = ex.train_deterministic(loss, p0, eps, a, n, 3, 0.2, 5, threads=3, return_params=True)
    assert ex._train_program(loss, 3, 0.2, 5, False, False)._cache_size() == 1
    for k in ("grad_sq", "grad_sq_body", "grad_sq_head", "loss"):
        np.testing.assert_array_equal(one[k], many[k])
    for x, y in zip(jax.tree_util.tree_leaves(one["params"]), jax.tree_util.tree_leaves(many["params"])):
        np.testing.assert_array_equal(x, y)
    for c in range(len(a)):   # 1-ulp differences come from the vmap's batch size: allclose, not equal
        alone = ex.train_deterministic(loss, p0, eps, [a[c]], [n[c]], 3, 0.2, 5, threads=1)
        np.testing.assert_allclose(many["loss"][c], alone["loss"][0], rtol=1e-12)
        np.testing.assert_allclose(many["grad_sq"][c], alone["grad_sq"][0], rtol=1e-10)
    # per_config: configuration c continues from its own parameters
    sub = [3, 0, 2]
    pc = jax.tree_util.tree_map(lambda x: x[np.array(sub)], many["params"])
    cont = ex.train_deterministic(loss, pc, eps, [a[c] for c in sub], [n[c] for c in sub], 3, 0.2, 2,
                                  per_config=True, threads=3)
    cont1 = ex.train_deterministic(loss, pc, eps, [a[c] for c in sub], [n[c] for c in sub], 3, 0.2, 2,
                                   per_config=True, threads=1)
    np.testing.assert_array_equal(cont["loss"], cont1["loss"])
    for j, c in enumerate(sub):
        pj = jax.tree_util.tree_map(lambda x: x[c], many["params"])
        alone = ex.train_deterministic(loss, pj, eps, [a[c]], [n[c]], 3, 0.2, 2, threads=1)
        np.testing.assert_allclose(cont["loss"][j], alone["loss"][0], rtol=1e-12)


def test_compare_runs_concurrently_equals_the_serial_runs():
    """Implementation check (notebook 04): the runs spread over threads give the serial runs' results."""
    init = jax.jit(lambda k: ml.init_body_head(k, (1, 8, 1), dtype=jnp.float32))
    sample = jax.jit(lambda k: ml.sample_sinusoid_episodes(k, 3, 5, 5))
    evals, _ = ml.sinusoid_eval_set(4, 5, 5)
    keys = jax.random.split(jax.random.key(3), 2)
    common = dict(steps=1, lr=1e-3, eval_every=2, alpha=0.01, num_steps=4)
    jobs = {m: dict(method=m, kind="mse", init_fn=init, sample_train=sample, eval_episodes=evals) for m in ("maml", "anil")}
    got = ex.compare_runs_concurrently(jobs, keys, threads=2, **common)
    assert list(got) == ["maml", "anil"]
    for m, kw in jobs.items():
        curves, per_task = ex.compare_runs(keys=keys, **common, **kw)
        np.testing.assert_array_equal(got[m][0], curves)
        np.testing.assert_array_equal(got[m][1], per_task)
    assert not np.array_equal(got["maml"][1], got["anil"][1])


def test_train_families_matches_separate_runs_and_perturbed_copy():
    """Implementation check: each family's run is notebook 02's run of that seed's task set and first
    initialisation; the appended copy starts from the first family's parameters times (1 + perturb)."""
    loss = ex.head_loss(0.0)
    a, n = [0.9, 0.3], [1, 2]
    r = ex.train_families(loss, [3, 5], 2, a, n, 2, 0.5, 3, head_hidden=(4,), perturb=1e-9, n_perturbed=2)
    assert r["loss"].shape == (2, 4, 3)
    for i, s in enumerate((3, 5)):
        eps, p0 = ex.family_setup(s, 2, 1, head_hidden=(4,))
        alone = ex.train_deterministic(loss, p0, eps, a, n, 2, 0.5, 3)
        np.testing.assert_allclose(r["loss"][:, i], alone["loss"][:, 0], rtol=1e-12)
    for i in range(2):   # copy i is family i perturbed
        rel = np.abs(r["loss"][:, 2 + i, 0] / r["loss"][:, i, 0] - 1)
        assert np.all(rel > 0) and np.all(rel < 1e-7)
    # fewer initialisations repeat the first ones of a longer run
    three = jax.tree_util.tree_leaves(ex.family_setup(3, 2, 3, head_hidden=(4,))[1])
    one = jax.tree_util.tree_leaves(ex.family_setup(3, 2, 1, head_hidden=(4,))[1])
    for x3, x1 in zip(three, one):
        np.testing.assert_array_equal(x3[:1], x1)
    with pytest.raises(ValueError, match="'seeds'"):
        ex.train_families(loss, [], 2, a, n, 2, 0.5, 3)
    with pytest.raises(ValueError, match="'n_perturbed'"):
        ex.train_families(loss, [3], 2, a, n, 2, 0.5, 3, perturb=1e-9, n_perturbed=2)
    with pytest.raises(ValueError, match="'n_inits'"):
        ex.family_setup(3, 2, 6)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ex.head_loss(-1.0)
    with pytest.raises(ValueError):
        ex.digits_episodes(jax.random.key(0), 2, split="val")
