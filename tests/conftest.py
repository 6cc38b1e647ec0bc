"""Shared fixtures. x64 is enabled for every test: claims about round-off need float64."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

# The library tests compile hundreds of small programs (many of them op by op, eagerly) and run
# each for milliseconds, so XLA's CPU compiler dominates their time. The classic emitters at LLVM
# O0 compile much faster (measured on a cold cache: tests/test_core_api.py 75 -> 33 CPU-s,
# tests/test_experiments_chayti2024.py 92 -> 49). Set before jax is imported, for this process and
# the subprocesses its tests start; the notebook executor gets the caller's flags back (see
# _start_execution), so notebooks compile and run as `make book` runs them.
_CALLER_XLA_FLAGS = os.environ.get("XLA_FLAGS")
TEST_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{_CALLER_XLA_FLAGS or ''} {TEST_XLA_FLAGS}".strip()


def caller_env() -> dict:
    """``os.environ`` with the caller's XLA flags (without this session's compile-speed flags), for
    subprocesses whose run time matters more than their compile time (notebooks, the benchmark)."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if _CALLER_XLA_FLAGS is not None:
        env["XLA_FLAGS"] = _CALLER_XLA_FLAGS
    return env

import jax  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

jax.config.update("jax_enable_x64", True)
# The notebooks execute in the background (2 workers) while these tests run: one BLAS thread here,
# as in each kernel, so that LAPACK's spinning threads do not fight over the 2 cores.
threadpool_limits(1)

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# Persistent compilation cache for the library tests (the executor uses the same folder for the
# notebooks): a second `make test` reuses compiled programs instead of recompiling them.
jax.config.update("jax_compilation_cache_dir", str(ROOT / ".cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


# What the book build reads. The tests execute notebooks (quick mode) and build the book in a
# mirror of these under .cache/test-book, so `make test` never replaces the full-mode outputs
# that `make book` left in book/_generated (and a later `make book` has nothing to re-execute).
_MIRRORED = ("_config.yml", "_toc.yml", "requirements.lock", "pyproject.toml", "book", "notebooks")


def _make_mirror(root: Path) -> Path:
    mirror = root / ".cache" / "test-book"
    mirror.mkdir(parents=True, exist_ok=True)
    for name in _MIRRORED:
        src, dst = root / name, mirror / name
        if src.is_dir():
            if dst.is_dir():  # refresh the sources, keep the generated outputs (incremental skip)
                for child in dst.iterdir():
                    if child.name != "_generated":
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("_generated", ".ipynb_checkpoints"))
        else:
            shutil.copy2(src, dst)
    for name in ("mathlib", ".cache/jax"):  # the same library (it is in the content hash) and compile cache
        link, target = mirror / name, root / name
        target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.exists():
                shutil.rmtree(link)
            link.symlink_to(target, target_is_directory=True)
    return mirror


_mirror_path: list[Path] = []


def _mirror() -> Path:
    """The mirror, refreshed once per session (never while the executor reads it)."""
    if not _mirror_path:
        _mirror_path.append(_make_mirror(ROOT))
    return _mirror_path[0]


@pytest.fixture(scope="session")
def book_root(repo_root) -> Path:
    """A mirror of the book's sources in which the tests execute notebooks and build the book."""
    return _mirror()


# --------------------------------------------------------------------------- notebook execution
# The notebooks (2 workers) start in the background as soon as the tests are collected, and the
# tests that need them run last: the library tests use the CPU meanwhile instead of waiting.
_NOTEBOOK_FIXTURES = {"executed_all", "executed", "built_book", "built_pdf"}
_NOTEBOOK_MARKERS = {"notebooks", "book", "browser", "pdf"}
_TIMEOUT = 45 * 60
_run: dict = {}


def _needs_notebooks(item) -> bool:
    return bool(_NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())))


