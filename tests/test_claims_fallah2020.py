"""Claims of the chapter on Fallah, Mokhtari, Ozdaglar (AISTATS 2020), one test per claim.

Each test reads the quantities its notebook recorded in quick mode (``executed`` fixture,
``tests/conftest.py``) and asserts the claim with a tolerance that fails if the effect is gone.
Book pages: ``book/fallah2020/experiments.md`` (numbers) and ``reproducibility.md`` (negatives).
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.notebooks


def test_claim1_finite_difference_orders_roundoff_and_best_delta(executed):
    r = executed("fallah2020/01-fd-hvp")
    # truncation orders: central O(delta^2), forward O(delta) (lemma fallah2020-lem-fd-hvp)
    assert 1.8 <= r["fallah2020-fd-central-slope"] <= 2.2
    assert 0.9 <= r["fallah2020-fd-forward-slope"] <= 1.1
    assert 1.7 <= r["fallah2020-fd-central-slope-f32"] <= 2.3
    assert 0.85 <= r["fallah2020-fd-forward-slope-f32"] <= 1.2
    # round-off branch ~ eps/delta below the optimum
    assert -1.2 <= r["fallah2020-fd-roundoff-slope"] <= -0.8
    # best delta: ~eps^(1/3) in each precision, float32 optimum ~800x the float64 one
    assert 1e-6 <= r["fallah2020-fd-best-delta-f64"] <= 1e-4
    assert 1e-3 <= r["fallah2020-fd-best-delta-f32"] <= 1e-1
    assert r["fallah2020-fd-best-err-f64"] < 1e-9
    assert r["fallah2020-fd-best-err-f32"] > 100 * r["fallah2020-fd-best-err-f64"]
    ratio, pred = r["fallah2020-fd-best-delta-ratio"], r["fallah2020-fd-best-delta-ratio-pred"]
    assert abs(math.log10(ratio) - math.log10(pred)) < 0.5
    # the forward difference is worse at its own optimum
    assert r["fallah2020-fd-best-err-forward-f64"] > 10 * r["fallah2020-fd-best-err-f64"]
    # exact on a quadratic (round-off only) and the truncation bound holds
    assert r["fallah2020-fd-quadratic-max-err"] < 1e-10
    assert r["fallah2020-fd-bound-min-ratio"] >= 1.0


def test_claim2_fomaml_floor_deterministic(executed):
    r = executed("fallah2020/02-fomaml-floor")
    # MAML and HF-MAML reach round-off, FO-MAML stops at a floor
    assert r["fallah2020-det-maml-final"] < 1e-12
    assert r["fallah2020-det-hfmaml-final"] < 1e-12
    assert r["fallah2020-det-fomaml-floor"] > 1e-3
    assert r["fallah2020-fo-floor-ratio"] > 1e6
    # control: shared Hessians give no floor
    assert r["fallah2020-det-fomaml-shared-floor"] < 1e-12
    assert r["fallah2020-fo-shared-floor-max"] < 1e-12
    # linear in alpha (up to O(alpha^2)) and exactly linear in the spread
    assert 0.9 <= r["fallah2020-fo-alpha-slope-min"] <= r["fallah2020-fo-alpha-slope-max"] <= 1.05
    assert r["fallah2020-fo-spread-slope-maxdev"] < 1e-6
    # the derived identity and the closed-form fixed point
    assert r["fallah2020-fo-formula-maxrelerr"] < 1e-8
    assert r["fallah2020-fo-closed-form-maxrelerr"] < 1e-8
    # both bounds hold (paper's with its constant set to 1; ours by Cauchy-Schwarz)
    assert r["fallah2020-fo-paper-bound-ratio-min"] >= 1.0
    assert r["fallah2020-fo-cs-bound-ratio-min"] >= 1.0


def test_claim3_stochastic_batches(executed):
    r = executed("fallah2020/03-stochastic-batches")
    # MAML / HF-MAML plateau ~ 1/sqrt(B) with a one-sample Hessian batch
    assert -0.7 <= r["fallah2020-sto-maml-slope"] <= -0.3
    assert -0.7 <= r["fallah2020-sto-hfmaml-slope"] <= -0.3
    assert r["fallah2020-sto-hf-maml-maxreldiff"] < 1e-10  # central difference exact on quadratics
    # FO-MAML levels off at its deterministic floor
    assert r["fallah2020-sto-fomaml-slope-top"] > -0.25
    assert 0.9 <= r["fallah2020-sto-fo-ratio-bmax"] <= 1.5
    assert r["fallah2020-sto-fo-maml-ratio-bmax"] > 2.0
    # a tiny Hessian batch barely matters
    assert 0.7 <= r["fallah2020-sto-dh-ratio-min"] <= r["fallah2020-sto-dh-ratio-max"] <= 1.5
    # independent batches: unbiased; D_h = D_o: biased (lemma fallah2020-lem-independent-batches)
    assert r["fallah2020-indep-bias"] < 3 * r["fallah2020-indep-se"]
    assert r["fallah2020-shared-bias"] > 5 * r["fallah2020-shared-se"]


def test_claim4_smoothness_grows_with_gradient(executed):
    r = executed("fallah2020/04-smoothness")
    assert r["fallah2020-smooth-max-ratio"] <= 1.0
    assert r["fallah2020-smooth-pair-max-ratio"] <= 1.0
    assert r["fallah2020-smooth-growth"] >= 10.0
    assert 0.6 <= r["fallah2020-smooth-envelope-slope"] <= 1.3
    assert r["fallah2020-smooth-quad-relspread"] < 1e-8


def test_claim5_adaptive_step_and_theorem_delta(executed):
    r = executed("fallah2020/05-step-size-and-delta")
    # adaptive step: monotone descent, rises towards c/(4L), bounded step length
    assert r["fallah2020-step-f-increases"] == 0
    assert 0.9 <= r["fallah2020-step-beta-end-frac"] <= 1.0 + 1e-9
    assert r["fallah2020-step-beta-start"] < 0.5 * r["fallah2020-step-beta-end"]
    assert r["fallah2020-step-length-ratio"] <= 1.0
    assert r["fallah2020-step-final-gradnorm"] < 1e-10
    assert r["fallah2020-step-final-gradnorm-paper"] < 1e-10
    assert r["fallah2020-step-hit-paper"] > 3 * r["fallah2020-step-hit-c1"] > 0
    # HF-MAML: floors ~ delta^2 with a fixed delta
    assert 1.8 <= r["fallah2020-hf-delta-slope-min"] <= r["fallah2020-hf-delta-slope-max"] <= 2.2
    # the theorem's delta leaves a floor far above MAML's, of FO-MAML's order
    assert r["fallah2020-hf-theorem-maml-ratio-min"] > 1e6
    assert r["fallah2020-hf-theorem-floor"] > 100 * r["fallah2020-hf-floor-delta2"]
    assert r["fallah2020-hf-fo-theorem-ratio-max"] < 10.0


def test_claim6_sinusoid(executed):
    r = executed("fallah2020/06-sinusoid")
    assert r["fallah2020-sin-improve-worst"] < 0.7
    assert 0.95 <= r["fallah2020-sin-hf-maml-ratio"] <= 1.05
    assert r["fallah2020-sin-fo-maml-ratio"] > 1.2
    # observation (reproducibility notes): an independent Hessian batch destabilises MAML here
    assert r["fallah2020-sin-dh-collapsed"] >= 1
    # HF-MAML's finite difference is accurate on tanh networks, erratic on ReLU networks
    assert r["fallah2020-sin-fd-tanh-2"] < 1e-4
    assert r["fallah2020-sin-fd-tanh-4"] < 1e-8
    assert max(r["fallah2020-sin-fd-relu-2"], r["fallah2020-sin-fd-relu-4"]) > 1e-2
