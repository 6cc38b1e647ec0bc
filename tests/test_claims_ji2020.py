"""Claims of the chapter on Ji, Lee, Liang, Poor (NeurIPS 2020): ANIL. One test per claim.

Each test reads the quantities its notebook recorded in quick mode (``executed`` fixture,
``tests/conftest.py``) and asserts the claim with a tolerance that fails if the effect is gone.
Book pages: ``book/ji2020/experiments.md`` (numbers) and ``reproducibility.md`` (negatives).
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebooks


def test_claim1_jacobian_envelopes(executed):
    """Implementation check (a proved inequality, attained for our head): the SC Jacobian equals
    (1 - alpha mu)^N because the softmax shift directions are common eigenvectors; the lemma's
    step-size condition holds; the NC Jacobian never exceeds (1 + alpha L)^N."""
    r = executed("ji2020/01-inner-jacobian")
    assert r["ji2020-jac-sc-cond"] <= 2.0
    assert r["ji2020-jac-sc-mu"] == pytest.approx(r["ji2020-jac-lam"], rel=1e-8)
    assert r["ji2020-jac-sc-L"] <= 1.0 + r["ji2020-jac-lam"]  # derived bound for unit-norm features
    assert r["ji2020-jac-sc-maxdev"] < 1e-10
    assert r["ji2020-jac-sc-rate"] == pytest.approx(r["ji2020-jac-sc-rate-pred"], rel=1e-8)
    assert r["ji2020-jac-nc-max-ratio"] <= 1.0 + 1e-12


def test_claim1_nonconvex_jacobian_grows(executed):
    """Empirical claim: at the same alpha the NC head's Jacobian grows (on every task), at an early
    rate close to the initial negative curvature, 1 + alpha nu_0, and far below the envelope."""
    r = executed("ji2020/01-inner-jacobian")
    assert r["ji2020-jac-nc-frac-grown"] == 1.0  # every task: ||J_N|| > 2
    assert r["ji2020-jac-nc-final-min"] > 2.0
    early, nu0, env = r["ji2020-jac-nc-rate-early"], r["ji2020-jac-nc-rate-nu0"], r["ji2020-jac-nc-rate-env"]
    assert early > 1.02
    assert abs(math.log(early) / math.log(nu0) - 1) < 0.35
    assert math.log(env) > 2 * math.log(early)  # the envelope's rate is loose by more than 2x in log
    # and the envelope at N is loose by orders of magnitude
    assert r["ji2020-jac-nc-final-median"] < 1e-3 * env ** r["ji2020-jac-nsteps"]


def test_claim3_implicit_limit_implementation(executed):
    """Implementation checks: three computations of one gradient agree (recursion, masked scan,
    implicit formula at a Newton-solved h*), and the body cannot see the (d_z + 1) softmax shifts."""
    r = executed("ji2020/03-implicit-gradient")
    assert r["ji2020-impl-check-recursion"] < 1e-10
    assert r["ji2020-impl-check-masked"] < 1e-10
    assert r["ji2020-impl-residual-max"] < 1e-10
    assert r["ji2020-impl-invisible"] == 17  # (d_z + 1) shift directions, d_z = 16


def test_claim3_implicit_limit_geometric_decay(executed):
    """Empirical claim: the body error and the head gradient decay geometrically, at a ratio within
    25 % (in log) of the predicted one. At our sizes the slowest eigenvalue the body sees is within
    1 % of the smallest one (recorded gap), so this does not separate rho_phi from rho_h."""
    r = executed("ji2020/03-implicit-gradient")
    assert r["ji2020-impl-err-nmax"] < 1e-2 * r["ji2020-impl-err-n1"]
    assert r["ji2020-impl-err-n10"] < r["ji2020-impl-err-n1"]
    assert r["ji2020-impl-head-nmax"] < 1e-2 * r["ji2020-impl-head-n1"]
    assert r["ji2020-impl-fit-body-maxdev"] < 0.25
    assert r["ji2020-impl-fit-head-maxdev"] < 0.25
    assert r["ji2020-impl-fit-body"] < 1.0
    assert 0.0 <= r["ji2020-impl-mu-body-gap"] < 0.01  # the page's "cannot separate rho_phi from rho_h"


def test_claim2_strongly_convex_effect_is_alpha_times_n(executed):
    """Empirical claims (SC head): at a fixed alpha the final meta-loss falls monotonically in N and
    the head gradient vanishes; with alpha proportional to 1/N nothing depends on N (within 3 %);
    the time-averaged squared gradient the theorem bounds does not fall with N at a fixed beta; at
    initialisation the largest Hessian eigenvalue of L_N grows from N = 1 to N = 4 with the body block;
    implementation check: every fitted rate in k of the running average is close to 1/k, as it must
    be once the accumulated sum of squared gradients has converged (not evidence about N)."""
    r = executed("ji2020/02-convergence")
    assert r["ji2020-conv-sc-diverged"] == 0
    assert r["ji2020-conv-sc-loss-fixed-decrease-frac"] == 1.0
    assert r["ji2020-conv-sc-loss-fixed-ratio"] < 0.9
    assert r["ji2020-conv-sc-loss-large-ratio"] < 1.0
    assert abs(r["ji2020-conv-sc-loss-scaled-ratio"] - 1.0) < 0.03
    assert abs(r["ji2020-conv-sc-scaled-ratio"] - 1.0) < 0.05
    assert r["ji2020-conv-sc-fixed-ratio"] > 1.1  # not faster by the theorem's measure
    assert r["ji2020-conv-sc-head-share-nmax"] < 0.01 * r["ji2020-conv-sc-head-share-n1"]
    # theory page: at initialisation the curvature of L_N grows from N = 1 to N = 4, carried by the body block
    assert r["ji2020-conv-sc-hess-n4"] > 1.2 * r["ji2020-conv-sc-hess-n1"]
    assert r["ji2020-conv-sc-hess-body-n4"] > r["ji2020-conv-sc-hess-body-n1"]
    assert r["ji2020-conv-sc-hess-head-n4"] < r["ji2020-conv-sc-hess-head-n1"] < r["ji2020-conv-sc-hess-body-n4"]
    # implementation check: k * (running average) is nondecreasing, so a converged sum gives slope -1
    assert -1.1 <= r["ji2020-conv-sc-rate-min"] <= r["ji2020-conv-sc-rate-median"] <= -0.8


def test_claim2_nonconvex_not_slower_at_the_quick_horizon(executed):
    """Empirical claim (NC head) over the short horizon (short_steps outer steps, the quick-mode run's
    length; full mode records the same ratios at that step of its longer run): N = 16 reaches a lower
    meta-loss than N = 1 at the same alpha and at a 3x larger alpha, and with alpha proportional to
    1/N the loss changes by less than 20 %; no run diverged. Checked on the quick-mode records, at the
    book's seed only: on some other seeds the 1/N band fails (the reproducibility page says so)."""
    r = executed("ji2020/02-convergence")
    assert r["ji2020-conv-nc-diverged"] == 0
    assert r["ji2020-conv-nc-short-steps"] == r["ji2020-conv-steps"]  # in quick mode the sweep ends there
    assert r["ji2020-conv-nc-loss-fixed-ratio"] < 0.5
    assert r["ji2020-conv-nc-loss-large-ratio"] < 0.7
    assert 0.8 < r["ji2020-conv-nc-loss-scaled-ratio"] < 1.2
    assert r["ji2020-conv-nc-short-fixed-ratio"] < 0.5
    assert r["ji2020-conv-nc-short-large-ratio"] < 0.7
    assert 0.8 < r["ji2020-conv-nc-short-scaled-ratio"] < 1.2
    assert r["ji2020-conv-nc-fixed-ratio"] < 1.0


