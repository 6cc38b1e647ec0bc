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


def test_claim3_memory(executed):
    """Empirical claim on XLA's compiled memory plan (deterministic): Sign-MAML's plan is FO-MAML's,
    MAML's is several times larger and grows with K.

    Wall-clock times are recorded and shown in the pages as measurements on a shared machine;
    by house rule speed is never asserted in a test.
    """
    r = executed("fan2021/02-cost")
    assert r["fan2021-cost-kmax"] >= 8
    # memory: Sign-MAML's plan is FO-MAML's; MAML's is several times larger at the largest K and grows with K
    assert r["fan2021-cost-mem-sign-fo-maxdev"] < 0.05
    assert r["fan2021-cost-mem-maml-fo-kmax"] > 2.0
    assert r["fan2021-cost-mem-maml-growth"] > 2.0 * r["fan2021-cost-mem-fo-growth"]


def _paired(r, k, split, a, b):
    """Paired per-seed difference a - b: (lower, upper) ends of its 95 % Student-t interval."""
    pre = f"fan2021-digits-{k}shot-{split}-{a}-minus-{b}"
    return r[pre] - r[pre + "-ci"], r[pre] + r[pre + "-ci"]


def test_claim4_digits_image_split_ordering(executed):
    """Empirical claim (control split, by image): meta-learning beats no meta-training for every
    method, and MAML > FO-MAML > Sign-MAML, each on the paired per-seed difference beyond its 95 %
    Student-t interval.

    Quick mode meta-trains with one inner step (K = 1, full mode K = 5); there Sign-MAML's 5-shot
    gain over no meta-training is smaller (about 0.03, measured): for that one pair the test
    requires the paired interval to exclude zero instead of a 0.02 margin beyond it. In 5-shot the
    MAML - FO-MAML paired interval only just excludes zero (their unpaired intervals overlap)."""
    r = executed("fan2021/03-digits")
    assert r["fan2021-digits-nseeds"] >= 3
    for k in (1, 5):
        for m in ("maml", "fomaml", "sign_maml"):
            assert _paired(r, k, "image", m, "base")[0] > (0.0 if (k, m) == (5, "sign_maml") else 0.02)
        assert _paired(r, k, "image", "maml", "fomaml")[0] > 0.0
        # the paired Sign - FO difference is negative beyond its CI
        pre = f"fan2021-digits-{k}shot-image-sign-minus-fo"
        assert r[pre] + r[pre + "-ci"] < 0.0


def test_claim4_digits_class_split(executed):
    """Empirical claim (split by class, digits 0-4 -> 5-9): Sign-MAML beats FO-MAML (paired, beyond
    the CI) and, in 1-shot, MAML; MAML and FO-MAML fall below the network without meta-training in
    1-shot (paired, beyond the CI) and do not beat it in 5-shot.

    Quick mode (K = 1, 3 seeds) is what this test checks; the book quotes full mode (K = 5, more
    seeds on this split in 1-shot), where the same orderings were measured with narrower intervals
    (reproducibility page)."""
    r = executed("fan2021/03-digits")
    for k in (1, 5):
        pre = f"fan2021-digits-{k}shot-class-sign-minus-fo"
        assert r[pre] - r[pre + "-ci"] > 0.0
    for m in ("maml", "fomaml"):
        assert _paired(r, 1, "class", m, "base")[1] < 0.0
        assert r[f"fan2021-digits-5shot-class-{m}"] < r["fan2021-digits-5shot-class-base"] + r["fan2021-digits-5shot-class-base-ci"]
    pre = "fan2021-digits-1shot-class-"
    assert r[pre + "sign_maml"] - r[pre + "sign_maml-ci"] > r[pre + "maml"] + r[pre + "maml-ci"]


def test_claim4_digits_class_split_sign_close_to_baseline(executed):
    """Empirical claim (split by class, 1-shot): Sign-MAML's lead over FO-MAML is not a gain from
    meta-training: both ends of the paired interval of Sign-MAML minus the network without
    meta-training lie within a quarter of that lead of zero (the interval may or may not contain
    zero; the sentence on the page says which, from the glued ends)."""
    r = executed("fan2021/03-digits")
    lead = r["fan2021-digits-1shot-class-sign-minus-fo"]
    lo, hi = _paired(r, 1, "class", "sign_maml", "base")
    assert lead > 0.05
    assert -0.25 * lead < lo and hi < 0.25 * lead
    assert r["fan2021-digits-1shot-class-sign-base-hi-over-lead"] == pytest.approx(hi / lead)


def test_claim4_alpha_sensitivity(executed):
    """Empirical claim: the best sign step is an order of magnitude below the best GD step, and the
    largest sign step on the grid (ten times the best) loses most of Sign-MAML's gain over no
    meta-training, while FO-MAML at its largest step stays above no meta-training.

    Quick mode (K = 1, 300 steps) is what this test checks. There FO-MAML at its largest step (five
    times its best) also loses much of its gain, so the test does not assert the contrast the page
    draws from the full-mode run (Sign-MAML loses all of its gain, FO-MAML keeps most of its own);
    the reproducibility page says so."""
    r = executed("fan2021/03-digits")
    assert r["fan2021-alpha-best-image-sign_maml"] <= r["fan2021-alpha-best-image-fomaml"] / 5
    assert r["fan2021-alpha-best-image-sign_maml"] <= r["fan2021-alpha-best-image-maml"] / 5
    best = r["fan2021-alpha-best-acc-image-sign_maml"]
    base = r["fan2021-digits-1shot-image-base"]
    assert r["fan2021-alpha-sign-at-largest-image"] < base + 0.5 * (best - base)
    assert r["fan2021-alpha-fo-at-largest-image"] > base


def test_claim5_sinusoid(executed):
    """Empirical claim: on sinusoid regression every meta-trained method beats no meta-training, and
    Sign-MAML (at its best grid step) is within 25 % of FO-MAML's error (neither clearly better in quick mode)."""
    r = executed("fan2021/04-sinusoid")
    for m in ("maml", "fomaml", "sign_maml"):
        assert r[f"fan2021-sin-{m}-max"] < r["fan2021-sin-base-min"]
    assert 0.75 < r["fan2021-sin-sign-over-fo"] < 1.25
