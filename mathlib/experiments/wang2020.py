r"""Experiment drivers for the chapter on Wang, Cai, Yang, Wang (ICML 2020).

*On the global optimality of model-agnostic meta-learning.* Chapter-specific sweeps built on the
core API of ``mathlib``; notebooks import them as ``from mathlib.experiments import wang2020 as ex``.
Every function names the claim it serves (book page ``wang2020/experiments``) and the result it
checks (``wang2020/theory``). House notation: parameters $w$, inner step $\alpha$, task loss $f_i$,
MAML objective $F(w)=\E_i f_i(w-\alpha\nabla f_i(w))$ (a maximisation of returns $J_i$ in RL).
"""

from __future__ import annotations

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

import mathlib as ml
from mathlib._validate import check_int, check_positive
from mathlib._fits import fit_loglog_slope  # re-exported: the core's one definition of a slope
from mathlib._rl import solve_diagonally_dominant  # LAPACK-free: see its docstring

__all__ = [
    "jit_sample",
    "sinusoid_tasks",
    "relu_features",
    "linear_maml_system",
    "linear_maml_objective",
    "linear_maml_minimizer",
    "linear_maml_gd",
    "population_maml_gd",
    "representation_error",
    "width_sweep_linear",
    "init_two_layer",
    "two_layer_apply",
    "two_layer_maml_run",
    "ntk_features",
    "linearised_maml_minimum",
    "linearised_maml_adam",
    "width_sweep_two_layer",
    "maml_rl_objective",
    "project_ball",
    "rl_projected_ascent",
    "centred_grid",
    "rl_radius_sweep",
    "mdp_family",
    "adapted_policy_diagnostics",
    "concentrability_sweep",
    "logcosh_maml_objective",
    "logcosh_local_minima",
    "logcosh_gd_runs",
    "fit_loglog_slope",
]


from mathlib._core import jit_sample  # noqa: E402  (re-exported: the core's compiled-sampler helper)


# =============================================================================== claim 1
def sinusoid_tasks(key, num_tasks: int, n_support: int, n_query: int, dtype=jnp.float64):
    r"""Sinusoid regression tasks $y=a\sin(x+b)$, $a\sim U[0.1,5]$, $b\sim U[0,\pi]$, $x\sim U[-5,5]$.

    Returns ``dict(xs, ys, xq, yq, amp, phase)`` with shapes ``(T, K)`` and ``(T, Q)``; noise-free.
    Claims 1 and 2.
    """
    num_tasks = check_int("sinusoid_tasks", "num_tasks", num_tasks)
    ka, kb, kx = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (num_tasks,), dtype, 0.1, 5.0)
    phase = jax.random.uniform(kb, (num_tasks,), dtype, 0.0, jnp.pi)
    x = jax.random.uniform(kx, (num_tasks, n_support + n_query), dtype, -5.0, 5.0)
    y = amp[:, None] * jnp.sin(x + phase[:, None])
    return dict(xs=x[:, :n_support], ys=y[:, :n_support], xq=x[:, n_support:], yq=y[:, n_support:],
                amp=amp, phase=phase)


def relu_features(key, m: int, dtype=jnp.float64):
    r"""Random ReLU features $\phi_r(x)=\frac{1}{5\sqrt m}\,\mathrm{ReLU}(s_r(x-k_r))$, $s_r\sim U\{\pm1\}$,
    kinks $k_r\sim U[-5,5]$ inside the input range.

    Kinks inside the range keep the features linearly independent (a kink outside would make the
    feature affine on $[-5,5]$, and all such features span only $\{1,x\}$). The $1/(5\sqrt m)$ scaling
    keeps $\lambda_{\max}$ of the feature covariance of order one for every $m$, so one inner step
    $\alpha$ serves every width. Returns ``phi`` mapping inputs ``(...,)`` to ``(..., m)``. Claim 1.
    """
    m = check_int("relu_features", "m", m)
    ks, kk = jax.random.split(key)
    s = jnp.where(jax.random.bernoulli(ks, 0.5, (m,)), 1.0, -1.0).astype(dtype)
    k = jax.random.uniform(kk, (m,), dtype, -5.0, 5.0)

    def phi(x):
        return jax.nn.relu(s * (x[..., None] - k)) / (5.0 * jnp.sqrt(m))

    return phi


