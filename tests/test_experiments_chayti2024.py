"""Unit tests of the chayti2024 experiment drivers (``mathlib/experiments/chayti2024.py``).

Closed forms and exact identities: the K-step first-order estimator against exact K-step MAML
(``mathlib.maml_grad``), its one-step case against ``mathlib.chayti_grad``, exactness on quadratics,
the recomputing variant against the storing one, and the helpers of each claim.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402
from mathlib.experiments import chayti2024 as ex  # noqa: E402


def _cos_task(dim=4, seed=0):
    tasks = ml.sample_cosine_tasks(jax.random.key(seed), 3, dim, amp=0.5, freq=1.0)
    return tasks, jax.tree_util.tree_map(lambda x: x[0], tasks)


def _err(a, b):
    return float(jnp.linalg.norm(a - b))


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_k_step_estimator_one_step_equals_core(scheme):
    _, t = _cos_task()
    ep = ml.Episode.deterministic(t)
    w = jnp.linspace(-1.0, 1.0, 4)
    a = ex.chayti_grad_k(ml.cosine_loss, w, ep, 0.1, 1e-3, scheme, 1)
    b = ml.chayti_grad(ml.cosine_loss, w, ep, alpha=0.1, delta=1e-3, scheme=scheme)
    assert _err(a, b) < 1e-13


@pytest.mark.parametrize("K", [2, 4])
def test_k_step_estimator_orders_against_exact_maml(K):
    _, t = _cos_task()
    ep = ml.Episode.deterministic(t)
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    exact = ml.maml_grad(ml.cosine_loss, w, ep, alpha=0.1, steps=K)
    fwd = [_err(ex.chayti_grad_k(ml.cosine_loss, w, ep, 0.1, d, "forward", K), exact) for d in (1e-2, 1e-3)]
    cen = [_err(ex.chayti_grad_k(ml.cosine_loss, w, ep, 0.1, d, "central", K), exact) for d in (1e-2, 1e-3)]
    assert 7.0 < fwd[0] / fwd[1] < 13.0  # O(delta)
    assert 70.0 < cen[0] / cen[1] < 130.0  # O(delta^2)
    assert cen[1] < 1e-6


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_k_step_estimator_recompute_equals_store(scheme):
    _, t = _cos_task()
    ep = ml.Episode.deterministic(t)
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    a = ex.chayti_grad_k(ml.cosine_loss, w, ep, 0.1, 1e-3, scheme, 3)
    b = ex.chayti_grad_k(ml.cosine_loss, w, ep, 0.1, 1e-3, scheme, 3, store_iterates=False)
    assert _err(a, b) < 1e-13


@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_k_step_estimator_exact_on_quadratics(scheme):
    q = ml.sample_quadratic_tasks(jax.random.key(1), 2, 3)
    t = jax.tree_util.tree_map(lambda x: x[0], q)
    ep = ml.Episode.deterministic(t)
    w = jnp.array([1.0, -2.0, 0.5])
    exact = ml.maml_grad(ml.quadratic_loss, w, ep, alpha=0.2, steps=3)
    est = ex.chayti_grad_k(ml.quadratic_loss, w, ep, 0.2, 0.5, scheme, 3)
    assert _err(est, exact) < 1e-12


def test_k_step_estimator_on_mlp_pytree():
    loss, params, ep = ex._mlp_problem(8, 2, 10, jnp.float64)
    exact = ml.maml_grad(loss, params, ep, alpha=1e-2, steps=2)
    est = ex.chayti_grad_k(loss, params, ep, 1e-2, 1e-5, "central", 2)
    diff = ml.tree_norm(ml.tree_sub(est, exact)) / ml.tree_norm(exact)
    assert float(diff) < 1e-7


def test_l0l1_constants_and_bound():
    L0, L1 = ex.l0l1_constants(2.0, 3.0, 0.25)
    assert L0 == pytest.approx(1.5**2 * 2.0) and L1 == pytest.approx(0.75 / 0.5)
    with pytest.raises(ValueError, match="alpha\\*L < 1"):
        ex.l0l1_constants(2.0, 3.0, 0.5)
    tasks, _ = _cos_task(dim=2)
    c = ml.cosine_constants(tasks)
    alpha = 0.5 / float(c.L)
    L0, L1 = ex.l0l1_constants(float(c.L), float(c.rho), alpha)
    pts = ex.radial_points(jax.random.key(3), 40, 2, 0.5, 300.0)
    s = ex.task_smoothness_scan(tasks, ml.cosine_loss, alpha, pts)
    assert np.all(s["task_hess"] <= L0 + L1 * s["task_grad"])
    assert np.all(s["hess"] <= L0 + L1 * s["mean_task_grad"])


def test_full_batch_directions_match_core():
    tasks, _ = _cos_task()
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    ep = ml.Episode.deterministic(tasks)
    for K in (1, 2):
        d = ex.full_batch_direction("maml", ml.cosine_loss, tasks, 0.1, K)(w)
        assert _err(d, ml.exact_meta_gradient(ml.cosine_loss, w, tasks, 0.1, K)) < 1e-13
        fo = ex.full_batch_direction("fomaml", ml.cosine_loss, tasks, 0.1, K)(w)
        assert _err(fo, ml.meta_gradient(ml.fomaml_grad, ml.cosine_loss, w, ep, alpha=0.1, steps=K)) < 1e-13
        rp = ex.full_batch_direction("reptile", ml.cosine_loss, tasks, 0.1, K)(w)
        assert _err(rp, ml.meta_gradient(ml.reptile_grad, ml.cosine_loss, w, ep, alpha=0.1, steps=K)) < 1e-13
    # the naive K-step difference equals the forward estimator for K = 1 ...
    nv = ex.full_batch_direction("naive", ml.cosine_loss, tasks, 0.1, 1, delta=1e-4)(w)
    fw = ex.full_batch_direction("chayti", ml.cosine_loss, tasks, 0.1, 1, delta=1e-4)(w)
    assert _err(nv, fw) < 1e-10
    # ... but estimates J v, not J^T v, for K > 1
    nv3 = ex.full_batch_direction("naive", ml.cosine_loss, tasks, 0.3, 3, delta=1e-7)(w)
    ex3 = ml.exact_meta_gradient(ml.cosine_loss, w, tasks, 0.3, 3)
    assert _err(nv3, ex3) > 1e-4


def test_fixed_point_linear_field():
    A = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    b = jnp.array([1.0, -1.0])
    w, r = ex.fixed_point(lambda w: A @ w - b, jnp.zeros(2), iters=3)
    assert r < 1e-14 and np.allclose(w, np.linalg.solve(A, b))


def test_plateau_and_optimum_on_grid():
    assert ex.plateau(np.r_[np.ones(90), 2 * np.ones(10)]) == 2.0
    hs = np.logspace(-4, 0, 41)
    eps = np.array([1e-9, 1e-6])
    errs = hs[None] ** 2 + eps[:, None] / hs[None]
    h_opt, e_opt = ex.optimum_on_grid(hs, errs)
    exact_h = (eps / 2) ** (1 / 3)
    assert np.allclose(h_opt, exact_h, rtol=0.05)
    assert np.allclose(e_opt, exact_h**2 + eps / exact_h, rtol=0.02)


def test_noisy_estimator_error_zero_noise_is_fd_error():
    _, t = _cos_task()
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    hs = [1e-2, 1e-3]
    e = ex.noisy_estimator_error(ml.cosine_loss, w, t, 0.1, hs, [0.0, 1e-6], "central", 20, jax.random.key(0))
    exact = ml.maml_grad(ml.cosine_loss, w, ml.Episode.deterministic(t), alpha=0.1)
    for j, h in enumerate(hs):
        est = ml.chayti_grad(ml.cosine_loss, w, ml.Episode.deterministic(t), alpha=0.1, delta=h, scheme="central")
        assert e[0, j] == pytest.approx(_err(est, exact), rel=1e-6)
    assert e[1, 1] > e[0, 1]  # noise adds error at small h


def test_k_step_cost_table():
    assert ex.k_step_cost("maml", 3) == (4, 3)
    assert ex.k_step_cost("chayti_forward", 3) == (7, 0)
    assert ex.k_step_cost("chayti_central", 3) == (10, 0)
    assert ex.k_step_cost("chayti_forward_recompute", 3) == (3 * 3 + 1 + 3, 0)
    assert ex.k_step_cost("chayti_forward", 1)[0] == ml.make_estimator("chayti", alpha=0.1, delta=1e-3).grads_per_task


def test_k_step_cost_counts_real_gradient_calls():
    """The cost table of claim 5 equals the number of loss-gradient calls actually made."""
    tasks, t = _cos_task()
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    ep = ml.Episode.deterministic(t)
    calls = {"n": 0}

    def counted(x, b):
        calls["n"] += 1
        return ml.cosine_loss(x, b)

    for K in (1, 2, 3):
        for scheme in ("forward", "central"):
            for store in (True, False):
                calls["n"] = 0
                with jax.disable_jit():
                    ex.chayti_grad_k(counted, w, ep, 0.1, 1e-3, scheme, K, store_iterates=store)
                name = f"chayti_{scheme}" + ("" if store else "_recompute")
                assert calls["n"] == ex.k_step_cost(name, K)[0], (K, scheme, store, calls["n"])


def test_growing_loss_and_optimizer_runs():
    pool = ex.sample_growing_tasks(jax.random.key(0), 6, 3, 0.05)
    t = jax.tree_util.tree_map(lambda x: x[0], pool)
    w = jnp.array([1.0, 2.0, -1.0])
    r = w - t.cos.c
    assert float(ex.growing_loss(w, t)) == pytest.approx(float(ml.cosine_loss(w, t.cos) + 0.0125 * jnp.dot(r, r) ** 2))
    w0s = jnp.stack([w, -w])
    out = ex.optimizer_runs(ex.growing_loss, pool, 0.05, "nsgdm", [0.01, 0.1], w0s, num_steps=40, batch_size=3,
                            delta=1e-3, key=jax.random.key(1), record_every=10)
    assert out["grad_norm"].shape == (2, 2, 4) and out["final"].shape == (2, 2)
    assert not out["diverged"].any()
    big = ex.optimizer_runs(ex.growing_loss, pool, 0.05, "sgd", [1e3], 20 * w0s, num_steps=20, batch_size=3,
                            delta=1e-3, key=jax.random.key(1), record_every=10)
    assert big["diverged"].all() and np.isinf(big["final"]).all()
    with pytest.raises(ValueError, match="needs the global constants"):
        ex.optimizer_runs(ex.growing_loss, pool, 0.05, "fallah", [0.1], w0s, num_steps=10, batch_size=3,
                          delta=1e-3, key=jax.random.key(1))


def test_memory_sweep_rows():
    rows = ex.memory_sweep([(4, 1), (4, 2)], n_points=5)
    names = {r["method"] for r in rows}
    assert names == {"maml", "chayti_forward", "chayti_forward_recompute", "fomaml"}
    assert all(r["temp_bytes"] >= 0 and r["params"] == 1 * 4 + 4 + 4 * 4 + 4 + 4 + 1 for r in rows)


def test_masked_k_directions_match_static_k():
    """Implementation check: the traced-K directions of the one-program suite equal the static-K ones."""
    tasks, _ = _cos_task()
    w = jnp.array([0.3, -1.2, 2.0, 0.7])
    dirs, chayti = ex._masked_directions(ml.cosine_loss, tasks, 0.1, 3, 1e-4)
    for K in (1, 2, 3):
        for nm in ("maml", "fomaml", "reptile", "naive"):
            ref = ex.full_batch_direction(nm, ml.cosine_loss, tasks, 0.1, K, delta=1e-4)(w)
            assert _err(dirs[nm](w, K), ref) < (1e-10 if nm == "naive" else 1e-12)  # naive: round-off / delta
        for sch in ("forward", "central"):
            ref = ex.full_batch_direction("chayti", ml.cosine_loss, tasks, 0.1, K, delta=1e-3, scheme=sch)(w)
            assert _err(chayti(w, K, 1e-3, sch), ref) < 1e-12


def test_optimizer_sweep_equals_separate_runs():
    """Implementation check: one compiled sweep over pools and optimisers reproduces separate runs;
    the q = 0 growing pool reproduces the cosine loss."""
    pool = ex.sample_growing_tasks(jax.random.key(0), 6, 3, 0.05)
    flat = ex.GrowingTask(pool.cos, jnp.zeros(6))
    w0s = jnp.stack([jnp.array([1.0, 2.0, -1.0]), jnp.array([-3.0, 0.5, 1.0])])
    kw = dict(num_steps=20, batch_size=3, delta=1e-3, key=jax.random.key(1), record_every=10)
    spec = [(0, "adam", [0.01, 0.1]), (1, "nsgdm", [0.1]), (1, "sgd", [0.05])]
    out = ex.optimizer_sweep(ex.growing_loss, [flat, pool], 0.05, spec, w0s, **kw)
    sep = [ex.optimizer_runs(ml.cosine_loss, pool.cos, 0.05, "adam", [0.01, 0.1], w0s, **kw),
           ex.optimizer_runs(ex.growing_loss, pool, 0.05, "nsgdm", [0.1], w0s, **kw),
           ex.optimizer_runs(ex.growing_loss, pool, 0.05, "sgd", [0.05], w0s, **kw)]
    for a, b in zip(out, sep):
        np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-10)
        assert (a["diverged"] == b["diverged"]).all()


# === claim 6
def test_mnist1d_data_generated_locally_and_cached():
    state = np.random.get_state()[1].copy()
    Xtr, ytr, Xte, yte = ex.mnist1d_data(200, seed=3)
    assert (np.random.get_state()[1] == state).all()  # numpy's global generator is left alone
    assert Xtr.shape == (160, 40) and Xte.shape == (40, 40) and Xtr.dtype == np.float32
    assert set(np.unique(np.concatenate([ytr, yte]))) == set(range(10))
    assert ex.mnist1d_data(200, seed=3)[0] is Xtr  # cached in-process


def test_nway_indices_episodes_are_valid():
    """Implementation check: distinct classes per episode, k distinct rows of the slot's class, labels by slot."""
    y = np.repeat(np.arange(6), [9, 7, 8, 12, 7, 10])
    idx = ex.nway_indices(np.random.default_rng(0), y, 500, 3, 7)
    assert idx.shape == (500, 3, 7) and idx.dtype == np.int32
    lab = y[idx]
    assert (lab == lab[..., :1]).all()  # one class per slot
    assert all(len(set(row)) == 3 for row in lab[..., 0])  # distinct classes
    assert all(len(set(e.ravel())) == 21 for e in idx)  # no example twice
    counts = np.bincount(lab[..., 0].ravel(), minlength=6)
    assert counts.min() > 150  # every class used (uniform: 250 each)
    ep = ex._episodes(jnp.asarray(np.arange(len(y), dtype=np.float32)[:, None]), jnp.asarray(idx[:2]), 3)
    assert ep.support[0].shape == (2, 9, 1) and ep.query[0].shape == (2, 12, 1)
    np.testing.assert_array_equal(ep.support[1][0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(np.asarray(ep.support[0][0, :, 0]), idx[0, :, :3].ravel())
    with pytest.raises(ValueError, match="exceeds the smallest class"):
        ex.nway_indices(np.random.default_rng(0), y, 5, 3, 8)
    with pytest.raises(ValueError, match="n_way"):
        ex.nway_indices(np.random.default_rng(0), y, 5, 7, 2)


@pytest.mark.parametrize("K", [1, 2])
def test_mnist1d_cost_counts_real_gradient_calls(K):
    """Implementation check: the cost table of claim 6 equals the loss-gradient calls each core estimator makes."""
    p = ml.init_mlp(jax.random.key(0), (3, 4, 2), activation="tanh")
    x = jax.random.normal(jax.random.key(1), (6, 3))
    ep = ml.Episode((x[:3], jnp.array([0, 1, 0])), (x[3:], jnp.array([1, 0, 1])), None)
    calls = {"n": 0}

    def counted(q, b):
        calls["n"] += 1
        return ml.mlp_xent_loss(q, b, activation="tanh")

    for m in ex.MNIST1D_METHODS:
        if m == "maml":
            continue  # reverse mode through the inner loop: its HVPs are not separate gradient calls
        calls["n"] = 0
        name, kw = m.split("_")[0], {"alpha": 0.1, "steps": K}
        if name == "chayti":
            kw.update(delta=1e-3, scheme=m.split("_")[1])
        with jax.disable_jit():
            ml.ESTIMATORS[name](counted, p, ep, **kw)
        assert calls["n"] == ex.mnist1d_cost(m, K)[0], (m, K, calls["n"])
    assert ex.mnist1d_cost("maml", K) == (K + 1, K)


def test_mnist1d_fewshot_small_run():
    """A tiny run: shapes, paired seeds (MAML and the symmetric estimator stay together), costs."""
    r = ex.mnist1d_fewshot(methods=("maml", "chayti_central"), num_samples=400, n_way=3, k_support=2, k_query=3,
                           hidden=(8,), steps=1, num_steps=6, meta_batch=2, seeds=(0, 1), eval_episodes=10)
    assert set(r["acc"]) == {"maml", "chayti_central"} and r["acc"]["maml"].shape == (2,)
    assert r["acc_init"].shape == (2,) and r["chance"] == pytest.approx(1 / 3)
    assert (r["grads"]["chayti_central"], r["hvps"]["maml"]) == (4, 1)
    assert r["grad_relerr"]["maml"].max() == 0.0 and r["grad_relerr"]["chayti_central"].max() < 1e-2
    for a, b in zip(jax.tree_util.tree_leaves(r["params"]["maml"]), jax.tree_util.tree_leaves(r["params"]["chayti_central"])):
        assert float(jnp.max(jnp.abs(a - b))) < 1e-3
    assert all(v > 0 for v in r["seconds_per_step"].values())
