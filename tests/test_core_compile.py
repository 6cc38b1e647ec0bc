"""Compile once (issue 8, item 5): counted with JAX's backend-compile monitoring events.

Implementation checks: a second ``train`` with the same objects and shapes compiles nothing; neither
does a new value of a numeric hyper-parameter (alpha, delta, lam: traced leaves of the Estimator), a
run of another length (the last chunk is padded), a beta sweep of ``run_deterministic`` or a new step
of ``make_train_step``. Before the fix every ``train`` call compiled its loop again.
"""

import contextlib

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import mathlib as ml  # noqa: E402

_COUNT = {"on": False, "n": 0}


def _listener(event, duration, **kw):
    if _COUNT["on"] and event == "/jax/core/compile/backend_compile_duration":
        _COUNT["n"] += 1


jax.monitoring.register_event_duration_secs_listener(_listener)


@contextlib.contextmanager
def count_compiles():
    _COUNT.update(on=True, n=0)
    box = {}
    try:
        yield box
    finally:
        _COUNT["on"] = False
        box["n"] = _COUNT["n"]


DIM = 3
TASKS = ml.sample_quadratic_tasks(jax.random.key(0), 6, DIM)


def sample(key, tasks):
    idx = jax.random.randint(key, (4,), 0, 6)
    return ml.Episode.deterministic(jax.tree_util.tree_map(lambda x: x[idx], tasks))


def test_train_second_call_and_new_alpha_compile_nothing():
    opt = optax.sgd(0.1)
    est = ml.make_estimator("maml", alpha=0.1)
    w0 = jnp.ones(DIM)
    s1, h1 = ml.train(est, ml.quadratic_loss, w0, opt, sample, 20, jax.random.key(1), chunk_size=10, sample_args=(TASKS,))
    with count_compiles() as c:
        s2, h2 = ml.train(est, ml.quadratic_loss, w0, opt, sample, 20, jax.random.key(1), chunk_size=10, sample_args=(TASKS,))
        jax.block_until_ready(s2.params)
    assert c["n"] == 0
    np.testing.assert_array_equal(s1.params, s2.params)
    tasks2 = jax.tree_util.tree_map(lambda x: 2 * x, TASKS)
    k2 = jax.random.key(2)
    with count_compiles() as c:  # new alpha, new Estimator object, other run length, other data
        s3, _ = ml.train(ml.make_estimator("maml", alpha=0.05), ml.quadratic_loss, w0, opt, sample, 15,
                         k2, chunk_size=10, sample_args=(tasks2,))
        jax.block_until_ready(s3.params)
    assert c["n"] == 0
    # the values are those of alpha = 0.05 (not a stale compiled constant)
    ref, _ = ml.train(ml.make_estimator("maml", alpha=0.05), ml.quadratic_loss, w0, optax.sgd(0.1), sample, 15,
                      k2, chunk_size=15, sample_args=(tasks2,))
    np.testing.assert_allclose(s3.params, ref.params, rtol=1e-12)


def test_run_deterministic_beta_sweep_compiles_once():
    est = ml.make_estimator("hf_maml", alpha=0.1, delta=1e-3)
    ml.run_deterministic(est, ml.quadratic_loss, jnp.zeros(DIM), TASKS, 0.1, 10)
    with count_compiles() as c:
        for beta in (0.05, 0.2, 0.3):
            s, _ = ml.run_deterministic(est.replace(delta=1e-2), ml.quadratic_loss, jnp.zeros(DIM), TASKS, beta, 10)
            jax.block_until_ready(s.params)
    assert c["n"] == 0
    # beta is really used: one step from 0 is -beta * grad
    s, _ = ml.run_deterministic(ml.make_estimator("maml", alpha=0.1), ml.quadratic_loss, jnp.zeros(DIM), TASKS, 0.3, 1)
    g = ml.quadratic_maml_grad(jnp.zeros(DIM), TASKS, 0.1, 1)
    np.testing.assert_allclose(s.params, -0.3 * g, rtol=1e-12)


