"""Claims of the pilot notebook (notation page): exact vs first-order meta-gradient fields."""

import pytest

pytestmark = pytest.mark.notebooks


def test_fomaml_fixed_point_differs_from_maml_minimiser(executed):
    r = executed("intro/01-maml-in-one-picture")
    # heterogeneous Hessians: the first-order field vanishes at a visibly different point,
    # where the true meta-gradient is far from zero
    assert r["intro-fo-distance"] > 0.05
    assert r["intro-fo-gradnorm"] > 1e-2
    # control: with a shared Hessian both points coincide to round-off
    assert r["intro-shared-distance"] < 1e-10
    # the closed form used for the picture agrees with autodiff through the inner step
    assert r["intro-autodiff-error"] < 1e-12
    assert r["fig-intro-meta-gradient-field"] == "<figure>"
