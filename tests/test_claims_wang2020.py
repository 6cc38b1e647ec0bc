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
    # two-sided: at small width the two are of the same order (within 10x), at the largest widths
    # the gap exceeds the representation error by >= 100x
    assert 0.1 < r["wang2020-rf-rep-first"] / r["wang2020-rf-gap-first"] < 10.0
    assert r["wang2020-rf-gap-last"] > 100 * r["wang2020-rf-rep-last"]
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
    assert r["wang2020-cx-first-alpha-spurious"] > 1.5        # not at 1: the condition is not sharp here


def test_claim2_two_layer_linearisation_error_shrinks_with_width_empirical(executed):
    """Empirical claim: the network trained by MAML approaches its linearisation (same optimiser, same
    budget) as the width grows, and its parameters move relatively less (towards the lazy regime).
    Negative finding, also asserted: within the budget the runs are not at stationary points."""
    r = executed("wang2020/02-two-layer-width")
    assert r["wang2020-nn-alphaL"] < 1.0
    assert r["wang2020-nn-linerr-last"] < 0.2 * r["wang2020-nn-linerr-first"]
    assert r["wang2020-nn-linerr-slope"] < -0.5
    assert r["wang2020-nn-grad-max-last"] > 1e-3          # not stationary: the page says so
    assert r["wang2020-nn-move-slope"] < -0.1
    assert r["wang2020-nn-move-last"] < r["wang2020-nn-move-first"]
    # the linearised model's global minimum improves with width (more tangent features)
    assert r["wang2020-nn-lin-last"] < r["wang2020-nn-lin-first"]


def test_claim3_tabular_rl_fraction_reaching_global_optimum_empirical(executed):
    """Empirical claim: with exact evaluation, every MAML run reaches the global maximum on small balls;
    on large balls runs end at a suboptimal stationary point (projected-gradient norm at round-off),
    inside the ball rather than on the sphere; the alpha=0 baseline reaches the global maximum always."""
    r = executed("wang2020/03-tabular-rl")
    assert r["wang2020-rl-reached-smallest-R"] == 1.0
    assert r["wang2020-rl-reached-largest-R"] <= 0.25
    assert r["wang2020-rl-n-bad"] >= 1
    assert r["wang2020-rl-bad-gap-min"] > 1e-3           # genuinely suboptimal
    assert r["wang2020-rl-bad-pg-max"] < 1e-8            # and genuinely stationary
    assert r["wang2020-rl-Fstar-largest-R"] > r["wang2020-rl-Fstar-smallest-R"]
    assert r["wang2020-rl-pgstar-max"] < 1e-6            # the refined global maximiser is stationary
    assert r["wang2020-rl-alphaL"] > 1.0                 # outside the condition (measured)
    assert r["wang2020-rl-bad-on-sphere"] == 0.0         # interior, not boundary, stationary points
    assert r["wang2020-rl-bad-norm-max"] < r["wang2020-rl-R-smallest"]
    assert r["wang2020-rl-reached0-min"] == 1.0          # no adaptation: no suboptimal end points


def test_claim4a_pdl_identity_and_bound_implementation_check(executed):
    """Implementation check: the performance-difference identity and the concentrability bound
    (lemma wang2020-lem-pdl-bound) hold at every measured point."""
    r = executed("wang2020/03-tabular-rl")
    assert r["wang2020-cc-pdl-err"] < 1e-9
    assert r["wang2020-cc-bound-ratio-min"] >= 1.0 - 1e-9


def test_claim4b_mismatch_tracks_bound_looseness_not_gap_empirical(executed):
    """Empirical claim: the measured mismatch varies across the families and the bound's looseness
    (bound/gap) rises with it, while the gap itself varies much less (two-sided)."""
    r = executed("wang2020/03-tabular-rl")
    assert r["wang2020-cc-C-max"] > 2.0 * r["wang2020-cc-C-min"]
    assert r["wang2020-cc-ratio-spearman"] > 0.7
    assert r["wang2020-cc-ratio-max"] > 2.0                   # the bound becomes loose
    assert r["wang2020-cc-gap-range-ratio"] < 2.0
    assert r["wang2020-cc-spearman"] < r["wang2020-cc-ratio-spearman"]
