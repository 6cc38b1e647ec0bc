r"""Task families as pure, vmappable samplers returning :class:`mathlib.Episode`.

Every sampler is a pure function of a PRNG key: the same key gives the same episodes, and
``jax.vmap`` over keys works (sizes such as ``num_tasks`` or ``k_support`` are Python ints, i.e.
static under ``jit``). Batched samplers return an :class:`~mathlib.Episode` whose leaves carry a
leading task axis, which is what ``meta_gradient(est, loss, params, episodes)`` consumes; each
batch is a pair ``(x, y)`` matching the losses of :mod:`mathlib._models`.

Families:

* **sinusoid regression** {cite}`finn2017`: $y = a \sin(x - \varphi)$ with amplitude
  $a \sim U[0.1, 5]$, phase $\varphi \sim U[0, \pi]$, inputs $x \sim U[-5, 5]$; ``x`` and ``y``
  have shape ``(K, 1)``;
* **synthetic logistic regression** with a task-specific weight vector and task-specific feature
  scaling;
* **one-vs-rest digits** (scikit-learn's bundled 8x8 digits, no download) with a fixed class split;
* **N-way K-shot classification** from any labelled array dataset.

``k_hessian > 0`` additionally draws an independent batch $D_h$ from the same task (the
``hessian`` field, used by the Hessian / finite-difference term of MAML and HF-MAML); with the
default ``k_hessian=0`` the field is ``None`` and the estimators reuse the support batch.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mathlib._core import Episode
from mathlib._models import _check_float_dtype, _flat_random
from mathlib._validate import check_choice, check_int, check_nonnegative, is_concrete, renamed_argument

__all__ = [
    "SinusoidTasks",
    "sample_sinusoid_tasks",
    "sinusoid_episodes",
    "sample_sinusoid_episodes",
    "sinusoid_eval_set",
    "LogisticTasks",
    "sample_logistic_params",
    "logistic_episodes",
    "sample_logistic_tasks",
    "DigitsDataset",
    "digits_dataset",
    "sample_digits_ovr_episodes",
    "sample_nway_kshot",
    "sample_nway_kshot_episodes",
]


def _check_range(fn: str, name: str, rng) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: argument '{name}' must be a pair (low, high), got {rng!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"{fn}: argument '{name}' must be a finite pair with low <= high, got {rng!r}")
    return lo, hi


# =========================================================================== sinusoid
class SinusoidTasks(NamedTuple):
    r"""Parameters of sinusoid tasks $y = a \sin(x - \varphi)$ (leading task axis)."""

    amplitude: jax.Array
    phase: jax.Array

    def __call__(self, x: jax.Array) -> jax.Array:
        """Evaluate the task functions at ``x`` of shape ``(num_tasks, K, 1)`` (or one task)."""
        a = jnp.asarray(self.amplitude)[..., None, None]
        p = jnp.asarray(self.phase)[..., None, None]
        return a * jnp.sin(x - p)


def sample_sinusoid_tasks(
    key: jax.Array,
    num_tasks: int,
    *,
    amplitude_range=(0.1, 5.0),
    phase_range=(0.0, math.pi),
    dtype=jnp.float32,
) -> SinusoidTasks:
    r"""Draw ``num_tasks`` amplitudes $a \sim U[0.1, 5]$ and phases $\varphi \sim U[0, \pi]$ (Finn et al. 2017)."""
    fn = "sample_sinusoid_tasks"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    a_lo, a_hi = _check_range(fn, "amplitude_range", amplitude_range)
    p_lo, p_hi = _check_range(fn, "phase_range", phase_range)
    dt = _check_float_dtype(dtype, fn)
    return _sinusoid_tasks(key, num_tasks, a_lo, a_hi, p_lo, p_hi, dt)


@functools.partial(jax.jit, static_argnums=(1, 6))
def _sinusoid_tasks(key, num_tasks, a_lo, a_hi, p_lo, p_hi, dt):
    u = _flat_random(jax.random.uniform, key, (2, num_tasks), dtype=dt)  # one random call for both
    return SinusoidTasks(amplitude=a_lo + (a_hi - a_lo) * u[0], phase=p_lo + (p_hi - p_lo) * u[1])


def sinusoid_episodes(
    key: jax.Array,
    tasks: SinusoidTasks,
    k_support: int,
    k_query: int,
    *,
    k_hessian: int = 0,
    x_range=(-5.0, 5.0),
) -> Episode:
    r"""Sample support/query (and optionally Hessian) points $x \sim U[-5, 5]$ for given tasks.

    Returns an :class:`Episode` of pairs ``(x, y)`` of shape ``(num_tasks, K, 1)`` in the dtype
    of ``tasks.amplitude``; all batches are independent draws from the same task.
    """
    fn = "sinusoid_episodes"
    k_support = check_int(fn, "k_support", k_support)
    k_query = check_int(fn, "k_query", k_query)
    k_hessian = check_int(fn, "k_hessian", k_hessian, minimum=0)
    lo, hi = _check_range(fn, "x_range", x_range)
    return _sinusoid_episodes(key, tasks, k_support, k_query, k_hessian, lo, hi)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _sinusoid_episodes(key, tasks, k_support, k_query, k_hessian, lo, hi):
    amp = jnp.asarray(tasks.amplitude)
    n = amp.shape[0]
    x = _flat_random(jax.random.uniform, key, (n, k_support + k_query + k_hessian, 1), dtype=amp.dtype, minval=lo, maxval=hi)
    return _split_episode((x, tasks(x)), k_support, k_query, k_hessian)


def _split_episode(batch, k_support, k_query, k_hessian) -> Episode:
    """Split ``(x, y)`` with sample axis 1 into support / query / optional Hessian batches."""
    a, b = k_support, k_support + k_query
    sup = jax.tree_util.tree_map(lambda t: t[:, :a], batch)
    qry = jax.tree_util.tree_map(lambda t: t[:, a:b], batch)
    hes = jax.tree_util.tree_map(lambda t: t[:, b:], batch) if k_hessian else None
    return Episode(sup, qry, hes)


def sample_sinusoid_episodes(
    key: jax.Array,
    num_tasks: int,
    k_support: int,
    k_query: int,
    *,
    k_hessian: int = 0,
    dtype=jnp.float32,
    amplitude_range=(0.1, 5.0),
    phase_range=(0.0, math.pi),
    x_range=(-5.0, 5.0),
) -> Episode:
    r"""Sinusoid regression episodes of Finn et al. (2017), {cite}`finn2017`.

    Task $i$: $y = a_i \sin(x - \varphi_i)$, $a_i \sim U[0.1, 5]$, $\varphi_i \sim U[0, \pi]$;
    support ($K$ = ``k_support``), query and optional Hessian points $x \sim U[-5, 5]$, drawn
    independently. The benchmark setting is ``num_tasks=25, k_support=k_query=10``.

    Returns:
      ``Episode(support=(x, y), query=(x, y), hessian=None or (x, y))`` with ``x, y`` of shape
      ``(num_tasks, K, 1)`` and dtype ``dtype``. Use :func:`sample_sinusoid_tasks` and
      :func:`sinusoid_episodes` to also get the amplitudes and phases.
    """
    kt, kx = jax.random.split(key)
    tasks = sample_sinusoid_tasks(
        kt, num_tasks, amplitude_range=amplitude_range, phase_range=phase_range, dtype=dtype
    )
    return sinusoid_episodes(kx, tasks, k_support, k_query, k_hessian=k_hessian, x_range=x_range)


def sinusoid_eval_set(
    num_tasks: int = 100,
    k_support: int = 10,
    k_query: int = 100,
    *,
    seed: int = 2017,
    dtype=jnp.float32,
    x_range=(-5.0, 5.0),
) -> tuple[Episode, SinusoidTasks]:
    r"""A fixed evaluation set of sinusoid tasks (same result on every call with the same arguments).

    Support points are random ($x \sim U[-5, 5]$); the query inputs are the same evenly spaced grid
    of ``k_query`` points on ``x_range`` for every task, so that the post-adaptation error is a
    low-variance estimate of the $L^2$ error over the interval and can be plotted as a curve.

    Returns:
      ``(episodes, tasks)``: a batched :class:`Episode` (``hessian=None``) and the task parameters.
    """
    fn = "sinusoid_eval_set"
    k_query = check_int(fn, "k_query", k_query)
    lo, hi = _check_range(fn, "x_range", x_range)
    key = jax.random.key(check_int(fn, "seed", seed, minimum=0))
    kt, kx = jax.random.split(key)
    tasks = sample_sinusoid_tasks(kt, num_tasks, dtype=dtype)
    ep = sinusoid_episodes(kx, tasks, k_support, 1, x_range=x_range)
    grid = jnp.broadcast_to(jnp.linspace(lo, hi, k_query, dtype=tasks.amplitude.dtype)[None, :, None], (num_tasks, k_query, 1))
    return Episode(ep.support, (grid, tasks(grid)), None), tasks


# =========================================================================== logistic regression
class LogisticTasks(NamedTuple):
    r"""Synthetic logistic tasks: $x = s_i \odot z$, $z \sim N(0, I)$, $P(y{=}1 \mid x) = \sigma(x^\top w_i)$."""

    weights: jax.Array  # (num_tasks, dim)
    scales: jax.Array  # (num_tasks, dim)


def sample_logistic_params(
    key: jax.Array,
    num_tasks: int,
    dim: int,
    *,
    w_mean=None,
    spread: float = 1.0,
    scale_spread: float = 0.5,
    dtype=jnp.float32,
) -> LogisticTasks:
    r"""Draw task weights $w_i = \bar w + \text{spread}\cdot\xi_i$ and feature scales $s_i = e^{\text{scale\_spread}\cdot\zeta_i}$.

    $\xi_i, \zeta_i \sim N(0, I_d)$ independent. The shared centre $\bar w$ (``w_mean``) defaults to
    $(2/\sqrt d)\mathbf 1$ (norm 2), so ``spread`` measures task dissimilarity around a common
    solution; ``scale_spread`` makes the tasks' Hessians differently conditioned
    ($\nabla^2 f_i \approx \frac14 \E[x x^\top] = \frac14 \diag(s_i^2)$ near $w = 0$).
    """
    fn = "sample_logistic_params"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    dim = check_int(fn, "dim", dim)
    check_nonnegative(fn, "spread", spread)
    check_nonnegative(fn, "scale_spread", scale_spread)
    dt = _check_float_dtype(dtype, fn)
    if w_mean is None:
        w_mean = jnp.full((dim,), 2.0 / math.sqrt(dim), dt)
    else:
        w_mean = jnp.asarray(w_mean, dt)
        if w_mean.shape != (dim,):
            raise ValueError(f"{fn}: argument 'w_mean' must have shape ({dim},), got {w_mean.shape}")
    return _logistic_params(key, num_tasks, w_mean, spread, scale_spread)


@functools.partial(jax.jit, static_argnums=1)
def _logistic_params(key, num_tasks, w_mean, spread, scale_spread):
    z = _flat_random(jax.random.normal, key, (2, num_tasks, w_mean.shape[0]), dtype=w_mean.dtype)
    return LogisticTasks(w_mean + spread * z[0], jnp.exp(scale_spread * z[1]))


def logistic_episodes(
    key: jax.Array, tasks: LogisticTasks, k_support: int, k_query: int, *, k_hessian: int = 0
) -> Episode:
    """Sample labelled points for given logistic tasks: ``x`` of shape ``(T, K, dim)``, labels ``y``
    in {0., 1.} of shape ``(T, K)`` drawn from the Bernoulli model (well specified)."""
    fn = "logistic_episodes"
    k_support = check_int(fn, "k_support", k_support)
    k_query = check_int(fn, "k_query", k_query)
    k_hessian = check_int(fn, "k_hessian", k_hessian, minimum=0)
    return _logistic_episodes(key, tasks, k_support, k_query, k_hessian)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _logistic_episodes(key, tasks, k_support, k_query, k_hessian):
    w, s = jnp.asarray(tasks.weights), jnp.asarray(tasks.scales)
    n, d = w.shape
    # one random call (cheaper to compile): U(-1, 1) -> normal features by sqrt(2) erfinv, as
    # jax.random.normal does, and the last column -> U(0, 1) for the Bernoulli labels
    lo = np.nextafter(np.array(-1.0, w.dtype), np.array(0.0, w.dtype))
    u = _flat_random(jax.random.uniform, key, (n, k_support + k_query + k_hessian, d + 1), dtype=w.dtype, minval=lo, maxval=1.0)
    x = s[:, None, :] * (np.sqrt(2.0).astype(w.dtype) * jax.lax.erf_inv(u[..., :d]))
    logits = jnp.einsum("tkd,td->tk", x, w)
    y = (0.5 * (u[..., d] + 1.0) < jax.nn.sigmoid(logits)).astype(w.dtype)
    return _split_episode((x, y), k_support, k_query, k_hessian)


def sample_logistic_tasks(
    key: jax.Array,
    num_tasks: int,
    k_support: int,
    k_query: int,
    dim: int,
    *,
    k_hessian: int = 0,
    w_mean=None,
    spread: float = 1.0,
    scale_spread: float = 0.5,
    dtype=jnp.float32,
) -> Episode:
    r"""Synthetic binary logistic-regression episodes (for :func:`mathlib.logistic_loss`).

    Task $i$ has weight $w_i = \bar w + \text{spread}\,\xi_i$ and feature scales $s_i$ (see
    :func:`sample_logistic_params`); examples are $x = s_i \odot z$, $z \sim N(0, I_d)$, and
    $y \sim \mathrm{Bernoulli}(\sigma(x^\top w_i))$.

    Returns:
      ``Episode`` of pairs ``(x, y)``, ``x`` of shape ``(num_tasks, K, dim)``, ``y`` in {0, 1}
      (float, dtype ``dtype``) of shape ``(num_tasks, K)``.
    """
    kp, ke = jax.random.split(key)
    tasks = sample_logistic_params(
        kp, num_tasks, dim, w_mean=w_mean, spread=spread, scale_spread=scale_spread, dtype=dtype
    )
    return logistic_episodes(ke, tasks, k_support, k_query, k_hessian=k_hessian)


# =========================================================================== drawing helpers
def _subset(u: jax.Array, mask: jax.Array, n: int) -> jax.Array:
    """``n`` distinct indices where ``mask`` is True, uniformly at random and in random order.

    ``u`` holds i.i.d. U[0, 1) scores (same shape as ``mask``); the ``n`` largest scores among the
    masked entries are a uniform random ``n``-subset (top-k of i.i.d. keys), with fixed shapes so
    that it can be jitted and vmapped. Requires at least ``n`` True entries (checked by callers).
    """
    return jax.lax.top_k(jnp.where(mask, u, -1.0), n)[1]


def _class_counts(y) -> dict[int, int] | None:
    if not is_concrete(y):
        return None
    vals, counts = np.unique(np.asarray(y), return_counts=True)
    return {int(v): int(c) for v, c in zip(vals, counts)}


# =========================================================================== digits
class DigitsDataset(NamedTuple):
    """scikit-learn's 8x8 digits, standardized, with a fixed class split for meta-train/meta-test."""

    X: jax.Array  # (1797, 64) standardized features
    y: jax.Array  # (1797,) int32 labels 0..9
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]