def linear_maml_system(PhiS, yS, PhiQ, yQ, alpha):
    r"""MAML with one inner step on a linear model $f_w(x)=\phi(x)^\top w$ is least squares.

    With $f_i^S(w)=\frac1{2K}\norm{\Phi_{S,i}w-y_{S,i}}^2$ and $f_i^Q$ alike, the adapted query
    residual is $\Phi_{Q,i}(w-\alpha\nabla f^S_i(w))-y_{Q,i}=A_iw-b_i$ with

    $$A_i=\Phi_{Q,i}\big(I-\tfrac{\alpha}{K}\Phi_{S,i}^\top\Phi_{S,i}\big),\qquad
      b_i=y_{Q,i}-\tfrac{\alpha}{K}\Phi_{Q,i}\Phi_{S,i}^\top y_{S,i}.$$

    Shapes: ``PhiS (T, K, m)``, ``PhiQ (T, Q, m)``. Returns ``(A, b)`` with shapes ``(T, Q, m)``,
    ``(T, Q)``. Book: {prf:ref}`wang2020-prop-linear`. Claim 1.
    """
    K = PhiS.shape[1]
    m = PhiS.shape[2]
    G = jnp.einsum("tkm,tkn->tmn", PhiS, PhiS) / K
    A = jnp.einsum("tqm,tmn->tqn", PhiQ, jnp.eye(m, dtype=PhiS.dtype) - alpha * G)
    b = yQ - alpha / K * jnp.einsum("tqm,tkm,tk->tq", PhiQ, PhiS, yS)
    return A, b


def linear_maml_objective(w, PhiS, yS, PhiQ, yQ, alpha):
    r"""$F(w)=\frac1T\sum_i f^Q_i\big(w-\alpha\nabla f^S_i(w)\big)$ computed *with the inner step*
    (autodiff through it), not from the closed form, so the two can be checked against each other."""
    def one(PS, ys, PQ, yq):
        fS = lambda v: 0.5 * jnp.mean((PS @ v - ys) ** 2)
        wi = w - alpha * jax.grad(fS)(w)
        return 0.5 * jnp.mean((PQ @ wi - yq) ** 2)

    return jnp.mean(jax.vmap(one)(PhiS, yS, PhiQ, yQ))


def linear_maml_minimizer(A, b):
    r"""Global minimiser (minimum norm) and minimum of $F(w)=\frac1{TQ}\sum_i\frac12\norm{A_iw-b_i}^2$.

    Also returns the Hessian's extreme eigenvalues $\lambda_{\min},\lambda_{\max}$ of
    $\nabla^2F=\frac1{TQ}\sum_iA_i^\top A_i\succeq0$. Claim 1.
    """
    T, Q, m = A.shape
    AA = A.reshape(T * Q, m)
    bb = b.reshape(T * Q)
    w, *_ = jnp.linalg.lstsq(AA, bb)
    val = 0.5 * jnp.mean((AA @ w - bb) ** 2)
    eig = jnp.linalg.eigvalsh(AA.T @ AA / (T * Q))
    return w, float(val), float(eig[0]), float(eig[-1])


@functools.partial(jax.jit, static_argnums=(6,))
def _gd_runs(W0, PhiS, yS, PhiQ, yQ, alpha, steps, beta):
    g = jax.grad(linear_maml_objective)

    def run(w0):
        def body(w, _):
            return w - beta * g(w, PhiS, yS, PhiQ, yQ, alpha), None

        w, _ = jax.lax.scan(body, w0, None, length=steps)
        return w, jnp.linalg.norm(g(w, PhiS, yS, PhiQ, yQ, alpha))

    return jax.vmap(run)(W0)


def linear_maml_gd(W0, PhiS, yS, PhiQ, yQ, alpha, steps: int, beta):
    r"""Gradient descent on the MAML objective (autodiff through the inner step) from each row of ``W0``.

    Returns ``(W, grad_norms)``: final iterates ``(n_inits, m)`` and $\norm{\nabla F}$ at them. Claim 1.
    """
    steps = check_int("linear_maml_gd", "steps", steps)
    check_positive("linear_maml_gd", "beta", beta)
    return _gd_runs(W0, PhiS, yS, PhiQ, yQ, alpha, steps, beta)


def population_maml_gd(tasks, alpha, W0, steps: int, beta):
    r"""Gradient descent on population MAML for linear-regression tasks (`mathlib.sample_linear_regression_tasks`),
    $F(w)=\frac1T\sum_if_i(w-\alpha\nabla f_i(w))$ with $f_i$ = `mathlib.linreg_population_loss`, the
    inner step and $\nabla F$ by autodiff (not the closed form). One run per row of ``W0``.

    Returns ``(W, F(W), grad_norms)``. Claim 1 ({prf:ref}`wang2020-prop-linear`).
    """
    steps = check_int("population_maml_gd", "steps", steps)
    return _pop_gd(tasks, alpha, W0, steps, beta)


def _pop_F(w, tasks, alpha):
    def one(t):
        wi = w - alpha * jax.grad(ml.linreg_population_loss)(w, t)
        return ml.linreg_population_loss(wi, t)

    return jnp.mean(jax.vmap(one)(tasks))


