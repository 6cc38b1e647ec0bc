"""Models (MLP, body/head, losses) and task families (sinusoid, logistic, digits, N-way K-shot)."""

from __future__ import annotations

import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

KEY = jax.random.key(0)


def _shapes(tree):
    return jax.tree_util.tree_map(lambda a: (a.shape, str(a.dtype)), tree)


@pytest.fixture(scope="module")
def digits():
    return ml.digits_dataset(jnp.float64)


# =========================================================================== models
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_mlp_shapes_and_dtype(dtype):
    p = ml.init_mlp(KEY, (1, 40, 40, 1), dtype=dtype)
    assert [(l["w"].shape, l["b"].shape) for l in p] == [((1, 40), (40,)), ((40, 40), (40,)), ((40, 1), (1,))]
    assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(p))
    out = ml.mlp_apply(p, jnp.ones((7, 1), dtype))
    assert out.shape == (7, 1) and out.dtype == dtype
    loss = ml.mlp_mse_loss(p, (jnp.ones((7, 1), dtype), jnp.zeros((7, 1), dtype)))
    assert loss.dtype == dtype and loss.shape == ()


def test_mlp_init_statistics_pytorch_and_finn():
    # PyTorch default: U[-1/sqrt(in), 1/sqrt(in)] for weights and biases -> var = 1/(3 in).
    p = jax.tree_util.tree_map(np.asarray, ml.init_mlp(KEY, (400, 300), dtype=jnp.float64))
    w, b = p[0]["w"], p[0]["b"]
    bound = 1 / math.sqrt(400)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert abs(w.var() / (bound**2 / 3) - 1) < 0.02  # 120k samples: rel. s.e. ~0.4%
    assert abs(w.mean()) < 0.01 * bound
    assert np.abs(b).max() <= bound and b.std() > 0.4 * bound
    # Finn et al.: truncated normal(0, 0.01) at 2 std, zero bias.
    q = jax.tree_util.tree_map(np.asarray, ml.init_mlp(KEY, (400, 300), dtype=jnp.float64, init="finn"))
    w = q[0]["w"]
    assert np.abs(w).max() <= 0.02 + 1e-12
    sd_trunc = 0.01 * math.sqrt(1 - 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi) / (math.erf(2 / math.sqrt(2))))
    assert abs(w.std() / sd_trunc - 1) < 0.02
    assert np.abs(q[0]["b"]).max() == 0.0


def test_mlp_apply_matches_manual_and_activation():
    p = ml.init_mlp(KEY, (3, 5, 2), dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    for name, act in [("relu", jax.nn.relu), ("tanh", jnp.tanh)]:
        ref = act(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"]
        np.testing.assert_allclose(ml.mlp_apply(p, x, name), ref, rtol=1e-12)
    assert not np.allclose(ml.mlp_apply(p, x, "relu"), ml.mlp_apply(p, x, "tanh"))


def test_init_deterministic_by_key():
    a = ml.init_mlp(jax.random.key(3), (2, 8, 1))
    b = ml.init_mlp(jax.random.key(3), (2, 8, 1))
    c = ml.init_mlp(jax.random.key(4), (2, 8, 1))
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert not np.array_equal(a[0]["w"], c[0]["w"])


def test_body_head_structure_and_apply():
    p = ml.init_body_head(KEY, (1, 40, 40, 1), dtype=jnp.float64)
    assert set(p) == {"body", "head"} and len(p["body"]) == 2 and len(p["head"]) == 1
    assert p["head"][0]["w"].shape == (40, 1)
    x = jax.random.normal(jax.random.key(1), (6, 1), jnp.float64)
    # same function as an MLP with the same layers
    flat = [*p["body"], *p["head"]]
    np.testing.assert_allclose(ml.body_head_apply(p, x), ml.mlp_apply(flat, x), rtol=1e-12)
    z = ml.body_apply(p["body"], x, normalize=True)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, rtol=1e-12)
    q = ml.init_body_head(KEY, (64, 32, 5), head_hidden=(16,), activation="tanh")
    assert [l["w"].shape for l in q["head"]] == [(32, 16), (16, 5)]
    assert ml.body_head_apply(q, jnp.ones((3, 64)), "tanh").shape == (3, 5)


def test_losses_against_formulas():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    labels = np.array([0, 2])
    lse = np.log(np.exp(logits).sum(1))
    ref = np.mean(lse - logits[np.arange(2), labels])
    np.testing.assert_allclose(ml.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels)), ref, rtol=1e-12)
    np.testing.assert_allclose(ml.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(np.eye(3)[labels])), ref, rtol=1e-12)
    np.testing.assert_allclose(ml.mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])), 2.5)
    assert float(ml.accuracy(jnp.asarray(logits), jnp.asarray(labels))) == 1.0
    assert float(ml.accuracy(jnp.array([1.0, -2.0, 3.0]), jnp.array([1.0, 1.0, 1.0]))) == pytest.approx(2 / 3)
    # logistic loss: log(1 + e^z) - y z, plus ridge
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    y = (rng.uniform(size=20) < 0.5).astype(float)
    w = np.array([0.3, -1.0, 2.0])
    z = x @ w
    ref = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * 0.1 * np.sum(w**2)
    x, y, w = jnp.asarray(x), jnp.asarray(y), jnp.asarray(w)
    np.testing.assert_allclose(ml.logistic_loss(w, (x, y), l2=0.1), ref, rtol=1e-12)
    # its Hessian bound (1/(4n)) ||X||^2 + l2
    H = np.asarray(jax.jit(jax.hessian(lambda w: ml.logistic_loss(w, (x, y), l2=0.1)))(w))
    assert np.linalg.eigvalsh(H)[-1] <= np.linalg.norm(np.asarray(x), 2) ** 2 / 80 + 0.1 + 1e-12


