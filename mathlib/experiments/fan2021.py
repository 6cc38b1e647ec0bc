r"""Experiment drivers for the chapter on Fan, Ram, Liu (2021), Sign-MAML.

Chapter-specific sweeps built on the core API of ``mathlib`` (``sign_maml_grad``, ``adapt_sign``,
``maml_grad``, ``fomaml_grad``, ``meta_gradient``, models and task samplers). Nothing here is
re-exported from ``mathlib``; notebooks import it as ``from mathlib.experiments import fan2021 as ex``.

Every function states which claim of the chapter it serves (book page ``fan2021/experiments``).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mathlib as ml
from mathlib._fits import fit_loglog_slope, mean_ci  # re-exported: the core's definitions
from mathlib._validate import check_choice, check_int, check_positive

__all__ = [
    "METHODS",
    "ESTIMATORS",
    "INNER",
    "linreg_problem",
    "exactness_check",
    "line_profile",
    "find_jumps",
    "jump_sizes_vs_alpha",
    "cost_table",
    "nway_episodes",
    "digits_splits",
    "meta_train_eval_runs",
    "RUN_CHUNK",
    "sinusoid_meta_train_eval",
    "sinusoid_meta_train_eval_configs",
    "mean_ci",
    "fit_loglog_slope",
]

#: The three methods compared throughout the chapter.
METHODS = ("maml", "fomaml", "sign_maml")
#: Core estimators of the three methods (signature ``est(loss, params, episode, alpha, steps)``).
ESTIMATORS = {"maml": ml.maml_grad, "fomaml": ml.fomaml_grad, "sign_maml": ml.sign_maml_grad}
#: The inner map each method adapts with (also at test time).
INNER = {"maml": ml.adapt_gd, "fomaml": ml.adapt_gd, "sign_maml": ml.adapt_sign}


# =============================================================================== claims 1-2
def linreg_problem(key, dim: int = 8, n: int = 20, dtype=jnp.float64):
    r"""One least-squares task $f(w;D)=\frac1{2n}\|Xw-y\|^2$ with independent support and query batches.

    $y = Xw_\star + 0.1\,\varepsilon$ with a task vector $w_\star\sim N(0,I)$; support and query
    each hold ``n`` points $x\sim N(0,I_d)$. Returns ``(loss, episode)``. Claims 1 and 2.
    """
    dim = check_int("linreg_problem", "dim", dim)
    n = check_int("linreg_problem", "n", n)
    kw, ks, kq, ke1, ke2 = jax.random.split(key, 5)
    w_star = jax.random.normal(kw, (dim,), dtype)

    def batch(k, ke):
        x = jax.random.normal(k, (n, dim), dtype)
        return x, x @ w_star + 0.1 * jax.random.normal(ke, (n,), dtype)

    def loss(w, b):
        x, y = b
        return 0.5 * jnp.mean((x @ w - y) ** 2)

    return loss, ml.Episode(batch(ks, ke1), batch(kq, ke2), None)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def exactness_check(loss, params, episode, alpha, steps, *, delta: float = 1e-6, key=None):
    r"""Claim 1: the sign inner loop has identity Jacobian, so autodiff through it is first order.

    Returns a dict with

    * ``autodiff_vs_fo``: $\max|\nabla_w[f(U^{\rm sign}_K(w);D_o)] - \nabla f(U^{\rm sign}_K(w);D_o)|$
      relative to the gradient's max norm (autodiff through ``adapt_sign`` against
      :func:`mathlib.sign_maml_grad`, which stops the gradient);
    * ``jac_minus_identity``: $\max|\partial U^{\rm sign}_K/\partial w - I|$ (``jax.jacfwd``);
    * ``fd_vs_grad``: relative error of a central finite difference of the sign meta-objective
      along a random unit direction $v$, $[F(w+\delta v)-F(w-\delta v)]/(2\delta)$, against
      $\langle g, v\rangle$ with $g$ from ``sign_maml_grad`` -- an independent check that the a.e.
      derivative of the piecewise objective is the first-order expression (valid when no
      inner-gradient sign flips inside $[w-\delta v, w+\delta v]$, reported as ``fd_same_piece``);
    * ``maml_vs_fomaml``: the same relative difference between MAML's exact gradient and FO-MAML's
      (GD inner loop), the contrast: there, dropping the Jacobian is an approximation.

    ``params`` must be a flat vector (the linear model of :func:`linreg_problem`).
    """
    fn = "exactness_check"
    check_positive(fn, "alpha", alpha)
    steps = check_int(fn, "steps", steps)
    key = jax.random.key(0) if key is None else key
    v = jax.random.normal(key, params.shape, params.dtype)
    out = _exactness(loss, params, episode, alpha, steps, delta, v / jnp.linalg.norm(v))
    out = {k: (bool(x) if k == "fd_same_piece" else float(x)) for k, x in out.items()}
    return out


@functools.partial(jax.jit, static_argnums=(0, 4))
def _exactness(loss, w, episode, alpha, steps, delta, v):
    def sign_obj(p):
        return loss(ml.adapt_sign(loss, p, episode.support, alpha, steps), episode.query)

    def signs(p):
        def body(q, _):
            d = jax.grad(loss)(q, episode.support)
            return q - alpha * jnp.sign(d), jnp.sign(d)

        return jax.lax.scan(body, p, None, length=steps)[1]

    g_auto = jax.grad(sign_obj)(w)
    g_fo = ml.sign_maml_grad(loss, w, episode, alpha=alpha, steps=steps)
    jac = jax.jacfwd(lambda p: ml.adapt_sign(loss, p, episode.support, alpha, steps))(w)
    fd = (sign_obj(w + delta * v) - sign_obj(w - delta * v)) / (2 * delta)
    dd = jnp.vdot(g_fo, v)
    g_maml = ml.maml_grad(loss, w, episode, alpha=alpha, steps=steps)
    g_fom = ml.fomaml_grad(loss, w, episode, alpha=alpha, steps=steps)
    return {
        "autodiff_vs_fo": jnp.max(jnp.abs(g_auto - g_fo)) / jnp.max(jnp.abs(g_fo)),
        "jac_minus_identity": jnp.max(jnp.abs(jac - jnp.eye(w.size, dtype=w.dtype))),
        "fd_vs_grad": jnp.abs(fd - dd) / jnp.abs(dd),
        "fd_same_piece": jnp.all(signs(w + delta * v) == signs(w - delta * v)),
        "maml_vs_fomaml": jnp.max(jnp.abs(g_maml - g_fom)) / jnp.max(jnp.abs(g_maml)),
    }


def line_profile(loss, params, episode, direction, ts, alpha, steps):
    r"""Claim 2: the meta-objectives along the line $w(t)=w+t\,v$, one compiled call for all $t$.

    Returns a dict of numpy arrays over ``ts``: ``sign`` ($F^{\rm sign}(w(t))$), ``maml``
    ($F(w(t))$ with the GD inner loop), ``sign_slope`` ($\langle$``sign_maml_grad``$,v\rangle$, the
    a.e. derivative), and ``pattern`` (the signs of every inner gradient along the path, shape
    ``(len(ts), steps * d)``; a change between neighbours marks a crossing of the jump set).
    ``alpha`` may be an array (vmapped with the result's leading axis) or a scalar.
    """
    steps = check_int("line_profile", "steps", steps)
    g = jax.grad(loss)

    def at(t, a):
        p = jax.tree_util.tree_map(lambda x, d: x + t * d, params, direction)

        def body(q, _):
            d = g(q, episode.support)
            return jax.tree_util.tree_map(lambda x, s: x - a * jnp.sign(s), q, d), _flat(jax.tree_util.tree_map(jnp.sign, d))

        wk, pats = jax.lax.scan(body, p, None, length=steps)
        sign_val = loss(wk, episode.query)
        maml_val = loss(ml.adapt_gd(loss, p, episode.support, a, steps), episode.query)
        gs = ml.sign_maml_grad(loss, p, episode, alpha=a, steps=steps)
        slope = jnp.vdot(_flat(gs), _flat(direction))
        return sign_val, maml_val, slope, pats.reshape(-1)

    ts = jnp.asarray(ts)
    alpha = jnp.asarray(alpha, ts.dtype)
    f = jax.vmap(at, in_axes=(0, None))
    if alpha.ndim:
        f = jax.vmap(f, in_axes=(None, 0))
    sign_val, maml_val, slope, pats = jax.jit(f)(ts, alpha)
    return {"sign": np.asarray(sign_val), "maml": np.asarray(maml_val), "sign_slope": np.asarray(slope),
            "pattern": np.asarray(pats)}


def find_jumps(ts, values, slopes, pattern):
    r"""Jumps of a piecewise-smooth profile: the grid cells where the sign pattern changes.

    The jump in cell $[t_j,t_{j+1}]$ is the increment minus its smooth part,
    $\Delta_j = F(t_{j+1})-F(t_j) - \tfrac12(s_j+s_{j+1})(t_{j+1}-t_j)$ (trapezoid on the a.e.
    slopes $s$). Cells without a pattern change give the same quantity as a *smoothness residual*
    (it is $O(h^3)$ there for a smooth piece). In a cell with a jump the estimate is exact for a
    quadratic loss when the flip is at the cell midpoint, and off by $O(\alpha h)$ otherwise.
    Returns ``(jump_ts, jumps, residual_max)``.
    """
    ts, values, slopes = (np.asarray(a, float) for a in (ts, values, slopes))
    h = np.diff(ts)
    incr = np.diff(values) - 0.5 * (slopes[1:] + slopes[:-1]) * h
    change = np.any(np.asarray(pattern)[1:] != np.asarray(pattern)[:-1], axis=1)
    resid = np.abs(incr[~change]).max() if (~change).any() else 0.0
    return 0.5 * (ts[1:] + ts[:-1])[change], incr[change], float(resid)


def jump_sizes_vs_alpha(loss, params, episode, direction, ts, alphas, steps):
    r"""Claim 2: median and max $|\Delta_j|$ over the jumps along the line, for each $\alpha$ (one compile).

    Only jumps larger than $10^3\times$ the smooth residual count (two flips of one coordinate at
    consecutive inner steps can cancel and leave no jump).
    Returns a dict of numpy arrays over ``alphas``: ``median``, ``max``, ``count`` and
    ``residual`` (largest increment in cells without a sign change, the smooth baseline).
    """
    prof = line_profile(loss, params, episode, direction, ts, jnp.asarray(alphas), steps)
    out = {"median": [], "max": [], "count": [], "residual": []}
    for i in range(len(alphas)):
        _, jumps, resid = find_jumps(ts, prof["sign"][i], prof["sign_slope"][i], prof["pattern"][i])
        a = np.abs(jumps)
        a = a[a > 1e3 * resid]  # flips whose effects cancel (an oscillating coordinate) leave no jump
        out["median"].append(np.median(a) if a.size else np.nan)
        out["max"].append(a.max() if a.size else np.nan)
        out["count"].append(a.size)
        out["residual"].append(resid)
    return {k: np.asarray(v) for k, v in out.items()}


# =============================================================================== claim 3
def _cost_problem(hidden: int, n_way: int, k_shot: int, k_query: int, meta_batch: int, key):
    sizes = (64, hidden, hidden, n_way)
    params = ml.init_mlp(key, sizes)
    kx, ky = jax.random.split(jax.random.fold_in(key, 1))
    sup = (jax.random.normal(kx, (meta_batch, n_way * k_shot, 64)),
           jnp.tile(jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), k_shot), (meta_batch, 1)))
    qry = (jax.random.normal(ky, (meta_batch, n_way * k_query, 64)),
           jnp.tile(jnp.repeat(jnp.arange(n_way, dtype=jnp.int32), k_query), (meta_batch, 1)))
    return params, ml.Episode(sup, qry, None)


def cost_table(steps_list, *, hidden: int = 256, n_way: int = 5, k_shot: int = 1, k_query: int = 15,
               meta_batch: int = 8, reps: int = 20, key=None):
    r"""Claim 3: wall time and XLA memory per meta-gradient of the three methods against $K$.

    One jitted ``meta_gradient`` per (method, $K$) on an MLP 64-H-H-N (float32) with a meta-batch of
    N-way K-shot episodes (random inputs: cost does not depend on the values). Timing: after a
    warm-up call, ``block_until_ready`` wall time of ``reps`` calls, the methods
    interleaved call by call so that load on the machine affects them alike, and the
    *minimum* over ``reps`` calls is reported (contention only adds time, so the minimum is the
    most stable estimate of the program's own cost on a shared machine). Memory: the compiled
    program's ``memory_analysis()``: ``temp`` (XLA scratch/live intermediates, bytes) and
    ``peak`` = temp + arguments + outputs.

    Returns a dict ``{method: {"time": array over K (s), "temp": ..., "peak": ...}}``.
    """
    key = jax.random.key(0) if key is None else key
    params, eps = _cost_problem(hidden, n_way, k_shot, k_query, meta_batch, key)
    loss = ml.mlp_xent_loss
    fns, mem = {}, {}
    for m in METHODS:
        for K in steps_list:
            f = jax.jit(functools.partial(ml.meta_gradient, ESTIMATORS[m], loss, alpha=0.01, steps=int(K)))
            comp = f.lower(params, eps).compile()
            ma = comp.memory_analysis()
            temp = int(ma.temp_size_in_bytes)
            peak = temp + int(ma.argument_size_in_bytes) + int(ma.output_size_in_bytes)
            mem[m, K] = (temp, peak)
            fns[m, K] = comp
            jax.block_until_ready(comp(params, eps))
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, comp in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(comp(params, eps))
            times[k].append(time.perf_counter() - t0)
    return {
        m: {
            "time": np.array([np.min(times[m, K]) for K in steps_list]),
            "temp": np.array([mem[m, K][0] for K in steps_list], float),
            "peak": np.array([mem[m, K][1] for K in steps_list], float),
        }
        for m in METHODS
    }


# =============================================================================== claim 4
def digits_splits(seed: int = 0, test_classes=(5, 6, 7, 8, 9)):
    r"""The two meta-train/meta-test splits of the 8x8 digits, as per-class index tables.

    * ``"class"``: meta-train images are those of the classes not in ``test_classes``, meta-test
      those of ``test_classes`` (disjoint classes: the standard few-shot protocol);
    * ``"image"`` (control): every class on both sides, each class's images split 50/50 at random
      (seed ``seed``), so meta-test tasks reuse training classes with new images.

    Returns ``(X, splits)`` with standardized float32 ``X`` (:func:`mathlib.digits_dataset`) and
    ``splits[name][side] = (table, counts, classes)``: ``table[c, j]`` is the index in ``X`` of the
    ``j``-th pool image of class ``c`` (padded), ``counts[c]`` the number of pool images of class
    ``c`` (0 for a class not in the pool) and ``classes`` a bool mask over 0..9. All splits share
    shapes, so one compiled program serves both.
    """
    data = ml.digits_dataset(test_classes=test_classes)
    y = np.asarray(data.y)
    rng = np.random.default_rng(seed)
    half = np.zeros(y.size, bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        half[rng.permutation(idx)[: idx.size // 2]] = True
    is_test = np.isin(y, data.test_classes)
    pools = {"class": {"train": ~is_test, "test": is_test}, "image": {"train": half, "test": ~half}}
    width = max(int(np.sum(y == c)) for c in range(10))
    splits = {}
    for name, sides in pools.items():
        splits[name] = {}
        for side, pool in sides.items():
            table = np.zeros((10, width), np.int32)
            counts = np.zeros(10, np.int32)
            for c in range(10):
                idx = np.flatnonzero(pool & (y == c))
                table[c, : idx.size] = idx
                counts[c] = idx.size
            splits[name][side] = (jnp.asarray(table), jnp.asarray(counts), jnp.asarray(counts > 0))
    return data.X, splits


def nway_episodes(key, num_tasks: int, X, table, counts, classes, n_way: int, k_shot: int, k_query: int):
    r"""N-way K-shot episodes from per-class index tables (see :func:`digits_splits`).

    The same distribution as :func:`mathlib.sample_nway_kshot_episodes` (classes uniformly without
    replacement among ``classes``, relabelled $0..N-1$ in random order; distinct images per class,
    split into support and query), but the pool is given by *traced* tables, so one compiled
    program serves every split. Claim 4; a candidate for the core.
    """
    need = k_shot + k_query
    n_cls, width = table.shape
    # one flat uniform draw for every task (class scores, then image scores): nested per-task key
    # splits and draws cost several times more to compile, more still under vmap
    u = jax.random.uniform(key, (num_tasks, n_cls + n_way * width))
    chosen = jax.lax.top_k(jnp.where(classes, u[:, :n_cls], -1.0), n_way)[1]  # (T, n_way), random order
    ui = u[:, n_cls:].reshape(num_tasks, n_way, width)
    ui = jnp.where(jnp.arange(width) < counts[chosen][..., None], ui, -1.0)
    pos = jax.lax.top_k(ui, need)[1]  # (T, n_way, need) distinct positions in each class's table
    idx = jnp.take_along_axis(table[chosen], pos, axis=2)
    lab = jnp.arange(n_way, dtype=jnp.int32)

    def batch(lo, kk):
        ii = idx[:, :, lo:lo + kk].reshape(num_tasks, n_way * kk)
        return X[ii], jnp.broadcast_to(jnp.repeat(lab, kk), (num_tasks, n_way * kk))

    return ml.Episode(batch(0, k_shot), batch(k_shot, k_query), None)


def _adapt_eval(method, loss, metric, params, episodes, alpha, steps):
    inner = INNER[method]

    def one(ep):
        w = inner(loss, params, ep.support, alpha, steps)
        return metric(w, ep.query)

    return jax.vmap(one)(episodes)


# =============================================================================== claim 5
@functools.partial(jax.jit, static_argnames=("method", "hidden", "steps", "num_steps", "meta_batch", "k_shot",
                                             "eval_tasks"))
def _sinusoid_runs(keys, alphas, *, method, hidden, steps, num_steps, meta_batch, k_shot, eval_tasks, lr):
    loss = ml.mlp_mse_loss
    est = ESTIMATORS[method]
    opt = optax.adam(lr)
    ev, _ = ml.sinusoid_eval_set(eval_tasks, k_shot, 100)

    def run(key, alpha):
        k_init, k_train = jax.random.split(key)
        p0 = ml.init_mlp(k_init, (1, hidden, hidden, 1))

        def step(state, k):
            p, s = state
            eps = ml.sample_sinusoid_episodes(k, meta_batch, k_shot, k_shot)
            g = ml.meta_gradient(est, loss, p, eps, alpha=alpha, steps=steps)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        if num_steps:
            (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(k_train, num_steps))
        else:
            p = p0
        return jnp.mean(_adapt_eval(method, loss, loss, p, ev, alpha, steps))

    f = jax.vmap(run, in_axes=(0, None))
    return jax.vmap(f, in_axes=(None, 0))(keys, alphas)


def sinusoid_meta_train_eval(method: str, alphas, seeds, *, hidden: int = 40, steps: int = 1,
                             num_steps: int = 2000, meta_batch: int = 25, k_shot: int = 10, lr: float = 1e-3,
                             eval_tasks: int = 100):
    r"""Claim 5: sinusoid regression (Finn et al.), MLP 1-H-H-1 (ReLU, float32), post-adaptation MSE.

    Meta-training as :func:`meta_train_eval_runs` on :func:`mathlib.sample_sinusoid_episodes`
    (``k_shot`` support and query points); evaluation on the fixed tasks of
    :func:`mathlib.sinusoid_eval_set` (``k_shot`` support points, MSE on a 100-point grid) after
    ``steps`` steps of the method's inner rule. ``lr=0``: no meta-training (same compiled program).

    Returns a numpy array ``(len(alphas), len(seeds))`` of mean post-adaptation MSEs.
    """
    check_choice("sinusoid_meta_train_eval", "method", method, METHODS)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    out = _sinusoid_runs(keys, jnp.asarray(alphas, jnp.float32), method=method, hidden=hidden, steps=steps,
                         num_steps=num_steps, meta_batch=meta_batch, k_shot=k_shot, eval_tasks=eval_tasks, lr=lr)
    return np.asarray(out)


@functools.partial(jax.jit, static_argnames=("hidden", "steps", "num_steps", "meta_batch", "k_shot", "eval_tasks"))
def _sinusoid_configs(keys, cfg, *, hidden, steps, num_steps, meta_batch, k_shot, eval_tasks):
    loss = ml.mlp_mse_loss
    ests = [ESTIMATORS[m] for m in METHODS]
    inners = list(dict.fromkeys(INNER[m] for m in METHODS))
    inner_index = jnp.asarray([inners.index(INNER[m]) for m in METHODS], jnp.int32)
    ev, _ = ml.sinusoid_eval_set(eval_tasks, k_shot, 100)

    def one_config(c):
        m, alpha, lr = c["method"], c["alpha"], c["lr"]
        opt = optax.adam(lr)

        def run(key):
            k_init, k_train = jax.random.split(key)
            p0 = ml.init_mlp(k_init, (1, hidden, hidden, 1))

            def step(state, k):
                p, s = state
                eps = ml.sample_sinusoid_episodes(k, meta_batch, k_shot, k_shot)
                g = jax.lax.switch(m, [functools.partial(ml.meta_gradient, e, loss, alpha=alpha, steps=steps)
                                       for e in ests], p, eps)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), None

            def train():
                return jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(k_train, num_steps))[0][0]

            # lr = 0 (no meta-training) skips the training loop: the parameters would not move
            p = jax.lax.cond(lr > 0, train, lambda: p0)

            def score(inner):
                return jnp.mean(jax.vmap(lambda e: loss(inner(loss, p, e.support, alpha, steps), e.query))(ev))

            return jax.lax.switch(inner_index[m], [functools.partial(score, i) for i in inners])

        # the method index and lr are scalars here (configs are looped, not vmapped), so each switch and
        # cond runs one branch
        return jax.vmap(run)(keys)

    return jax.lax.map(one_config, cfg)


def sinusoid_meta_train_eval_configs(configs, seeds, *, hidden: int = 40, steps: int = 1, num_steps: int = 2000,
                                     meta_batch: int = 25, k_shot: int = 10, eval_tasks: int = 100,
                                     opt_level: int | None = None):
    r"""Claim 5, every run from one compiled program: :func:`sinusoid_meta_train_eval` for a list of configurations.

    ``configs`` is a list of ``(method, alpha, lr)``; ``lr=0`` is the no-meta-training baseline. The
    method enters as a traced index into a ``lax.switch`` over the core estimators (and inner maps
    at evaluation), so one program (compiled once) loops over the configurations and vmaps over the
    seeds; the random draws of a seed are those of :func:`sinusoid_meta_train_eval`. ``opt_level``:
    as in :func:`meta_train_eval_runs` (XLA backend optimisation level of the program; ``None``: default).

    Returns a numpy array ``(len(configs), len(seeds))`` of mean post-adaptation MSEs.
    """
    fn = "sinusoid_meta_train_eval_configs"
    for m, a, lr in configs:
        check_choice(fn, "method", m, METHODS)
        check_positive(fn, "alpha", a)
    num_steps = check_int(fn, "num_steps", num_steps)
    keys = jnp.stack([jax.random.key(int(s)) for s in seeds])
    cfg = {"method": jnp.asarray([METHODS.index(m) for m, *_ in configs], jnp.int32),
           "alpha": jnp.asarray([a for _, a, _ in configs], jnp.float32),
           "lr": jnp.asarray([lr for *_, lr in configs], jnp.float32)}
    static = dict(hidden=hidden, steps=steps, num_steps=num_steps, meta_batch=meta_batch, k_shot=k_shot,
                  eval_tasks=eval_tasks)
    if opt_level is None:
        out = _sinusoid_configs(keys, cfg, **static)
    else:
        opt_level = check_int(fn, "opt_level", opt_level, minimum=0)
        out = _sinusoid_configs.lower(keys, cfg, **static).compile({"xla_backend_optimization_level": opt_level})(keys, cfg)
    return np.asarray(out)


# ------------------------------------------------------------------ claim 4: one program for every run
def _episodes_kshot(key, num_tasks, X, tab, n_way, k_max, k_shot, k_query):
    r"""N-way episodes with ``k_max`` support slots; a traced ``k_shot`` dividing ``k_max`` fills them by
    repeating the first ``k_shot`` images of each class ``k_max / k_shot`` times. The mean loss over
    the repeated support equals the mean over the ``k_shot`` distinct images, so the core losses and
    estimators see exactly a ``k_shot``-shot task while every shot count shares one program."""
    eps = nway_episodes(key, num_tasks, X, *tab, n_way, k_max, k_query)
    xs, ys = eps.support  # (T, n_way * k_max, ...), class-major
    slot = jnp.arange(k_max) % k_shot
    sel = (jnp.arange(n_way)[:, None] * k_max + slot[None, :]).reshape(-1)
    return ml.Episode((xs[:, sel], ys[:, sel]), eps.query, None)


#: Lanes (runs) vmapped together in one chunk of :func:`meta_train_eval_runs`.
RUN_CHUNK = 8


@functools.partial(jax.jit, static_argnames=("n_way", "k_max", "k_query", "hidden", "steps", "test_steps",
                                             "num_steps", "meta_batch", "eval_tasks"))
def _digits_chunks(chunks, X, train_tabs, test_tabs, *, n_way, k_max, k_query, hidden, steps, test_steps,
                   num_steps, meta_batch, eval_tasks):
    loss = ml.mlp_xent_loss
    ests = [ESTIMATORS[m] for m in METHODS]
    inners = list(dict.fromkeys(INNER[m] for m in METHODS))
    inner_index = jnp.asarray([inners.index(INNER[m]) for m in METHODS], jnp.int32)

    def metric(w, b):
        return ml.accuracy(ml.mlp_apply(w, b[0]), b[1])

    def one_chunk(c):
        m, train = c["method"], c["train"]          # scalars: one method per chunk
        lane = {k: c[k] for k in ("key", "alpha", "lr", "k_shot", "split")}

        def init(ln):
            k_init, k_train, k_eval = jax.random.split(ln["key"], 3)
            return ml.init_mlp(k_init, (X.shape[1], hidden, n_way)), k_train, k_eval

        def tabs(tabs_, ln):
            return tuple(t[ln["split"]] for t in tabs_)

        def meta_train(p0, k_train, ln):
            opt = optax.scale_by_adam()
            tr = tabs(train_tabs, ln)

            def step(state, k):
                p, s = state
                eps = _episodes_kshot(k, meta_batch, X, tr, n_way, k_max, ln["k_shot"], k_query)
                g = jax.lax.switch(m, [functools.partial(ml.meta_gradient, e, loss, alpha=ln["alpha"], steps=steps)
                                       for e in ests], p, eps)
                u, s = opt.update(g, s, p)
                return (jax.tree_util.tree_map(lambda x, d: x - ln["lr"] * d, p, u), s), None

            (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), jax.random.split(k_train, num_steps))
            return p

        p0, k_train, k_eval = jax.vmap(init)(lane)
        # a chunk of no-meta-training runs (every lr = 0) skips the training loop: its parameters would not move
        p = jax.lax.cond(train, lambda: jax.vmap(meta_train)(p0, k_train, lane), lambda: p0)

        def evaluate(p, k_eval, ln):
            ev = _episodes_kshot(k_eval, eval_tasks, X, tabs(test_tabs, ln), n_way, k_max, ln["k_shot"], k_query)

            def score(inner):
                return jnp.mean(jax.vmap(lambda e: metric(inner(loss, p, e.support, ln["alpha"], test_steps),
                                                          e.query))(ev))

            # MAML and FO-MAML adapt with the same map (adapt_gd): one branch per distinct inner map
            return jax.lax.switch(inner_index[m], [functools.partial(score, i) for i in inners])

        return jax.vmap(evaluate)(p, k_eval, lane)

    # the method index and the training flag are scalars per chunk (chunks are looped, not vmapped),
    # so each switch and cond runs one branch
    return jax.lax.map(one_chunk, chunks)


def meta_train_eval_runs(runs, splits: dict, X, *, n_way: int = 5, k_query: int = 5, hidden: int = 64,
                         steps: int = 5, test_steps: int = 10, num_steps: int = 1000, meta_batch: int = 8,
                         eval_tasks: int = 200, chunk: int = RUN_CHUNK, opt_level: int | None = None,
                         threads: int | None = None):
    r"""Claim 4, every run from one compiled program: meta-train on digits N-way K-shot tasks and
    report the meta-test accuracy after adaptation.

    ``runs`` is a list of ``(method, alpha, lr, k_shot, split, seed)``: ``split`` a key of ``splits``
    (from :func:`digits_splits`), ``k_shot`` dividing the largest ``k_shot`` of the list. A run
    initialises an MLP 64-``hidden``-N (ReLU, float32) from ``jax.random.key(seed)``, meta-trains it
    for ``num_steps`` steps of Adam with learning rate ``lr`` (``meta_batch`` tasks per step,
    ``steps`` inner steps, estimator of ``method``), then adapts it on ``eval_tasks`` meta-test tasks
    with ``test_steps`` steps of the method's own inner rule (GD, or sign steps for ``"sign_maml"``)
    and scores it on their query sets. Runs with the same seed, split and shots share initialisation,
    training tasks and meta-test tasks (paired comparisons). ``lr=0`` is the no-meta-training
    baseline (the parameters stay at their initialisation; the training loop is skipped).

    The runs are grouped by method into chunks of ``chunk`` runs (padded by repeating a run): the
    method enters as a traced index into a ``lax.switch`` over the core estimators (and inner maps at
    test time), the shot count through :func:`_episodes_kshot`, so one program (compiled once)
    loops over the chunks and vmaps over the runs of a chunk, whatever their seeds, splits and steps.
    ``opt_level`` (0-3) compiles that program with XLA's backend optimisation level set (LLVM ``-O``;
    lower compiles faster and runs slower; same results up to float rounding); ``None``: the default.
    The chunks are dealt into ``threads`` parts (default: every core, ``ml.default_threads``), run
    concurrently by one compiled program; the results do not depend on ``threads``.

    Returns a numpy array ``(len(runs),)`` of mean query accuracies.
    """
    fn = "meta_train_eval_runs"
    chunk = check_int(fn, "chunk", chunk)
    names = list(splits)
    for m, a, lr, k, s, _ in runs:
        check_choice(fn, "method", m, METHODS)
        check_positive(fn, "alpha", a)
        check_choice(fn, "split", s, names)
        if lr < 0:
            raise ValueError(f"{fn}: lr must be >= 0, got {lr}")
    k_max = max(int(r[3]) for r in runs)
    if any(k_max % int(r[3]) for r in runs):
        raise ValueError(f"{fn}: every k_shot must divide the largest one ({k_max})")
    # chunks: one method and one training flag each, in the order of first appearance
    groups: dict = {}
    for i, (m, _, lr, *_) in enumerate(runs):
        groups.setdefault((m, lr > 0), []).append(i)
    order, cols = [], {k: [] for k in ("method", "train", "key", "alpha", "lr", "k_shot", "split")}
    for (m, train), idx in groups.items():
        for j in range(0, len(idx), chunk):
            part = idx[j:j + chunk]
            lanes = part + [part[0]] * (chunk - len(part))
            order.append(part)
            cols["method"].append(METHODS.index(m))
            cols["train"].append(train)
            cols["key"].append(jnp.stack([jax.random.key(int(runs[i][5])) for i in lanes]))
            cols["alpha"].append([runs[i][1] for i in lanes])
            cols["lr"].append([runs[i][2] for i in lanes])
            cols["k_shot"].append([runs[i][3] for i in lanes])
            cols["split"].append([names.index(runs[i][4]) for i in lanes])
    c = {"method": jnp.asarray(cols["method"], jnp.int32), "train": jnp.asarray(cols["train"]),
         "key": jnp.stack(cols["key"]), "alpha": jnp.asarray(cols["alpha"], jnp.float32),
         "lr": jnp.asarray(cols["lr"], jnp.float32), "k_shot": jnp.asarray(cols["k_shot"], jnp.int32),
         "split": jnp.asarray(cols["split"], jnp.int32)}
    tr = tuple(jnp.stack([splits[s]["train"][i] for s in names]) for i in range(3))
    te = tuple(jnp.stack([splits[s]["test"][i] for s in names]) for i in range(3))
    static = dict(n_way=n_way, k_max=k_max, k_query=k_query, hidden=hidden, steps=steps, test_steps=test_steps,
                  num_steps=num_steps, meta_batch=meta_batch, eval_tasks=eval_tasks)
    # The chunks are independent: dealt round-robin into one part per thread (padded with copies of a
    # chunk whose training is skipped), compiled once for a part's shape and run concurrently
    # (ml.map_concurrent); each chunk's result is the same as in one call over all chunks.
    n_chunks = len(order)
    threads = ml.default_threads() if threads is None else check_int(fn, "threads", threads)
    n_parts = max(1, min(threads, n_chunks))
    per_part = -(-n_chunks // n_parts)
    pad = {**{k: v[-1] for k, v in c.items()}, "train": jnp.asarray(False)}
    parts, slots = [], []
    for j in range(n_parts):
        rows = list(range(j, n_chunks, n_parts))
        slots.append(rows)
        parts.append({k: jnp.stack([v[i] for i in rows] + [pad[k]] * (per_part - len(rows))) for k, v in c.items()})
    options = None
    if opt_level is not None:
        opt_level = check_int(fn, "opt_level", opt_level, minimum=0)
        options = {"xla_backend_optimization_level": opt_level}
    comp = _digits_chunks.lower(parts[0], X, tr, te, **static).compile(options)
    done = ml.map_concurrent(comp, [(part, X, tr, te) for part in parts], threads=n_parts)
    acc = np.empty((n_chunks, chunk))
    for rows, a in zip(slots, done):
        acc[rows] = np.asarray(a)[:len(rows)]
    out = np.empty(len(runs))
    for part, row in zip(order, acc):
        out[part] = row[:len(part)]
    return out
