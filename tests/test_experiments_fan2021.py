"""Unit tests of the fan2021 chapter drivers (``mathlib/experiments/fan2021.py``): closed forms, fast."""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np

import mathlib as ml
from mathlib.experiments import fan2021 as ex


@pytest.fixture(scope="module")
def digits():
    """``(X, splits)`` of :func:`digits_splits` (seed 0), built once for the module."""
    return ex.digits_splits(0)


def test_exactness_check_identity_and_contrast():
    loss, ep = ex.linreg_problem(jax.random.key(0), 4, 10)
    w = jnp.linalg.lstsq(*ep.support)[0] + 0.3
    c = ex.exactness_check(loss, w, ep, 0.05, 3)
    assert c["autodiff_vs_fo"] == 0.0
    assert c["jac_minus_identity"] == 0.0
    assert c["fd_same_piece"] and c["fd_vs_grad"] < 1e-6
    assert c["maml_vs_fomaml"] > 1e-3


def test_jump_formula_one_dimension():
    # f(w; D) = a/2 (w - b)^2 with support centre bs and query centre bq: one flip at w = bs,
    # jump = a/2[(bs-alpha-bq)^2 - (bs+alpha-bq)^2] = -2 a alpha (bs - bq) exactly (Exercise 1)
    a, bs, bq, alpha = 1.7, 0.3005, -0.4, 0.05  # bs at a cell midpoint: the trapezoid is then exact

    def loss(w, b):
        return 0.5 * a * jnp.sum((w - b) ** 2)

    ep = ml.Episode(jnp.array([bs]), jnp.array([bq]), None)
    ts = np.linspace(-1.0, 1.0, 2001)
    prof = ex.line_profile(loss, jnp.zeros(1), ep, jnp.ones(1), ts, alpha, 1)
    jt, jumps, resid = ex.find_jumps(ts, prof["sign"], prof["sign_slope"], prof["pattern"])
    assert len(jumps) == 1
    assert abs(jt[0] - bs) < 1e-3
    np.testing.assert_allclose(jumps[0], -2 * a * alpha * (bs - bq), rtol=1e-9)
    assert resid < 1e-12
    # the MAML objective has no jump: second differences O(h^2)
    assert np.abs(np.diff(prof["maml"], 2)).max() < 1e-4


def test_jump_sizes_linear_in_alpha_for_quadratic():
    a, bs, bq = 1.0, 0.20025, -0.5  # at a cell midpoint of the grid

    def loss(w, b):
        return 0.5 * a * jnp.sum((w - b) ** 2)

    ep = ml.Episode(jnp.array([bs]), jnp.array([bq]), None)
    alphas = np.array([0.01, 0.02, 0.04])
    js = ex.jump_sizes_vs_alpha(loss, jnp.zeros(1), ep, jnp.ones(1), np.linspace(-1, 1, 4001), alphas, 1)
    np.testing.assert_allclose(js["median"], 2 * a * alphas * abs(bs - bq), rtol=1e-9)
    assert abs(ex.fit_loglog_slope(alphas, js["median"]) - 1.0) < 1e-9


def test_nway_episodes_classes_pool_and_labels(digits):
    X, splits = digits
    y = np.asarray(ml.digits_dataset().y)
    tab = splits["class"]["test"]
    ep = jax.jit(ex.nway_episodes, static_argnums=(1, 6, 7, 8))(jax.random.key(3), 4, X, *tab, 5, 2, 3)
    xs, ls = ep.support
    xq, lq = ep.query
    assert xs.shape == (4, 10, 64) and xq.shape == (4, 15, 64)
    np.testing.assert_array_equal(np.asarray(ls[0]), np.repeat(np.arange(5), 2))
    # recover the image indices: rows of X are unique
    Xn = np.asarray(X)
    for t in range(4):
        rows = np.concatenate([np.asarray(xs[t]), np.asarray(xq[t])])
        idx = [int(np.flatnonzero((Xn == r).all(1))[0]) for r in rows]
        assert len(set(idx)) == len(idx)  # distinct images
        assert set(y[idx]) == {5, 6, 7, 8, 9}  # meta-test classes only
        labs = np.concatenate([np.asarray(ls[t]), np.asarray(lq[t])])
        for lab in range(5):  # one digit per label
            assert len(set(y[np.array(idx)[labs == lab]])) == 1


