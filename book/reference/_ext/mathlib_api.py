"""Sphinx hook for the API reference page: mathlib's docstrings are written for MyST readers.

``autodoc`` parses docstrings as reStructuredText, so before it does this hook rewrites
``$$...$$`` to ``:math:`\\displaystyle ...``` and ``$...$`` to ``:math:`...``` (rendered by MathJax
offline, with the book's macros), and MyST roles ``{role}`text``` to ``:role:`text```.
"""

from __future__ import annotations

import re

_DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?!\s)([^$]+?)(?<!\s)\$(?!\$)", re.S)
_MYST_ROLE = re.compile(r"\{([a-z]+(?::[a-z]+)?)\}`")


def _math(body: str, display: bool) -> str:
    body = " ".join(body.split())  # one line: inline markup content must not contain blank lines
    prefix = "\\displaystyle " if display else ""
    # escaped spaces let the role touch the surrounding text (``x``$y$, $K$=...) and vanish in the output
    return "\\ :math:`" + prefix + body + "`\\ "


def convert(text: str) -> str:
    """MyST-flavoured docstring text -> reStructuredText (math and roles)."""
    text = _DISPLAY.sub(lambda m: _math(m.group(1), True), text)
    text = _INLINE.sub(lambda m: _math(m.group(1), False), text)
    return _MYST_ROLE.sub(lambda m: f":{m.group(1)}:`", text)


def _process(app, what, name, obj, options, lines):
    if not name.startswith("mathlib"):
        return
    new = convert("\n".join(lines)).split("\n")
    lines[:] = new


def setup(app):
    app.connect("autodoc-process-docstring", _process)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
