r"""mathlib: meta-gradients of gradient-based meta-learning, in JAX, tested against closed forms.

The public API is re-exported here from small private modules; import it as ``import mathlib as ml``.
Every docstring states the formula it implements and the book label where it is derived.

* tasks with closed forms: ``quadratic_*``, ``linreg_*``, cosine tasks (``_synthetic``);
* data: sinusoid regression, logistic and digits tasks, N-way K-shot episodes, tabular MDPs;
* models: linear, MLP, body/head (ANIL) as pure functions on pytrees, with ready-made losses;
* inner maps: ``adapt_gd``, ``adapt_sign``, ``adapt_head``, ``adapt_masked``, ``prox_solve``;
* meta-gradient estimators ``est(loss, params, episode, **hyper)``: ``maml_grad``, ``fomaml_grad``,
  ``hf_maml_grad``, ``chayti_grad``, ``moreau_grad``, ``imaml_grad``, ``sign_maml_grad``,
  ``anil_grad``, ``reptile_grad``; ``make_estimator(name, **hyper)`` returns an ``Estimator``
  (a hashable JAX pytree whose numeric hyper-parameters are traced leaves; ``est.adapt`` is its
  inner map for test-time adaptation, ``est.replace(alpha=...)`` an override) and
  ``meta_gradient`` (vmapped mean over a batch of episodes; ``batched=False`` for one task);
* outer optimisation and training: optax transformations, ``fallah_step_size``, ``train``
  (compiled once per structure; divergence raises), ``make_train_step`` for your own loop;
* diagnostics: exact meta-gradients, local smoothness by power iteration, cost counters;
* running independent calls of one compiled program on several cores: ``map_concurrent``;
* fits for empirical rates: ``fit_loglog_slope``, ``fit_geometric_ratio``, ``mean_ci`` (Student t);

One vocabulary for hyper-parameters: ``alpha`` (inner step), ``steps`` (number of inner steps, also
of the proximal solver), ``lam`` (proximal weight $\lambda$), ``delta`` (finite-difference step),
``scheme`` in ``{"forward", "central"}`` for every finite difference, ``cg_steps``/``cg_tol``.

Submodules that are not the math: ``mathlib.figures`` (``save_figure``, ``record``, ``use_style``:
the figure contract of the book), ``mathlib.validate`` (argument checkers), ``mathlib.experiments``
(one chapter's experiment drivers per module, e.g. ``mathlib.experiments.fallah2020``), and
``mathlib.book`` (the book's build tooling).
"""

__version__ = "0.2.0"

from mathlib import _core, _data, _diagnostics, _estimators, _fd, _fits, _inner, _models
from mathlib import _outer, _parallel, _quadratic, _rl, _synthetic, _train, _validate
from mathlib._core import *  # noqa: F401,F403  (Episode, HeadLoss, tree helpers)
from mathlib._data import *  # noqa: F401,F403  (sinusoid, logistic, digits, N-way K-shot)
from mathlib._diagnostics import *  # noqa: F401,F403
from mathlib._estimators import *  # noqa: F401,F403
from mathlib._fd import *  # noqa: F401,F403
from mathlib._fits import *  # noqa: F401,F403  (log-log slopes, geometric ratios, seed CIs)
from mathlib._inner import *  # noqa: F401,F403
from mathlib._models import *  # noqa: F401,F403  (MLP, body/head, losses)
from mathlib._outer import *  # noqa: F401,F403
from mathlib._parallel import *  # noqa: F401,F403  (independent compiled calls on several cores)
from mathlib._quadratic import *  # noqa: F401,F403
from mathlib._rl import *  # noqa: F401,F403  (tabular MDPs, exact policy evaluation)
from mathlib._synthetic import *  # noqa: F401,F403
from mathlib._train import *  # noqa: F401,F403

__all__ = sorted(
    set().union(
        *(m.__all__ for m in (_core, _data, _diagnostics, _estimators, _fd, _fits, _inner, _models, _outer,
                              _parallel, _quadratic, _rl, _synthetic, _train))
    )
)