@functools.lru_cache(maxsize=1)
def _load_digits_numpy():
    """The digits as ``sklearn.datasets.load_digits`` returns them: ``(X, y)``, float64 and int32.

    Read straight from scikit-learn's bundled ``datasets/data/digits.csv.gz`` (64 pixels, then
    the label, per row), which is what ``load_digits`` parses: importing ``sklearn.datasets``
    costs about 1.6 s, more than a quick-mode notebook's whole data preparation. Falls back to
    ``load_digits`` if a future scikit-learn moves the file. ``tests/test_data.py`` checks that
    both give the same arrays.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if path is not None and path.is_file():
        data = np.loadtxt(path, delimiter=",")
        return np.ascontiguousarray(data[:, :-1], np.float64), data[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits  # pragma: no cover - bundled with scikit-learn, no download

    d = load_digits()  # pragma: no cover
    return np.asarray(d.data, np.float64), np.asarray(d.target, np.int32)  # pragma: no cover


def digits_dataset(dtype=jnp.float32, *, test_classes=(7, 8, 9)) -> DigitsDataset:
    r"""The 1797 bundled 8x8 digit images (``sklearn.datasets.load_digits``), standardized.

    Features are the 64 pixel values (0..16) standardized per pixel with the mean and standard
    deviation of the **meta-train classes' images** (a pixel with zero standard deviation there is
    only centred). The fixed class split puts ``test_classes`` (default 7, 8, 9) into meta-test and
    the others (0..6) into meta-train; the two are disjoint.
    """
    fn = "digits_dataset"
    dt = _check_float_dtype(dtype, fn)
    test_classes = tuple(sorted(int(c) for c in test_classes))
    if not test_classes or len(set(test_classes)) != len(test_classes) or not set(test_classes) <= set(range(10)):
        raise ValueError(f"{fn}: argument 'test_classes' must be distinct digits in 0..9, got {test_classes!r}")
    train_classes = tuple(c for c in range(10) if c not in test_classes)
    if not train_classes:
        raise ValueError(f"{fn}: argument 'test_classes' must leave at least one training class, got {test_classes!r}")
    X, y = _load_digits_numpy()
    tr = np.isin(y, train_classes)
    mu = X[tr].mean(axis=0)
    sd = X[tr].std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Xs = (X - mu) / sd
    return DigitsDataset(jnp.asarray(Xs, dt), jnp.asarray(y), train_classes, test_classes)


def sample_digits_ovr_episodes(
    key: jax.Array,
    num_tasks: int,
    k_support: int,
    k_query: int,
    *,
    data: DigitsDataset | None = None,
    split: str = "train",
    k_hessian: int = 0,
    intercept: bool = True,
    dtype=jnp.float32,
) -> Episode:
    r"""One-vs-rest binary logistic tasks on the digits (for :func:`mathlib.logistic_loss`).

    A task picks a positive class $c$ uniformly among the split's classes (``split`` = "train",
    "test" or "all"); each batch of size $K$ holds $\lfloor K/2 \rfloor$ images of $c$ (label 1)
    and $K - \lfloor K/2\rfloor$ images of the split's other classes (label 0). All images of a
    task (support, query, Hessian batch) are distinct: they are drawn without replacement.
    With ``intercept=True`` a constant-1 column is appended (features of dimension 65).
    ``dtype`` is used only to build the default ``data`` (:func:`digits_dataset`); with ``data``
    given, the features keep its dtype.

    Returns:
      ``Episode`` of ``(x, y)``; ``x`` of shape ``(num_tasks, K, 64 or 65)``, ``y`` float {0, 1}
      of shape ``(num_tasks, K)``. Batches are ordered positives first.
    """
    fn = "sample_digits_ovr_episodes"
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    k_support = check_int(fn, "k_support", k_support)
    k_query = check_int(fn, "k_query", k_query)
    k_hessian = check_int(fn, "k_hessian", k_hessian, minimum=0)
    check_choice(fn, "split", split, ("train", "test", "all"))
    if data is None:
        data = digits_dataset(dtype)
    classes = {"train": data.train_classes, "test": data.test_classes}.get(
        split, tuple(sorted((*data.train_classes, *data.test_classes)))
    )
    if len(classes) < 2:
        raise ValueError(f"{fn}: argument 'split' must select at least two classes, got {classes!r}")
    sizes = [k for k in (k_support, k_query, k_hessian) if k]
    n_pos = sum(k // 2 for k in sizes)
    n_neg = sum(k - k // 2 for k in sizes)
    counts = _class_counts(data.y)
    if counts is not None:
        cmin = min(counts.get(c, 0) for c in classes)
        neg_pool = sum(counts.get(c, 0) for c in classes) - max(counts.get(c, 0) for c in classes)
        if n_pos > cmin or n_neg > neg_pool:
            raise ValueError(
                f"{fn}: argument 'k_support' + 'k_query' + 'k_hessian' too large for the split "
                f"'{split}': need {n_pos} positives (smallest class has {cmin}) and {n_neg} negatives "
                f"(pool has at least {neg_pool})"
            )
    return _ovr_batch(key, data.X, data.y, jnp.asarray(classes, data.y.dtype), num_tasks, tuple(sizes), bool(intercept))


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _ovr_batch(key, X, y, classes_arr, num_tasks, sizes, intercept):
    n_pos = sum(k // 2 for k in sizes)
    n_neg = sum(k - k // 2 for k in sizes)
    in_split = jnp.isin(y, classes_arr)

    N, C = y.shape[0], classes_arr.shape[0]
    u_all = jax.random.uniform(key, (num_tasks * (C + 2 * N),), X.dtype).reshape(num_tasks, C + 2 * N)

    def one_task(u):
        c = classes_arr[jnp.argmax(u[:C])]
        pos = _subset(u[C : C + N], y == c, n_pos)
        neg = _subset(u[C + N :], in_split & (y != c), n_neg)
        out, ip, ineg = [], 0, 0
        for kk in sizes:
            idx = jnp.concatenate([pos[ip : ip + kk // 2], neg[ineg : ineg + kk - kk // 2]])
            ip, ineg = ip + kk // 2, ineg + kk - kk // 2
            xb = X[idx]
            if intercept:
                xb = jnp.concatenate([xb, jnp.ones((kk, 1), X.dtype)], axis=1)
            lab = jnp.concatenate([jnp.ones(kk // 2, X.dtype), jnp.zeros(kk - kk // 2, X.dtype)])
            out.append((xb, lab))
        return Episode(out[0], out[1], out[2] if len(sizes) == 3 else None)

    return jax.vmap(one_task)(u_all)


# =========================================================================== N-way K-shot
def _check_nway(fn, X, y, classes, n_way, k_shot, k_query, k_hessian):
    n_way = check_int(fn, "n_way", n_way)
    k_shot = check_int(fn, "k_support", k_shot)
    k_query = check_int(fn, "k_query", k_query)
    k_hessian = check_int(fn, "k_hessian", k_hessian, minimum=0)
    try:
        classes_np = np.asarray(classes).reshape(-1)
    except Exception:
        raise TypeError(f"{fn}: argument 'classes' must be a concrete sequence of class labels, got {type(classes).__name__}") from None
    if not np.issubdtype(classes_np.dtype, np.integer):
        raise TypeError(f"{fn}: argument 'classes' must hold integer labels, got dtype {classes_np.dtype}")
    if len(np.unique(classes_np)) != len(classes_np):
        raise ValueError(f"{fn}: argument 'classes' must hold distinct labels, got {classes_np.tolist()}")
    if n_way > len(classes_np):
        raise ValueError(
            f"{fn}: argument 'n_way' must be <= the number of classes ({len(classes_np)}), got {n_way}"
        )
    if jnp.ndim(y) != 1 or jnp.shape(X)[0] != jnp.shape(y)[0]:
        raise ValueError(
            f"{fn}: arguments 'X' and 'y' must have the same number of rows and 'y' must be 1-D, "
            f"got X {jnp.shape(X)} and y {jnp.shape(y)}"
        )
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise TypeError(f"{fn}: argument 'y' must hold integer labels, got dtype {jnp.result_type(y)}")
    need = k_shot + k_query + k_hessian
    counts = _class_counts(y)
    if counts is not None:
        have = min(counts.get(int(c), 0) for c in classes_np)
        if need > have:
            raise ValueError(
                f"{fn}: argument 'k_support' + 'k_query' + 'k_hessian' = {need} exceeds the smallest "
                f"class size among 'classes' ({have})"
            )
    return classes_np, n_way, k_shot, k_query, k_hessian


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _nway_one(key, X, y, classes_arr, n_way, k_shot, k_query, k_hessian):
    need = k_shot + k_query + k_hessian
    N, C = y.shape[0], classes_arr.shape[0]
    udt = X.dtype if jnp.issubdtype(X.dtype, jnp.floating) else jnp.float32
    u = jax.random.uniform(key, (C + n_way * N,), udt)  # one random draw per episode
    # random subset of classes in random order = random label assignment 0..N-1
    chosen = classes_arr[jax.lax.top_k(u[:C], n_way)[1]]
    idx = _subset(u[C:].reshape(n_way, N), y[None, :] == chosen[:, None], need)  # (n_way, need)
    labels = jnp.arange(n_way, dtype=jnp.int32)

    def batch(lo, kk):
        ii = idx[:, lo : lo + kk].reshape(-1)
        return X[ii], jnp.repeat(labels, kk)

    sup = batch(0, k_shot)
    qry = batch(k_shot, k_query)
    hes = batch(k_shot + k_query, k_hessian) if k_hessian else None
    return Episode(sup, qry, hes)


def sample_nway_kshot(
    key: jax.Array, X: jax.Array, y: jax.Array, classes, n_way: int, k_support: int | None = None,
    k_query: int | None = None, *, k_hessian: int = 0, k_shot: int | None = None
) -> Episode:
    r"""One N-way K-shot classification episode from a labelled array dataset ``(X, y)``.

    Sampling: ``n_way`` distinct classes are drawn uniformly without replacement from ``classes``
    in random order and relabelled ``0..n_way-1`` in that order (a random label permutation). For
    each chosen class, ``k_shot + k_query (+ k_hessian)`` distinct examples are drawn uniformly
    without replacement among the rows with that label and split into support, query (and
    Hessian) batches, so **no example appears in two batches**. Shapes are fixed (the top-k of
    i.i.d. uniform scores restricted to a class mask is a uniform random subset), so the function
    can be ``jit``-ted and ``vmap``-ped over keys; ``classes`` and the sizes are static.

    Args:
      key: PRNG key.
      X: features, shape ``(n, ...)``.
      y: integer labels, shape ``(n,)``.
      classes: the labels tasks may use (e.g. ``DigitsDataset.train_classes``).
      n_way: classes per task, ``1 <= n_way <= len(classes)``.
      k_support: support examples per class (>= 1), the "K" of K-shot (old name ``k_shot``: still
        accepted with a ``DeprecationWarning``).
      k_query: query examples per class (>= 1).
      k_hessian: examples per class of the optional independent Hessian batch (>= 0).

    Returns:
      ``Episode(support=(x, labels), query=(x, labels), hessian=None or (x, labels))``; batches
      are class-major: ``x`` of shape ``(n_way * k, ...)``, int32 labels ``repeat(arange(n_way), k)``.

    Raises:
      ValueError: ``n_way > len(classes)``, ``k_shot < 1``, ``k_query < 1``, or a class with fewer
        than ``k_shot + k_query + k_hessian`` examples (checked when ``y`` is concrete).
    """
    k_shot = renamed_argument("sample_nway_kshot", "k_support", k_support, "k_shot", k_shot)
    classes_np, n_way, k_shot, k_query, k_hessian = _check_nway(
        "sample_nway_kshot", X, y, classes, n_way, k_shot, k_query, k_hessian
    )
    return _nway_one(key, X, y, jnp.asarray(classes_np, jnp.result_type(y)), n_way, k_shot, k_query, k_hessian)


def sample_nway_kshot_episodes(
    key: jax.Array,
    num_tasks: int,
    X: jax.Array,
    y: jax.Array,
    classes,
    n_way: int,
    k_support: int | None = None,
    k_query: int | None = None,
    *,
    k_hessian: int = 0,
    k_shot: int | None = None,
) -> Episode:
    """``num_tasks`` independent episodes of :func:`sample_nway_kshot`, stacked on a leading task axis.

    ``k_support`` (per class; old name ``k_shot``, deprecated), ``k_query``, ``k_hessian`` as there.
    """
    fn = "sample_nway_kshot_episodes"
    k_shot = renamed_argument(fn, "k_support", k_support, "k_shot", k_shot)
    num_tasks = check_int(fn, "num_tasks", num_tasks)
    classes_np, n_way, k_shot, k_query, k_hessian = _check_nway(fn, X, y, classes, n_way, k_shot, k_query, k_hessian)
    cls = jnp.asarray(classes_np, jnp.result_type(y))
    return _nway_batch(key, X, y, cls, num_tasks, n_way, k_shot, k_query, k_hessian)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7, 8))
def _nway_batch(key, X, y, classes_arr, num_tasks, n_way, k_shot, k_query, k_hessian):
    return jax.vmap(lambda k: _nway_one(k, X, y, classes_arr, n_way, k_shot, k_query, k_hessian))(
        jax.random.split(key, num_tasks)
    )
