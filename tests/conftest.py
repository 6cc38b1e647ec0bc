"""Shared fixtures. x64 is enabled for every test: claims about round-off need float64."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def executed_all(repo_root):
    """Execute every notebook of ``_toc.yml`` once per session in quick mode (2 workers).

    Returns the executor's state (``book/_generated/state.json``); unchanged notebooks whose
    quick-mode outputs are already there are not re-executed.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mathlib.book", "execute", "--quick", "--workers", "2"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=60 * 60,
    )
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr[-5000:])
    state = json.loads((repo_root / "book" / "_generated" / "state.json").read_text())
    return {"returncode": proc.returncode, "log": proc.stdout + proc.stderr, "state": state["notebooks"]}


@pytest.fixture(scope="session")
def executed(executed_all, repo_root):
    """``executed("fallah2020/01-fd-hvp")`` -> dict of the values that notebook recorded.

    Fails the calling test with the executor's error (notebook and cell) if that notebook failed.
    """
    from mathlib.book import read_records

    def get(name: str) -> dict:
        src = f"notebooks/{name}.ipynb"
        entry = executed_all["state"].get(src)
        if entry is None:
            pytest.fail(f"{src} was not executed (is it listed in _toc.yml?)\n{executed_all['log'][-3000:]}")
        if entry.get("status") != "ok" or entry.get("mode") != "quick":
            pytest.fail(f"{src}: status {entry.get('status')} ({entry.get('mode')} mode) at cell {entry.get('cell')}: {entry.get('error')}")
        return read_records(repo_root / "book" / "_generated" / "notebooks" / f"{name}.ipynb")

    return get
