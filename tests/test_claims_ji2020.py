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
    1/N the loss changes by less than 20 %; no run diverged. Checked on the quick-mode records of the
    book's task family only: across families (notebook 05) the 1/N ratio at this horizon ranges wider,
    and the 3x-step comparison is the one asserted on every family (the tests of notebook 05)."""
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


def test_claim2_nonconvex_families_short_horizon_and_averaged_gradient(executed):
    """Empirical claims (NC head, notebook 05: several task families, each its own tasks and
    initialisation, N = 16 against N = 1). At the 3x inner step N = 16 has the lower meta-loss after
    short_steps outer steps on every family (median ratio below 0.5); and by the time-averaged squared
    meta-gradient, the quantity the theorems bound, N = 16 is lower on every family at both inner
    steps, by more than a factor 2. No run diverged."""
    r = executed("ji2020/05-nonconvex-families")
    assert r["ji2020-nc-seeds-nfamilies"] >= 3
    assert r["ji2020-nc-seeds-diverged"] == 0
    assert r["ji2020-nc-seeds-long-steps"] > r["ji2020-nc-seeds-short-steps"]
    assert r["ji2020-nc-seeds-large-short-frac-n16-lower"] == 1.0
    assert r["ji2020-nc-seeds-large-short-median"] < 0.5
    for g in ("large", "scaled"):
        assert r[f"ji2020-nc-seeds-{g}-gradavg-frac-n16-lower"] == 1.0
        assert r[f"ji2020-nc-seeds-{g}-gradavg-max"] < 0.5


def test_claim2_nonconvex_long_horizon_depends_on_the_summary(executed):
    """Empirical claims (notebook 05) after long_steps outer steps, on medians over families (single
    families are sensitive to tiny perturbations, next test): with alpha proportional to 1/N, N = 1 has the lower
    meta-loss by the lowest value reached and by the mean over the last steps; at the 3x step the lowest
    value reached favours N = 1 (median ratio above 1.1) while the mean over the last steps favours
    N = 16 (median ratio below 1): the verdict at that step depends on how a run is summarised."""
    r = executed("ji2020/05-nonconvex-families")
    assert r["ji2020-nc-seeds-scaled-best-median"] > 1.3
    assert r["ji2020-nc-seeds-scaled-tail-median"] > 1.2
    assert r["ji2020-nc-seeds-large-best-median"] > 1.1
    assert r["ji2020-nc-seeds-large-tail-median"] < r["ji2020-nc-seeds-large-best-median"] / 1.2
    assert r["ji2020-nc-seeds-large-tail-median"] < 1.0


def test_claim2_nonconvex_n1_runs_are_unstable_and_perturbation_sensitive(executed):
    """Empirical claims (notebook 05), why single long-horizon endpoints are not comparable: the
    N = 1 runs do not descend monotonically (after short_steps their meta-loss goes back up to more than
    twice the lowest value it had reached, in the median over runs) while the N = 16 runs stay within 30 %
    of it; and rerunning families from their initialisation times (1 + 1e-10) moves the final meta-loss
    of an N = 1 run by more than 1 % (relative), more than 100 times as much as any N = 16 run's, and
    flips no verdict by the short-horizon loss or by the averaged squared gradient. (1e-10 is far above
    float64 round-off; in the full run the N = 16 excursion comes closer to its bound than in the quick run.)"""
    r = executed("ji2020/05-nonconvex-families")
    assert r["ji2020-nc-seeds-perturb"] <= 1e-9 and r["ji2020-nc-seeds-nperturbed"] >= 1
    assert r["ji2020-nc-seeds-exc-n1-median"] > 2.0
    assert r["ji2020-nc-seeds-exc-n16-max"] < 1.3
    assert r["ji2020-nc-seeds-sens-long-n1-max"] > 1e-2
    assert r["ji2020-nc-seeds-sens-long-n1-max"] > 100 * r["ji2020-nc-seeds-sens-long-n16-max"]
    assert r["ji2020-nc-seeds-flip-short"] == 0.0
    assert r["ji2020-nc-seeds-flip-gradavg"] == 0.0


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