def test_model_bad_inputs_raise_naming_argument():
    with pytest.raises(ValueError, match="'sizes'"):
        ml.init_mlp(KEY, (1,))
    with pytest.raises(ValueError, match="'sizes'"):
        ml.init_mlp(KEY, (1, 0, 1))
    with pytest.raises(ValueError, match="'sizes'"):
        ml.init_mlp(KEY, 3)
    with pytest.raises(ValueError, match="'sizes'"):
        ml.init_body_head(KEY, (1, 1))
    with pytest.raises(ValueError, match="'activation'"):
        ml.init_mlp(KEY, (1, 4, 1), activation="relux")
    with pytest.raises(ValueError, match="'init'"):
        ml.init_mlp(KEY, (1, 4, 1), init="xavier")
    with pytest.raises(ValueError, match="'head_hidden'"):
        ml.init_body_head(KEY, (1, 4, 1), head_hidden=(0,))
    with pytest.raises(TypeError, match="'dtype'"):
        ml.init_mlp(KEY, (1, 4, 1), dtype=jnp.int32)


# =========================================================================== sinusoid
def test_sinusoid_shapes_ranges_and_function():
    tasks = ml.sample_sinusoid_tasks(KEY, 2000, dtype=jnp.float64)
    a, ph = np.asarray(tasks.amplitude), np.asarray(tasks.phase)
    assert a.min() >= 0.1 and a.max() <= 5.0 and a.min() < 0.2 and a.max() > 4.9
    assert ph.min() >= 0.0 and ph.max() <= math.pi and ph.min() < 0.05 and ph.max() > math.pi - 0.05
    ep = ml.sinusoid_episodes(jax.random.key(1), tasks, 10, 15, k_hessian=5)
    x, y = ep.support
    assert x.shape == y.shape == (2000, 10, 1) and ep.query[0].shape == (2000, 15, 1) and ep.hessian[0].shape == (2000, 5, 1)
    allx = np.concatenate([np.asarray(b[0]).ravel() for b in ep])
    assert allx.min() >= -5 and allx.max() <= 5 and allx.min() < -4.99 and allx.max() > 4.99
    np.testing.assert_allclose(y, a[:, None, None] * np.sin(np.asarray(x) - ph[:, None, None]), rtol=1e-12, atol=1e-12)
    # support / query / hessian are independent draws
    assert not np.allclose(ep.support[0][:, :5], ep.hessian[0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_sinusoid_dtype_determinism_vmap(dtype):
    ep = ml.sample_sinusoid_episodes(KEY, 25, 10, 10, dtype=dtype)
    assert _shapes(ep) == ml.Episode((((25, 10, 1), str(jnp.dtype(dtype))),) * 2, (((25, 10, 1), str(jnp.dtype(dtype))),) * 2, None)
    ep2 = ml.sample_sinusoid_episodes(KEY, 25, 10, 10, dtype=dtype)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree_util.tree_leaves(ep), jax.tree_util.tree_leaves(ep2)))
    ep3 = ml.sample_sinusoid_episodes(jax.random.key(9), 25, 10, 10, dtype=dtype)
    assert not np.array_equal(ep.support[0], ep3.support[0])
    keys = jax.random.split(KEY, 3)
    v = jax.jit(jax.vmap(lambda k: ml.sample_sinusoid_episodes(k, 25, 10, 10, dtype=dtype)))(keys)
    assert v.support[0].shape == (3, 25, 10, 1) and v.query[1].shape == (3, 25, 10, 1)
    one = ml.sample_sinusoid_episodes(keys[1], 25, 10, 10, dtype=dtype)
    np.testing.assert_array_equal(v.support[0][1], one.support[0])