@functools.partial(jax.jit, static_argnums=(3,))
def _pop_gd(tasks, alpha, W0, steps, beta):
    g = jax.grad(_pop_F)

    def run(w0):
        w, _ = jax.lax.scan(lambda w, _: (w - beta * g(w, tasks, alpha), None), w0, None, length=steps)
        return w, _pop_F(w, tasks, alpha), jnp.linalg.norm(g(w, tasks, alpha))

    return jax.vmap(run)(W0)


def _np_features(seed, m, x):
    # numpy twin of relu_features (same law; numpy avoids per-shape compilation in the width sweep)
    rng = np.random.default_rng(seed)
    s = rng.choice([-1.0, 1.0], size=m)
    k = rng.uniform(-5.0, 5.0, size=m)
    return np.maximum(s * (np.asarray(x)[..., None] - k), 0.0) / (5.0 * np.sqrt(m))


def _np_system(PS, yS, PQ, yQ, alpha):
    K = PS.shape[1]
    G = np.einsum("tkm,tkn->tmn", PS, PS) / K
    A = PQ - alpha * np.einsum("tqm,tmn->tqn", PQ, G)
    b = yQ - alpha / K * np.einsum("tqm,tkm,tk->tq", PQ, PS, yS)
    return A, b


def representation_error(seed, m, amp, phase, grid):
    r"""$\varepsilon_{\rm rep}=\frac1T\sum_i\min_v\frac1{2N}\sum_{x\in\text{grid}}(\phi(x)^\top v-y_i(x))^2$.

    The best that the span of the $m$ features can do on each task *with the task known* (a per-task
    least-squares fit on a grid of $N$ inputs). Claim 1.
    """
    P = _np_features(seed, m, grid)
    Y = np.asarray(amp)[None, :] * np.sin(np.asarray(grid)[:, None] + np.asarray(phase)[None, :])
    V = np.linalg.lstsq(P, Y, rcond=None)[0]
    return float(0.5 * np.mean((P @ V - Y) ** 2))


def width_sweep_linear(key_tasks, feature_seeds, widths, alpha, *, num_tasks, n_support, n_query,
                       n_test_tasks=200, grid_size=200):
    r"""For each feature seed and width $m$ (random ReLU features, numpy twin of :func:`relu_features`):
    MAML's global minimum on the training tasks (least squares, {prf:ref}`wang2020-prop-linear`),
    the post-adaptation loss of that minimiser on fresh test tasks, the representation error, the
    smallest Hessian eigenvalue and $\alpha L$ with $L=\max_i\lambda_{\max}(\Phi_{S,i}^\top\Phi_{S,i}/K)$.

    Returns a dict of arrays of shape ``(n_seeds, n_widths)``. Claim 1.
    """
    tr = {k: np.asarray(v) for k, v in sinusoid_tasks(key_tasks, num_tasks, n_support, n_query).items()}
    te = {k: np.asarray(v) for k, v in
          sinusoid_tasks(jax.random.fold_in(key_tasks, 1), n_test_tasks, n_support, n_query).items()}
    grid = np.linspace(-5.0, 5.0, grid_size)
    out = {k: np.zeros((len(feature_seeds), len(widths))) for k in
           ("train_min", "test_loss", "rep_err", "alpha_L", "hess_min")}
    for a, s in enumerate(feature_seeds):
        for b, m in enumerate(widths):
            f = lambda x: _np_features(int(s), int(m), x)
            A, bb = _np_system(f(tr["xs"]), tr["ys"], f(tr["xq"]), tr["yq"], alpha)
            AA, b1 = A.reshape(-1, m), bb.reshape(-1)
            w = np.linalg.lstsq(AA, b1, rcond=None)[0]
            out["train_min"][a, b] = 0.5 * np.mean((AA @ w - b1) ** 2)
            out["hess_min"][a, b] = np.linalg.eigvalsh(AA.T @ AA / AA.shape[0])[0]
            At, bt = _np_system(f(te["xs"]), te["ys"], f(te["xq"]), te["yq"], alpha)
            out["test_loss"][a, b] = 0.5 * np.mean((np.einsum("tqm,m->tq", At, w) - bt) ** 2)
            out["rep_err"][a, b] = representation_error(int(s), int(m), te["amp"], te["phase"], grid)
            PS = f(tr["xs"])
            out["alpha_L"][a, b] = alpha * np.linalg.eigvalsh(np.einsum("tkm,tlm->tkl", PS, PS) / n_support)[:, -1].max()
    return out


