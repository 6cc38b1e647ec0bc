"""Claims of the chapter on Mishchenko, Hanzely, Richtárik (ICML 2023), one test per claim.

Each test reads the quantities its notebook recorded in quick mode (``executed`` fixture,
``tests/conftest.py``) and asserts the claim with a tolerance that fails if the effect is gone.
Book pages: ``book/mishchenko2023/experiments.md`` (numbers) and ``reproducibility.md``.
Each test says whether it is an implementation check (an identity or a proved inequality,
true by construction) or an empirical claim (something that could have come out otherwise).
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebooks


def test_claim1_envelope_identities_implementation_check(executed):
    """Implementation check: the identities of lemma mishchenko2023-lem-envelope on a logistic task."""
    r = executed("mishchenko2023/01-envelope")
    assert r["mishchenko2023-env-fixed-point-err"] < 1e-12
    assert r["mishchenko2023-env-grad-relerr"] < 1e-12
    assert r["mishchenko2023-env-moreau-grad-relerr"] < 1e-12
    assert r["mishchenko2023-env-directional-relerr"] < 1e-8  # central difference, h = 1e-5
    assert r["mishchenko2023-env-value-err"] < 1e-12
    assert r["mishchenko2023-env-hessian-relerr"] < 1e-10
    assert r["mishchenko2023-env-eigs-relerr"] < 1e-10


def test_claim1_conditioning_implementation_check(executed):
    """Implementation check: kappa_M = kappa (1 + lam mu)/(1 + lam L), decreasing to 1; nonconvex L/(1 - lam L)."""
    r = executed("mishchenko2023/01-envelope")
    assert r["mishchenko2023-env-kappa-relerr"] < 1e-10
    assert r["mishchenko2023-env-LM-relerr"] < 1e-10
    assert r["mishchenko2023-env-kappa-monotone"] is True
    assert r["mishchenko2023-env-kappa-largest-lam"] < 1.05 < 0.5 * r["mishchenko2023-env-kappa"]
    assert r["mishchenko2023-env-nonconvex-relerr"] < 1e-10
    assert r["mishchenko2023-env-nonconvex-smooth-at-max"] > 10.0  # blows up as lam L -> 1


def test_claim2_perturbed_identity_implementation_check(executed):
    """Implementation check: lemma mishchenko2023-lem-perturbed (identity to round-off, radius within its bound)."""
    r = executed("mishchenko2023/02-sstep-quadratic")
    assert r["mishchenko2023-q-identity-relerr"] < 1e-12
    assert r["mishchenko2023-q-radius-ratio-max"] <= 1.0 + 1e-12
    # the bound is not vacuous: the typical task uses a good part of it
    assert r["mishchenko2023-q-radius-ratio-median"] > 0.2
    assert r["mishchenko2023-q-driver-vs-moreau-grad"] < 1e-12
    assert r["mishchenko2023-q-driver-vs-fomaml-grad"] < 1e-12


def test_claim2_neighbourhood_shrinks_with_ratio_lamL_empirical(executed):
    """Empirical claim: ||w_s - w*|| shrinks geometrically in s with ratio lam L (two values of lam L)."""
    r = executed("mishchenko2023/02-sstep-quadratic")
    for key, lamL in (("small", r["mishchenko2023-q-lam-small"]), ("large", r["mishchenko2023-q-lam-large"])):
        assert abs(r[f"mishchenko2023-q-ratio-{key}"] / lamL - 1) < 0.06
    assert r["mishchenko2023-q-fomaml-dist"] > 1e-2  # FO-MAML's neighbourhood is visible
    assert r["mishchenko2023-q-dist-smax"] < 1e-2 * r["mishchenko2023-q-fomaml-dist"]
    # trajectories end on the closed-form fixed points; shared minimiser: no neighbourhood
    assert r["mishchenko2023-q-plateau-relerr"] < 1e-8
    assert r["mishchenko2023-q-shared-dist"] < 1e-12
    # the derived bounds hold where their conditions hold, and are loose (one to three orders)
    assert 1.0 <= r["mishchenko2023-q-naive-slack"] < 1e3
    assert 1.0 <= r["mishchenko2023-q-pert-slack"] < 1e3
    # at this small kappa_M the bias-only bound is the tighter one (remark mishchenko2023-rem-kappa)
    assert r["mishchenko2023-q-kappa-M"] < 24
    assert r["mishchenko2023-q-naive-slack"] < r["mishchenko2023-q-pert-slack"]


def test_claim2_placement_of_minimisers_empirical(executed):
    """Empirical claim: FO-MAML is O(lam^2) from Moreau, O(lam) from MAML; MAML is O(lam^2) from iMAML."""
    r = executed("mishchenko2023/02-sstep-quadratic")
    assert 1.8 <= r["mishchenko2023-q-slope-fomaml-moreau"] <= 2.2
    assert 1.8 <= r["mishchenko2023-q-slope-maml-imaml"] <= 2.2
    assert 0.85 <= r["mishchenko2023-q-slope-fomaml-maml"] <= 1.3
    assert 0.85 <= r["mishchenko2023-q-slope-maml-moreau"] <= 1.3
    assert 0.85 <= r["mishchenko2023-q-slope-moreau-joint"] <= 1.15
    assert r["mishchenko2023-q-fo-nearer-moreau-rate"] == 1.0
    # at lam L = 0.5 the ordering is no longer the first-order one: FO-MAML is nearer iMAML than Moreau
    assert r["mishchenko2023-q-dist-fomaml-imaml"] < r["mishchenko2023-q-dist-fomaml-moreau"]


def test_claim3_digits_plateau_against_s_empirical(executed):
    """Empirical claim: on digits logistic tasks the plateau shrinks geometrically in s, ratio near lam h_max <= lam L."""
    r = executed("mishchenko2023/03-digits")
    assert r["mishchenko2023-dig-wstar-grad"] < 1e-12
    assert r["mishchenko2023-dig-monotone"] is True
    assert r["mishchenko2023-dig-flatness"] < 1e-2  # a plateau, not a run stopped early
    assert r["mishchenko2023-dig-ratio"] < r["mishchenko2023-dig-lamL"]
    assert abs(r["mishchenko2023-dig-ratio"] / r["mishchenko2023-dig-lam-hmax"] - 1) < 0.2
    assert r["mishchenko2023-dig-plateau-smax"] < 1e-2 * r["mishchenko2023-dig-plateau-s1"]
    # the bias-only bound with the global constants holds, and is loose by orders of magnitude
    assert r["mishchenko2023-dig-naive-valid"] is True
    assert 100.0 <= r["mishchenko2023-dig-naive-min-slack"] < 1e5


def test_claim4_variance_floor_matches_exact_stationary_value_implementation_check(executed):
    """Implementation check (Monte Carlo): simulated stationary errors match the derived lemma mishchenko2023-lem-lyapunov."""
    r = executed("mishchenko2023/04-stochastic")
    assert 0.85 <= r["mishchenko2023-st-ratio-min"] <= r["mishchenko2023-st-ratio-max"] <= 1.15
    assert r["mishchenko2023-st-full-relerr"] < 1e-6


def test_claim4_variance_floor_scales_with_beta_and_batch_empirical(executed):
    """Empirical claim: the variance part is ~linear in beta and proportional to c_B; s helps only at small variance."""
    r = executed("mishchenko2023/04-stochastic")
    assert 0.8 <= r["mishchenko2023-st-slope-beta-min"] <= r["mishchenko2023-st-slope-beta-max"] <= 1.2
    assert 0.85 <= r["mishchenko2023-st-cB-ratio-min"] <= r["mishchenko2023-st-cB-ratio-max"] <= 1.15
    assert r["mishchenko2023-st-gain-full"] > 10.0  # full batch: the bias floor drops with s
    assert 0.5 < r["mishchenko2023-st-gain-B1"] < 1.1  # one task per step: variance dominates, s does not lower it
    # the derived bound applies in a few cells only, holds there, and is loose by orders of magnitude
    assert 0 < r["mishchenko2023-st-bound-cells"] < r["mishchenko2023-st-ncells"]
    assert 10.0 <= r["mishchenko2023-st-bound-slack"] < 1e4


def test_claim5_imaml_counterexample_implementation_check(executed):
    """Implementation check: the derivative jump of proposition mishchenko2023-prop-imaml, via mathlib's estimators."""
    r = executed("mishchenko2023/05-imaml")
    assert abs(r["mishchenko2023-im-g-left"] - r["mishchenko2023-im-g-left-pred"]) < 1e-5
    assert abs(r["mishchenko2023-im-g-right"] - r["mishchenko2023-im-g-right-pred"]) < 1e-5
    assert r["mishchenko2023-im-M-jump"] < 1e-5
    assert r["mishchenko2023-im-der-err"] < 1e-8
    assert r["mishchenko2023-im-M-der-err"] < 1e-8
    assert r["mishchenko2023-im-g-d2-min"] < -100  # a concave kink: not convex
    assert r["mishchenko2023-im-M-d2-min"] > -1e-6


def test_claim5_smooth_variant_curvature_unbounded_implementation_check(executed):
    """Implementation check (of a derived asymptotic): min g'' of the smooth variant grows like 1/eps, at the leading order of the proposition."""
    r = executed("mishchenko2023/05-imaml")
    assert -1.1 <= r["mishchenko2023-im-eps-slope"] <= -0.9  # -min g'' ~ 1/eps
    assert r["mishchenko2023-im-curv-eps-min"] < -10.0
    assert abs(r["mishchenko2023-im-pred-ratio"] - 1) < 0.1


def test_claim5_cg_meta_gradient_converges_empirical(executed):
    """Empirical claim: CG's iMAML meta-gradient converges to the exact one within CG's rate bound."""
    r = executed("mishchenko2023/05-imaml")
    assert r["mishchenko2023-im-cg-err-first"] > 1e-3
    assert r["mishchenko2023-im-cg-err-last"] < 1e-10
    assert r["mishchenko2023-im-cg-bound-holds"] is True
    assert r["mishchenko2023-im-cg-monotone"] is True
    assert r["mishchenko2023-im-vs-moreau"] > 1e-2  # iMAML and Moreau gradients differ
    assert math.isfinite(r["mishchenko2023-im-cg-kappa"])
