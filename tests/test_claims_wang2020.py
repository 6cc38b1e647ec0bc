"""Claims of the chapter on Wang, Cai, Yang, Wang (ICML 2020), one test per claim.

Each test reads the quantities its notebook recorded in quick mode (``executed`` fixture,
``tests/conftest.py``) and asserts the claim with a tolerance that fails if the effect is gone.
Book pages: ``book/wang2020/experiments.md`` (numbers) and ``reproducibility.md`` (negatives).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebooks


def test_claim1a_linear_maml_one_end_point_implementation_check(executed):
    """Implementation check: population least-squares MAML is a convex quadratic (prop. wang2020-prop-linear),
    so gradient descent from far-apart starts ends at the closed-form minimiser, at round-off."""
    r = executed("wang2020/01-linear-global")
    assert r["wang2020-lin-start-dist-min"] > 1.0
    assert r["wang2020-lin-dist-in"] < 1e-10
    assert r["wang2020-lin-dist-out"] < 1e-10
    assert r["wang2020-lin-spread-in"] < 1e-10
    assert r["wang2020-lin-grad-max"] < 1e-10
    assert r["wang2020-lin-Fgap-max"] < 1e-10
    # convex outside alpha L < 1 too (M_i = P Sigma P is PSD for every alpha)
    assert r["wang2020-lin-hess-min-in"] > 0 and r["wang2020-lin-hess-min-out"] > 0


def test_claim1b_random_feature_gap_falls_with_width_empirical(executed):
    """Empirical claim: MAML's global minimum improves with the number of random features (gap to the
    widest model falls by more than 2x over the sweep); the representation error falls much faster,
    so at large width the remaining gap is NOT representation error (reported in reproducibility)."""
    r = executed("wang2020/01-linear-global")
    assert r["wang2020-rf-alphaL-max"] < 1.0                 # inside the condition
    assert r["wang2020-rf-hess-min"] > -1e-10                # convex: every stationary point global
    assert r["wang2020-rf-gap-first"] > 2.0 * r["wang2020-rf-gap-last"]
    assert r["wang2020-rf-gap-slope"] < -0.2
    assert r["wang2020-rf-rep-first"] > 100 * r["wang2020-rf-rep-last"]
    assert r["wang2020-rf-rep-slope"] < r["wang2020-rf-gap-slope"] - 1.0
    # two-sided: at the largest widths the gap exceeds the representation error by >= 10x
    assert r["wang2020-rf-gap-last"] > 10 * r["wang2020-rf-rep-last"]
    # MAML's optimum beats the zero predictor
    assert r["wang2020-rf-Fstar-last"] < r["wang2020-rf-zero-predictor"]


def test_claim5_counterexample_outside_conditions_empirical(executed):
    """Empirical claim: with convex 1-smooth log-cosh tasks, alpha L < 1 gives a single minimum reached by
    every run; alpha L = 2 gives a spurious local minimum that traps a positive fraction of runs."""
    r = executed("wang2020/04-counterexample")
    assert r["wang2020-cx-inside-max-minima"] == 1
    assert r["wang2020-cx-inside-frac-bad"] == 0.0
    assert r["wang2020-cx-inside-min-d2"] > -1e-10          # convex inside the condition
    assert r["wang2020-cx-outside-min-minima"] >= 2
    assert r["wang2020-cx-a2-gap"] > 1e-2                    # the spurious minimum is strictly worse
    assert 0.1 <= r["wang2020-cx-a2-frac-bad"] <= 0.9        # a rate over the grid of starts
    assert r["wang2020-cx-a2-min-d2"] < 0                    # nonconvex
    assert r["wang2020-cx-gmax"] < 1e-6                      # the end points are stationary
    assert r["wang2020-cx-first-alpha-spurious"] > 1.0