# =============================================================================== claim 2
def init_two_layer(key, max_width: int, width, dtype=jnp.float64):
    r"""Two-layer ReLU network in the NTK scaling, $f_w(x)=m^{-1/2}\sum_{r\le m}b_r\,\mathrm{ReLU}(u_rx+c_r)$.

    $u_r\sim N(0,1)$, $c_r\sim N(0,4)$, $b_r\sim U\{\pm1\}$; every parameter is trained. Stored at
    ``max_width`` with a mask of the first $m$ = ``width`` units (masked units have zero gradient),
    so one compiled function serves every width (vmap over widths and seeds). Claim 2.
    """
    ku, kc, kb = jax.random.split(key, 3)
    M = max_width
    return dict(u=jax.random.normal(ku, (M,), dtype), c=2.0 * jax.random.normal(kc, (M,), dtype),
                b=jnp.where(jax.random.bernoulli(kb, 0.5, (M,)), 1.0, -1.0).astype(dtype),
                mask=(jnp.arange(M) < width).astype(dtype))


def two_layer_apply(p, x):
    """$f_w(x)$ for inputs of any shape (``p["mask"]`` selects the $m$ active units)."""
    m = jnp.sum(p["mask"])
    return jax.nn.relu(x[..., None] * p["u"] + p["c"]) @ (p["b"] * p["mask"]) / jnp.sqrt(m)


def _split(p):
    return {k: p[k] for k in ("u", "c", "b")}, p["mask"]


def _nn_maml_objective(w, mask, xs, ys, xq, yq, alpha):
    def one(a, b, c, d):
        fS = lambda q: 0.5 * jnp.mean((two_layer_apply(dict(q, mask=mask), a) - b) ** 2)
        g = jax.grad(fS)(w)
        wi = jax.tree_util.tree_map(lambda u, v: u - alpha * v, w, g)
        return 0.5 * jnp.mean((two_layer_apply(dict(wi, mask=mask), c) - d) ** 2)

    return jnp.mean(jax.vmap(one)(xs, ys, xq, yq))


def ntk_features(p0, x):
    r"""Features of the linearised network, $\nabla_wf_{w_0}(x)$ flattened, shape ``(..., 3M)``
    (zero columns for masked units)."""
    w0, mask = _split(p0)
    flat, unravel = jax.flatten_util.ravel_pytree(w0)
    f = lambda v, xx: two_layer_apply(dict(unravel(v), mask=mask), xx)
    J = jax.vmap(jax.grad(f), in_axes=(None, 0))(flat, x.reshape(-1))
    return J.reshape(*x.shape, flat.shape[0])


@functools.partial(jax.jit, static_argnums=(6,))
def _nn_run(p0, xs, ys, xq, yq, alpha, steps, lr):
    import optax

    w0, mask = _split(p0)
    opt = optax.adam(lr)
    grad = jax.value_and_grad(_nn_maml_objective)

    def body(carry, _):
        w, s = carry
        v, g = grad(w, mask, xs, ys, xq, yq, alpha)
        u, s = opt.update(g, s, w)
        return (optax.apply_updates(w, u), s), v

    (w, _), vals = jax.lax.scan(body, (w0, opt.init(w0)), None, length=steps)
    v, g = grad(w, mask, xs, ys, xq, yq, alpha)
    gn = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree_util.tree_leaves(g)))
    f0 = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda a: a * mask, w0))[0]
    f1 = jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda a: a * mask, w))[0]
    return dict(w, mask=mask), v, gn, jnp.linalg.norm(f1 - f0) / jnp.linalg.norm(f0), vals


def two_layer_maml_run(p0, tasks, alpha, steps: int, lr):
    r"""Adam on the exact MAML objective of the two-layer network (second order, one inner step).

    Returns ``(params, final_value, final_grad_norm, relative_movement, curve)``; vmap-able over
    ``p0``. Claim 2.
    """
    steps = check_int("two_layer_maml_run", "steps", steps)
    return _nn_run(p0, tasks["xs"], tasks["ys"], tasks["xq"], tasks["yq"], alpha, steps, lr)


def linearised_maml_minimum(p0, tasks, alpha):
    r"""Global minimum of the MAML objective of the network's linearisation at $w_0$,
    $f^{\rm lin}_w=f_{w_0}+\nabla_wf_{w_0}^\top(w-w_0)$: the linear case with features
    $\nabla_wf_{w_0}$ and targets $y-f_{w_0}$ (a convex quadratic). Claim 2."""
    PS, PQ = ntk_features(p0, tasks["xs"]), ntk_features(p0, tasks["xq"])
    yS = tasks["ys"] - two_layer_apply(p0, tasks["xs"])
    yQ = tasks["yq"] - two_layer_apply(p0, tasks["xq"])
    A, bb = linear_maml_system(PS, yS, PQ, yQ, alpha)
    return linear_maml_minimizer(A, bb)[1]


@functools.partial(jax.jit, static_argnums=(2,))
def _lin_adam(A, b, steps, lr):
    import optax

    AA = A.reshape(-1, A.shape[-1])
    bb = b.reshape(-1)
    f = lambda v: 0.5 * jnp.mean((AA @ v - bb) ** 2)
    opt = optax.adam(lr)
    v0 = jnp.zeros(A.shape[-1], A.dtype)

    def body(c, _):
        v, st = c
        g = jax.grad(f)(v)
        u, st = opt.update(g, st, v)
        return (optax.apply_updates(v, u), st), None

    (v, _), _ = jax.lax.scan(body, (v0, opt.init(v0)), None, length=steps)
    return f(v)


