"""The headless-browser harness itself, on small synthetic pages (fast; the book's pages are
checked in tests/test_book.py). Skips with instructions when Chromium is absent."""

from __future__ import annotations

import pytest

from mathlib.book._browser import INSTALL_HINT, Chromium, find_chromium, page_problems

pytestmark = [pytest.mark.browser, pytest.mark.skipif(find_chromium() is None, reason=INSTALL_HINT)]


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


def test_a_clean_page_has_no_problems(browser, tmp_path):
    (tmp_path / "ok.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>')
    (tmp_path / "ok.html").write_text('<html><body><main><p>Plain text.</p><img src="ok.svg"></main></body></html>')
    report, problems = page_problems(browser, (tmp_path / "ok.html").as_uri())
    assert problems == [] and report["images"] == 1


def test_the_harness_catches_what_the_book_test_relies_on(browser, tmp_path):
    """Each check can fail: an external image (blocked: the network is off), a console error,
    an uncaught exception, a missing image and raw TeX left in the text are all reported."""
    (tmp_path / "bad.html").write_text(
        '<html><body><main><p>Raw \\(x^2\\) left.</p>'
        '<img src="https://example.org/x.png"><img src="missing.png">'
        "<script>console.error('deliberate'); throw new Error('boom');</script></main></body></html>"
    )
    _, problems = page_problems(browser, (tmp_path / "bad.html").as_uri())
    text = "\n".join(problems)
    assert "external request: https://example.org/x.png" in text, text
    assert "deliberate" in text and "boom" in text, text
    assert "missing.png" in text and "raw TeX" in text, text


def test_the_network_is_off(browser):
    """Even a direct IP address cannot be reached from the test browser."""
    browser.events.clear()
    res = browser.call("Page.navigate", {"url": "http://1.1.1.1/"})
    assert res.get("errorText"), f"the browser reached the network: {res}"
