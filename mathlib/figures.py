"""Figure contract and recorded quantities shared by every notebook.

A figure ID ``fig-<paper-key>-<slug>`` is a contract between the notebook that draws the
figure, the files it saves (``<ID>.pdf``, ``<ID>.svg``, ``<ID>.png``), the glue key, and the
book's ``{figure}`` label. Never rename a published ID.

Files are byte-identical across runs of the same inputs: no wall-clock time is written, the SVG
hash salt is fixed, and the provenance embedded in every file (PDF info dictionary, PNG text
chunks, SVG ``<metadata>``) is derived from the inputs only: the notebook, its run mode and
parameters, the SHA-256 of the inputs the executor computed (notebook source, mathlib sources,
parameters, lock file) and the versions of the numerical packages. The run time of a notebook is
kept in ``book/_generated/state.json`` and shown in the gallery, never in the files.
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
_VERSIONED = ("maml-theory-mathlib", "jax", "jaxlib", "optax", "numpy", "matplotlib", "scikit-learn")
LICENSE = "CC BY 4.0"

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


def provenance() -> dict[str, Any]:
    """Where the figures of this run come from: deterministic for identical inputs.

    The executor (``python -m mathlib.book execute``) passes the notebook, the mode, the injected
    parameters and the inputs' SHA-256 through the environment; a notebook run by hand records
    ``mode = "interactive"`` and no hash.
    """
    import importlib.metadata as md
    import platform

    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    try:
        parameters = json.loads(os.environ.get("MATHLIB_PARAMETERS", "{}"))
    except json.JSONDecodeError:
        parameters = {}
    return {
        "notebook": os.environ.get("MATHLIB_NOTEBOOK", ""),
        "mode": os.environ.get("MATHLIB_MODE", "interactive"),
        "parameters": parameters,
        "inputs_sha256": os.environ.get("MATHLIB_INPUTS_SHA256", ""),
        "versions": versions,
    }


def _provenance_line(figure_id: str, prov: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    params = json.dumps(prov["parameters"], sort_keys=True)
    return (f"{figure_id}; notebook {prov['notebook'] or '?'}; mode {prov['mode']}; parameters {params}; "
            f"inputs sha256:{prov['inputs_sha256'] or 'unknown'}; {versions}")


def _metadata(figure_id: str, caption: str, alt: str, prov: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-format metadata: provenance and licence, nothing that changes between identical runs."""
    line = _provenance_line(figure_id, prov)
    return {
        "pdf": {**_PDF_META, "Title": figure_id, "Subject": caption, "Keywords": line,
                "Author": "Gradient-based meta-learning, reproduced (" + LICENSE + ")"},
        "svg": {**_SVG_META, "Title": figure_id, "Identifier": figure_id, "Description": alt or caption,
                "Source": prov["notebook"] or "interactive", "Relation": line, "Rights": LICENSE},
        "png": {**_PNG_META, "Title": figure_id, "Description": alt or caption, "Comment": caption,
                "Source": line, "Copyright": LICENSE,
                "Provenance": json.dumps(prov, sort_keys=True)},
    }


def _png_display(path: Path):
    """An IPython ``Image`` of a saved PNG, sized as the inline backend would show the figure."""
    try:
        from IPython.display import Image
    except ImportError:
        return None
    data = path.read_bytes()
    width_px = int.from_bytes(data[16:20], "big")  # PNG header: IHDR width
    import matplotlib

    saved_dpi = matplotlib.rcParams["savefig.dpi"]  # "figure" means: the figure's own dpi
    scale = 1.0 if saved_dpi == "figure" else matplotlib.rcParams["figure.dpi"] / float(saved_dpi)
    return Image(data=data, format="png", width=max(1, round(width_px * scale)))


def save_figure(fig, figure_id: str, caption: str, *, alt: str | None = None, show: bool = True) -> dict[str, str]:
    """Save ``fig`` under its stable ID as PDF, SVG and PNG (byte-identical across runs).

    Also writes ``<ID>.json`` (caption, alt text, provenance) for the figure gallery and the
    lecturer pack, and glues the figure under its ID. The provenance (notebook, mode, parameters,
    hash of the inputs, package versions) is embedded in each file's metadata.

    Args:
        fig: a matplotlib figure.
        figure_id: ``fig-<paper-key>-<slug>``, e.g. ``fig-fallah2020-fd-hvp-error``.
        caption: one or two sentences stating what is plotted and the setup.
        alt: alt text: one sentence describing what the figure *shows* (the shape of the curves,
            the effect), for readers who cannot see it; used by the gallery, the slides' speaker
            notes and, copied, by the chapter's ``{figure}`` ``:alt:`` option.
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
    if alt is not None and (not isinstance(alt, str) or not alt.strip()):
        raise ValueError("save_figure: argument 'alt' must be a non-empty sentence or None")
    import warnings

    import matplotlib

    out = figures_dir()
    paths = {}
    prov = provenance()
    meta = _metadata(figure_id, caption.strip(), (alt or "").strip(), prov)
    with matplotlib.rc_context({"svg.hashsalt": HOUSE_STYLE["svg.hashsalt"]}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Uu]nknown infodict keyword.*")
        # A "tight" bounding box costs savefig one extra layout pass per format; compute it once for the
        # three files (measured on a four-panel figure: 3.9 -> 2.9 s for the three files). It is measured at
        # the PNG's resolution, so the PNG is cropped exactly as bbox_inches="tight" would crop it; the PDF
        # and SVG boxes (measured by savefig at 72 dpi) differed from it by less than 1 pt.
        bbox = None
        if matplotlib.rcParams["savefig.bbox"] == "tight":
            screen_dpi, png_dpi = fig.dpi, matplotlib.rcParams["savefig.dpi"]
            try:
                if png_dpi != "figure":
                    fig.dpi = float(png_dpi)
                fig.draw_without_rendering()
                bbox = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
            finally:
                fig.dpi = screen_dpi
        for fmt in ("pdf", "svg", "png"):
            final = out / f"{figure_id}.{fmt}"
            tmp = out / f".{figure_id}.tmp.{fmt}"
            fig.savefig(tmp, format=fmt, metadata=meta[fmt], **({"bbox_inches": bbox} if bbox is not None else {}))
            os.replace(tmp, final)
            paths[fmt] = str(final)
    manifest = {
        "id": figure_id,
        "caption": caption.strip(),
        "alt": (alt or "").strip(),
        "notebook": prov["notebook"],
        "provenance": prov,
        "files": {fmt: Path(p).name for fmt, p in paths.items()},
    }
    tmp = out / f".{figure_id}.tmp.json"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out / f"{figure_id}.json")
    # Display and glue the PNG just saved instead of letting the inline backend render the figure
    # twice more (each render costs about as much as a save); shown at the screen resolution.
    image = _png_display(Path(paths["png"]))
    _glue(figure_id, image if image is not None else fig)
    if show:
        try:
            from IPython.display import display

            display(image if image is not None else fig)
        except ImportError:
            pass
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