def linearised_maml_adam(p0, tasks, alpha, steps: int, lr):
    r"""The MAML objective of the linearised network after the same optimiser run as the network
    (Adam from $w_0$, ``steps`` steps, rate ``lr``): separates the linearisation error
    (network vs linearised, same budget) from the optimisation error (linearised run vs its
    global minimum). Claim 2."""
    steps = check_int("linearised_maml_adam", "steps", steps)
    PS, PQ = ntk_features(p0, tasks["xs"]), ntk_features(p0, tasks["xq"])
    yS = tasks["ys"] - two_layer_apply(p0, tasks["xs"])
    yQ = tasks["yq"] - two_layer_apply(p0, tasks["xq"])
    A, bb = linear_maml_system(PS, yS, PQ, yQ, alpha)
    return float(_lin_adam(A, bb, steps, lr))


def width_sweep_two_layer(tasks, widths, seeds, alpha, steps, lr, max_width=None, bucket=None):
    r"""For each width and seed: the value MAML reaches on the network (Adam, ``steps`` steps), the
    global minimum of the MAML objective of its linearisation at initialisation, the value of the
    linearisation after the same Adam run (``lin_run``), the final gradient norm and the relative movement $\norm{w-w_0}/\norm{w_0}$.

    One compiled program runs all seeds of a group of widths (masked units; the network runs, the
    linearisations and their minima together). With ``bucket=None`` there is one group, every width
    padded to ``max_width`` (default: the largest); with ``bucket=b``, the widths $\le b$ share one
    program padded to $b$ and each larger width runs unpadded in its own: more compilations, much
    less padded work when the widths span decades. The initialisation is drawn at ``max_width``
    whatever the grouping, so the grouping changes results only by round-off.
    Returns dict of arrays ``(n_seeds, n_widths)``. Claim 2 ({prf:ref}`wang2020-prop-linearised`).
    """
    steps = check_int("width_sweep_two_layer", "steps", steps)
    M = int(max_width or max(widths))
    if bucket is not None:
        bucket = check_int("width_sweep_two_layer", "bucket", bucket)
    groups: dict[int, list[int]] = {}
    for j, m in enumerate(widths):
        padded = M if bucket is None else (min(bucket, M) if m <= bucket else int(m))
        groups.setdefault(padded, []).append(j)
    shape = (len(seeds), len(widths))
    out = None
    for padded, cols in groups.items():
        keys = jnp.stack([jax.random.key(int(s)) for s in seeds for _ in cols])
        ms = jnp.asarray([int(widths[j]) for _ in seeds for j in cols])
        res = [np.asarray(x).reshape(len(seeds), len(cols), *np.shape(x)[1:])
               for x in _width_sweep(keys, ms, M, padded, tasks, alpha, steps, lr)]
        if out is None:
            out = [np.zeros(shape + r.shape[2:], r.dtype) for r in res]
        for o, r in zip(out, res):
            o[:, cols] = r
    v, gn, mv, curves, lin, lin_run = out
    return dict(nn=v, lin=lin, lin_run=lin_run, grad=gn, move=mv, curves=curves)


@functools.partial(jax.jit, static_argnums=(2, 3, 6))
def _width_sweep(keys, ms, M, padded, tasks, alpha, steps, lr):
    def one(key, m):
        p = {k: v[:padded] for k, v in init_two_layer(key, M, m).items()}   # drawn at M, run at `padded`
        _, v, gn, mv, curve = two_layer_maml_run(p, tasks, alpha, steps, lr)
        # the linearisation at w_0: least squares with the NTK features (as linearised_maml_minimum/_adam)
        PS, PQ = ntk_features(p, tasks["xs"]), ntk_features(p, tasks["xq"])
        yS = tasks["ys"] - two_layer_apply(p, tasks["xs"])
        yQ = tasks["yq"] - two_layer_apply(p, tasks["xq"])
        A, bb = linear_maml_system(PS, yS, PQ, yQ, alpha)
        AA, b1 = A.reshape(-1, A.shape[-1]), bb.reshape(-1)
        w, *_ = jnp.linalg.lstsq(AA, b1)
        return v, gn, mv, curve, 0.5 * jnp.mean((AA @ w - b1) ** 2), _lin_adam(A, bb, steps, lr)

    return jax.vmap(one)(keys, ms)


