"""A small Sphinx extension for the book's HTML, fixing what the browser test found.

* MathJax on every page (``html_assets_policy = "always"``): the navigation sidebar shows page
  titles with math (e.g. "the task batch $B$") on every page, but Sphinx loads MathJax only on
  pages whose own body has math, so those titles stayed raw TeX on the gallery and status pages.
* A default colour mode: sphinx-book-theme leaves pydata-sphinx-theme's ``default_mode`` empty
  (and rejects the theme option), so a first visit logs "Got invalid theme mode: ." as a console
  error; ``auto`` follows the reader's system setting.
* Each inline script once: Jupyter Book 1 registers sphinx-thebe's configuration script twice,
  and the second ``const THEBE_JS_URL`` throws "Identifier has already been declared" on every
  page.
"""

from __future__ import annotations

import re
from pathlib import Path

_INLINE_SCRIPT = re.compile(r"[ \t]*<script>[^<]*</script>\n?")


def dedupe_inline_scripts(html: str) -> str:
    """Drop repeated identical inline ``<script>`` elements (keep the first of each)."""
    seen: set[str] = set()

    def keep(m):
        key = m.group(0).strip()
        if key in seen:
            return ""
        seen.add(key)
        return m.group(0)

    return _INLINE_SCRIPT.sub(keep, html)


def _postprocess(app, exception):
    """The duplicates are registered after the page context is final, so fix the written pages."""
    if exception is not None or app.builder.format != "html":
        return
    for path in Path(app.outdir).rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        fixed = dedupe_inline_scripts(text)
        if fixed != text:
            path.write_text(fixed, encoding="utf-8")


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "auto"
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, out = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (str(getattr(js, "filename", js)), attrs.get("body"))
        if key in seen:
            continue
        seen.add(key)
        out.append(js)
    scripts[:] = out


def setup(app):
    app.set_html_assets_policy("always")
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _postprocess)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