def test_sinusoid_eval_set_fixed_grid():
    e1, t1 = ml.sinusoid_eval_set(20, 5, 50)
    e2, t2 = ml.sinusoid_eval_set(20, 5, 50)
    np.testing.assert_array_equal(e1.support[0], e2.support[0])
    np.testing.assert_array_equal(t1.amplitude, t2.amplitude)
    xq = np.asarray(e1.query[0])
    assert xq.shape == (20, 50, 1)
    np.testing.assert_allclose(xq[3, :, 0], np.linspace(-5, 5, 50), atol=1e-6)
    np.testing.assert_allclose(e1.query[1], t1(e1.query[0]), rtol=1e-6)
    e3, _ = ml.sinusoid_eval_set(20, 5, 50, seed=1)
    assert not np.array_equal(e1.support[0], e3.support[0])


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="'k_support'"):
        ml.sample_sinusoid_episodes(KEY, 5, 0, 10)
    with pytest.raises(ValueError, match="'num_tasks'"):
        ml.sample_sinusoid_episodes(KEY, 0, 5, 10)
    with pytest.raises(TypeError, match="'k_query'"):
        ml.sample_sinusoid_episodes(KEY, 5, 5, 2.5)
    with pytest.raises(ValueError, match="'amplitude_range'"):
        ml.sample_sinusoid_episodes(KEY, 5, 5, 5, amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match="'spread'"):
        ml.sample_logistic_tasks(KEY, 5, 5, 5, 3, spread=-1.0)
    with pytest.raises(ValueError, match="'w_mean'"):
        ml.sample_logistic_tasks(KEY, 5, 5, 5, 3, w_mean=jnp.ones(4))


# =========================================================================== logistic
def test_logistic_tasks_shapes_labels_and_model():
    tasks = ml.sample_logistic_params(KEY, 2, 4, spread=0.0, scale_spread=0.0, dtype=jnp.float64)
    np.testing.assert_allclose(tasks.weights, 1.0)  # default centre (2/sqrt(d)) 1 with d = 4
    np.testing.assert_allclose(tasks.scales, 1.0)
    w_mean = jnp.array([3.0, -3.0, 0.0, 1.0])
    tasks = ml.sample_logistic_params(KEY, 2, 4, w_mean=w_mean, spread=0.1, scale_spread=0.7, dtype=jnp.float64)
    ep = ml.logistic_episodes(jax.random.key(1), tasks, 4000, 7, k_hessian=3)
    x, y = ep.support
    assert x.shape == (2, 4000, 4) and y.shape == (2, 4000) and ep.hessian[0].shape == (2, 3, 4)
    assert set(np.unique(np.asarray(y))) <= {0.0, 1.0}
    # feature scaling: per-task std of x matches the scales
    np.testing.assert_allclose(np.std(np.asarray(x), axis=1) / np.asarray(tasks.scales), 1.0, atol=0.05)
    # the labels follow the model: the MLE on many samples is near the task weight
    w_hat = jax.jit(jax.vmap(_fit_logistic))(x, y)
    np.testing.assert_allclose(w_hat, tasks.weights, atol=0.35)
    ep32 = ml.sample_logistic_tasks(KEY, 2, 6, 7, 4)
    assert ep32.support[0].dtype == jnp.float32 and ep32.query[1].shape == (2, 7)


