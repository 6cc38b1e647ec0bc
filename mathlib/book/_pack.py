"""The lecturer pack: every figure as PDF/SVG/PNG with BibTeX, plain-text citations and slides.

``python -m mathlib.book pack`` (run by ``make book`` and by ``python -m mathlib.book pages``)
writes ``book/_generated/pack/``:

* ``figures.zip``: ``figures/<ID>.{pdf,svg,png}``, ``figures.bib``, ``citations.txt``,
  ``slides.pptx``, ``slides.tex`` (Beamer; ``latexmk -xelatex slides.tex``), ``macros.tex``
  and ``README.txt``;
* the same files unzipped (``figures.bib``, ``citations.txt``, ``slides.pptx``, ``slides.tex``);
* ``chapters/<key>.zip``: the same pack for one chapter.

Everything is derived from the figure manifests (``<ID>.json``, written by ``save_figure``) and is
byte-identical for identical figures (fixed zip timestamps, sorted entries). The pack is rebuilt
only when a figure, a manifest or this module changed (``pack/.inputs-sha256``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import yaml

from mathlib.book._paths import GENERATED, toc_files

PACK = GENERATED / "pack"
FIGURES = GENERATED / "figures"
_ZIP_DATE = (2026, 1, 1, 0, 0, 0)
_ID = re.compile(r"^fig-(?P<key>[a-z]+[0-9]{4}|intro)-")


# --------------------------------------------------------------------------- book metadata
def book_meta(root: Path) -> dict[str, str]:
    path = root / "_config.yml"
    cfg = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    return {"title": str(cfg.get("title", "The book")), "author": str(cfg.get("author", "")),
            "year": str(cfg.get("copyright", "")), "license": "CC BY 4.0"}


def chapters(root: Path) -> list[dict[str, Any]]:
    """Chapters in book order: ``[{key, caption}]`` from the parts of ``_toc.yml``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out, seen = [], set()
    for part in toc.get("parts", []) or []:
        files = toc_files_of(part)
        keys = []
        for f in files:
            m = re.match(r"^book/_generated/notebooks/([^/]+)/", f) or re.match(r"^book/([a-z]+[0-9]{4})/", f)
            if m and m.group(1) not in keys:
                keys.append(m.group(1))
        for key in keys:
            if key not in seen:
                seen.add(key)
                out.append({"key": key, "caption": part.get("caption", key)})
    return out


def toc_files_of(node) -> list[str]:
    from mathlib.book._paths import _toc_files

    return _toc_files(node)


def manifests(root: Path) -> list[dict[str, Any]]:
    """Figure manifests in book order (chapter order of ``_toc.yml``, then notebook order, then ID)."""
    order = {c["key"]: i for i, c in enumerate(chapters(root))}
    nb_order = {f: i for i, f in enumerate(toc_files(root))}
    out = []
    for path in sorted((root / FIGURES).glob("fig-*.json")):
        m = json.loads(path.read_text())
        km = _ID.match(m["id"])
        m["key"] = km.group("key") if km else "other"
        nb = m.get("notebook", "")
        nb_doc = "book/_generated/" + nb[:-len(".ipynb")] if nb.endswith(".ipynb") else ""
        m["_order"] = (order.get(m["key"], len(order)), nb_order.get(nb_doc, 10**6), m["id"])
        out.append(m)
    return sorted(out, key=lambda m: m["_order"])


# --------------------------------------------------------------------------- citations
def _first_sentence(text: str) -> str:
    m = re.match(r"^(.*?[.!?])(\s|$)", text.strip(), re.S)
    return (m.group(1) if m else text.strip()).strip()


def citation_text(m: dict[str, Any], meta: dict[str, str]) -> str:
    prov = m.get("provenance", {})
    h = prov.get("inputs_sha256", "")
    return (f"{meta['author']}, figure {m['id']}: {_first_sentence(m['caption'])} "
            f"In \"{meta['title']}\" ({meta['year']}), notebook {m.get('notebook') or '?'}"
            f"{', ' + prov.get('mode', '') + ' mode' if prov.get('mode') else ''}"
            f"{', inputs sha256:' + h[:12] if h else ''}. {meta['license']}.")


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "$": r"\$"}


