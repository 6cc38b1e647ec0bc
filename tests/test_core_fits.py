"""Fits used to state empirical rates (mathlib._fits): exact on closed forms, robust to bad points."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import mathlib as ml


def test_loglog_slope_recovers_a_power_law_exactly():
    x = np.logspace(-6, -1, 9)
    assert ml.fit_loglog_slope(x, 3.0 * x**2.5) == pytest.approx(2.5, abs=1e-10)
    assert ml.fit_loglog_slope(x, 0.5 / np.sqrt(x)) == pytest.approx(-0.5, abs=1e-10)


def test_loglog_slope_drops_zero_negative_and_non_finite_points():
    x = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    y = x**2
    y_bad = y.copy()
    y_bad[[1, 3]] = [0.0, np.nan]
    assert ml.fit_loglog_slope(x, y_bad) == pytest.approx(2.0, abs=1e-10)
    with pytest.raises(ValueError, match="fit_loglog_slope: need at least two points"):
        ml.fit_loglog_slope([1.0, 2.0], [0.0, -1.0])
    with pytest.raises(ValueError, match="'x' and 'y' must be 1-D of equal length"):
        ml.fit_loglog_slope([1.0, 2.0], [1.0])


def test_geometric_ratio_and_tail():
    n = np.arange(1, 21)
    assert ml.fit_geometric_ratio(n, 5.0 * 0.7**n) == pytest.approx(0.7, abs=1e-10)
    # a transient then a rate 0.5: the tail sees only the rate
    err = np.where(n < 10, 1.0, 0.5 ** (n - 10))
    assert ml.fit_geometric_ratio(n, err, tail=8) == pytest.approx(0.5, abs=1e-10)
    assert ml.fit_geometric_ratio(n, err) != pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="'tail' must be >= 2"):
        ml.fit_geometric_ratio(n, err, tail=1)


def test_mean_ci_matches_scipy_t_interval():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3))
    mean, half = ml.mean_ci(v, axis=0, level=0.9)
    for j in range(3):
        lo, hi = stats.t.interval(0.9, 3, loc=v[:, j].mean(), scale=stats.sem(v[:, j]))
        assert mean[j] == pytest.approx((lo + hi) / 2) and half[j] == pytest.approx((hi - lo) / 2)
    # three seeds at 95%: t_2 = 4.30, wider than the normal 1.96
    _, h3 = ml.mean_ci([0.0, 1.0, 2.0])
    assert h3 == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)
    with pytest.raises(ValueError, match="at least two runs"):
        ml.mean_ci([1.0])
    with pytest.raises(ValueError, match="'level' must be in \\(0, 1\\)"):
        ml.mean_ci([1.0, 2.0], level=95)
