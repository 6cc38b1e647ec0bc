"""Figure contract and recorded quantities shared by every notebook.

A figure ID ``fig-<paper-key>-<slug>`` is a contract between the notebook that draws the
figure, the files it saves (``<ID>.pdf``, ``<ID>.svg``, ``<ID>.png``), the glue key, and the
book's ``{figure}`` label. Never rename a published ID.

Files are byte-identical across runs: metadata that carries dates or versions is removed and
the SVG hash salt is fixed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FIGURE_ID_PATTERN",
    "figures_dir",
    "record",
    "save_figure",
    "use_style",
]

FIGURE_ID_PATTERN = re.compile(r"^fig-(?P<paper>[a-z]+[0-9]{4}|intro)-(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)$")

_PDF_META = {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}
_SVG_META = {"Date": None, "Creator": None}
_PNG_META = {"Software": None}

# House style: sized for a book column (6.4 in wide) and legible when projected on a slide.
HOUSE_STYLE = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "font.size": 11,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.8,
    "legend.frameon": False,
    "svg.hashsalt": "mathlib-companion",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "axes.prop_cycle": __import__("cycler").cycler(
        color=["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
    ),
}


def use_style() -> None:
    """Apply the house matplotlib style (colour-blind safe palette, slide-legible fonts)."""
    import matplotlib

    matplotlib.rcParams.update(HOUSE_STYLE)


def figures_dir() -> Path:
    """Folder that receives figure files: ``$MATHLIB_FIGURES_DIR`` or ``./figures``."""
    path = Path(os.environ.get("MATHLIB_FIGURES_DIR", "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _glue(name: str, value: Any) -> None:
    try:  # only inside the book's execution; a bare Jupyter has no myst_nb
        from myst_nb import glue
    except ImportError:
        return
    glue(name, value, display=False)


def _plain(value: Any) -> Any:
    """Convert numpy/JAX scalars and arrays to plain Python values (literal-evaluable reprs)."""
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return [_plain(v) for v in value]
    arr = np.asarray(value)
    if arr.ndim == 0:
        item = arr.item()
        return item
    return arr.tolist()


def record(name: str, value: Any) -> None:
    """Record a key quantity of a notebook: glued for the book and readable by the claim tests.

    The value is converted to plain Python (``float``, ``int``, ``list``) so that the book's
    ``{glue:text}`key:.3g``` role can format it and tests can read it back with
    :func:`mathlib.book.read_records`.

    Args:
        name: glue key, unique within the book (prefix it with the paper key).
        value: a number, a string, a list of numbers or a JAX/numpy scalar or array.

    Returns nothing, so that a trailing ``record(...)`` adds no output to the page.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"record: argument 'name' must be a non-empty string, got {name!r}")
    _glue(name, _plain(value))


def save_figure(fig, figure_id: str, caption: str, *, show: bool = True) -> dict[str, str]:
    """Save ``fig`` under its stable ID as PDF, SVG and PNG (byte-identical across runs).

    Also writes ``<ID>.json`` (caption, source notebook) for the figure gallery and glues the
    figure under its ID.

    Args:
        fig: a matplotlib figure.
        figure_id: ``fig-<paper-key>-<slug>``, e.g. ``fig-fallah2020-fd-hvp-error``.
        caption: one or two sentences stating what is plotted and the setup.
        show: display the figure in the notebook (so the notebook page shows it).

    Returns:
        Mapping from format (``pdf``, ``svg``, ``png``) to the saved path.
    """
    if not isinstance(figure_id, str) or not FIGURE_ID_PATTERN.match(figure_id):
        raise ValueError(
            f"save_figure: argument 'figure_id' must look like 'fig-<paper-key>-<slug>' "
            f"(lower case, e.g. 'fig-fallah2020-fd-hvp-error'), got {figure_id!r}"
        )
    if not isinstance(caption, str) or not caption.strip():
        raise ValueError("save_figure: argument 'caption' must be a non-empty string")
    import matplotlib

    out = figures_dir()
    paths = {}
    with matplotlib.rc_context({"svg.hashsalt": HOUSE_STYLE["svg.hashsalt"]}):
        for fmt, meta in (("pdf", _PDF_META), ("svg", _SVG_META), ("png", _PNG_META)):
            final = out / f"{figure_id}.{fmt}"
            tmp = out / f".{figure_id}.tmp.{fmt}"
            fig.savefig(tmp, format=fmt, metadata=meta)
            os.replace(tmp, final)
            paths[fmt] = str(final)
    manifest = {
        "id": figure_id,
        "caption": caption.strip(),
        "notebook": os.environ.get("MATHLIB_NOTEBOOK", ""),
        "files": {fmt: Path(p).name for fmt, p in paths.items()},
    }
    tmp = out / f".{figure_id}.tmp.json"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / f"{figure_id}.json")
    _glue(figure_id, fig)
    if show:
        try:
            from IPython.display import display

            display(fig)
        except ImportError:
            pass
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
