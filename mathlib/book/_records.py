"""Read the quantities a notebook recorded with ``mathlib.figures.record`` back from its executed copy."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any


def read_records(path: str | Path) -> dict[str, Any]:
    """Return ``{name: value}`` for every value glued in an executed notebook.

    Figures (glued images) are returned as the string ``"<figure>"``.

    Args:
        path: an executed ``.ipynb`` file.
    """
    nb = json.loads(Path(path).read_text())
    out: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            meta = output.get("metadata", {}) or {}
            name = (meta.get("scrapbook") or {}).get("name")
            if not name:
                continue
            prefix = (meta.get("scrapbook") or {}).get("mime_prefix", "")
            data = {k[len(prefix):] if prefix and k.startswith(prefix) else k: v
                    for k, v in output.get("data", {}).items()}
            text = data.get("text/plain", "")
            if isinstance(text, list):
                text = "".join(text)
            if any(k.startswith("image/") for k in data) or text.startswith("<Figure"):
                out[name] = "<figure>"
                continue
            try:
                out[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[name] = text
    return out
