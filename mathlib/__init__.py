"""mathlib: meta-gradients of gradient-based meta-learning, in JAX, tested against closed forms.

The public API is re-exported here from small private modules; import it as ``import mathlib as ml``.
Every docstring states the formula it implements and the book label where it is derived.

* tasks with closed forms: ``quadratic_*``, ``linreg_*``, cosine tasks (``_synthetic``);
* data: sinusoid regression, logistic and digits tasks, N-way K-shot episodes, tabular MDPs;
* models: linear, MLP, body/head (ANIL) as pure functions on pytrees, with ready-made losses;
* inner maps: ``adapt_gd``, ``adapt_sign``, ``adapt_head``, ``prox_solve``;
* meta-gradient estimators ``est(loss, params, episode, **hyper)``: ``maml_grad``, ``fomaml_grad``,
  ``hf_maml_grad``, ``multistep_fo_grad``, ``moreau_grad``, ``imaml_grad``, ``sign_maml_grad``,
  ``anil_grad``, ``chayti_*``, ``reptile_grad``; ``make_estimator(name, **hyper)`` and
  ``meta_gradient`` (vmapped mean over a batch of episodes);
* outer optimisation and training: optax transformations, ``fallah_step_size``, ``train``;
* diagnostics: exact meta-gradients, local smoothness by power iteration, cost counters;
* the book platform: ``save_figure``, ``record``, ``use_style``.
"""

__version__ = "0.1.0"

from mathlib import _core, _data, _diagnostics, _estimators, _fd, _figures, _inner, _models
from mathlib import _outer, _quadratic, _rl, _synthetic, _train, _validate
from mathlib._core import *  # noqa: F401,F403  (Episode, HeadLoss, tree helpers)
from mathlib._data import *  # noqa: F401,F403  (sinusoid, logistic, digits, N-way K-shot)
from mathlib._diagnostics import *  # noqa: F401,F403
from mathlib._estimators import *  # noqa: F401,F403
from mathlib._fd import *  # noqa: F401,F403
from mathlib._figures import FIGURE_ID_PATTERN, figures_dir, record, save_figure, use_style
from mathlib._inner import *  # noqa: F401,F403
from mathlib._models import *  # noqa: F401,F403  (MLP, body/head, losses)
from mathlib._outer import *  # noqa: F401,F403
from mathlib._quadratic import *  # noqa: F401,F403
from mathlib._rl import *  # noqa: F401,F403  (tabular MDPs, exact policy evaluation)
from mathlib._synthetic import *  # noqa: F401,F403
from mathlib._train import *  # noqa: F401,F403
from mathlib._validate import *  # noqa: F401,F403

__all__ = sorted(
    {"FIGURE_ID_PATTERN", "figures_dir", "record", "save_figure", "use_style"}.union(
        *(m.__all__ for m in (_core, _data, _diagnostics, _estimators, _fd, _inner, _models, _outer,
                              _quadratic, _rl, _synthetic, _train, _validate))
    )
)