# =============================================================================== claims 3, 4
def maml_rl_objective(theta, mdps, alpha):
    r"""$F(\theta)=\frac1T\sum_iJ_i\big(\theta+\alpha\nabla J_i(\theta)\big)$, exact tabular returns
    (`mathlib.policy_value`, one linear solve) differentiated by JAX. Claims 3, 4."""
    def one(mdp):
        g = jax.grad(ml.policy_value)(theta, mdp)
        return ml.policy_value(theta + alpha * g, mdp)

    return jnp.mean(jax.vmap(one)(mdps))


def project_ball(theta, radius):
    r"""Euclidean projection onto $\{\theta:\norm{\theta}_2\le R\}$."""
    n = jnp.linalg.norm(theta)
    return theta * jnp.minimum(1.0, radius / jnp.maximum(n, 1e-300))


@functools.partial(jax.jit, static_argnums=(4,))
def _rl_ascent(theta0, mdps, alpha, radius, steps, beta):
    g = jax.grad(maml_rl_objective)

    def body(th, _):
        return project_ball(th + beta * g(th, mdps, alpha), radius), None

    th, _ = jax.lax.scan(body, theta0, None, length=steps)
    G = g(th, mdps, alpha)
    # projected-gradient mapping: zero exactly at constrained stationary points
    pg = jnp.linalg.norm(th - project_ball(th + beta * G, radius)) / beta
    return th, maml_rl_objective(th, mdps, alpha), pg


def rl_projected_ascent(thetas0, mdps, alpha, radius, steps: int, beta):
    r"""Projected gradient ascent on the MAML-RL objective over the ball of radius $R$, one run per
    row of ``thetas0`` (vmapped). Returns ``(thetas, values, projected_grad_norms)``. Claim 3.
    """
    steps = check_int("rl_projected_ascent", "steps", steps)
    f = jax.vmap(_rl_ascent, in_axes=(0, None, None, None, None, None))
    return f(thetas0, mdps, alpha, radius, steps, beta)


def _centred_basis(S, A, dtype):
    # orthonormal basis of {theta: each row sums to zero}; softmax is invariant to the other directions
    E = np.eye(A) - 1.0 / A
    U = np.linalg.svd(E)[0][:, : A - 1]                 # (A, A-1), orthonormal, columns sum to zero
    B = np.zeros((S * (A - 1), S, A))
    for s in range(S):
        for j in range(A - 1):
            B[s * (A - 1) + j, s] = U[:, j]
    return jnp.asarray(B, dtype)


def centred_grid(S: int, A: int, points_per_axis: int, dtype=jnp.float64):
    r"""Points of the unit ball of the centred subspace $\{\theta:\sum_a\theta_{sa}=0\ \forall s\}$
    (dimension $S(A-1)$), on a grid of ``points_per_axis`` per coordinate; shape ``(n, S, A)``.

    Softmax is invariant to adding a constant to a row of $\theta$ and so is the inner step (its
    gradient has zero row sums), while centring a row only shrinks $\norm\theta$: the maximum of the
    MAML-RL objective over a ball centred at $0$ is attained on this subspace. Claim 3.
    """
    B = _centred_basis(S, A, dtype)
    k = B.shape[0]
    ax = np.linspace(-1.0, 1.0, points_per_axis)
    Z = np.stack(np.meshgrid(*([ax] * k), indexing="ij"), -1).reshape(-1, k)
    Z = Z[np.linalg.norm(Z, axis=1) <= 1.0]
    return jnp.einsum("nk,ksa->nsa", jnp.asarray(Z, dtype), B)


@jax.jit
def _grid_values(thetas, mdps, alpha):
    return jax.vmap(maml_rl_objective, in_axes=(0, None, None))(thetas, mdps, alpha)


def _random_in_ball(key, n, S, A, radius, dtype):
    B = _centred_basis(S, A, dtype)
    k = B.shape[0]
    kd, kr = jax.random.split(key)
    d = jax.random.normal(kd, (n, k), dtype)
    d = d / jnp.linalg.norm(d, axis=1, keepdims=True)
    r = radius * jax.random.uniform(kr, (n, 1), dtype) ** (1.0 / k)
    return jnp.einsum("nk,ksa->nsa", d * r, B)