def _start_execution(book: bool = False, pdf: bool = False) -> None:
    """Start the executor on the mirror (once per session), its output going to execute.log, and
    a thread that builds the book after it (``book``) and prints the PDF test's pages (``pdf``).

    The build and the print used to run when the first test needing them was reached, that is
    after every library test, while one core sat idle. Chained to the executor, they start as soon
    as the notebooks are done and overlap the library tests still running.
    """
    if _run:
        return
    mirror = _mirror()
    env = dict(caller_env(), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mathlib.book", "execute", "--quick", "--workers", "2"]
    patterns = os.environ.get("MATHLIB_TEST_NOTEBOOKS", "").split()
    if patterns:
        chosen = sorted({q.relative_to(mirror).as_posix() for pat in patterns
                         for q in (mirror / "notebooks").glob(pat + ("" if pat.endswith(".ipynb") else ".ipynb"))})
        if not chosen:
            raise pytest.UsageError(f"MATHLIB_TEST_NOTEBOOKS={patterns!r} matches no notebook under notebooks/")
        cmd += chosen
    log_path = mirror / "execute.log"
    log = open(log_path, "w")
    _run.update(proc=subprocess.Popen(cmd, cwd=mirror, env=env, stdout=log, stderr=subprocess.STDOUT),
                log=log, log_path=log_path, mirror=mirror, t0=time.monotonic(),
                done={stage: threading.Event() for stage in ("execute", "book", "pdf")},
                planned={"book": book, "pdf": pdf}, times={})
    threading.Thread(target=_chain, name="execute-build-print", daemon=True).start()


def _chain() -> None:
    """Executor, then book build, then PDF pages; each stage sets its event even when it fails."""
    proc = _run["proc"]
    try:
        _run["returncode"] = proc.wait(timeout=max(1.0, _TIMEOUT - (time.monotonic() - _run["t0"])))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        _run["returncode"] = "timeout (45 min)"
    finally:
        _run["log"].close()
        _run["times"]["execute"] = (0.0, time.monotonic() - _run["t0"])
        _run["done"]["execute"].set()
    for stage, work in (("book", _build_book), ("pdf", _print_pdf)):
        if not _run["planned"][stage]:
            _run["done"][stage].set()
            continue
        start = time.monotonic() - _run["t0"]
        try:
            _run[stage] = work()
        except BaseException as exc:  # reported by the test that needs the stage
            _run[stage] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            _run["times"][stage] = (start, time.monotonic() - _run["t0"])
            _run["done"][stage].set()


def _build_book() -> dict:
    """The strict HTML build of the mirror (generated pages first) into .cache/test-build."""
    mirror = _run["mirror"]
    out = mirror.parent / "test-build"
    shutil.rmtree(out, ignore_errors=True)  # a clean build: Sphinx reports warnings of re-read pages only
    subprocess.run([sys.executable, "-m", "mathlib.book", "pages"], cwd=mirror, check=True, capture_output=True)
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", ".", "-W", "-n", "--keep-going", "--path-output", str(out)],
                          cwd=mirror, capture_output=True, text=True, timeout=1800)
    return {"proc": proc, "html": out / "_build" / "html"}


# The single-page build is cut after its first documents before Chromium loads it: typesetting
# the whole book (4400 equations) took 2 of the 3 CPU-minutes of this stage; `make pdf` does it.
_PDF_DOCUMENTS = 6


