"""Checks on a built book: it must work offline and have no broken internal links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)
_CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str]] = []  # (tag, url) loaded by the browser
        self.links: list[str] = []  # <a href>
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "script" and a.get("src"):
            self.resources.append(("script", a["src"]))
        elif tag == "link" and a.get("href") and (a.get("rel") or "") not in ("canonical",):
            self.resources.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag in ("img", "iframe", "source", "video", "audio", "embed") and a.get("src"):
            self.resources.append((tag, a["src"]))
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def check_html(html_dir: Path) -> list[str]:
    """Return a list of problems: external resources (script, stylesheet, font, image) and
    internal links to missing files or anchors."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file():
        return [f"{html_dir}/index.html does not exist"]
    problems: list[str] = []
    pages = {p: _parse(p) for p in sorted(html_dir.rglob("*.html"))}
    for path, page in pages.items():
        rel = path.relative_to(html_dir)
        for tag, url in page.resources:
            if _EXTERNAL.match(url) or url.startswith("data:text/javascript"):
                problems.append(f"{rel}: external resource <{tag}> {url}")
        for href in page.links:
            if _EXTERNAL.match(href) or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            parts = urlsplit(href)
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if parts.path and not target.exists():
                problems.append(f"{rel}: broken link {href}")
                continue
            if parts.fragment and target.suffix == ".html":
                tpage = pages.get(target) or (_parse(target) if target.is_file() else None)
                if tpage is not None and unquote(parts.fragment) not in tpage.ids:
                    problems.append(f"{rel}: broken anchor {href}")
    for css in sorted(html_dir.rglob("*.css")):
        for m in _CSS_URL.finditer(css.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{css.relative_to(html_dir)}: external url {m.group(1)}")
    return problems