def rl_radius_sweep(mdps, alpha, radii, n_inits, steps, beta, key, *, points_per_axis=21, n_refine=4,
                    init_radius=1.0, tol=1e-3):
    r"""For each radius $R$ of the ball $\{\norm\theta\le R\}$:

    * the global maximum $F^\star_R$: exhaustive search on :func:`centred_grid` scaled by $R$, then
      projected ascent from the ``n_refine`` best grid points;
    * projected ascent (:func:`rl_projected_ascent`) from ``n_inits`` random starts, drawn uniformly in
      the centred ball of radius ``init_radius`` (the same starts for every $R$, projected);
    * per run: the gap $F^\star_R-F(\theta_T)$, the projected-gradient norm, whether $\theta_T$ lies
      on the sphere; the fraction of runs with gap $\le$ ``tol``.

    Grid refinement and random starts go through one vmapped call (one compilation). Claim 3.
    """
    S, A = mdps.r.shape[-2:]
    grid = centred_grid(S, A, points_per_axis, mdps.r.dtype)
    th_rand = _random_in_ball(key, n_inits, S, A, init_radius, mdps.r.dtype)
    res = []
    for R in radii:
        vals = _grid_values(R * grid, mdps, alpha)
        top = (R * grid)[jnp.argsort(-vals)[:n_refine]]
        th0 = jnp.concatenate([jax.vmap(lambda t: project_ball(t, R))(th_rand), top])
        T, V, PG = rl_projected_ascent(th0, mdps, alpha, R, steps, beta)
        V = np.asarray(V)
        Fs = float(max(V.max(), float(jnp.max(vals))))
        gaps = Fs - V[:n_inits]
        norms = np.asarray(jnp.linalg.norm(T.reshape(T.shape[0], -1), axis=1))[:n_inits]
        res.append(dict(radius=float(R), F_star=Fs, F_grid=float(jnp.max(vals)), gaps=gaps,
                        pg=np.asarray(PG)[:n_inits], pg_star=float(np.asarray(PG)[int(np.argmax(V))]),
                        on_sphere=norms > R * (1 - 1e-6), reached=float(np.mean(gaps <= tol)),
                        thetas=np.asarray(T)[:n_inits]))
    return res


def mdp_family(key, num_tasks, S, A, *, start_mass, sharpness, spread=0.5, gamma=0.9, family_seed=0):
    r"""Tabular MDP tasks (`mathlib.sample_mdp_tasks`) with a controllable start distribution and
    transition sharpness, to vary the distribution mismatch.

    $\mu_0=(1-\kappa)\,\mathrm{uniform}+\kappa\,e_0$ with $\kappa$ = ``start_mass``, and
    $P[s,a,\cdot]\propto P_{\rm base}[s,a,\cdot]^{\,\text{sharpness}}$ (sharper transitions visit fewer
    states). Claim 4.
    """
    mdps = ml.sample_mdp_tasks(key, num_tasks, S, A, spread=spread, gamma=gamma, family_seed=family_seed,
                               dtype=jnp.float64)
    P = mdps.P ** sharpness
    P = P / jnp.sum(P, -1, keepdims=True)
    mu0 = (1 - start_mass) / S + start_mass * jnp.eye(S, dtype=P.dtype)[0]
    return mdps._replace(P=P, mu0=jnp.broadcast_to(mu0, mdps.mu0.shape))


def _optimal_policy(mdp, num_iters=50):
    S = mdp.r.shape[0]

    def step(_, a_idx):
        P_pi = jnp.take_along_axis(mdp.P, a_idx[:, None, None], axis=1)[:, 0, :]
        r_pi = jnp.take_along_axis(mdp.r, a_idx[:, None], axis=1)[:, 0]
        V = solve_diagonally_dominant(jnp.eye(S, dtype=mdp.r.dtype) - mdp.gamma * P_pi, r_pi)
        return jnp.argmax(mdp.r + mdp.gamma * jnp.einsum("sat,t->sa", mdp.P, V), -1)

    a = jax.lax.fori_loop(0, num_iters, step, jnp.argmax(mdp.r, -1))
    return jax.nn.one_hot(a, mdp.r.shape[1], dtype=mdp.r.dtype)


@jax.jit
def _adapted_diag(theta, mdps, alpha):
    def one(mdp):
        th = theta + alpha * jax.grad(ml.policy_value)(theta, mdp)
        pi = ml.policy_probs(th)
        J = ml.policy_value(th, mdp)
        Q = ml.action_values(th, mdp)
        V = jnp.sum(pi * Q, -1)
        Adv = Q - V[:, None]
        d = ml.discounted_visitation(th, mdp) * (1 - mdp.gamma)     # normalised, sums to 1
        pstar = _optimal_policy(mdp)
        P_s = jnp.einsum("sa,sat->st", pstar, mdp.P)
        r_s = jnp.sum(pstar * mdp.r, -1)
        M = jnp.eye(P_s.shape[0], dtype=P_s.dtype) - mdp.gamma * P_s
        Jstar = mdp.mu0 @ solve_diagonally_dominant(M, r_s)
        dstar = solve_diagonally_dominant(M.T, mdp.mu0) * (1 - mdp.gamma)
        C = jnp.max(dstar / d)
        pdl = jnp.sum(dstar * jnp.sum(pstar * Adv, -1)) / (1 - mdp.gamma)   # = J* - J exactly
        slack = jnp.sum(d * jnp.max(Adv, -1)) / (1 - mdp.gamma)
        return Jstar - J, pdl, C, C * slack

    return jax.vmap(one)(mdps)


