"""Small models as pure functions on pytrees, and ready-made losses ``loss(params, batch)``.

Parameters are plain pytrees of arrays (dicts and lists), so every estimator of the core API
(``est(loss, params, episode)``) differentiates them directly. Initialisers take an explicit PRNG
key and a ``dtype``; forward passes follow the dtype of the parameters and inputs (float32 or
float64, nothing is hard-coded).

Conventions:

* a dense layer is ``{"w": (in, out), "b": (out,)}`` and computes ``x @ w + b``;
* an MLP is a list of dense layers; hidden layers are followed by the activation, the last one is
  linear;
* a body/head model (ANIL, {cite}`raghu2020`) is ``{"body": mlp, "head": mlp}``: the body maps
  inputs to activated features ``z = h_phi(x)``, the head maps features to outputs. ANIL adapts
  only ``params["head"]`` in the inner loop.

Initialisation schemes (``init=``):

* ``"pytorch"`` (default): PyTorch's ``nn.Linear`` default, ``w, b ~ U[-1/sqrt(in), 1/sqrt(in)]``
  (``kaiming_uniform_(a=sqrt(5))`` for the weight gives exactly this bound). It does not depend on
  the activation.
* ``"finn"``: the reference MAML code of Finn et al. (2017) for the sinusoid MLP: weights from a
  normal with standard deviation 0.01 truncated at two standard deviations, zero biases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import operator
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mathlib._core import HeadLoss
from mathlib._validate import check_choice, check_int, check_matmul_shapes

__all__ = [
    "ACTIVATIONS",
    "init_linear",
    "linear_apply",
    "init_mlp",
    "mlp_apply",
    "init_body_head",
    "body_apply",
    "body_head_apply",
    "mse",
    "softmax_cross_entropy",
    "accuracy",
    "mlp_mse_loss",
    "logistic_loss",
    "mlp_xent_loss",
    "body_head_loss",
    "body_head_mse_loss",
    "body_head_xent_loss",
]

#: Activations accepted by name (``activation=``) in this module.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "softplus": jax.nn.softplus,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
}

_INITS = ("pytorch", "finn")


# --------------------------------------------------------------------------- argument checks
def _activation_fn(activation: str | Callable, where: str) -> Callable:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{where}: argument 'activation' must be one of {sorted(ACTIVATIONS)} or a callable, "
            f"got {activation!r}"
        )
    return ACTIVATIONS[activation]


def _check_sizes(sizes: Any, where: str, min_len: int = 2, name: str = "sizes") -> tuple[int, ...]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence):
        raise ValueError(
            f"{where}: argument '{name}' must be a sequence of >= {min_len} positive ints, got {sizes!r}"
        )
    if len(sizes) < min_len:
        raise ValueError(
            f"{where}: argument '{name}' must have at least {min_len} entries, got {tuple(sizes)!r}"
        )
    out = []
    for s in sizes:
        try:
            si = operator.index(s)
        except TypeError:
            raise ValueError(f"{where}: argument '{name}' must contain ints, got {tuple(sizes)!r}") from None
        if si < 1:
            raise ValueError(f"{where}: argument '{name}' must contain positive ints, got {tuple(sizes)!r}")
        out.append(si)
    return tuple(out)


def _check_init(init: str, where: str) -> str:
    return check_choice(where, "init", init, _INITS)


def _check_float_dtype(dtype: Any, where: str):
    dt = jnp.dtype(dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{where}: argument 'dtype' must be a floating dtype, got {dt}")
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{where}: argument 'dtype' is float64 but jax_enable_x64 is off; call "
            "jax.config.update('jax_enable_x64', True) first"
        )
    return dt


def _flat_random(sampler: Callable, key: jax.Array, shape: tuple[int, ...], *args, **kwargs) -> jax.Array:
    """``sampler(key, *args, shape=shape, **kwargs)`` drawn as a flat vector and reshaped.

    Same distribution; compiles several times faster than a multi-dimensional draw with JAX's
    default partitionable threefry on CPU (compile time grows with the rank of ``shape``).
    """
    size = 1
    for s in shape:
        size *= s
    return sampler(key, *args, shape=(size,), **kwargs).reshape(shape)


# --------------------------------------------------------------------------- layers
def init_linear(key: jax.Array, in_dim: int, out_dim: int, *, dtype=jnp.float32, init: str = "pytorch") -> dict:
    r"""Initialise a dense layer $x \mapsto x W + b$ with $W \in \R^{\text{in}\times\text{out}}$.

    Args:
      key: PRNG key.
      in_dim, out_dim: input and output widths (positive ints).
      dtype: floating dtype of the parameters.
      init: ``"pytorch"`` ($W, b \sim U[-1/\sqrt{\text{in}}, 1/\sqrt{\text{in}}]$, PyTorch's
        ``nn.Linear`` default) or ``"finn"`` ($W \sim$ normal with std 0.01 truncated at
        $\pm 2$ std, $b = 0$, as in Finn et al. 2017's sinusoid code).

    Returns:
      ``{"w": (in_dim, out_dim), "b": (out_dim,)}``.
    """
    where = "init_linear"
    in_dim = check_int(where, "in_dim", in_dim)
    out_dim = check_int(where, "out_dim", out_dim)
    _check_init(init, where)
    dt = _check_float_dtype(dtype, where)
    return _init_layers(key, ((in_dim, out_dim),), dt, init)[0]


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _init_layers(key, dims, dt, init):
    """Dense layers of widths ``dims = ((in, out), ...)`` from ONE random draw (fast to compile)."""
    sizes = [(m + 1) * n for m, n in dims]
    if init == "pytorch":
        u = jax.random.uniform(key, (sum(sizes),), dt, -1.0, 1.0)
    else:  # "finn": truncated standard normal, biases are zero
        u = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), dt)
    layers, start = [], 0
    for (m, n), size in zip(dims, sizes):
        wb = u[start : start + size].reshape(m + 1, n)
        start += size
        if init == "pytorch":
            wb = wb / (m**0.5)  # U[-1/sqrt(in), 1/sqrt(in)] for weight and bias
            layers.append({"w": wb[:m], "b": wb[m]})
        else:
            layers.append({"w": 0.01 * wb[:m], "b": jnp.zeros((n,), dt)})
    return layers


def linear_apply(params: dict, x: jax.Array) -> jax.Array:
    r"""Dense layer $x W + b$; ``x`` has shape ``(..., in)``, the result ``(..., out)``."""
    check_matmul_shapes("linear_apply", "input x", x, "weight w", params["w"], what="layer widths")
    return x @ params["w"] + params["b"]


def init_mlp(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    activation: str | Callable = "relu",
    dtype=jnp.float32,
    init: str = "pytorch",
) -> list[dict]:
    """Initialise an MLP with layer widths ``sizes`` (input, hidden..., output), e.g. ``(1, 40, 40, 1)``.

    Args:
      key: PRNG key (one draw for all layers).
      sizes: at least two positive ints.
      activation: checked here so that a typo fails early; the initialisation itself does not
        depend on it (see the module docstring). Pass the same value to :func:`mlp_apply`.
      dtype: floating dtype of the parameters.
      init: ``"pytorch"`` or ``"finn"`` (see :func:`init_linear`).

    Returns:
      A list of ``len(sizes) - 1`` dense layers ``{"w", "b"}``.

    Raises:
      ValueError: ``sizes`` has fewer than two entries or a non-positive entry; unknown
        ``activation`` or ``init``.
    """
    where = "init_mlp"
    sizes = _check_sizes(sizes, where)
    _activation_fn(activation, where)
    _check_init(init, where)
    _check_float_dtype(dtype, where)
    return _init_layers(key, tuple(zip(sizes[:-1], sizes[1:])), jnp.dtype(dtype), init)


def mlp_apply(params: Sequence[dict], x: jax.Array, activation: str | Callable = "relu") -> jax.Array:
    r"""MLP forward pass: $h_{l+1} = \sigma(h_l W_l + b_l)$ for hidden layers, last layer linear."""
    act = _activation_fn(activation, "mlp_apply")
    h = x
    for layer in params[:-1]:
        h = act(linear_apply(layer, h))
    return linear_apply(params[-1], h)


# --------------------------------------------------------------------------- body / head (ANIL)
def init_body_head(
    key: jax.Array,
    sizes: Sequence[int],
    *,
    head_hidden: Sequence[int] = (),
    activation: str | Callable = "relu",
    dtype=jnp.float32,
    init: str = "pytorch",
) -> dict:
    r"""Initialise a body/head network for ANIL {cite}`raghu2020`: $f(x) = g_w(h_\phi(x))$.

    ``sizes = (d_in, h_1, ..., h_m, d_out)`` with at least three entries: the body is the MLP
    ``d_in -> h_1 -> ... -> h_m`` whose *every* layer is followed by the activation (features are
    activated), and the head is ``h_m -> d_out`` (linear, the strongly convex case of the ANIL
    analysis with a convex loss) or, with ``head_hidden=(k, ...)``, the MLP
    ``h_m -> k -> ... -> d_out`` (the nonconvex head). With the same ``sizes`` and key the
    network has the same architecture as :func:`init_mlp` (different parameter grouping).

    Returns:
      ``{"body": [layers], "head": [layers]}``.

    Raises:
      ValueError: ``sizes`` has fewer than three entries or a non-positive entry, bad
        ``head_hidden``, unknown ``activation`` or ``init``.
    """
    where = "init_body_head"
    sizes = _check_sizes(sizes, where, min_len=3)
    head_hidden = _check_sizes(tuple(head_hidden), where, min_len=0, name="head_hidden")
    _activation_fn(activation, where)
    _check_init(init, where)
    dt = _check_float_dtype(dtype, where)
    body_dims = tuple(zip(sizes[:-2], sizes[1:-1]))
    head_sizes = (sizes[-2], *head_hidden, sizes[-1])
    layers = _init_layers(key, body_dims + tuple(zip(head_sizes[:-1], head_sizes[1:])), dt, init)
    return {"body": layers[: len(body_dims)], "head": layers[len(body_dims) :]}


def body_apply(
    body: Sequence[dict], x: jax.Array, activation: str | Callable = "relu", *, normalize: bool = False
) -> jax.Array:
    r"""Body features $z = h_\phi(x)$: every layer followed by the activation.

    With ``normalize=True`` the features are scaled to unit Euclidean norm,
    $z / \max(\norm{z}, 10^{-12})$, which keeps the head loss' smoothness constant bounded while the
    body learns (useful for a fixed inner step $\alpha \le 1/L$).
    """
    act = _activation_fn(activation, "body_apply")
    h = x
    for layer in body:
        h = act(linear_apply(layer, h))
    if normalize:
        norm = jnp.linalg.norm(h, axis=-1, keepdims=True)
        h = h / jnp.maximum(norm, jnp.asarray(1e-12, h.dtype))
    return h


def body_head_apply(
    params: dict, x: jax.Array, activation: str | Callable = "relu", *, normalize: bool = False
) -> jax.Array:
    r"""Forward pass $g_w(h_\phi(x))$ of a body/head network from :func:`init_body_head`."""
    z = body_apply(params["body"], x, activation, normalize=normalize)
    return mlp_apply(params["head"], z, activation)


# --------------------------------------------------------------------------- losses
def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    r"""Mean squared error $\frac1n\sum_i (\hat y_i - y_i)^2$ (mean over all entries, **no** $\frac12$).

    Used by the neural-network losses (:func:`mlp_mse_loss`, :func:`body_head_loss`). Not to be
    confused with :func:`mathlib.mse_loss`, the *linear-regression* loss
    $\frac1{2n}\sum_k(x_k^\top w-y_k)^2$ of parameters $w$ (with the $\frac12$ of the closed forms):
    ``mse_loss(w, (X, y)) == 0.5 * mse(X @ w, y)``.
    """
    return jnp.mean(optax.losses.squared_error(pred, y))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Mean softmax cross-entropy $-\frac1n\sum_i \log \mathrm{softmax}(z_i)_{y_i}$.

    ``labels`` are integer class indices of shape ``logits.shape[:-1]``, or one-hot /
    probability vectors of the same shape as ``logits``.
    """
    if labels.ndim == logits.ndim:
        return jnp.mean(optax.losses.softmax_cross_entropy(logits, labels))
    return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of correct predictions, $\\frac1n\\sum_i[\\hat y_i=y_i]$.

    * multi-class logits of shape ``(..., C)`` with ``C > 1``: $\\hat y=\\arg\\max$ of the logits;
      ``labels`` are integer classes of shape ``logits.shape[:-1]``, or one-hot / probability vectors
      of the same shape as ``logits`` (then the true class is their argmax);
    * one logit per example (binary, shape ``(n,)`` or ``(n, 1)``): $\\hat y=[\\text{logit}>0]$ and
      ``labels`` are in {0, 1} with the same shape.
    """
    binary = logits.ndim == labels.ndim and (logits.ndim == 1 or logits.shape[-1] == 1)
    if binary:
        pred = (logits > 0).astype(labels.dtype)
        return jnp.mean(pred == labels)
    if labels.ndim == logits.ndim:  # one-hot or probabilities
        if labels.shape != logits.shape:
            raise ValueError(f"accuracy: shape mismatch: logits {logits.shape} and one-hot labels {labels.shape}")
        labels = jnp.argmax(labels, axis=-1)
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def mlp_mse_loss(params: Sequence[dict], batch, *, activation: str | Callable = "relu") -> jax.Array:
    """``mse(mlp_apply(params, x), y)`` for ``batch = (x, y)`` (sinusoid regression)."""
    x, y = batch
    return mse(mlp_apply(params, x, activation), y)


def logistic_loss(w: jax.Array, batch, *, l2: float = 0.0) -> jax.Array:
    r"""Binary logistic loss of the linear model $x^\top w$ with optional ridge term.

    $$\ell(w) = \frac1n\sum_i \big[\log(1 + e^{x_i^\top w}) - y_i x_i^\top w\big] + \frac{\lambda}{2}\norm{w}^2,$$

    with ``batch = (x, y)``, ``x`` of shape ``(n, d)``, labels ``y`` in {0, 1} of shape ``(n,)``
    and $\lambda$ = ``l2``. Its Hessian is $\frac1n X^\top \diag(s(1-s)) X + \lambda I \preceq
    (\frac{1}{4n}\norm{X}_2^2 + \lambda) I$ ($s$ the sigmoid of the logits).
    """
    x, y = batch
    check_matmul_shapes("logistic_loss", "x", x, "w", w)
    logits = x @ w
    loss = jnp.mean(optax.losses.sigmoid_binary_cross_entropy(logits, y.astype(logits.dtype)))
    if l2:
        loss = loss + 0.5 * l2 * jnp.sum(w * w)
    return loss


def mlp_xent_loss(params: Sequence[dict], batch, *, activation: str | Callable = "relu") -> jax.Array:
    """``softmax_cross_entropy(mlp_apply(params, x), y)`` for ``batch = (x, y)``, integer labels."""
    x, y = batch
    return softmax_cross_entropy(mlp_apply(params, x, activation), y)


def _body_features(body, batch, *, activation, normalize):
    x, y = batch
    return body_apply(body, x, activation, normalize=normalize), y


def _head_mse(head, fbatch, *, activation):
    z, y = fbatch
    return mse(mlp_apply(head, z, activation), y)


def _head_xent(head, fbatch, *, activation):
    z, y = fbatch
    return softmax_cross_entropy(mlp_apply(head, z, activation), y)


def body_head_loss(kind: str = "mse", *, activation: str | Callable = "relu", normalize: bool = False) -> HeadLoss:
    r"""Loss of a body/head network (:func:`init_body_head`) as a :class:`mathlib.HeadLoss`.

    ``kind="mse"``: ``mse(body_head_apply(params, x), y)``; ``kind="xent"``: softmax cross-entropy
    with integer labels; ``batch = (x, y)``. The split form lets ANIL compute the body's features
    once per batch (same values as the unsplit loss, less work).

    Raises:
      ValueError: unknown ``kind`` or ``activation``.
    """
    where = "body_head_loss"
    check_choice(where, "kind", kind, ("mse", "xent"))
    _activation_fn(activation, where)
    head = _head_mse if kind == "mse" else _head_xent
    return HeadLoss(
        features=functools.partial(_body_features, activation=activation, normalize=normalize),
        head_loss=functools.partial(head, activation=activation),
    )


#: ``body_head_loss("mse")``: ``mse(body_head_apply(params, x), y)`` for ``batch = (x, y)``, ReLU.
body_head_mse_loss = body_head_loss("mse")

#: ``body_head_loss("xent")``: softmax cross-entropy of ``body_head_apply(params, x)``, integer labels, ReLU.
body_head_xent_loss = body_head_loss("xent")
