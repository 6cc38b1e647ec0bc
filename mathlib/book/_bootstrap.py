"""The canonical first code cell of every notebook (the "bootstrap cell").

It makes ``mathlib`` importable when a notebook is opened outside the project's environment
(a fresh virtual environment with only Jupyter, Colab with a clone): it finds the clone's root
above the working folder, ``pip install -e`` it, and then makes the fresh install visible to the
*running* kernel. An editable install is only picked up by a new interpreter (its ``.pth`` file
is read at start-up), so the cell also puts the clone's root on ``sys.path``, adds any
site-packages folder that did not exist at start-up (a ``--user`` install) and invalidates the
import caches, so the dependencies pip just installed are found too.

The cell is tagged ``hide-input``: the rendered pages show it collapsed.

``python -m mathlib.book fix-bootstrap [NOTEBOOK ...]`` rewrites the first code cell of the given
notebooks (default: every ``notebooks/**/*.ipynb``) to this cell; ``--check`` only reports.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

BOOTSTRAP_TAGS = ["hide-input"]

BOOTSTRAP_SOURCE = '''\
# Make mathlib importable outside the repository's environment (a bare Jupyter, Colab).
try:
    import mathlib
except ImportError:  # pragma: no cover - only outside `make book`
    import importlib, pathlib, site, subprocess, sys
    here = pathlib.Path.cwd().resolve()
    root = next((p for p in (here, *here.parents) if (p / "mathlib" / "__init__.py").is_file()), None)
    if root is None:
        raise ImportError("mathlib not found: clone the book's repository and open this notebook from inside it")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", str(root)])
    # This kernel started before the install: make the new packages visible without a restart.
    for d in [*site.getsitepackages(), site.getusersitepackages()]:
        if d not in sys.path and pathlib.Path(d).is_dir():
            site.addsitedir(d)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    import mathlib'''


def _is_bootstrap(source: str) -> bool:
    return "import mathlib" in source and "except ImportError" in source


def first_code_cell(nb) -> int | None:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            return i
    return None


def bootstrap_problem(nb) -> str | None:
    """None if the notebook's first code cell is the canonical bootstrap cell, else why not."""
    i = first_code_cell(nb)
    if i is None:
        return "no code cell"
    cell = nb.cells[i]
    if cell.source != BOOTSTRAP_SOURCE:
        return "the first code cell is not the canonical bootstrap cell (run: python -m mathlib.book fix-bootstrap)"
    tags = cell.get("metadata", {}).get("tags", [])
    if not set(BOOTSTRAP_TAGS) <= set(tags):
        return f"the bootstrap cell lacks the tags {BOOTSTRAP_TAGS} (run: python -m mathlib.book fix-bootstrap)"
    return None


def fix_notebook(path: Path) -> bool:
    """Make the first code cell of ``path`` the canonical bootstrap cell. Returns True if changed.

    The first code cell must already be a bootstrap cell (imports mathlib, catches ImportError);
    otherwise the canonical cell is inserted before it. No other cell is touched.
    """
    nb = nbformat.read(path, as_version=4)
    if bootstrap_problem(nb) is None:
        return False
    i = first_code_cell(nb)
    if i is not None and _is_bootstrap(nb.cells[i].source):
        cell = nb.cells[i]
        cell.source = BOOTSTRAP_SOURCE
    else:
        cell = nbformat.v4.new_code_cell(BOOTSTRAP_SOURCE)
        cell["id"] = "bootstrap"
        at = i if i is not None else len(nb.cells)
        nb.cells.insert(at, cell)
    tags = list(cell.metadata.get("tags", []))
    cell.metadata["tags"] = tags + [t for t in BOOTSTRAP_TAGS if t not in tags]
    nbformat.write(nb, path)
    return True
