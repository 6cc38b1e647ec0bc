"""Python-level argument checkers used throughout mathlib.

Every checker takes the calling function's name ``fn`` and the argument's name ``name`` so that the
message reads, e.g., ``"hf_maml_grad: argument 'delta' must be > 0, got -0.1"``. Checks run at
Python level on concrete values; a traced value (inside ``jit``/``vmap``) is silently accepted, so the
checkers are safe to call inside code that may be traced.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_in_range",
    "check_choice",
    "check_finite",
    "check_shape",
    "check_same_shape",
    "check_alpha_steps",
    "check_matmul_shapes",
    "renamed_argument",
    "is_concrete",
]


def is_concrete(x) -> bool:
    """True when no leaf of ``x`` is a JAX tracer (i.e. the value can be inspected in Python)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _scalar(fn: str, name: str, value):
    """Return ``value`` as a Python float, or None if it is traced. Raise TypeError if not scalar."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, bool):
        raise TypeError(f"{fn}: argument '{name}' must be a real number, got bool {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # pragma: no cover - defensive
        raise TypeError(f"{fn}: argument '{name}' must be a real number, got {type(value).__name__}") from exc
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise TypeError(
            f"{fn}: argument '{name}' must be a real scalar, got {type(value).__name__} with shape {arr.shape}"
        )
    return float(arr)


def check_positive(fn: str, name: str, value, *, allow_inf: bool = False):
    """Require a finite real scalar ``value > 0``. Returns ``value`` unchanged."""
    v = _scalar(fn, name, value)
    if v is None:
        return value
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or not v > 0:
        raise ValueError(f"{fn}: argument '{name}' must be > 0 and finite, got {value!r}")
    return value


def check_nonnegative(fn: str, name: str, value):
    """Require a finite real scalar ``value >= 0``. Returns ``value`` unchanged."""
    v = _scalar(fn, name, value)
    if v is None:
        return value
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{fn}: argument '{name}' must be >= 0 and finite, got {value!r}")
    return value


def check_int(fn: str, name: str, value, *, minimum: int = 1):
    """Require a Python/NumPy integer ``value >= minimum`` (bools rejected). Returns ``int(value)``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{fn}: argument '{name}' must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{fn}: argument '{name}' must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_in_range(fn: str, name: str, value, low=None, high=None, *, low_inclusive=True, high_inclusive=True):
    """Require ``low <(=) value <(=) high`` (a bound of None is not checked). Returns ``value``."""
    v = _scalar(fn, name, value)
    if v is None:
        return value
    lo_ok = low is None or (v >= low if low_inclusive else v > low)
    hi_ok = high is None or (v <= high if high_inclusive else v < high)
    if math.isnan(v) or not (lo_ok and hi_ok):
        lb = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        hb = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{fn}: argument '{name}' must be in {lb}, {hb}, got {value!r}")
    return value


def check_choice(fn: str, name: str, value, choices):
    """Require ``value in choices``. Returns ``value``."""
    if value not in tuple(choices):
        raise ValueError(f"{fn}: argument '{name}' must be one of {tuple(choices)!r}, got {value!r}")
    return value


def check_finite(fn: str, name: str, tree):
    """Require every (concrete) leaf of the pytree ``tree`` to be finite. Returns ``tree``."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.core.Tracer):
            continue
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{fn}: argument '{name}' must be finite, got {bad} non-finite value(s)")
    return tree


def check_alpha_steps(fn: str, alpha, steps, name_steps: str = "steps") -> int:
    """Require ``alpha > 0`` and an integer ``steps >= 1`` (the inner step and number of inner steps). Returns ``int(steps)``."""
    check_positive(fn, "alpha", alpha)
    return check_int(fn, name_steps, steps)


def check_matmul_shapes(fn: str, x_name: str, x, w_name: str, w, what: str = "parameters"):
    """Require ``x.shape[-1] == w.shape[0]`` (for ``x @ w``); the error names both shapes."""
    sx, sw = tuple(jnp.shape(x)), tuple(jnp.shape(w))
    if not sx or not sw or sx[-1] != sw[0]:
        raise ValueError(
            f"{fn}: shape mismatch: {x_name} has shape {sx} but {w_name} has shape {sw} "
            f"({x_name}'s last axis must equal {w_name}'s first axis); do the {what} match the data's dimension?"
        )


def renamed_argument(fn: str, new_name: str, new_value, old_name: str, old_value, default=None):
    """Resolve a renamed keyword: ``old_name`` still works with a ``DeprecationWarning``; both at once is an error.

    Returns the value to use (``new_value``, else ``old_value``, else ``default``).
    """
    if old_value is None:
        return default if new_value is None else new_value
    if new_value is not None:
        raise TypeError(f"{fn}: pass either '{new_name}' or its deprecated name '{old_name}', not both")
    import warnings

    warnings.warn(f"{fn}: argument '{old_name}' is deprecated, use '{new_name}'", DeprecationWarning, stacklevel=3)
    return old_value


def check_shape(fn: str, name: str, x, shape):
    """Require ``jnp.shape(x) == shape``; entries of ``shape`` that are None match any size."""
    got = tuple(jnp.shape(x))
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{fn}: argument '{name}' must have shape {want}, got {got}")
    return x


def check_same_shape(fn: str, name: str, x, ref_name: str, ref):
    """Require the pytree ``x`` to have the same structure and leaf shapes as ``ref``."""
    sx, sr = jax.tree_util.tree_structure(x), jax.tree_util.tree_structure(ref)
    if sx != sr:
        raise ValueError(f"{fn}: argument '{name}' must have the same pytree structure as '{ref_name}' ({sr}), got {sx}")
    for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(ref)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"{fn}: argument '{name}' must have the same shapes as '{ref_name}' ({jnp.shape(b)}), got {jnp.shape(a)}"
            )
    return x
