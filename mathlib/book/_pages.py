"""Generated pages: the figure gallery and the execution status page."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import re
from pathlib import Path

from mathlib.book._execute import FIGURES, load_state
from mathlib.book._paths import GENERATED, executed_path, toc_notebooks

BOOK_TITLE = "Gradient-based meta-learning, reproduced"
PACKAGES = [
    "maml-theory-mathlib", "jax", "jaxlib", "optax", "numpy", "matplotlib", "scikit-learn",
    "jupyter-book", "sphinx", "myst-nb", "sphinx-proof", "sphinxcontrib-bibtex", "papermill", "python-pptx",
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


def figure_placements(root: Path) -> dict[str, str]:
    """``{figure ID: document}`` for every ``{figure}`` with ``:name: <ID>`` in the book's pages."""
    from mathlib.book._paths import toc_files

    out: dict[str, str] = {}
    in_toc = set(toc_files(root))  # only built pages define labels (only_build_toc_files)
    for page in sorted((root / "book").rglob("*.md")):
        rel = page.relative_to(root).as_posix()
        if rel.startswith(GENERATED.as_posix() + "/") or rel[: -len(".md")] not in in_toc:
            continue
        for fid in re.findall(r"^:name:\s*(fig-[a-z0-9-]+)\s*$", page.read_text(errors="replace"), re.M):
            out.setdefault(fid, "/" + rel[: -len(".md")])
    return out


def _gallery_prov_table(m: dict, run: dict) -> list[str]:
    prov = m.get("provenance") or {}
    versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()) or "-"
    params = json.dumps(prov.get("parameters", {}), sort_keys=True) if prov else "-"
    rows = [
        ("notebook", f"`{m.get('notebook') or '-'}`"),
        ("mode", prov.get("mode", "-")),
        ("parameters", f"`{params}`"),
        ("inputs SHA-256", f"`{prov.get('inputs_sha256') or '-'}`"),
        ("run", f"{run.get('seconds', '-')} s, finished {run.get('finished', '-')}"),
        ("versions", versions),
    ]
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def gallery_markdown(root: Path) -> str:
    from mathlib.book._pack import PACK, bibtex_entry, book_meta, chapters, citation_text, manifests

    figs = manifests(root)
    meta = book_meta(root)
    placed = figure_placements(root)
    state = load_state(root)["notebooks"]
    pack = root / PACK
    lines = [
        "# Figure gallery",
        "",
        "Every figure of the book, by chapter in book order, for readers and for lecturers who put",
        "them on slides. Each figure has a stable ID (it names the files, the BibTeX key and the",
        "book's label, and never changes once published), comes as PDF (print, LaTeX), SVG (web,",
        "slides) and PNG (200 dpi), and carries its provenance in the files' metadata.",
        "",
    ]
    if (pack / "figures.zip").is_file():
        lines += [
            "**Lecturer pack** (all figures): "
            "{download}`figures.zip <pack/figures.zip>` (every figure as PDF/SVG/PNG, BibTeX, citations, slides) · "
            "{download}`figures.bib <pack/figures.bib>` · {download}`citations.txt <pack/citations.txt>` · "
            "{download}`slides.pptx <pack/slides.pptx>` · {download}`slides.tex (Beamer) <pack/slides.tex>`. "
            "The slides have one figure per slide with its caption and citation, and the alt text in the speaker notes.",
            "",
        ]
    if not figs:
        lines += ["No figure has been produced yet: run `make book`.", ""]
    caption_of = {c["key"]: c["caption"] for c in chapters(root)}
    current = None
    for m in figs:
        fid, key = m["id"], m["key"]
        if key != current:
            current = key
            lines += [f"## {caption_of.get(key, key)}", ""]
            if (pack / "chapters" / f"{key}.zip").is_file():
                lines += [f"Chapter pack: {{download}}`{key}.zip <pack/chapters/{key}.zip>` (this chapter's figures, BibTeX, citations and slides).", ""]
        files = m.get("files", {})
        alt = " ".join(((m.get("alt") or "").strip() or m["caption"]).split())
        lines += [f"({fid}-gallery)=", f"### `{fid}`", ""]
        if "png" in files:
            lines += [f"```{{image}} figures/{files['png']}", ":width: 75%", f":alt: {alt}", "```", ""]
        lines += [m.get("caption", ""), ""]
        where = placed.get(fid)
        if where:
            lines += [f"Appears as {{numref}}`Figure %s <{fid}>` in {{doc}}`{where}`.", ""]
        else:
            lines += ["Not yet placed in a chapter page.", ""]
        if m.get("notebook"):
            lines += [f"Produced by {_doc_link(m['notebook'])}.", ""]
        dl = " · ".join(f"{{download}}`{fmt.upper()} <figures/{files[fmt]}>`" for fmt in ("pdf", "svg", "png") if fmt in files)
        if dl:
            lines += [f"Download: {dl}", ""]
        run = state.get(m.get("notebook", ""), {})
        lines += [":::{admonition} Provenance", ":class: dropdown", *_gallery_prov_table(m, run),
                  "", "The same record is embedded in the PDF's info dictionary, the PNG's text chunks and the SVG's metadata. The run time is kept here only, so identical inputs give identical files.", ":::", ""]
        lines += ["Cite as (plain text, then BibTeX keyed by the figure ID):", "",
                  "```text", citation_text(m, meta), "```", "",
                  "```bibtex", bibtex_entry(m, meta), "```", ""]
    return "\n".join(lines)


def downloads_markdown(root: Path) -> str:
    """The front page's download line (included by book/index.md): pack and PDF when they exist."""
    from mathlib.book._pack import PACK

    items = []
    if (root / PACK / "figures.zip").is_file():
        items.append("the lecturer pack {download}`figures.zip </book/_generated/pack/figures.zip>` "
                     "(every figure as PDF/SVG/PNG with BibTeX, citations and slides; see the {doc}`/book/_generated/gallery`)")
    if (root / GENERATED / "pdf" / "book.pdf").is_file():
        items.append("the whole book as one {download}`PDF </book/_generated/pdf/book.pdf>`")
    if not items:
        return "Downloads appear here after `make book` (lecturer pack) and `make pdf` (the book as PDF).\n"
    return "Downloads: " + "; ".join(items) + ".\n"


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
    from mathlib.book._pack import manifests

    no_alt = [m["id"] for m in manifests(root) if not (m.get("alt") or "").strip()]
    if no_alt:
        lines += ["## Figures without alt text", "",
                  "These figures use their caption as alt text; give them one sentence saying what the figure shows "
                  "(`save_figure(..., alt=...)` and the `{figure}` directive's `:alt:`):", "",
                  *[f"- `{fid}`" for fid in no_alt], ""]
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


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:  # unchanged pages keep their mtime (incremental build)
        _write(path, text)


def write_pages(root: Path) -> list[Path]:
    """The lecturer pack (when figures changed), then the gallery, status and downloads pages."""
    from mathlib.book._interactive import build_interactive
    from mathlib.book._pack import build_pack

    root = root.resolve()
    build_pack(root)
    build_interactive(root)
    out = [root / GENERATED / "gallery.md", root / GENERATED / "status.md", root / GENERATED / "downloads.md"]
    _write_if_changed(out[0], gallery_markdown(root))
    _write_if_changed(out[1], status_markdown(root))
    _write_if_changed(out[2], downloads_markdown(root))
    return out
