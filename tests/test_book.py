"""The book builds strictly (-W -n) from the quick-mode executed notebooks and works offline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.book


def test_all_notebooks_executed(executed_all):
    failed = {k: v for k, v in executed_all["state"].items() if v.get("status") != "ok"}
    assert executed_all["returncode"] == 0 and not failed, f"failed notebooks: {failed}\n{executed_all['log'][-3000:]}"


def test_book_builds_without_warnings(built_book):
    proc = built_book["proc"]
    warnings = [l for l in (proc.stdout + proc.stderr).splitlines() if "WARNING" in l or "ERROR" in l]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings[:40]) + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (built_book["html"] / "index.html").is_file()


def test_html_is_offline_and_links_resolve(built_book):
    from mathlib.book._check import check_html

    assert built_book["proc"].returncode == 0
    problems = check_html(built_book["html"])
    assert not problems, "\n".join(problems[:50])


def test_math_is_served_locally(built_book):
    html = (built_book["html"] / "book" / "notation.html").read_text()
    m = re.search(r'<script[^>]+src="([^"]*tex-chtml\.js)"', html)
    assert m, "no MathJax script on the notation page"
    assert not m.group(1).startswith(("http", "//"))
    assert (built_book["html"] / "book" / m.group(1)).resolve().is_file()
    fonts = list((built_book["html"] / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert fonts, "MathJax's CHTML fonts are not shipped"


def test_pilot_figure_and_number_reach_the_notation_page(built_book):
    html = (built_book["html"] / "book" / "notation.html").read_text()
    assert "fig-intro-meta-gradient-field.svg" in html
    assert (built_book["html"] / "_images").exists()
    m = re.search(r"lies at distance\s*(?:<[^>]+>\s*)*([0-9.]+)", html)
    assert m and float(m.group(1)) > 0, "the glued distance did not render on the notation page"


def test_theorem_boxes_render(built_book):
    html = (built_book["html"] / "book" / "notation.html").read_text()
    assert 'class="admonition' in html and "lem-maml-gradient" in html


def test_gallery_lists_every_saved_figure(built_book, book_root):
    """The lecturer's page: every figure with its downloads, provenance and citations; a figure
    placed in a chapter shows its book number linked to that page."""
    from mathlib.book._pages import figure_placements

    figs = sorted(p.stem for p in (book_root / "book" / "_generated" / "figures").glob("fig-*.json"))
    html = (built_book["html"] / "book" / "_generated" / "gallery.html").read_text()
    text = re.sub(r"<[^>]+>", "", html)  # code blocks are highlighted: compare the text
    assert figs
    for fid in figs:
        assert fid in html, f"{fid} missing from the gallery"
        for fmt in ("pdf", "svg", "png"):
            assert f"{fid}.{fmt}" in html, f"no {fmt} download for {fid}"
        assert f"@misc{{{fid}," in text, f"no BibTeX entry keyed {fid}"
        digest = json.loads((book_root / "book" / "_generated" / "figures" / f"{fid}.json").read_text())["provenance"]["inputs_sha256"]
        assert digest and digest in html, f"no provenance hash for {fid}"
    placed = figure_placements(book_root)
    for fid, page in placed.items():
        if fid in figs:
            m = re.search(rf'href="([^"]*)#{fid}"[^>]*>\s*(?:<[^>]+>\s*)*Figure (\d+(?:\.\d+)*)', html)
            assert m, f"{fid}: no numbered link to where it appears ({page})"
    for name in ("figures.zip", "figures.bib", "citations.txt", "slides.pptx", "slides.tex"):
        assert re.search(rf'href="[^"]*_downloads/[^"]*/{re.escape(name)}"', html), f"gallery does not offer {name}"


def test_front_page_links_the_lecturer_pack(built_book):
    html = (built_book["html"] / "book" / "index.html").read_text()
    assert re.search(r'href="[^"]*_downloads/[^"]*/figures\.zip"', html), "front page: no lecturer pack link"


def test_notebook_pages_collapse_the_bootstrap_and_offer_the_executed_notebook(built_book, book_root):
    from mathlib.book._paths import toc_notebooks

    for src in toc_notebooks(book_root):
        rel = src.relative_to("notebooks").with_suffix("")
        page = built_book["html"] / "book" / "_generated" / "notebooks" / f"{rel}.html"
        html = page.read_text()
        m = re.search(r'href="([^"]*_downloads/[^"]*/' + re.escape(rel.name) + r'\.ipynb)"', html)
        assert m, f"{page.name}: no download of the executed notebook"
        nb = json.loads((page.parent / m.group(1)).read_text())
        assert any(o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])), "the download is not executed"
        boot = html.index("Make mathlib importable")
        opened = html.rfind("<details", 0, boot)
        assert opened != -1 and html.rfind("</details>", opened, boot) == -1, f"{page.name}: the bootstrap cell is not collapsed"


# --------------------------------------------------------------------------- in a browser
BROWSER_PAGES = [  # (page, has math)
    ("book/index.html", False),
    ("book/notation.html", True),
    ("book/fallah2020/experiments.html", True),
    ("book/_generated/notebooks/intro/01-maml-in-one-picture.html", True),
    ("book/_generated/gallery.html", False),
    ("book/_generated/status.html", False),
]
SHOTS = Path(__file__).resolve().parents[1] / ".cache" / "browser"


@pytest.fixture(scope="module")
def browser():
    from mathlib.book._browser import INSTALL_HINT, Chromium, find_chromium

    if find_chromium() is None:
        pytest.skip(INSTALL_HINT)
    with Chromium(width=1280, height=900) as b:
        yield b


@pytest.mark.browser
def test_key_pages_render_offline_in_a_browser(built_book, browser):
    """Headless Chromium with the network off: math typeset (no raw TeX, no MathJax error), no
    console error, no request leaving the machine, every image loads. Screenshots: .cache/browser/."""
    from mathlib.book._browser import page_problems

    assert built_book["proc"].returncode == 0
    found = {}
    for rel, has_math in BROWSER_PAGES:
        page = built_book["html"] / rel
        report, problems = page_problems(browser, page.as_uri(), expect_math=has_math)
        browser.screenshot(SHOTS / (rel.replace("/", "__").replace(".html", ".png")))
        if problems:
            found[rel] = problems
    assert not found, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in found.items())


@pytest.mark.browser
def test_interactive_slider_works_without_a_kernel(built_book, browser):
    """The pilot static interactive figure on the notation page: one frame shown at a time, and
    moving the slider shows the frame of the chosen alpha (offline, no kernel)."""
    browser.goto((built_book["html"] / "book" / "notation.html").as_uri())
    shown = lambda: browser.eval(
        "[...document.querySelectorAll('img.ml-frame')].filter(i => i.offsetParent !== null).map(i => i.getAttribute('src'))")
    first = shown()
    assert len(first) == 1 and "alpha-0.35" in first[0], first
    browser.eval("(() => { const i = document.getElementById('ml-alpha-input'); i.value = 0;"
                 " i.dispatchEvent(new Event('input')); })()")
    now = shown()
    assert len(now) == 1 and "alpha-0.05" in now[0], now
    assert browser.eval("document.getElementById('ml-alpha-value').textContent") == "0.05"
    browser.eval("document.getElementById('ml-alpha-slider').scrollIntoView()")
    browser.screenshot(SHOTS / "notation-slider.png")


@pytest.mark.browser
def test_search_finds_a_word_from_a_chapter(built_book, browser):
    from mathlib.book._browser import search

    links = search(browser, (built_book["html"] / "search.html").as_uri() + "?q=smoothness")
    browser.screenshot(SHOTS / "search.png")
    assert any("fallah2020" in l for l in links), f"search for 'smoothness' found {links}"


@pytest.mark.browser
def test_equations_stay_visible_in_the_dark_theme(built_book, browser):
    from mathlib.book._browser import dark_theme_contrast

    browser.goto((built_book["html"] / "book" / "notation.html").as_uri())
    browser.eval("MathJax.startup.promise")
    res = dark_theme_contrast(browser)
    browser.screenshot(SHOTS / "notation-dark.png")
    assert res["theme"] == "dark" and res["n"] > 0
    worst = res["worst"][0]
    assert worst["ratio"] >= 4.5, f"equation contrast {worst['ratio']:.2f} < 4.5 in the dark theme: {worst}"


# --------------------------------------------------------------------------- PDF
@pytest.mark.pdf
def test_pdf_of_the_book(built_pdf, browser):
    """The single-page HTML (reusing the HTML build's doctrees), cut after its first documents and
    printed by headless Chromium (in the background after the HTML build; see conftest): MathJax
    typeset the equations and every page was printed. Skips with instructions when Chromium is
    absent (the browser fixture)."""
    assert not built_pdf.get("skipped"), "Chromium is present but the PDF stage was skipped (did the HTML build fail?)"
    proc = built_pdf["proc"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = built_pdf["info"]
    assert info["equations"] > 200 and info["pages"] >= 20, info
    SHOTS.parent.mkdir(parents=True, exist_ok=True)
    (SHOTS.parent / "book-first-pages.pdf").write_bytes(built_pdf["pdf"].read_bytes())
    (SHOTS.parent / "book-pdf.json").write_text(json.dumps(info))
