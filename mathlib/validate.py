"""Argument checkers (public): each names the calling function and the argument in its message.

``check_positive("my_fn", "alpha", alpha)`` raises
``ValueError("my_fn: argument 'alpha' must be > 0, got -0.1")``. Useful for code built on mathlib
that wants the same error style; the core uses the same functions.
"""

from mathlib._validate import *  # noqa: F401,F403
from mathlib._validate import __all__  # noqa: F401