def adapted_policy_diagnostics(theta, mdps, alpha):
    r"""Per task, for the adapted policy $\pi_i=\pi_{\theta+\alpha\nabla J_i(\theta)}$: the gap
    $J_i^\star-J_i(\pi_i)$, the same gap from the performance-difference lemma (a check), the
    concentrability $C_i=\max_s\bar d_i^{\pi^\star_i}(s)/\bar d_i^{\pi_i}(s)$ of normalised discounted
    visitations, and the bound $\frac{C_i}{1-\gamma}\sum_s\bar d_i^{\pi_i}(s)\max_aA_i^{\pi_i}(s,a)$.
    Book: {prf:ref}`wang2020-lem-pdl-bound`. Claim 4.
    """
    gap, pdl, C, bound = _adapted_diag(theta, mdps, alpha)
    return dict(gap=np.asarray(gap), pdl=np.asarray(pdl), C=np.asarray(C), bound=np.asarray(bound))


def concentrability_sweep(families, alpha, radius, n_inits, steps, beta, key, init_radius=1.0):
    r"""For each task family (a dict of :func:`mdp_family` keyword arguments plus ``seed``): MAML by
    projected ascent on the ball of radius ``radius`` from ``n_inits`` starts; at the best end point,
    over tasks, the mean gap $J_i^\star-J_i(\pi_i)$ of the adapted policies, the mean and largest
    $C_i$, the mean bound of {prf:ref}`wang2020-lem-pdl-bound`, the worst PDL identity error and
    the smallest bound/gap ratio. Claim 4."""
    rows = []
    for j, fam in enumerate(families):
        fam = dict(fam)
        mdps = mdp_family(jax.random.key(fam.pop("seed")), **fam)
        S, A = mdps.r.shape[-2:]
        th0 = _random_in_ball(jax.random.fold_in(key, j), n_inits, S, A, min(init_radius, radius), mdps.r.dtype)
        T, V, PG = rl_projected_ascent(th0, mdps, alpha, radius, steps, beta)
        k = int(jnp.argmax(V))
        dg = adapted_policy_diagnostics(T[k], mdps, alpha)
        rows.append(dict(gap=float(dg["gap"].mean()), C=float(dg["C"].mean()), C_max=float(dg["C"].max()),
                         bound=float(dg["bound"].mean()),
                         pdl_err=float(np.max(np.abs(dg["gap"] - dg["pdl"]))),
                         bound_ratio_min=float(np.min(dg["bound"] / np.maximum(dg["gap"], 1e-300))),
                         pg=float(PG[k]), F=float(V[k])))
    return rows


# =============================================================================== claim 5
def logcosh_maml_objective(w, centres, alpha):
    r"""$F(w)=\frac1n\sum_i f_i(w-\alpha f_i'(w))$ with $f_i(w)=\log\cosh(w-c_i)$: convex, $L=1$. Claim 5."""
    z = w - centres
    return jnp.mean(jnp.log(jnp.cosh(z - alpha * jnp.tanh(z))))


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _logcosh_grid(centres, alpha, lo, hi, n):
    w = jnp.linspace(lo, hi, n)
    F = jax.vmap(lambda x: logcosh_maml_objective(x, centres, alpha))(w)
    d2 = jax.vmap(jax.grad(jax.grad(lambda x: logcosh_maml_objective(x, centres, alpha))))(w)
    return w, F, d2


def logcosh_local_minima(centres, alpha, lo=-10.0, hi=10.0, n=20001):
    r"""Strict local minima of $F$ on a grid of $n$ points of $[lo, hi]$ and their values (sorted by
    value), and $\min F''$ on the grid (negative: $F$ is not convex). Claim 5."""
    w, F, d2 = (np.asarray(x) for x in _logcosh_grid(centres, alpha, float(lo), float(hi), int(n)))
    idx = np.where((F[1:-1] < F[:-2]) & (F[1:-1] < F[2:]))[0] + 1
    order = np.argsort(F[idx])
    return w[idx][order], F[idx][order], float(d2.min())


@functools.partial(jax.jit, static_argnums=(3,))
def _logcosh_gd(w0, centres, alpha, steps, beta):
    g = jax.grad(logcosh_maml_objective)

    def body(w, _):
        return w - beta * g(w, centres, alpha), None

    w, _ = jax.lax.scan(body, w0, None, length=steps)
    return w, logcosh_maml_objective(w, centres, alpha), jnp.abs(g(w, centres, alpha))


def logcosh_gd_runs(w0s, centres, alpha, steps: int, beta):
    r"""Gradient descent on $F$ from each start; returns ``(w, F(w), |F'(w)|)`` arrays. Claim 5."""
    steps = check_int("logcosh_gd_runs", "steps", steps)
    f = jax.vmap(_logcosh_gd, in_axes=(0, None, None, None, None))
    return tuple(np.asarray(x) for x in f(jnp.asarray(w0s), centres, alpha, steps, beta))
