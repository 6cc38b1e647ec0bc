r"""Outer (meta) optimisers built from optax pieces, and Fallah et al.'s adaptive step size."""

from __future__ import annotations

import optax

from mathlib._core import Episode
from mathlib._diagnostics import local_smoothness_bound
from mathlib._validate import check_choice, check_in_range, check_positive

__all__ = ["outer_optimizer", "fallah_step_size", "OUTER_OPTIMIZERS"]

OUTER_OPTIMIZERS = ("sgd", "adam", "clipped_sgd", "normalized_sgd_momentum")


def outer_optimizer(name: str, lr, **kw) -> optax.GradientTransformation:
    r"""An optax optimiser for the meta-parameters; ``lr`` may be a float or an optax schedule.

    * ``"sgd"``: $w\leftarrow w-\eta g$ (``optax.sgd``; ``momentum=`` passed through).
    * ``"adam"``: ``optax.adam(lr, **kw)``.
    * ``"clipped_sgd"``: $w\leftarrow w-\eta\min\{1,\,c/\|g\|\}\,g$ with ``max_norm`` $=c$ (required),
      i.e. clipped GD $w-\min\{\eta,\gamma/\|g\|\}g$ with $\gamma=\eta c$ (Zhang et al. 2020):
      ``optax.chain(optax.clip_by_global_norm(c), optax.sgd(lr))``.
    * ``"normalized_sgd_momentum"``: $m_t=\beta m_{t-1}+(1-\beta)g_t$, $w\leftarrow w-\eta\,m_t/(\|m_t\|+\epsilon)$
      with ``beta`` (default 0.9), ``eps`` (default 1e-12); SNGDM of Cutkosky & Mehta as used by
      Chayti & Jaggi: ``optax.chain(optax.ema(beta, debias=False), optax.normalize_by_update_norm(eps=eps),
      optax.scale_by_learning_rate(lr))``.
    """
    fn = "outer_optimizer"
    check_choice(fn, "name", name, OUTER_OPTIMIZERS)
    if not callable(lr):
        check_positive(fn, "lr", lr)
    if name == "sgd":
        return optax.sgd(lr, **kw)
    if name == "adam":
        return optax.adam(lr, **kw)
    if name == "clipped_sgd":
        if "max_norm" not in kw:
            raise TypeError("outer_optimizer: 'clipped_sgd' requires argument 'max_norm' (> 0)")
        max_norm = check_positive(fn, "max_norm", kw.pop("max_norm"))
        if kw:
            raise TypeError(f"outer_optimizer: unknown argument(s) {tuple(kw)} for 'clipped_sgd'")
        return optax.chain(optax.clip_by_global_norm(max_norm), optax.sgd(lr))
    beta = kw.pop("beta", 0.9)
    eps = kw.pop("eps", 1e-12)
    if kw:
        raise TypeError(f"outer_optimizer: unknown argument(s) {tuple(kw)} for 'normalized_sgd_momentum'")
    check_in_range(fn, "beta", beta, 0.0, 1.0, high_inclusive=False)
    check_in_range(fn, "eps", eps, 0.0)
    return optax.chain(
        optax.ema(beta, debias=False),
        optax.normalize_by_update_norm(scale_factor=1.0, eps=eps),
        optax.scale_by_learning_rate(lr),
    )


def fallah_step_size(loss, params, episodes, L, rho, alpha, c):
    r"""Fallah et al.'s adaptive outer step $\beta=c/\tilde L(w)$, $\tilde L(w)=4L+2\rho\alpha\frac1{B'}\sum_j\|\nabla f_j(w;D^j_\beta)\|$.

    ``episodes``: a batched ``Episode`` (its ``support`` batches are used) or a batched data batch
    (leading task axis). The paper draws these $B'$ tasks and $D_\beta$ samples independently of
    the ones used in the meta-gradient; pass an independent batch to follow it. Paper constants:
    $c=1/12$ (MAML), $1/18$ (FO-MAML), $1/25$ (HF-MAML). For quadratics ($\rho=0$): $\beta=c/(4L)$.
    Book: {prf:ref}`fallah2020-alg-stepsize`, {prf:ref}`fallah2020-lem-smoothness`. Cost: 1 gradient per task in the batch.
    """
    fn = "fallah_step_size"
    check_positive(fn, "L", L)
    check_in_range(fn, "rho", rho, 0.0)
    check_positive(fn, "alpha", alpha)
    check_positive(fn, "c", c)
    batches = episodes.support if isinstance(episodes, Episode) else episodes
    return c / local_smoothness_bound(loss, params, batches, L, rho, alpha)
