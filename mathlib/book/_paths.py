"""Where things live: the repository root, the generated folder, the notebooks listed in _toc.yml."""

from __future__ import annotations

from pathlib import Path

import yaml

GENERATED = Path("book") / "_generated"
EXECUTED_PREFIX = GENERATED / "notebooks"


def repo_root(start: Path | None = None) -> Path:
    """The folder holding ``_toc.yml`` and ``mathlib/``, searched upwards from ``start`` or the cwd."""
    here = (start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "_toc.yml").is_file() and (p / "mathlib" / "__init__.py").is_file():
            return p
    raise FileNotFoundError(f"no repository root (a folder with _toc.yml and mathlib/) above {here}")


def _toc_files(node) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                files.append(node[key])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                files.extend(_toc_files(child))
    elif isinstance(node, list):
        for child in node:
            files.extend(_toc_files(child))
    return files


def toc_files(root: Path) -> list[str]:
    """Every document named in ``_toc.yml`` (without extension), in reading order."""
    return _toc_files(yaml.safe_load((root / "_toc.yml").read_text()))


def toc_notebooks(root: Path) -> list[Path]:
    """Source notebooks (``notebooks/<paper>/<name>.ipynb``) whose executed copies are in the toc."""
    out = []
    prefix = EXECUTED_PREFIX.as_posix() + "/"
    for entry in toc_files(root):
        if entry.startswith(prefix):
            rel = entry[len(prefix):]
            out.append(Path("notebooks") / f"{rel}.ipynb")
    return out


def executed_path(source: Path) -> Path:
    """``notebooks/p/n.ipynb`` -> ``book/_generated/notebooks/p/n.ipynb``."""
    rel = Path(source).relative_to("notebooks")
    return EXECUTED_PREFIX / rel