def _fit_logistic(x, y):
    def newton(w, _):
        g = jax.grad(ml.logistic_loss)(w, (x, y))
        H = jax.hessian(ml.logistic_loss)(w, (x, y))
        return w - jnp.linalg.solve(H, g), None

    return jax.lax.scan(newton, jnp.zeros(x.shape[1], x.dtype), None, length=15)[0]


# =========================================================================== digits
def test_digits_dataset_split_and_standardization(digits):
    assert digits.X.shape == (1797, 64) and digits.y.shape == (1797,) and digits.X.dtype == jnp.float64
    assert set(digits.train_classes).isdisjoint(digits.test_classes)
    assert set(digits.train_classes) | set(digits.test_classes) == set(range(10))
    assert digits.test_classes == (7, 8, 9)
    tr = np.isin(np.asarray(digits.y), digits.train_classes)
    Xtr = np.asarray(digits.X)[tr]
    np.testing.assert_allclose(Xtr.mean(0), 0.0, atol=1e-10)
    sd = Xtr.std(0)
    assert np.all((np.abs(sd - 1) < 1e-10) | (sd < 1e-12))
    with pytest.raises(ValueError, match="'test_classes'"):
        ml.digits_dataset(test_classes=(3, 11))


def test_digits_read_from_the_bundled_file_equals_load_digits():
    """Implementation check: the direct read of scikit-learn's bundled CSV (which skips the 1.6 s
    import of ``sklearn.datasets``) returns exactly ``load_digits``'s arrays."""
    from sklearn.datasets import load_digits

    from mathlib._data import _load_digits_numpy

    X, y = _load_digits_numpy()
    ref = load_digits()
    assert X.dtype == np.float64 and y.dtype == np.int32
    np.testing.assert_array_equal(X, ref.data)
    np.testing.assert_array_equal(y, ref.target)


def test_digits_ovr_episodes(digits):
    ep = ml.sample_digits_ovr_episodes(KEY, 40, 10, 11, data=digits, split="test", k_hessian=4)
    xs, ys = ep.support
    assert xs.shape == (40, 10, 65) and ys.shape == (40, 10) and ep.query[0].shape == (40, 11, 65)
    np.testing.assert_array_equal(xs[..., -1], 1.0)  # intercept column
    np.testing.assert_array_equal(ys.sum(1), 5)
    np.testing.assert_array_equal(ep.query[1].sum(1), 5)
    # map rows back to dataset indices: positives share one test class, negatives are other test classes,
    # and no image appears twice within a task
    X = np.asarray(digits.X)
    lab = np.asarray(digits.y)
    pos_classes = []
    for t in range(40):
        rows = np.concatenate([np.asarray(b[0][t])[:, :64] for b in ep])
        ylab = np.concatenate([np.asarray(b[1][t]) for b in ep])
        idx = [int(np.argmin(np.abs(X - r).sum(1))) for r in rows]
        np.testing.assert_allclose(X[idx], rows, atol=1e-12)
        assert len(set(idx)) == len(idx) or _dup_images(X, idx)
        cls = lab[idx]
        assert set(cls) <= set(digits.test_classes)
        pc = set(cls[ylab == 1])
        assert len(pc) == 1 and pc.isdisjoint(set(cls[ylab == 0]))
        pos_classes.append(pc.pop())
    assert set(pos_classes) == {7, 8, 9}
    # plugs into the core: MAML (Hessian term on the independent D_h) with the ridge logistic loss
    est = ml.make_estimator("maml", alpha=0.1)
    loss = lambda w, b: ml.logistic_loss(w, b, l2=0.05)  # noqa: E731
    gl = jax.jit(lambda w, e: ml.meta_gradient(est, loss, w, e))(jnp.zeros(65), ep)
    assert gl.shape == (65,) and np.linalg.norm(np.asarray(gl)) > 0
    ep64 = ml.sample_digits_ovr_episodes(KEY, 2, 6, 6, data=digits, intercept=False, split="all")
    assert ep64.support[0].shape == (2, 6, 64) and ep64.hessian is None
    with pytest.raises(ValueError, match="'split'"):
        ml.sample_digits_ovr_episodes(KEY, 2, 6, 6, data=digits, split="val")
    with pytest.raises(ValueError, match="'k_support'"):
        ml.sample_digits_ovr_episodes(KEY, 2, 400, 6, data=digits, split="test")