def tex_escape(text: str) -> str:
    """Escape LaTeX specials outside ``$...$`` math (math is kept as written)."""
    parts = re.split(r"(\$[^$]+\$)", text)
    return "".join(p if p.startswith("$") and p.endswith("$") and len(p) > 1
                   else "".join(_TEX_SPECIAL.get(ch, ch) for ch in p) for p in parts)


def bibtex_entry(m: dict[str, Any], meta: dict[str, str]) -> str:
    prov = m.get("provenance", {})
    note = f"Figure {m['id']}; notebook {m.get('notebook') or '?'}"
    if prov.get("mode"):
        note += f", {prov['mode']} mode"
    if prov.get("inputs_sha256"):
        note += f", inputs sha256:{prov['inputs_sha256'][:12]}"
    note += f". {meta['license']}"
    return "\n".join([
        f"@misc{{{m['id']},",
        f"  author       = {{{{{tex_escape(meta['author'])}}}}},",
        f"  title        = {{{{{tex_escape(_first_sentence(m['caption']))}}}}},",
        f"  howpublished = {{Figure in \\emph{{{tex_escape(meta['title'])}}}}},",
        f"  year         = {{{meta['year']}}},",
        f"  note         = {{{tex_escape(note)}}},",
        "}",
    ])


# --------------------------------------------------------------------------- slides
def slides_tex(figs: list[dict[str, Any]], meta: dict[str, str], title: str) -> str:
    lines = [
        "% Beamer slides of the book's figures: one figure per slide, caption, citation;",
        "% the alt text is in the speaker notes. Compile: latexmk -xelatex slides.tex",
        "% (Debian: apt-get install latexmk texlive-xetex texlive-latex-recommended texlive-fonts-recommended)",
        r"\documentclass[aspectratio=169,11pt]{beamer}",
        r"\usepackage{graphicx}",
        r"\usepackage{amsmath,amssymb}",
        r"\usepackage{fontspec}",
        r"\setbeamertemplate{navigation symbols}{}",
        r"\input{macros.tex}",
        f"\\title{{{tex_escape(title)}}}",
        f"\\author{{{tex_escape(meta['author'])}}}",
        f"\\date{{{meta['year']}}}",
        r"\begin{document}",
        r"\begin{frame}\titlepage\end{frame}",
    ]
    for m in figs:
        alt = m.get("alt") or m["caption"]
        lines += [
            f"\\begin{{frame}}{{\\texttt{{{tex_escape(m['id'])}}}}}",
            r"  \centering",
            f"  \\includegraphics[width=\\linewidth,height=0.6\\textheight,keepaspectratio]{{figures/{m['id']}.pdf}}\\par",
            f"  {{\\footnotesize {tex_escape(m['caption'])}\\par}}",
            f"  {{\\tiny {tex_escape(citation_text(m, meta))}\\par}}",
            f"  \\note{{{tex_escape(alt)}}}",
            r"\end{frame}",
        ]
    lines += [r"\end{document}", ""]
    return "\n".join(lines)


def slides_pptx(figs: list[dict[str, Any]], meta: dict[str, str], title: str, fig_dir: Path) -> bytes:
    """One figure per slide (16:9): the PNG, its caption and citation; alt text in the notes."""
    import datetime as dt

    from PIL import Image
    from pptx import Presentation
    from pptx.util import Emu, Inches, Pt

    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(13.333), Inches(7.5)
    fixed = dt.datetime(2026, 1, 1)
    cp = prs.core_properties
    cp.title, cp.author, cp.created, cp.modified, cp.last_modified_by = title, meta["author"], fixed, fixed, meta["author"]
    cp.revision = 1
    first = prs.slides.add_slide(prs.slide_layouts[0])
    first.shapes.title.text = title
    first.placeholders[1].text = f"{meta['author']} ({meta['year']}), figures under {meta['license']}"
    blank = prs.slide_layouts[6]
    W, H = prs.slide_width, prs.slide_height
    for m in figs:
        s = prs.slides.add_slide(blank)
        tb = s.shapes.add_textbox(Inches(0.4), Inches(0.15), W - Inches(0.8), Inches(0.5))
        tb.text_frame.text = m["id"]
        tb.text_frame.paragraphs[0].runs[0].font.size = Pt(20)
        png = fig_dir / f"{m['id']}.png"
        with Image.open(png) as im:
            w, h = im.size
        box_w, box_h = W - Inches(0.8), Inches(5.0)
        scale = min(box_w / w, box_h / h)
        pw, ph = int(w * scale), int(h * scale)
        s.shapes.add_picture(str(png), Emu(int((W - pw) / 2)), Inches(0.7), Emu(pw), Emu(ph))
        cap = s.shapes.add_textbox(Inches(0.5), Inches(5.85), W - Inches(1.0), Inches(1.1))
        cap.text_frame.word_wrap = True
        cap.text_frame.text = m["caption"]
        cap.text_frame.paragraphs[0].runs[0].font.size = Pt(13)
        p = cap.text_frame.add_paragraph()
        p.text = citation_text(m, meta)
        p.runs[0].font.size = Pt(9)
        s.notes_slide.notes_text_frame.text = (m.get("alt") or m["caption"]) + "\n\n" + citation_text(m, meta)
    raw = io.BytesIO()
    prs.save(raw)
    return _normalise_zip(raw.getvalue())


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a zip with fixed timestamps so identical content gives identical bytes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, _ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            zi = zipfile.ZipInfo(name, _ZIP_DATE)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            z.writestr(zi, entries[name])
    return out.getvalue()


