"""Generated pages: the figure gallery and the execution status page."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
from pathlib import Path

from mathlib.book._execute import FIGURES, load_state
from mathlib.book._paths import GENERATED, executed_path, toc_notebooks

BOOK_TITLE = "Gradient-based meta-learning, reproduced"
PACKAGES = [
    "maml-theory-mathlib", "jax", "jaxlib", "optax", "numpy", "matplotlib", "scikit-learn",
    "jupyter-book", "sphinx", "myst-nb", "sphinx-proof", "sphinxcontrib-bibtex", "papermill",
]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _doc_link(source: str) -> str:
    """MyST link from a page in book/_generated to the executed notebook of ``source``."""
    target = executed_path(Path(source)).with_suffix("")
    rel = Path(target).relative_to(GENERATED).as_posix()
    return f"{{doc}}`{source} <{rel}>`"


def gallery_markdown(root: Path) -> str:
    manifests = []
    for path in sorted((root / FIGURES).glob("fig-*.json")):
        manifests.append(json.loads(path.read_text()))
    lines = [
        "# Figure gallery",
        "",
        "Every figure of the book, under its stable ID. The ID names the files, the glue key and the",
        "book's label; it never changes once published. Each figure comes as PDF (print, LaTeX),",
        "SVG (web, slides) and PNG (200 dpi), byte-identical across runs of the same code.",
        "",
    ]
    if not manifests:
        lines += ["No figure has been produced yet: run `make book`.", ""]
    for m in manifests:
        fid = m["id"]
        files = m.get("files", {})
        lines += [f"## `{fid}`", ""]
        if "png" in files:
            lines += [f"```{{image}} figures/{files['png']}", ":width: 70%", f":alt: {fid}", "```", ""]
        lines += [m.get("caption", ""), ""]
        dl = " · ".join(f"{{download}}`{fmt.upper()} <figures/{files[fmt]}>`" for fmt in ("pdf", "svg", "png") if fmt in files)
        if dl:
            lines += [f"Download: {dl}", ""]
        if m.get("notebook"):
            lines += [f"Source: {_doc_link(m['notebook'])}", ""]
        cite = (
            f"Figure `{fid}`, *{BOOK_TITLE}* (2026), notebook `{m.get('notebook', '?')}`; CC BY 4.0."
        )
        lines += ["Cite as:", "", "```text", cite.replace("`", "").replace("*", ""), "```", ""]
    return "\n".join(lines)


def status_markdown(root: Path) -> str:
    state = load_state(root)["notebooks"]
    lines = [
        "# Execution status",
        "",
        "Each notebook is executed by papermill before the book is built (`make book`); the book",
        "build itself never executes code. This page is regenerated after every execution.",
        "",
        "| notebook | status | mode | time (s) | finished |",
        "|---|---|---|---:|---|",
    ]
    total = 0.0
    for src in toc_notebooks(root):
        e = state.get(src.as_posix(), {})
        status = e.get("status", "not run")
        if status == "failed":
            status = f"failed at {e.get('cell', '?')}"
        secs = e.get("seconds")
        total += secs or 0.0
        link = _doc_link(src.as_posix()) if (root / executed_path(src)).is_file() else f"`{src.as_posix()}`"
        lines.append(f"| {link} | {status} | {e.get('mode', '-')} | {secs if secs is not None else '-'} | {e.get('finished', '-')} |")
    lines += ["", f"Sum of notebook times: {total:.1f} s (notebooks run two at a time).", ""]
    lines += ["## Environment", "", "| package | version |", "|---|---|"]
    for name in PACKAGES:
        try:
            lines.append(f"| {name} | {md.version(name)} |")
        except md.PackageNotFoundError:
            lines.append(f"| {name} | not installed |")
    lines += [
        "",
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPU core(s).",
        "",
    ]
    bench = root / "book" / "data" / "benchmark.md"
    if bench.is_file():
        lines += ["## Benchmark", "", bench.read_text(), ""]
    return "\n".join(lines)


def write_pages(root: Path) -> list[Path]:
    root = root.resolve()
    out = [root / GENERATED / "gallery.md", root / GENERATED / "status.md"]
    _write(out[0], gallery_markdown(root))
    _write(out[1], status_markdown(root))
    return out
