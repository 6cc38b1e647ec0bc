"""The book builds strictly (-W -n) from the quick-mode executed notebooks and works offline."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.book


@pytest.fixture(scope="session")
def built_book(executed_all, book_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    subprocess.run([sys.executable, "-m", "mathlib.book", "pages"], cwd=book_root, check=True, capture_output=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", ".", "-W", "-n", "--keep-going", "--path-output", str(out)],
        cwd=book_root, capture_output=True, text=True, timeout=1800,
    )
    return {"proc": proc, "html": out / "_build" / "html", "executed": executed_all}


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
    figs = sorted(p.stem for p in (book_root / "book" / "_generated" / "figures").glob("fig-*.json"))
    html = (built_book["html"] / "book" / "_generated" / "gallery.html").read_text()
    assert figs
    for fid in figs:
        assert fid in html, f"{fid} missing from the gallery"
        for fmt in ("pdf", "svg", "png"):
            assert f"{fid}.{fmt}" in html, f"no {fmt} download for {fid}"