def test_estimator_is_a_hashable_pytree_with_traced_hyper():
    e1, e2 = ml.make_estimator("maml", alpha=0.1, steps=2), ml.make_estimator("maml", alpha=0.1, steps=2)
    assert e1 == e2 and hash(e1) == hash(e2) and e1 != e1.replace(alpha=0.2) and e1 != e1.replace(steps=3)
    assert jax.tree_util.tree_leaves(e1) == [0.1]
    eps = ml.Episode.deterministic(TASKS)
    f = jax.jit(lambda est, w: ml.meta_gradient(est, ml.quadratic_loss, w, eps))
    f(e1, jnp.ones(DIM))
    with count_compiles() as c:
        g = f(e1.replace(alpha=0.2), jnp.ones(DIM))
    assert c["n"] == 0
    np.testing.assert_allclose(g, ml.quadratic_maml_grad(jnp.ones(DIM), TASKS, 0.2, 2), rtol=1e-12)
    # overrides at call time
    t0 = jax.tree_util.tree_map(lambda x: x[0], TASKS)
    np.testing.assert_allclose(e1(ml.quadratic_loss, jnp.ones(DIM), ml.Episode.deterministic(t0), alpha=0.2),
                               ml.quadratic_maml_grad(jnp.ones(DIM), t0, 0.2, 2), rtol=1e-12)


def test_make_train_step_compiles_once_and_matches_train():
    est = ml.make_estimator("fomaml", alpha=0.1)
    ts = ml.make_train_step(est, ml.quadratic_loss, optax.adam(1e-2))
    state = ts.init(jnp.ones(DIM))
    keys = jax.random.split(jax.random.key(3), 5)
    batches = [sample(keys[i], TASKS) for i in range(5)]  # sampled outside the count (eager indexing compiles)
    est2 = est.replace(alpha=0.2)
    state, m = ts(state, batches[0])
    with count_compiles() as c:
        for b in batches[1:]:
            state, m = ts(state, b)
        state2, _ = ts(state, batches[0], est2)
        jax.block_until_ready(state2.params)
    assert c["n"] == 0
    assert set(m) == {"grad_norm", "meta_loss"} and int(state.step) == 5
    ref, _ = ml.train(est, ml.quadratic_loss, jnp.ones(DIM), optax.adam(1e-2), lambda k: sample(k, TASKS), 5,
                      jax.random.key(3), chunk_size=5)
    np.testing.assert_allclose(state.params, ref.params, rtol=1e-10)


# ------------------------------------------------------------------------------- map_concurrent
def test_map_concurrent_compiles_once_and_returns_the_serial_results_in_order():
    """Implementation check: one compilation for all the calls, and the results are the serial loop's,
    bit for bit, in the order of the arguments even though the first call finishes last. (Concurrent
    first calls of a jitted function may compile it once per thread, a race; the ahead-of-time
    compilation in map_concurrent rules it out, which this count checks only as a contract.)"""

    @jax.jit
    def f(x, n):
        return jax.lax.fori_loop(0, n, lambda i, c: jnp.tanh(c @ c.T @ c * 1e-2 + i), x)

    args = [(jnp.full((6, 6), 0.1 * i), jnp.int32(n)) for i, n in enumerate((20000, 1, 2, 3, 4))]
    with count_compiles() as c:
        got = ml.map_concurrent(f, args, threads=3)
    assert c["n"] == 1
    for a, g in zip(args, got):
        np.testing.assert_array_equal(g, f(*a))
    # any callable: run as it is, results in order; one thread is the serial loop
    assert ml.map_concurrent(lambda a, b: a * b, [(i, 2) for i in range(7)], threads=4) == [2 * i for i in range(7)]
    assert ml.map_concurrent(lambda a: -a, [(1,), (2,)], threads=1) == [-1, -2]
    assert ml.map_concurrent(f, []) == []


def test_map_concurrent_names_the_failing_call():
    def g(x):
        if x == 2:
            raise ValueError("bad x")
        return x

    with pytest.raises(ValueError, match="bad x") as info:
        ml.map_concurrent(g, [(0,), (1,), (2,)], threads=2)
    assert "map_concurrent: in call 2 of 3" in "\n".join(getattr(info.value, "__notes__", []))


def test_map_concurrent_rejects_bad_arguments(monkeypatch):
    with pytest.raises(ValueError, match="'threads' must be an integer >= 1"):
        ml.map_concurrent(lambda: 0, [()], threads=0)
    with pytest.raises(TypeError, match="'fn' must be callable"):
        ml.map_concurrent(3, [()])
    monkeypatch.setenv("MATHLIB_THREADS", "two")
    with pytest.raises(ValueError, match="MATHLIB_THREADS must be an integer >= 1, got 'two'"):
        ml.default_threads()
    monkeypatch.setenv("MATHLIB_THREADS", "3")
    assert ml.default_threads() == 3
