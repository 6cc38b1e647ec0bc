"""Core containers and pytree helpers.

An *episode* bundles the three data batches that one task contributes to a meta-gradient
(Fallah et al., Algorithm 1): the inner-loop batch $D_{in}$ (``support``), the outer batch $D_o$
(``query``) and an independent batch $D_h$ for the Hessian / finite-difference term (``hessian``;
``None`` means "reuse ``support``").
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Episode",
    "HeadLoss",
    "hessian_batch",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_axpy",
    "tree_vdot",
    "tree_norm",
    "tree_mean",
    "tree_zeros_like",
    "tree_all_finite",
    "num_tasks",
    "jit_sample",
]


@dataclasses.dataclass(frozen=True)
class HeadLoss:
    r"""A loss of a body/head model, split at the features: $f(\phi,h;D)=\ell(h, z_\phi(D))$.

    ``loss(params, batch) == head_loss(params["head"], features(params["body"], batch))``, so a
    ``HeadLoss`` is an ordinary ``loss(params, batch)`` for every estimator. ANIL's inner loop
    (:func:`mathlib.adapt_head`) recognises it and evaluates the body's features $z_\phi(D_{in})$
    **once** instead of once per head step; exact ANIL gradients then back-propagate through the
    body once per batch, as a hand-written ANIL would. Results are identical to the unsplit loss.

    Attributes:
        features: ``features(body, batch) -> feature_batch`` (e.g. ``(z, y)``).
        head_loss: ``head_loss(head, feature_batch) -> scalar``.
    """

    features: Callable[[Any, Any], Any]
    head_loss: Callable[[Any, Any], jax.Array]

    def __call__(self, params, batch) -> jax.Array:
        return self.head_loss(params["head"], self.features(params["body"], batch))


class Episode(NamedTuple):
    """One task's batches for a meta-gradient estimate.

    Attributes:
        support: inner-loop batch $D_{in}$ (the adaptation $U_i(w)$ uses it).
        query: outer batch $D_o$ (the loss evaluated at the adapted point).
        hessian: independent batch $D_h$ for the Hessian-vector product of MAML and the finite
            differences of HF-MAML (Fallah et al., Alg. 1 and 3). ``None`` reuses ``support``,
            which makes ``maml_grad`` the plain autodiff gradient of the MAML objective.

    A batched episode (leading task axis on every leaf) is what ``meta_gradient`` consumes.
    """

    support: Any
    query: Any
    hessian: Any = None

    @classmethod
    def deterministic(cls, task) -> "Episode":
        r"""Episode using the same batch (e.g. a ``QuadraticTask``) for support, query and Hessian.

        Returns ``Episode(task, task, None)``: ``hessian=None`` means "reuse ``support``", so the
        Hessian term is evaluated on the same batch and estimators may reuse $\nabla f(w;D_{in})$.
        """
        return cls(task, task, None)


def hessian_batch(episode: Episode):
    """The batch $D_h$ of an episode: ``episode.hessian`` or, if it is None, ``episode.support``."""
    return episode.support if episode.hessian is None else episode.hessian


def tree_add(a, b):
    """Leafwise ``a + b``."""
    return jax.tree_util.tree_map(jnp.add, a, b)


def tree_sub(a, b):
    """Leafwise ``a - b``."""
    return jax.tree_util.tree_map(jnp.subtract, a, b)


def tree_scale(s, a):
    """Leafwise ``s * a`` for a scalar ``s``."""
    return jax.tree_util.tree_map(lambda x: s * x, a)


def tree_axpy(s, x, y):
    """Leafwise ``s * x + y``."""
    return jax.tree_util.tree_map(lambda u, v: s * u + v, x, y)


def tree_vdot(a, b):
    """Euclidean inner product of two pytrees with identical structure."""
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: jnp.vdot(x, y), a, b))
    return sum(leaves) if leaves else jnp.zeros(())


def tree_norm(a):
    """Euclidean norm of a pytree (all leaves flattened together)."""
    return jnp.sqrt(tree_vdot(a, a))


def tree_mean(a, axis: int = 0):
    """Mean of every leaf over ``axis`` (default: the leading task axis)."""
    return jax.tree_util.tree_map(lambda x: jnp.mean(x, axis=axis), a)


def tree_zeros_like(a):
    """Pytree of zeros with the structure, shapes and dtypes of ``a``."""
    return jax.tree_util.tree_map(jnp.zeros_like, a)


def tree_all_finite(a):
    """Scalar boolean: every leaf of ``a`` is finite (traceable)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(a)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def num_tasks(batched) -> int:
    """Size of the leading (task) axis of a batched pytree; raises ValueError if inconsistent."""
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in jax.tree_util.tree_leaves(batched)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"num_tasks: argument 'batched' must have one common leading task axis, got sizes {sizes}")
    return sizes.pop()


#: XLA options of :func:`jit_sample`'s small programs, whose compilation costs far more than their
#: run: LLVM optimisation level 0 compiles faster; results agree with the default level to round-off.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.lru_cache(maxsize=None)
def _compiled_sampler(fn, args, kw):
    return jax.jit(lambda key: fn(key, *args, **dict(kw)), compiler_options=_FAST_COMPILE)


def jit_sample(fn: Callable, key: jax.Array, *args, **kw):
    r"""``fn(key, *args, **kw)`` for a ``mathlib`` sampler (e.g. :func:`mathlib.sample_quadratic_tasks`),
    compiled as one program and cached per ``(fn, args, kw)``.

    Eager JAX compiles every operation of a sampler separately; one compiled program gives the same
    draws up to round-off at a fraction of the cost. ``args`` and ``kw`` are static (hashable:
    sizes, dtypes, ranges); only ``key`` is traced, so a new key reuses the compiled program.
    """
    try:
        return _compiled_sampler(fn, tuple(args), tuple(sorted(kw.items())))(key)
    except TypeError as err:
        if "unhashable" in str(err):
            raise TypeError(f"jit_sample: arguments after 'key' must be hashable (sizes, dtypes, tuples), got {args!r}, {kw!r}") from err
        raise