def test_claim2_nonconvex_slower_at_the_long_horizon(executed):
    """Empirical claim (NC head) at the published run's length (long_steps outer steps): at the 3x
    inner step and with alpha proportional to 1/N, N = 1 ends with a lower meta-loss than N = 16
    (ratio of the medians over seeds above 1), the paper's direction. Quick mode computes this by a
    continuation of those configurations of its sweep, whose initialisations are the published
    run's first ones (full mode reads it from its sweep, over all seeds); this test checks the quick-mode records.
    At the base inner step the long-horizon ratio is close to 1 and the seeds disagree, which the
    chapter says; it is recorded, not asserted. At the book's seed only: on one other seed the
    larger-step ratio fell to 1 (the reproducibility page says so)."""
    r = executed("ji2020/02-convergence")
    assert r["ji2020-conv-nc-long-steps"] > r["ji2020-conv-nc-short-steps"]
    assert r["ji2020-conv-nc-long-seeds"] >= 3
    assert r["ji2020-conv-nc-long-large-ratio"] > 1.0
    assert r["ji2020-conv-nc-long-scaled-ratio"] > 1.0
    # the reversal: the same comparisons favour N = 16 at the short horizon
    assert r["ji2020-conv-nc-short-large-ratio"] < 1.0 < r["ji2020-conv-nc-long-large-ratio"]


def test_claim4_anil_vs_maml(executed):
    """Empirical claims at matched budgets (quick mode: 300 outer steps of 10 tasks on sinusoids, 50 on
    digits, where the gap is already there after the first evaluations and a MAML step costs far more;
    ANIL and MAML always get the same number of steps): both methods
    learn; MAML adapts better at this budget (significantly on digits, by a paired 95 % CI over
    seeds). ANIL's lower cost per meta-step is reported from timings, not asserted."""
    r = executed("ji2020/04-anil-vs-maml")
    n = r["ji2020-cmp-inner-steps"]
    for m in ("anil", "maml"):
        assert r[f"ji2020-cmp-digits-{m}-mean"] > r[f"ji2020-cmp-digits-{m}-init"] + 0.03
        assert r[f"ji2020-cmp-sinusoid-{m}-mean"] < 0.8 * r[f"ji2020-cmp-sinusoid-{m}-init"]
    assert r["ji2020-cmp-digits-diff"] + r["ji2020-cmp-digits-diff-ci"] < 0  # MAML more accurate
    assert r["ji2020-cmp-sinusoid-diff"] > 0  # MAML lower MSE (point estimate)
    # No assertion on wall-clock time (ji2020-cmp-*-time-ratio): house rule, speed is measured side
    # by side in a benchmark and reported, never asserted in a test.