def _dup_images(X, idx):
    """Digits contains a few exact duplicate images; accept a repeated row only if it is such a duplicate."""
    uniq, counts = np.unique(np.asarray(X)[idx], axis=0, return_counts=True)
    return all((np.abs(X - u).sum(1) < 1e-12).sum() >= c for u, c in zip(uniq, counts))


# =========================================================================== N-way K-shot
def test_nway_kshot_labels_and_disjoint(digits):
    n = digits.X.shape[0]
    Xid = jnp.arange(n)[:, None].astype(jnp.float64)  # features = row index, to trace examples
    ep = ml.sample_nway_kshot_episodes(KEY, 30, Xid, digits.y, digits.train_classes, 5, 2, 7, k_hessian=3)
    assert ep.support[0].shape == (30, 10, 1) and ep.query[0].shape == (30, 35, 1) and ep.hessian[0].shape == (30, 15, 1)
    assert ep.support[1].dtype == jnp.int32
    np.testing.assert_array_equal(ep.support[1][0], np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(ep.query[1][0], np.repeat(np.arange(5), 7))
    y = np.asarray(digits.y)
    seen_classes = set()
    for t in range(30):
        rows = {name: np.asarray(b[0][t, :, 0]).astype(int) for name, b in zip(("s", "q", "h"), ep)}
        allrows = np.concatenate(list(rows.values()))
        assert len(set(allrows)) == len(allrows)  # no overlap within or between batches
        # each relabelled class corresponds to one original class, consistently across batches
        mapping = {}
        for name, b in zip(("s", "q", "h"), ep):
            for r, l in zip(rows[name], np.asarray(b[1][t])):
                mapping.setdefault(int(l), set()).add(int(y[r]))
        assert all(len(v) == 1 for v in mapping.values())
        orig = [next(iter(mapping[l])) for l in range(5)]
        assert len(set(orig)) == 5 and set(orig) <= set(digits.train_classes)
        seen_classes |= set(orig)
    assert seen_classes == set(digits.train_classes)
    # single-episode version, vmappable over keys, deterministic by key
    f = jax.jit(jax.vmap(lambda k: ml.sample_nway_kshot(k, digits.X, digits.y, digits.test_classes, 3, 1, 4)))
    v = f(jax.random.split(KEY, 4))
    assert v.support[0].shape == (4, 3, 64) and v.query[1].shape == (4, 12)
    w = f(jax.random.split(KEY, 4))
    np.testing.assert_array_equal(v.query[0], w.query[0])
    # plugs into the core: Sign-MAML with the cross-entropy MLP loss on 3-way digits episodes
    params = ml.init_mlp(KEY, (64, 32, 3), dtype=jnp.float64)
    est = ml.make_estimator("sign_maml", alpha=0.01)
    g = jax.jit(lambda p, e: ml.meta_gradient(est, ml.mlp_xent_loss, p, e))(params, v)
    assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree_util.tree_leaves(g))
    assert float(ml.tree_norm(g)) > 0


def test_nway_kshot_bad_inputs(digits):
    X, y, cls = digits.X, digits.y, digits.test_classes
    with pytest.raises(ValueError, match="'n_way'"):
        ml.sample_nway_kshot(KEY, X, y, cls, 4, 1, 5)
    with pytest.raises(ValueError, match="'k_support'"):
        ml.sample_nway_kshot(KEY, X, y, cls, 3, 0, 5)
    with pytest.raises(ValueError, match="'k_query'"):
        ml.sample_nway_kshot_episodes(KEY, 2, X, y, cls, 3, 1, 0)
    with pytest.raises(ValueError, match="'k_support'"):
        ml.sample_nway_kshot(KEY, X, y, cls, 3, 100, 100)  # classes have ~180 images
    with pytest.raises(ValueError, match="'classes'"):
        ml.sample_nway_kshot(KEY, X, y, (1, 1, 2), 2, 1, 1)
    with pytest.raises(ValueError, match="'X' and 'y'"):
        ml.sample_nway_kshot(KEY, X[:10], y, cls, 2, 1, 1)


