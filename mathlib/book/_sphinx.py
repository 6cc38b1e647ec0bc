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
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
