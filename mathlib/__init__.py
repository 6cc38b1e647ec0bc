"""mathlib: meta-gradients of gradient-based meta-learning, in JAX, tested against closed forms.

The public API is re-exported here from small private modules; import it as ``import mathlib as ml``.
Every docstring states the formula it implements and the book label where it is derived.
"""

__version__ = "0.1.0"

# --- figures and recorded quantities (book platform) -------------------------------------
from mathlib._figures import FIGURE_ID_PATTERN, figures_dir, record, save_figure, use_style

# --- core algorithms (issue 3, part A): tasks with closed forms, inner loops, estimators ---
# (section owned by the core-algorithms work; add imports below this line)
from mathlib._core import *  # noqa: F401,F403  (Episode, tree helpers)
from mathlib._validate import *  # noqa: F401,F403
from mathlib._quadratic import *  # noqa: F401,F403
from mathlib._synthetic import *  # noqa: F401,F403
from mathlib._inner import *  # noqa: F401,F403
from mathlib._fd import *  # noqa: F401,F403
from mathlib._estimators import *  # noqa: F401,F403
from mathlib._outer import *  # noqa: F401,F403
from mathlib._train import *  # noqa: F401,F403
from mathlib._diagnostics import *  # noqa: F401,F403

# --- models and data families (issue 3, part B) --------------------------------------------
# (section owned by the models/data work; add imports below this line)
from mathlib._models import *  # noqa: F401,F403  (MLP, body/head, losses)
from mathlib._data import *  # noqa: F401,F403  (sinusoid, logistic, digits, N-way K-shot)
from mathlib._rl import *  # noqa: F401,F403  (tabular MDPs, exact policy evaluation)