def _readme(meta: dict[str, str], title: str, figs: list[dict[str, Any]]) -> str:
    return (f"{title}\n\nFrom \"{meta['title']}\" ({meta['year']}), {meta['author']}. Figures: {meta['license']}.\n\n"
            "figures/      every figure as PDF (print, LaTeX), SVG (web, slides) and PNG (200 dpi)\n"
            "figures.bib   one BibTeX entry per figure, keyed by its stable ID\n"
            "citations.txt the same citations in plain text\n"
            "slides.pptx   one figure per slide with caption and citation; alt text in the speaker notes\n"
            "slides.tex    the same as Beamer slides (latexmk -xelatex slides.tex; needs macros.tex)\n\n"
            "Each file's metadata (PDF info, PNG text, SVG <metadata>) names the notebook, mode,\n"
            "parameters, the SHA-256 of the inputs and the package versions that produced it.\n\n"
            + "".join(f"- {m['id']}\n" for m in figs))


def pack_files(root: Path, figs: list[dict[str, Any]], title: str) -> dict[str, bytes]:
    meta = book_meta(root)
    fig_dir = root / FIGURES
    entries: dict[str, bytes] = {}
    for m in figs:
        for fmt, name in sorted(m.get("files", {}).items()):
            entries[f"figures/{name}"] = (fig_dir / name).read_bytes()
    entries["figures.bib"] = ("\n\n".join(bibtex_entry(m, meta) for m in figs) + "\n").encode()
    entries["citations.txt"] = "".join(citation_text(m, meta) + "\n" for m in figs).encode()
    entries["slides.tex"] = slides_tex(figs, meta, title).encode()
    macros = root / "book" / "macros.tex"
    entries["macros.tex"] = macros.read_bytes() if macros.is_file() else b"% no macros\n"
    entries["slides.pptx"] = slides_pptx(figs, meta, title, fig_dir) if figs else b""
    entries["README.txt"] = _readme(meta, title, figs).encode()
    return entries


def _inputs_hash(root: Path) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in sorted((root / FIGURES).glob("fig-*")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    for name in ("_toc.yml", "_config.yml", "book/macros.tex"):
        if (root / name).is_file():
            h.update((root / name).read_bytes())
    return h.hexdigest()


def build_pack(root: Path, *, force: bool = False) -> list[Path]:
    """Write the lecturer pack; returns the files written ([] when nothing changed)."""
    root = root.resolve()
    out = root / PACK
    stamp = out / ".inputs-sha256"
    digest = _inputs_hash(root)
    if not force and stamp.is_file() and stamp.read_text().strip() == digest and (out / "figures.zip").is_file():
        return []
    figs = manifests(root)
    meta = book_meta(root)
    written: list[Path] = []

    def put(rel: str, data: bytes) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name("." + p.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(p)
        written.append(p)

    entries = pack_files(root, figs, f"Figures of {meta['title']}")
    put("figures.zip", _zip(entries))
    for name in ("figures.bib", "citations.txt", "slides.pptx", "slides.tex"):
        put(name, entries[name])
    for ch in chapters(root):
        sub = [m for m in figs if m["key"] == ch["key"]]
        if sub:
            put(f"chapters/{ch['key']}.zip", _zip(pack_files(root, sub, f"Figures of {ch['caption']}")))
    stamp.write_text(digest + "\n")
    return written
