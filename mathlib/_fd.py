r"""Hessian-vector products: exact (forward-over-reverse) and finite differences of gradients."""

from __future__ import annotations

import jax

from mathlib._core import tree_axpy, tree_scale, tree_sub
from mathlib._validate import check_choice, check_positive

__all__ = ["hvp", "fd_hvp", "FD_SCHEMES"]

FD_SCHEMES = ("forward", "central")
"""Finite-difference schemes, one set of names everywhere: ``"forward"`` $O(\\delta)$, ``"central"`` $O(\\delta^2)$."""


def hvp(loss, params, batch, v):
    r"""Exact $\nabla^2 f(w;D)\,v$ by ``jax.jvp`` of ``jax.grad`` (forward-over-reverse); pytrees allowed.

    Cost: about 2 gradient evaluations, memory of one.
    """
    g = jax.grad(loss)
    return jax.jvp(lambda p: g(p, batch), (params,), (v,))[1]


def fd_hvp(loss, params, batch, v, delta, scheme: str = "central", grad_at_params=None):
    r"""Finite-difference Hessian-vector product on the same batch $D$ for all evaluations.

    * ``"central"``: $\dfrac{\nabla f(w+\delta v)-\nabla f(w-\delta v)}{2\delta}$, error
      $\le\tfrac{\rho_2}{6}\delta^2\|v\|^3$ ($\nabla^3f$ $\rho_2$-Lipschitz), exact for quadratics and
      cubics; 2 gradients (HF-MAML, Fallah et al. Alg. 3).
    * ``"forward"``: $\dfrac{\nabla f(w+\delta v)-\nabla f(w)}{\delta}$, error $\le\tfrac\rho2\delta\|v\|^2$,
      exact for quadratics; 2 gradients, or 1 if ``grad_at_params`` $=\nabla f(w;D)$ is supplied.

    Round-off adds about $\varepsilon_{mach}\|\nabla f\|/\delta$. Book: {prf:ref}`fallah2020-lem-fd-hvp`.
    """
    check_positive("fd_hvp", "delta", delta)
    check_choice("fd_hvp", "scheme", scheme, FD_SCHEMES)
    g = jax.grad(loss)
    g_plus = g(tree_axpy(delta, v, params), batch)
    if scheme == "central":
        g_minus = g(tree_axpy(-delta, v, params), batch)
        return tree_scale(1.0 / (2.0 * delta), tree_sub(g_plus, g_minus))
    g0 = g(params, batch) if grad_at_params is None else grad_at_params
    return tree_scale(1.0 / delta, tree_sub(g_plus, g0))
