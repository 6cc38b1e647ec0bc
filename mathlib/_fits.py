r"""Fits and intervals used to state empirical rates: log-log slopes, geometric ratios, seed CIs.

Every chapter that claims an order ($\mathcal O(\delta^2)$, $\mathcal O(1/\sqrt{n})$) or a linear rate
fits it with these, so that "slope" and "ratio" mean the same thing on every page.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_loglog_slope", "fit_geometric_ratio", "mean_ci"]


def _pair(fn: str, x, y, xname: str, yname: str):
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{fn}: arguments '{xname}' and '{yname}' must be 1-D of equal length, "
                         f"got shapes {x.shape} and {y.shape}")
    return x, y


def fit_loglog_slope(x, y) -> float:
    r"""Least-squares slope $p$ of $\log y = p\log x + c$ (the order of $y\propto x^p$).

    Only points with $x>0$ and finite $y>0$ enter (an error that reached exactly zero or
    overflowed carries no order). The slope does not depend on the base of the logarithm.

    Args:
        x: 1-D positive abscissae (e.g. finite-difference steps $\delta$, widths, sample sizes).
        y: 1-D values of the same length (e.g. errors).

    Returns:
        The fitted exponent $p$ as a float.

    Raises:
        ValueError: if fewer than two points are usable, naming the arguments.
    """
    x, y = _pair("fit_loglog_slope", x, y, "x", "y")
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        raise ValueError(f"fit_loglog_slope: need at least two points with x > 0 and finite y > 0, got {int(keep.sum())}")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def fit_geometric_ratio(n, err, tail: int | None = None) -> float:
    r"""Ratio $r$ of a geometric fit $\mathrm{err}_n\approx C\,r^{n}$ (linear convergence rate).

    Least squares of $\log \mathrm{err}$ against $n$ over the points with finite
    $\mathrm{err}>0$, optionally only the last ``tail`` of them (the asymptotic regime).

    Args:
        n: 1-D iteration counts (need not be consecutive).
        err: 1-D errors of the same length.
        tail: if given, fit only the last ``tail`` usable points (>= 2).

    Returns:
        $r=\exp(\text{slope})$; $r<1$ means geometric decrease.
    """
    n, err = _pair("fit_geometric_ratio", n, err, "n", "err")
    keep = (err > 0) & np.isfinite(err) & np.isfinite(n)
    n, err = n[keep], err[keep]
    if tail is not None:
        if int(tail) < 2:
            raise ValueError(f"fit_geometric_ratio: argument 'tail' must be >= 2 or None, got {tail}")
        n, err = n[-int(tail):], err[-int(tail):]
    if n.size < 2:
        raise ValueError(f"fit_geometric_ratio: need at least two points with finite err > 0, got {n.size}")
    return float(np.exp(np.polyfit(n, np.log(err), 1)[0]))


def mean_ci(values, axis: int = 0, level: float = 0.95):
    r"""Mean and half-width of a Student-$t$ confidence interval over independent runs (seeds).

    Half-width $t_{n-1,(1+\text{level})/2}\; s/\sqrt n$ with the sample standard deviation $s$
    (``ddof=1``); for few seeds this is wider than the normal $1.96\,s/\sqrt n$ (for $n=3$ at 95%:
    $t=4.30$).

    Args:
        values: array of results, runs along ``axis`` (at least two runs).
        axis: the axis of the runs.
        level: two-sided coverage in (0, 1).

    Returns:
        ``(mean, half_width)`` arrays with ``axis`` removed.
    """
    from scipy import stats

    v = np.asarray(values, float)
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"mean_ci: argument 'level' must be in (0, 1), got {level}")
    if v.ndim == 0 or v.shape[axis] < 2:
        raise ValueError(f"mean_ci: argument 'values' needs at least two runs along axis {axis}, got shape {v.shape}")
    n = v.shape[axis]
    t = stats.t.ppf(0.5 + float(level) / 2, n - 1)
    return v.mean(axis=axis), t * v.std(axis=axis, ddof=1) / np.sqrt(n)