def test_digits_splits_disjoint(digits):
    _, splits = digits
    for name in ("class", "image"):
        tr, te = splits[name]["train"], splits[name]["test"]
        for c in range(10):
            a = set(np.asarray(tr[0][c, : int(tr[1][c])]).tolist())
            b = set(np.asarray(te[0][c, : int(te[1][c])]).tolist())
            assert not a & b
    assert np.asarray(splits["class"]["train"][2]).tolist() == [True] * 5 + [False] * 5
    assert np.asarray(splits["image"]["test"][2]).all()


def test_mean_ci():
    # Student-t half-width: t_{0.975, 2} = 4.302652729749464, s = 1 for (1, 2, 3)
    m, h = ex.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and abs(h - 4.302652729749464 / np.sqrt(3)) < 1e-9
    # a larger sample approaches the normal 1.96
    _, h2 = ex.mean_ci(np.arange(1000.0))
    assert abs(h2 / (np.std(np.arange(1000.0), ddof=1) / np.sqrt(1000)) - 1.96) < 0.01


def test_meta_train_eval_runs_baseline_and_order(digits):
    """Implementation check of the one-program digits driver: an lr = 0 run (training skipped) scores
    the initialisation adapted with the method's own inner rule, computed here directly; the result
    of a run does not depend on the order of the list (chunks, padding and unpacking)."""
    X, splits = digits
    kw = dict(k_query=2, hidden=8, steps=1, test_steps=2, num_steps=2, meta_batch=2, eval_tasks=3, chunk=2,
              opt_level=0)  # a tiny program: compile time is the cost, LLVM -O0 compiles it fastest
    runs = [("sign_maml", 0.1, 0.0, 1, "class", 0), ("sign_maml", 0.1, 1e-2, 1, "image", 0),
            ("sign_maml", 0.1, 0.0, 1, "image", 1), ("sign_maml", 0.1, 1e-2, 1, "class", 1),
            ("fomaml", 0.1, 1e-2, 1, "class", 0)]   # three chunks: two threads get one padded part
    a = ex.meta_train_eval_runs(runs, splits, X, threads=2, **kw)
    perm = [3, 2, 0, 1, 4]
    b = ex.meta_train_eval_runs([runs[i] for i in perm], splits, X, threads=2, **kw)  # same shapes: no recompilation
    np.testing.assert_array_equal(a[perm], b)
    # the chunks run in one call or in concurrent parts: the same results
    np.testing.assert_array_equal(ex.meta_train_eval_runs(runs, splits, X, threads=1, **kw), a)
    assert a[4] != a[3]   # the fomaml run is not a copy of the sign_maml one
    for i in (0, 2):
        _, _, _, _, split, seed = runs[i]
        k_init, _, k_eval = jax.random.split(jax.random.key(seed), 3)
        p0 = ml.init_mlp(k_init, (64, 8, 5))
        ev = ex._episodes_kshot(k_eval, 3, X, splits[split]["test"], 5, 1, jnp.int32(1), 2)
        accs = [ml.accuracy(ml.mlp_apply(ml.adapt_sign(ml.mlp_xent_loss, p0, (ev.support[0][t], ev.support[1][t]), 0.1, 2),
                                         ev.query[0][t]), ev.query[1][t]) for t in range(3)]
        np.testing.assert_allclose(a[i], np.mean(accs), atol=1e-6)


def test_episodes_kshot_repeats_first_images(digits):
    """Implementation check: a k-shot episode padded to k_max slots repeats each class's first k images
    (so the mean support loss is the k-shot loss) and keeps the k_max-shot episode's query set."""
    X, splits = digits
    tab = splits["class"]["train"]
    key = jax.random.key(1)
    full = ex.nway_episodes(key, 3, X, *tab, 5, 4, 2)
    for k in (1, 2, 4):
        ep = ex._episodes_kshot(key, 3, X, tab, 5, 4, jnp.int32(k), 2)
        xs, ys = (np.asarray(a).reshape(3, 5, 4, -1) for a in ep.support)
        fx = np.asarray(full.support[0]).reshape(3, 5, 4, -1)
        for j in range(4):
            np.testing.assert_array_equal(xs[:, :, j], fx[:, :, j % k])
        np.testing.assert_array_equal(ys[..., 0], np.broadcast_to(np.arange(5)[None, :, None], (3, 5, 4)))
        np.testing.assert_array_equal(np.asarray(ep.query[0]), np.asarray(full.query[0]))
