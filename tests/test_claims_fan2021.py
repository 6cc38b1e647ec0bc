"""Claims of the chapter on Fan, Ram, Liu (2021), Sign-MAML; one test per claim.

Each test reads the quantities its notebook recorded in quick mode (``executed`` fixture,
``tests/conftest.py``) and asserts the claim with a tolerance that fails if the effect is gone.
Book pages: ``book/fan2021/experiments.md`` (numbers) and ``reproducibility.md`` (negatives).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebooks


def test_claim1_identity_jacobian(executed):
    """Implementation check: autodiff through K sign steps is the first-order gradient, J = I exactly."""
    r = executed("fan2021/01-exactness-and-jumps")
    assert r["fan2021-ex-nk"] >= 3
    assert r["fan2021-ex-autodiff-max"] == 0.0
    assert r["fan2021-ex-jac-max"] == 0.0
    # contrast: with a GD inner loop, dropping the Jacobian is not exact (relative gap >= 1 %)
    assert r["fan2021-ex-maml-fo-gap-min"] > 1e-2


def test_claim1_finite_difference(executed):
    """Empirical claim: a central finite difference of the piecewise objective agrees with the
    first-order gradient inside a piece (float64, delta = 1e-6: error at the O(delta^2) + round-off level)."""
    r = executed("fan2021/01-exactness-and-jumps")
    assert r["fan2021-ex-fd-same-piece"] >= r["fan2021-ex-nk"] - 1
    assert r["fan2021-ex-fd-max"] < 1e-6


def test_claim2_jumps(executed):
    """Empirical claim: the Sign-MAML objective jumps along a line (MAML's is smooth), jumps ~ alpha."""
    r = executed("fan2021/01-exactness-and-jumps")
    assert r["fan2021-line-nonzero-jumps"] >= 5
    # jumps are not discretisation: many orders of magnitude above the smooth residual
    assert r["fan2021-line-jump-over-resid"] > 1e6
    # second differences: O(alpha) jumps against O(h^2) smooth curvature
    assert r["fan2021-line-d2-ratio"] > 1e3
    # linear in alpha to leading order (a constant or quadratic scaling would fail)
    assert 0.7 <= r["fan2021-jump-alpha-slope"] <= 1.3
    assert r["fan2021-jump-count-min"] >= 5