# =========================================================================== plugging into the core
def test_maml_meta_gradient_on_sinusoid_mlp():
    """One MAML meta-gradient through the core API (x64): matches jax.grad of the MAML objective."""
    ep = ml.sample_sinusoid_episodes(KEY, 25, 10, 10, dtype=jnp.float64)  # shapes as elsewhere: compile cache
    params = ml.init_mlp(jax.random.key(1), (1, 40, 40, 1), dtype=jnp.float64)
    est = ml.make_estimator("maml", alpha=0.01, steps=1)
    g = jax.jit(lambda p, e: ml.meta_gradient(est, ml.mlp_mse_loss, p, e))(params, ep)

    def objective(p):
        def one(e):
            w = jax.tree_util.tree_map(lambda a, d: a - 0.01 * d, p, jax.grad(ml.mlp_mse_loss)(p, e.support))
            return ml.mlp_mse_loss(w, e.query)

        return jnp.mean(jax.vmap(one)(ep))

    ref = jax.jit(jax.grad(objective))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_anil_gradient_on_body_head():
    """ANIL through the core API: body gradient nonzero, matches autodiff through a head-only loop."""
    ep = ml.sample_sinusoid_episodes(KEY, 25, 10, 10, dtype=jnp.float64)
    params = ml.init_body_head(jax.random.key(2), (1, 40, 40, 1), dtype=jnp.float64)
    est = ml.make_estimator("anil", alpha=0.05, steps=1)
    g = jax.jit(lambda p, e: ml.meta_gradient(est, ml.body_head_mse_loss, p, e))(params, ep)
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)

    def objective(p):
        def one(e):
            gh = jax.grad(lambda h: ml.body_head_mse_loss({"body": p["body"], "head": h}, e.support))(p["head"])
            head = jax.tree_util.tree_map(lambda a, d: a - 0.05 * d, p["head"], gh)
            return ml.body_head_mse_loss({"body": p["body"], "head": head}, e.query)

        return jnp.mean(jax.vmap(one)(ep))

    ref = jax.jit(jax.grad(objective))(params)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert float(ml.tree_norm(g["body"])) > 0


# Each factor (loss and activation, inner steps, first order) takes each of its values twice, in
# four combinations instead of the eight of the full product (each costs two compilations).
@pytest.mark.parametrize("kind,activation,steps,first_order", [
    ("mse", "tanh", 1, False), ("xent", "relu", 4, False), ("mse", "tanh", 4, True), ("xent", "relu", 1, True)])
def test_head_loss_split_matches_unsplit(kind, activation, steps, first_order):
    """A HeadLoss (features computed once in ANIL's inner loop) gives the same ANIL gradient as
    the same loss passed as a plain function (features recomputed every head step)."""
    key = jax.random.key(7)
    sizes = (3, 16, 16, 4) if kind == "xent" else (1, 16, 16, 1)
    params = ml.init_body_head(key, sizes, activation=activation, dtype=jnp.float64)
    split = ml.body_head_loss(kind, activation=activation, normalize=True)
    assert isinstance(split, ml.HeadLoss)

    def plain(p, batch):  # not a HeadLoss: the generic path of adapt_head
        x, y = batch
        out = ml.body_head_apply(p, x, activation, normalize=True)
        return ml.mse(out, y) if kind == "mse" else ml.softmax_cross_entropy(out, y)

    k1, k2, k3, k4 = jax.random.split(jax.random.key(8), 4)
    if kind == "mse":
        xs, xq = jax.random.normal(k1, (10, 1)), jax.random.normal(k2, (10, 1))
        ys, yq = jnp.sin(xs), jnp.cos(xq)
    else:
        xs, xq = jax.random.normal(k1, (12, 3)), jax.random.normal(k2, (12, 3))
        ys, yq = jax.random.randint(k3, (12,), 0, 4), jax.random.randint(k4, (12,), 0, 4)
    ep = ml.Episode((xs, ys), (xq, yq))
    assert float(split(params, ep.support)) == pytest.approx(float(plain(params, ep.support)), rel=1e-14)
    g_split = ml.anil_grad(split, params, ep, alpha=0.3, steps=steps, first_order=first_order)
    g_plain = ml.anil_grad(plain, params, ep, alpha=0.3, steps=steps, first_order=first_order)
    for a, b in zip(jax.tree_util.tree_leaves(g_split), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert float(ml.tree_norm(g_split["body"])) > 1e-6  # the body gradient is really exercised


def test_body_head_loss_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"body_head_loss: argument 'kind' must be one of \('mse', 'xent'\)"):
        ml.body_head_loss("hinge")
