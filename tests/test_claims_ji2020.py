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
    and the 3x-step comparison is the one asserted on every family (next tests)."""
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


def test_claim2_nonconvex_reversal_across_task_families(executed):
    """Empirical claims (NC head, notebook 05: several task families, each its own tasks and
    initialisation, N = 1 against N = 16). After short_steps outer steps N = 16 is lower at the 3x
    inner step on every family; within long_steps the lowest meta-loss reached is lower with N = 1
    with alpha proportional to 1/N on every family, and at the 3x step in the median over families
    (the margin on single families is small and, the N = 1 runs being chaotic, not reproducible
    across batchings: see the next test). No run diverged."""
    r = executed("ji2020/05-nonconvex-families")
    assert r["ji2020-nc-seeds-nfamilies"] >= 4
    assert r["ji2020-nc-seeds-diverged"] == 0
    assert r["ji2020-nc-seeds-long-steps"] > r["ji2020-nc-seeds-short-steps"]
    assert r["ji2020-nc-seeds-large-short-frac-n16-lower"] == 1.0
    assert r["ji2020-nc-seeds-large-short-max"] < 0.8
    assert r["ji2020-nc-seeds-scaled-best-frac-n16-lower"] == 0.0
    assert r["ji2020-nc-seeds-large-best-median"] > 1.1
    assert r["ji2020-nc-seeds-large-best-frac-n16-lower"] <= 0.5


def test_claim2_nonconvex_n1_runs_are_unstable_and_round_off_sensitive(executed):
    """Empirical claim (notebook 05), the reason single long-horizon endpoints are not comparable:
    restarting the first family from its initialisation times (1 + 1e-10) moves the meta-loss of an
    N = 1 run after long_steps steps by more than 1e-3 (relative), while the N = 16 runs move by less
    than 1e-6; the lowest meta-loss reached moves by less than a fifth of the endpoint's change. And
    the N = 1 runs do not descend monotonically: on some family one ends more than 20 % above the
    lowest meta-loss it reached, while no N = 16 run ends more than 1 % above its own."""
    r = executed("ji2020/05-nonconvex-families")
    assert r["ji2020-nc-seeds-perturb"] <= 1e-9
    n1 = max(r["ji2020-nc-seeds-sens-long-n1-base"], r["ji2020-nc-seeds-sens-long-n1-large"])
    n16 = max(r["ji2020-nc-seeds-sens-long-n16-scaled"], r["ji2020-nc-seeds-sens-long-n16-large"])
    assert n1 > 1e-3
    assert n16 < 1e-6
    assert r["ji2020-nc-seeds-sens-long-max"] == pytest.approx(n1)
    assert r["ji2020-nc-seeds-sens-best-max"] < 0.2 * r["ji2020-nc-seeds-sens-long-max"]
    assert max(r["ji2020-nc-seeds-rise-n1-base-max"], r["ji2020-nc-seeds-rise-n1-large-max"]) > 1.2
    assert max(r["ji2020-nc-seeds-rise-n16-scaled-max"], r["ji2020-nc-seeds-rise-n16-large-max"]) < 1.01


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
