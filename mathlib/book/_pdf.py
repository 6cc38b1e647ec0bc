"""The whole book as one PDF: the single-page HTML printed by headless Chromium.

Why the browser and not LaTeX: the PDF then uses exactly the HTML's MathJax (the same macros
from ``_config.yml``), the same figure and equation numbers (Sphinx numbers them once for the
single-page build), the same ``prf:`` theorem boxes and working links; and the only system package
is Debian's ``chromium``, which the browser test needs anyway (~100 s to install, against
~1 GB and several minutes for texlive-xetex). ``make pdf`` builds it into ``_build/pdf/book.pdf``
and copies it to ``book/_generated/pdf/book.pdf``, which the next HTML build links from the
front page.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from mathlib.book._browser import Chromium

_PREPARE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await Promise.all([...document.images].map(i => (i.complete ? 0 : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); setTimeout(r, 10000); }))));
  const style = document.createElement('style');
  style.textContent = `@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
    .bd-header, .bd-sidebar-primary, .bd-sidebar-secondary, .bd-footer, .bd-header-article,
    .prev-next-area, .headerbtn, .skip-link, #pst-back-to-top, .toggle-details__summary, .cell_input details,
    details.above-input, details.hide { display: none !important; }
    .bd-main .bd-content .bd-article-container { max-width: 100% !important; }
    h1 { break-before: page; }  figure, .admonition, .proof { break-inside: avoid; }`;
  document.head.appendChild(style);
  document.querySelectorAll('details').forEach(d => d.open = false);
  return document.querySelectorAll('mjx-container').length;
})()
"""


def pdf_page_count(path: Path) -> int:
    return len(re.findall(rb"/Type\s*/Page(?![s\w])", Path(path).read_bytes()))


def first_documents(text: str, n: int) -> str:
    """The single-page HTML ``text`` cut after its first ``n`` inlined documents (the root page and
    the documents of the first ``n`` ``<span id="document-...">`` markers are kept).

    The cut runs from the marker of document ``n + 1`` to the ``</article>`` that closes the book's
    content, so the theme's head (MathJax, styles) and its closing scripts are kept; the HTML parser
    closes the sections left open, as it does for any ``</article>`` end tag.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"documents must be an int >= 1, got {n!r}")
    marks = [m.start() for m in re.finditer(r'<span id="document-', text)]
    if n >= len(marks):
        return text
    end = text.find("</article>", marks[-1])
    if end < 0:
        raise ValueError("the single-page HTML has no </article> after its last document: not a Jupyter Book singlehtml page")
    return text[:marks[n]] + text[end:]


def print_book(html: Path, pdf: Path, page_ranges: str | None = None, documents: int | None = None) -> dict:
    """Print the single-page HTML ``html`` to ``pdf``; returns pages, bytes, equations, seconds.

    ``page_ranges`` (Chromium's syntax, e.g. ``"1-40"``) prints only those pages: the whole book is
    still loaded and typeset, but printing, which costs about 0.4 s of CPU per page, is limited to
    them. ``documents`` loads only the root page and the first ``documents`` documents
    (:func:`first_documents`): typesetting the whole book's equations is most of the cost (about
    2 min of CPU for 4400 equations). The test uses it; ``make pdf`` prints everything.
    """
    t0 = time.perf_counter()
    html, pdf = Path(html).resolve(), Path(pdf)
    if not html.is_file():
        raise FileNotFoundError(f"{html} does not exist: build the single-page HTML first (make pdf does)")
    m = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', html.read_text(errors="replace")[:2000], re.I)
    if m:  # Jupyter Book's top-level index.html only redirects to the root document
        html = (html.parent / m.group(1)).resolve()
    # Sphinx's single-page builder writes the root document (book/index.html) with links relative
    # to the output root (_static/..., _images/...): print a copy placed where those links resolve.
    base = next((p for p in html.parents if (p / "_static").is_dir()), html.parent)
    if base != html.parent or documents is not None:
        text = html.read_text(encoding="utf-8")
        copy = base / "_print.html"
        copy.write_text(first_documents(text, documents) if documents is not None else text, encoding="utf-8")
        html = copy
    with Chromium(width=1000, height=1400) as b:
        b.goto(html.as_uri(), timeout=300)
        equations = b.eval(_PREPARE, timeout=600)
        options = {"pageRanges": page_ranges} if page_ranges else {}
        b.print_pdf(pdf, displayHeaderFooter=True, **options, headerTemplate="<span></span>",
                    footerTemplate='<div style="font-size:8px;width:100%;text-align:center;"><span class="pageNumber"></span> / <span class="totalPages"></span></div>')
    root = next((p for p in html.parents if (p / "_toc.yml").is_file()), None)  # <root>/_build/singlehtml/...
    if root is not None and not page_ranges and documents is None:  # a partial print is not the book's PDF
        copy = root / "book" / "_generated" / "pdf" / "book.pdf"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(pdf.read_bytes())
    return {"pages": pdf_page_count(pdf), "bytes": pdf.stat().st_size, "equations": equations,
            "seconds": time.perf_counter() - t0}