def _print_pdf() -> dict:
    """The single-page build (reusing the HTML build's doctrees) and its first documents printed by
    headless Chromium; skipped (``None``) without Chromium or a successful HTML build."""
    from mathlib.book._browser import find_chromium
    from mathlib.book._pdf import print_book

    book = _run.get("book") or {}
    if find_chromium() is None or "proc" not in book or book["proc"].returncode != 0:
        return {"skipped": True}
    out = book["html"].parents[1]
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run([str(jb), "build", ".", "--builder", "singlehtml", "-W", "-n", "--keep-going", "--path-output", str(out)],
                          cwd=_run["mirror"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return {"proc": proc}
    pdf = out / "_build" / "pdf" / "book-first-pages.pdf"
    return {"proc": proc, "pdf": pdf, "info": print_book(out / "_build" / "singlehtml" / "index.html", pdf, documents=_PDF_DOCUMENTS)}


def _stage(name: str) -> dict:
    """Wait for a stage of the chain; a stage the session did not plan runs here, once."""
    _start_execution()
    _run["done"]["execute"].wait()
    if _run["planned"][name]:
        _run["done"][name].wait()
        return _run[name]
    with _stage_lock:
        if "book" not in _run:
            _run["book"] = _build_book()
        if name == "pdf" and "pdf" not in _run:
            _run["pdf"] = _print_pdf()
    return _run[name]


_stage_lock = threading.Lock()


def pytest_collection_modifyitems(session, config, items):
    """Library tests first, then the tests that read executed notebooks or the built book."""
    items.sort(key=_sorted_last)


def _sorted_last(item) -> bool:
    return _needs_notebooks(item) or bool(_NOTEBOOK_MARKERS & {m.name for m in item.iter_markers()})


def pytest_collection_finish(session):
    if not session.config.option.collectonly and any(_needs_notebooks(i) for i in session.items):
        book = any("built_book" in getattr(i, "fixturenames", ()) for i in session.items)
        pdf = any("built_pdf" in getattr(i, "fixturenames", ()) for i in session.items)
        _start_execution(book=book, pdf=pdf)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Note when the library tests are done (the first test that reads notebooks starts)."""
    if _run and "library" not in _run["times"] and _sorted_last(item):
        _run["times"]["library"] = (0.0, time.monotonic() - _run["t0"])


def pytest_terminal_summary(terminalreporter):
    """The session's critical path: when the library tests, the notebooks, the build and the PDF
    pages ended (seconds from the executor's start), to see which of them the run waited for."""
    if _run and _run["times"]:
        parts = [f"{name} {a:.0f}-{b:.0f} s" for name, (a, b) in sorted(_run["times"].items(), key=lambda kv: kv[1][1])]
        terminalreporter.write_line("timeline (from the executor's start): " + ", ".join(parts))


def pytest_sessionfinish(session, exitstatus):
    proc = _run.get("proc")
    if proc is not None and proc.poll() is None:  # interrupted session: do not leave the executor behind
        proc.terminate()


@pytest.fixture(scope="session")
def executed_all(book_root):
    """Every notebook of ``_toc.yml`` executed in quick mode (2 workers) in the mirror ``book_root``.

    The execution starts right after collection (see ``pytest_collection_finish``); this fixture
    waits for it and returns the executor's state (its ``state.json``). Notebooks whose quick-mode
    outputs there are up to date are not re-executed. The executor's progress goes to
    ``.cache/test-book/execute.log`` as it happens (``tail -f`` it), so a slow or stuck notebook is
    named even if the run is stopped. For a chapter's work, set ``MATHLIB_TEST_NOTEBOOKS`` to
    space-separated globs (``"ji2020/*"``): only those notebooks run, and tests of the others fail
    as "not executed".
    """
    _start_execution()
    _run["done"]["execute"].wait()
    returncode = _run["returncode"]
    text = _run["log_path"].read_text(errors="replace")
    sys.stdout.write(text)
    state_file = book_root / "book" / "_generated" / "state.json"
    state = json.loads(state_file.read_text())["notebooks"] if state_file.is_file() else {}
    if returncode == "timeout (45 min)":  # name what never finished instead of failing everything blindly
        started = {l.split(maxsplit=1)[1] for l in text.splitlines() if l.startswith("[start] ")}
        finished = {l.split()[2] for l in text.splitlines() if l.startswith("[") and (" ok " in l or " FAILED " in l)}
        for src in started - finished:
            state[src] = {"status": "timeout", "mode": "quick", "cell": "-",
                          "error": f"still running when the executor was stopped after 45 min\n{text[-3000:]}"}
    return {"returncode": returncode, "log": text, "state": state}


@pytest.fixture(scope="session")
def built_book(executed_all) -> dict:
    """The strict HTML build (``-W -n``) of the mirror, from the quick-mode notebooks:
    ``{"proc": CompletedProcess, "html": Path, "executed": executed_all}``. It starts in the
    background as soon as the notebooks are done (see :func:`_start_execution`)."""
    book = _stage("book")
    if "error" in book:
        pytest.fail(f"the book build did not run: {book['error']}")
    return {**book, "executed": executed_all}


@pytest.fixture(scope="session")
def built_pdf(built_book) -> dict:
    """The single-page build and its first pages printed to PDF (``{"proc", "pdf", "info"}``,
    or ``{"skipped": True}`` without Chromium or after a failed HTML build)."""
    pdf = _stage("pdf")
    if "error" in pdf:
        pytest.fail(f"the PDF print did not run: {pdf['error']}")
    return pdf


@pytest.fixture(scope="session")
def executed(executed_all, book_root):
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
        return read_records(book_root / "book" / "_generated" / "notebooks" / f"{name}.ipynb")

    return get
