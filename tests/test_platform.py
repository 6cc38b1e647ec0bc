"""The book platform: notebook hygiene, environment files in step, figure contract, executor."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]


def _params_cells(nb):
    return [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]


# --------------------------------------------------------------------------- notebooks
def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebook under notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT / "notebooks").as_posix())
def test_notebook_is_clean_and_parameterised(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} are committed with outputs (strip them)"
    params = _params_cells(nb)
    assert len(params) == 1, f"{path.name}: expected exactly one cell tagged 'parameters', found {len(params)}"
    names = {}
    for node in ast.parse(params[0].source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
    assert {"quick", "seed"} <= set(names), f"{path.name}: the parameters cell must define quick and seed"
    assert isinstance(names["quick"], ast.Constant) and names["quick"].value is False, (
        f"{path.name}: the default must be quick = False, so full runs inject no parameters cell"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "import mathlib" in code[0] and "except ImportError" in code[0], (
        f"{path.name}: the first code cell must make mathlib importable outside the repository"
    )
    for src in code:
        assert not re.search(r"^\s*from myst_nb import", src, re.M), (
            f"{path.name}: use mathlib.record / save_figure instead of importing myst_nb (the notebook must run outside the book)"
        )


def test_every_notebook_is_in_the_toc():
    from mathlib.book._paths import toc_notebooks

    in_toc = {p.as_posix() for p in toc_notebooks(ROOT)}
    on_disk = {p.relative_to(ROOT).as_posix() for p in NOTEBOOKS}
    assert on_disk == in_toc, f"not in _toc.yml: {sorted(on_disk - in_toc)}; missing on disk: {sorted(in_toc - on_disk)}"


def test_every_toc_page_exists_or_is_generated():
    from mathlib.book._paths import toc_files

    for entry in toc_files(ROOT):
        if entry.startswith("book/_generated/"):
            continue
        assert (ROOT / f"{entry}.md").is_file() or (ROOT / f"{entry}.ipynb").is_file(), f"_toc.yml names {entry}, which does not exist"


# --------------------------------------------------------------------------- environment files
def _lock() -> dict[str, str]:
    out = {}
    text = (ROOT / "requirements.lock").read_text() + (ROOT / "requirements-lab.lock").read_text()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = ver
    return out


def _pyproject_requirements() -> list[Requirement]:
    import tomllib

    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in proj["dependencies"]]
    for extra in proj.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def test_lock_satisfies_pyproject_ranges():
    lock = _lock()
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject.toml) is not pinned in requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock pins {req.name}=={lock[name]}, outside {req.specifier}"


def test_optional_lab_lock_does_not_repin_the_main_lock():
    main = {canonicalize_name(l.partition("==")[0]) for l in (ROOT / "requirements.lock").read_text().splitlines() if "==" in l}
    lab = {canonicalize_name(l.partition("==")[0]) for l in (ROOT / "requirements-lab.lock").read_text().splitlines() if "==" in l}
    assert "jupyterlab" in lab and not (main & lab), f"pinned in both locks: {sorted(main & lab)}"


def test_jupyter_book_is_pinned_below_2():
    assert _lock()["jupyter-book"].startswith("1."), "Jupyter Book 2 does not read _config.yml/_toc.yml"


def test_environment_yml_matches_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pins: dict[str, str] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for p in dep.get("pip", []):
                if "==" in p:
                    n, _, v = p.partition("==")
                    pins[canonicalize_name(n)] = v
        elif "=" in dep:
            n, _, v = dep.partition("=")
            pins[canonicalize_name(n)] = v
    assert pins.get("python", "").startswith("3.11")
    lock = _lock()
    for req in _pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not in environment.yml"
        assert pins[name] == lock[name], f"environment.yml pins {req.name}={pins[name]}, the lock {lock[name]}"


def test_math_macros_are_mirrored_for_latex():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    mj = cfg["sphinx"]["config"]["mathjax3_config"]["tex"]["macros"]
    tex = (ROOT / "book" / "macros.tex").read_text()
    latex = dict(re.findall(r"\\newcommand\{\\(\w+)\}(?:\[(\d)\])?", tex))
    assert set(mj) == set(latex), f"MathJax-only: {set(mj) - set(latex)}; LaTeX-only: {set(latex) - set(mj)}"
    for name, body in mj.items():
        nargs = str(body[1]) if isinstance(body, list) else ""
        assert latex[name] == nargs, f"macro \\{name}: {nargs or 0} arguments in MathJax, {latex[name] or 0} in LaTeX"


def test_execution_is_off_in_the_book_build():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"


# --------------------------------------------------------------------------- figure contract
def _draw(tmp_path, monkeypatch, sub):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mathlib.figures as mf

    monkeypatch.setenv("MATHLIB_FIGURES_DIR", str(tmp_path / sub))
    mf.use_style()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1, 4, 9], label="$x^2$")
    ax.set_xlabel("$x$")
    ax.legend()
    return mf.save_figure(fig, "fig-intro-test-contract", caption="A test figure.", show=False)


def test_figures_are_byte_identical_across_runs(tmp_path, monkeypatch):
    a = _draw(tmp_path, monkeypatch, "a")
    b = _draw(tmp_path, monkeypatch, "b")
    assert set(a) == {"pdf", "svg", "png"}
    for fmt in a:
        assert Path(a[fmt]).read_bytes() == Path(b[fmt]).read_bytes(), f"{fmt} differs between two runs"
    manifest = json.loads((tmp_path / "a" / "fig-intro-test-contract.json").read_text())
    assert manifest["caption"] == "A test figure." and manifest["files"]["svg"] == "fig-intro-test-contract.svg"


@pytest.mark.parametrize("bad", ["fig-Fallah2020-x", "fallah2020-x", "fig-fallah2020-", "fig-fallah2020-a_b"])
def test_figure_id_must_follow_the_contract(bad, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import mathlib.figures as mf

    monkeypatch.setenv("MATHLIB_FIGURES_DIR", str(tmp_path))
    fig = plt.figure()
    with pytest.raises(ValueError, match="figure_id"):
        mf.save_figure(fig, bad, caption="x", show=False)
    plt.close(fig)


def test_record_returns_plain_python():
    import jax.numpy as jnp
    import numpy as np
    import mathlib.figures as mf

    from mathlib.figures import _plain

    assert type(_plain(np.float64(0.5))) is float
    assert type(_plain(jnp.asarray(3))) is int
    assert type(_plain(np.bool_(True))) is bool
    assert _plain(jnp.arange(3.0)) == [0.0, 1.0, 2.0]
    assert _plain({"a": (np.float32(1.5),)}) == {"a": [1.5]}
    assert mf.record("t-a", np.float64(0.5)) is None
    with pytest.raises(ValueError, match="name"):
        mf.record("", 1.0)


# --------------------------------------------------------------------------- executor
_SETUP = "import mathlib.figures as mf\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt"


def _nb(path: Path, body: str, value: float = 1.0):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(f"quick = False\nseed = 0\nvalue = {value}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell(_SETUP), params, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


_GOOD = textwrap.dedent(
    """
    mf.record("t-value", value)
    mf.record("t-quick", quick)
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, value])
    mf.save_figure(fig, "fig-intro-executor-test", caption="executor test", show=False)
    """
)


@pytest.fixture()
def fake_repo(tmp_path):
    """A minimal repository: _toc.yml, mathlib/ (hashed, not imported), two notebooks."""
    (tmp_path / "mathlib").mkdir()
    (tmp_path / "mathlib" / "__init__.py").write_text("# stand-in: the kernel imports the installed mathlib\n")
    (tmp_path / "requirements.lock").write_text("x==1\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: index\nchapters:\n"
        "  - file: book/_generated/notebooks/t/01-good\n"
        "  - file: book/_generated/notebooks/t/02-other\n"
    )
    _nb(tmp_path / "notebooks" / "t" / "01-good.ipynb", _GOOD, 1.0)
    _nb(tmp_path / "notebooks" / "t" / "02-other.ipynb", "mf.record('t-other', 2)")
    return tmp_path


def _execute(root, *args):
    return subprocess.run([sys.executable, "-m", "mathlib.book", "execute", *args], cwd=root,
                          capture_output=True, text=True, timeout=600)


def test_executor_atomic_incremental_and_clean(fake_repo):
    from mathlib.book import read_records

    gen = fake_repo / "book" / "_generated"
    out = gen / "notebooks" / "t" / "01-good.ipynb"
    fig = gen / "figures" / "fig-intro-executor-test.svg"

    r = _execute(fake_repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_records(out) == {"t-value": 1.0, "t-quick": False, "fig-intro-executor-test": "<figure>"}
    good_nb, good_fig = out.read_bytes(), fig.read_bytes()
    # full mode injects nothing: the published notebook has no injected-parameters cell
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", [])
                   for c in nbformat.read(out, as_version=4).cells)
    state = json.loads((gen / "state.json").read_text())["notebooks"]
    assert state["notebooks/t/01-good.ipynb"]["status"] == "ok" and state["notebooks/t/01-good.ipynb"]["seconds"] > 0
    assert (gen / "status.md").is_file() and "fig-intro-executor-test" in (gen / "gallery.md").read_text()

    # nothing changed: nothing is executed
    r = _execute(fake_repo)
    assert r.returncode == 0 and "executing 0 notebook(s)" in r.stdout, r.stdout

    # a library change invalidates every notebook
    (fake_repo / "mathlib" / "__init__.py").write_text("# changed\n")
    r = _execute(fake_repo)
    assert "executing 2 notebook(s)" in r.stdout, r.stdout
    good_nb, good_fig = out.read_bytes(), fig.read_bytes()

    # a failing notebook is named with its cell, the other still runs, previous outputs are kept
    _nb(fake_repo / "notebooks" / "t" / "01-good.ipynb", _GOOD + "\nraise RuntimeError('deliberate failure')\n", 5.0)
    _nb(fake_repo / "notebooks" / "t" / "02-other.ipynb", "mf.record('t-other', 3)")
    r = _execute(fake_repo)
    assert r.returncode == 1
    assert "FAILED notebooks/t/01-good.ipynb at cell In [3]" in r.stdout and "deliberate failure" in r.stdout, r.stdout
    assert out.read_bytes() == good_nb and fig.read_bytes() == good_fig
    assert read_records(gen / "notebooks" / "t" / "02-other.ipynb") == {"t-other": 3}
    assert not list((gen / ".staging").glob("*")) if (gen / ".staging").exists() else True
    assert "failed at In [3]" in (gen / "status.md").read_text()

    # quick mode injects quick=True, and a parameter from the command line reaches the notebook
    # (one run checks both: each run costs a kernel start)
    _nb(fake_repo / "notebooks" / "t" / "01-good.ipynb", _GOOD, 1.0)
    r = _execute(fake_repo, "--quick", "--workers", "1", "-p", "value", "7.5", "notebooks/t/01-good.ipynb")
    assert r.returncode == 0, r.stdout + r.stderr
    assert read_records(out)["t-quick"] is True and read_records(out)["t-value"] == 7.5, r.stdout + r.stderr


def _blocking_notebook(path, code: str) -> None:
    """A notebook with a parameters cell and one cell running ``code`` (which never returns)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("quick = False\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)


def test_executor_names_a_hung_notebook_retries_it_once_and_runs_the_others(fake_repo):
    """A cell that never returns (a lost kernel reply looks the same) fails its notebook by name
    after the per-cell limit, is retried once, and does not stop the other notebook."""
    _blocking_notebook(fake_repo / "notebooks" / "t" / "01-good.ipynb", "import time\ntime.sleep(600)")
    r = _execute(fake_repo, "--cell-timeout", "4", "--retries", "1")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.count("[retry] notebooks/t/01-good.ipynb") == 1, r.stdout
    assert "FAILED notebooks/t/01-good.ipynb" in r.stdout and "timed out" in r.stdout, r.stdout
    assert "limits: 4 s per cell" in r.stdout, r.stdout
    assert "ok     notebooks/t/02-other.ipynb" in r.stdout, r.stdout
    r = _execute(fake_repo, "--cell-timeout", "0")
    assert r.returncode == 2 and "argument --cell-timeout must be > 0 seconds, got 0.0" in r.stderr, r.stderr


def test_executor_kills_a_kernel_that_uses_no_cpu(fake_repo):
    """A kernel blocked without using CPU (as in an XLA runtime deadlock, which waited on a buffer
    forever with every thread idle) is killed after the stall limit, long before the cell limit,
    and its notebook fails by name as a dead kernel (retryable; no retry asked here)."""
    _blocking_notebook(fake_repo / "notebooks" / "t" / "01-good.ipynb", "import threading\nthreading.Event().wait()")
    t0 = time.perf_counter()
    r = _execute(fake_repo, "--stall-timeout", "5", "--retries", "0", "notebooks/t/01-good.ipynb")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "used no CPU for 5 s: killed" in r.stdout and "FAILED notebooks/t/01-good.ipynb" in r.stdout, r.stdout
    assert "DeadKernelError" in r.stdout or "Kernel died" in r.stdout, r.stdout
    assert time.perf_counter() - t0 < 120, "the stall limit, not the cell limit (300 s), ended the run"
    r = _execute(fake_repo, "--stall-timeout", "-1")
    assert r.returncode == 2 and "argument --stall-timeout must be > 0 seconds, got -1.0" in r.stderr, r.stderr


def test_executor_watchdog_stops_a_wedged_worker_and_its_kernel(fake_repo):
    """A worker that outlives the notebook limit (wedged outside any cell) is killed with its
    kernel; the run names it and exits non-zero instead of hanging."""
    import psutil

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(600)")]
    nbformat.write(nb, fake_repo / "notebooks" / "t" / "01-good.ipynb")
    r = _execute(fake_repo, "--notebook-timeout", "6", "notebooks/t/01-good.ipynb")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAILED notebooks/t/01-good.ipynb: still running after 6 s" in r.stdout, r.stdout
    time.sleep(1)
    left = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if str(fake_repo) in (proc.info["cwd"] or ""):
                left.append(proc.info["cmdline"])
        except (psutil.Error, TypeError):
            pass
    assert not left, f"processes left running: {left}"


def test_executor_rejects_unknown_notebook(fake_repo):
    r = _execute(fake_repo, "notebooks/t/missing.ipynb")
    assert r.returncode != 0 and "missing.ipynb does not exist" in (r.stdout + r.stderr)


# --------------------------------------------------------------------------- offline check
def test_check_html_catches_external_resources_and_broken_links(tmp_path):
    from mathlib.book._check import check_html

    (tmp_path / "index.html").write_text(
        '<html><head><script src="https://cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/f.css"><link rel="stylesheet" href="ok.css"></head>'
        '<body><a id="top"></a><a href="missing.html">x</a><a href="index.html#top">ok</a>'
        '<a href="index.html#nowhere">bad anchor</a><a href="https://example.org">external link is fine</a></body></html>'
    )
    (tmp_path / "ok.css").write_text("@font-face { src: url('https://fonts.example.org/a.woff'); }")
    problems = check_html(tmp_path)
    text = "\n".join(problems)
    assert "cdn.example.org/x.js" in text and "//fonts.example.org/f.css" in text
    assert "broken link missing.html" in text and "broken anchor index.html#nowhere" in text
    assert "fonts.example.org/a.woff" in text
    assert "example.org\n" not in text + "\n" and len(problems) == 5


def test_readme_mathlib_example_runs_and_says_what_the_readme_claims(tmp_path):
    """The README's 'Using mathlib' block runs as printed, and its output matches the prose."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Using mathlib", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "expected exactly one python block in README 'Using mathlib'"
    script = tmp_path / "snippet.py"
    script.write_text(blocks[0])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    dist = {m[0]: float(m[1]) for m in re.findall(r"^(\w+)\s+distance to the exact meta-gradient: (\S+)$", out.stdout, re.M)}
    assert set(dist) == {"maml", "hf_maml", "fomaml"}, out.stdout
    assert dist["maml"] < 1e-12 and dist["hf_maml"] < 1e-10, dist
    assert 1e-2 < dist["fomaml"] < 1.0, dist
    start, end = map(float, re.search(r"exact ‖∇F‖: (\S+) -> (\S+)", out.stdout).groups())
    assert start > 0.1 and end < 1e-12, out.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_parameters_cell_parses_cleanly(path):
    """papermill infers parameter names and types line by line; an '=' inside a comment makes it
    warn 'Unable to parse line' and lose that parameter's comment in its help output."""
    from papermill.inspection import _infer_parameters
    from papermill.iorw import load_notebook_node

    nb = load_notebook_node(str(path))
    cell = _params_cells(nb)[0]
    names = {p.name for p in _infer_parameters(nb)}
    assigned = {l.split("=", 1)[0].strip() for l in cell.source.splitlines() if "=" in l.split("#", 1)[0]}
    assert assigned and assigned <= names, f"papermill could not parse: {sorted(assigned - names)}"
    bad = [l for l in cell.source.splitlines() if "#" in l and "=" in l.split("#", 1)[1]]
    assert not bad, f"'=' inside a comment of the parameters cell: {bad}"


# --------------------------------------------------------------------------- bootstrap cell
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_first_code_cell_is_the_canonical_bootstrap_cell(path):
    """Every notebook starts with the same bootstrap cell, tagged hide-input (collapsed in the
    book). Fix with: python -m mathlib.book fix-bootstrap"""
    from mathlib.book._bootstrap import bootstrap_problem

    problem = bootstrap_problem(nbformat.read(path, as_version=4))
    assert problem is None, f"{path.name}: {problem}"


def test_fix_bootstrap_rewrites_only_the_first_code_cell(tmp_path):
    from mathlib.book._bootstrap import BOOTSTRAP_SOURCE, bootstrap_problem, fix_notebook

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# t"),
                nbformat.v4.new_code_cell("try:\n    import mathlib\nexcept ImportError:\n    pass"),
                nbformat.v4.new_code_cell("x = 1")]
    p = tmp_path / "n.ipynb"
    nbformat.write(nb, p)
    assert fix_notebook(p) and not fix_notebook(p)
    out = nbformat.read(p, as_version=4)
    assert bootstrap_problem(out) is None and out.cells[1].source == BOOTSTRAP_SOURCE
    assert out.cells[0].source == "# t" and out.cells[2].source == "x = 1" and len(out.cells) == 3


def test_bootstrap_cell_installs_and_imports_mathlib_in_a_fresh_environment(tmp_path):
    """A new user's path: a clone, a fresh virtual environment without mathlib, the notebook's
    first cell run from the notebook's folder. The cell must `pip install -e` the clone and import
    it *in the same interpreter* (the bug of issue 15: the import after the install failed).

    Kept fast and offline: mathlib's dependencies are borrowed from the test's environment
    (symlinked, without mathlib's own install), so pip only builds the editable wheel of mathlib
    (its build backend comes from the package registry / pip cache). About 10 s on an idle machine."""
    import sysconfig

    from mathlib.book._bootstrap import BOOTSTRAP_SOURCE

    clone = tmp_path / "clone"
    for name in ("pyproject.toml", "README.md", "LICENSE", "_toc.yml"):
        shutil.copy2(ROOT / name, clone / name) if clone.exists() else (clone.mkdir(), shutil.copy2(ROOT / name, clone / name))
    shutil.copytree(ROOT / "mathlib", clone / "mathlib", ignore=shutil.ignore_patterns("__pycache__"))
    (clone / "notebooks" / "intro").mkdir(parents=True)
    # the dependencies, without mathlib (its dist-info would make pip think it is installed)
    deps = tmp_path / "deps"
    deps.mkdir()
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for entry in site_packages.iterdir():
        if "maml_theory_mathlib" in entry.name or entry.name.startswith(("__editable__", "mathlib")):
            continue
        (deps / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    # --without-pip: pip itself is one of the borrowed packages (ensurepip alone takes ~10 s)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True, timeout=120)
    py = venv / "bin" / "python"
    new_site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    Path(new_site, "borrowed-deps.pth").write_text(str(deps) + "\n")
    cwd = clone / "notebooks" / "intro"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    before = subprocess.run([str(py), "-c", "import mathlib"], cwd=cwd, env=env, capture_output=True, text=True)
    assert before.returncode != 0 and "No module named 'mathlib'" in before.stderr, "the fresh environment already has mathlib"
    script = BOOTSTRAP_SOURCE + textwrap.dedent(
        """
        import mathlib.figures, pathlib
        print("MATHLIB", pathlib.Path(mathlib.__file__).resolve())
        """
    )
    run = subprocess.run([str(py), "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"the bootstrap cell failed in a fresh environment:\n{run.stdout}\n{run.stderr[-3000:]}"
    assert f"MATHLIB {clone.resolve() / 'mathlib' / '__init__.py'}" in run.stdout, run.stdout
    # and the install persists: a new interpreter imports mathlib through the editable install
    after = subprocess.run([str(py), "-c", "import mathlib; print(mathlib.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert after.returncode == 0 and str(clone.resolve()) in after.stdout, after.stderr


# --------------------------------------------------------------------------- provenance and lecturer pack
def _provenance_env(monkeypatch, digest):
    monkeypatch.setenv("MATHLIB_NOTEBOOK", "notebooks/intro/99-test.ipynb")
    monkeypatch.setenv("MATHLIB_MODE", "quick")
    monkeypatch.setenv("MATHLIB_PARAMETERS", '{"quick": true}')
    monkeypatch.setenv("MATHLIB_INPUTS_SHA256", digest)


def test_figure_files_carry_their_provenance_and_stay_reproducible(tmp_path, monkeypatch):
    from PIL import Image

    digest = "ab" * 32
    _provenance_env(monkeypatch, digest)
    a = _draw(tmp_path, monkeypatch, "a")
    b = _draw(tmp_path, monkeypatch, "b")
    for fmt in a:  # identical inputs, identical bytes, provenance included
        assert Path(a[fmt]).read_bytes() == Path(b[fmt]).read_bytes(), f"{fmt} differs between two runs"
    with Image.open(a["png"]) as im:
        prov = json.loads(im.text["Provenance"])
    assert prov["inputs_sha256"] == digest and prov["mode"] == "quick" and prov["parameters"] == {"quick": True}
    assert prov["notebook"] == "notebooks/intro/99-test.ipynb" and "jax" in prov["versions"]
    svg = Path(a["svg"]).read_text()
    assert f"sha256:{digest}" in svg and "CC BY 4.0" in svg
    assert f"sha256:{digest}".encode() in Path(a["pdf"]).read_bytes()
    manifest = json.loads((tmp_path / "a" / "fig-intro-test-contract.json").read_text())
    assert manifest["provenance"] == prov
    # other inputs, other provenance: the files change (the hash is really in them)
    _provenance_env(monkeypatch, "cd" * 32)
    c = _draw(tmp_path, monkeypatch, "c")
    assert all(Path(a[f]).read_bytes() != Path(c[f]).read_bytes() for f in a)


def _fake_book(root: Path, monkeypatch) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mathlib.figures as mf

    (root / "mathlib").mkdir(parents=True)
    (root / "mathlib" / "__init__.py").write_text("")
    (root / "book").mkdir()
    shutil.copy2(ROOT / "book" / "macros.tex", root / "book" / "macros.tex")
    shutil.copy2(ROOT / "_config.yml", root / "_config.yml")
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/index\nparts:\n"
        "  - caption: Foundations\n    chapters:\n      - file: book/notation\n"
        "        sections:\n          - file: book/_generated/notebooks/intro/01-a\n"
        "  - caption: Fallah (2020)\n    chapters:\n      - file: book/fallah2020/index\n"
        "        sections:\n          - file: book/_generated/notebooks/fallah2020/01-b\n"
    )
    monkeypatch.setenv("MATHLIB_FIGURES_DIR", str(root / "book" / "_generated" / "figures"))
    for fid, nb in (("fig-fallah2020-b", "notebooks/fallah2020/01-b.ipynb"), ("fig-intro-a", "notebooks/intro/01-a.ipynb")):
        monkeypatch.setenv("MATHLIB_NOTEBOOK", nb)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot([0, 1], [1, 0])
        mf.save_figure(fig, fid, caption=f"Caption of {fid} with $\\norm{{x}}_2$ & 50% more.", alt=f"A line falling ({fid}).", show=False)


def test_lecturer_pack_is_complete_ordered_and_reproducible(tmp_path, monkeypatch):
    import zipfile

    from pptx import Presentation

    from mathlib.book._pack import PACK, build_pack

    _fake_book(tmp_path, monkeypatch)
    written = build_pack(tmp_path)
    pack = tmp_path / PACK
    assert {p.relative_to(pack).as_posix() for p in written} == {
        "figures.zip", "figures.bib", "citations.txt", "slides.pptx", "slides.tex", "chapters/intro.zip", "chapters/fallah2020.zip"}
    names = set(zipfile.ZipFile(pack / "figures.zip").namelist())
    for fid in ("fig-intro-a", "fig-fallah2020-b"):
        assert {f"figures/{fid}.{fmt}" for fmt in ("pdf", "svg", "png")} <= names
    assert {"figures.bib", "citations.txt", "slides.pptx", "slides.tex", "macros.tex", "README.txt"} <= names
    assert set(zipfile.ZipFile(pack / "chapters" / "intro.zip").namelist()) >= {"figures/fig-intro-a.svg", "slides.pptx"}
    assert "fig-fallah2020-b" not in "".join(zipfile.ZipFile(pack / "chapters" / "intro.zip").namelist())
    bib = (pack / "figures.bib").read_text()
    # book order (intro before fallah2020), keyed by the figure ID, LaTeX specials escaped outside math
    assert bib.index("@misc{fig-intro-a,") < bib.index("@misc{fig-fallah2020-b,")
    assert "$\\norm{x}_2$ \\& 50\\% more" in bib
    assert len((pack / "citations.txt").read_text().splitlines()) == 2
    deck = Presentation(str(pack / "slides.pptx"))
    slides = list(deck.slides)
    assert len(slides) == 3  # title + one per figure
    assert "A line falling (fig-intro-a)." in slides[1].notes_slide.notes_text_frame.text
    assert any(sh.shape_type == 13 for sh in slides[1].shapes)  # a picture
    tex = (pack / "slides.tex").read_text()
    assert tex.count("\\begin{frame}") == 3 and "figures/fig-intro-a.pdf" in tex and "\\note{A line falling" in tex
    before = {p: p.read_bytes() for p in pack.rglob("*") if p.is_file()}
    assert build_pack(tmp_path) == []  # incremental: nothing changed, nothing written
    build_pack(tmp_path, force=True)
    assert {p: p.read_bytes() for p in pack.rglob("*") if p.is_file()} == before, "the pack is not byte-reproducible"


@pytest.mark.skipif(shutil.which("latexmk") is None or shutil.which("xelatex") is None,
                    reason="Beamer check needs TeX: apt-get install latexmk texlive-xetex texlive-latex-recommended texlive-fonts-recommended")
def test_beamer_slides_compile(tmp_path, monkeypatch):
    import zipfile

    from mathlib.book._pack import PACK, build_pack

    _fake_book(tmp_path, monkeypatch)
    build_pack(tmp_path)
    out = tmp_path / "unzipped"
    zipfile.ZipFile(tmp_path / PACK / "figures.zip").extractall(out)
    r = subprocess.run(["latexmk", "-xelatex", "-interaction=nonstopmode", "slides.tex"], cwd=out,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and (out / "slides.pdf").is_file(), r.stdout[-3000:]


def test_content_hash_follows_only_the_drivers_a_notebook_imports(tmp_path):
    """Editing one chapter's driver re-executes that chapter's notebooks (and those whose drivers
    import it), not the whole book; editing the core re-executes everything."""
    from mathlib.book._execute import content_hash

    (tmp_path / "mathlib" / "experiments").mkdir(parents=True)
    (tmp_path / "mathlib" / "_core.py").write_text("x = 1\n")
    (tmp_path / "mathlib" / "experiments" / "__init__.py").write_text("")
    (tmp_path / "mathlib" / "experiments" / "aaa2020.py").write_text("a = 1\n")
    (tmp_path / "mathlib" / "experiments" / "bbb2021.py").write_text("from mathlib.experiments import aaa2020\n")
    (tmp_path / "mathlib" / "experiments" / "ccc2022.py").write_text("c = 1\n")
    for key in ("aaa2020", "bbb2021", "ccc2022"):
        _nb(tmp_path / "notebooks" / key / "01.ipynb", f"from mathlib.experiments import {key} as ex\nex")
    nbs = {k: Path("notebooks") / k / "01.ipynb" for k in ("aaa2020", "bbb2021", "ccc2022")}

    def hashes():
        return {k: content_hash(tmp_path, p, {}) for k, p in nbs.items()}

    h0 = hashes()
    (tmp_path / "mathlib" / "experiments" / "aaa2020.py").write_text("a = 2\n")
    h1 = hashes()
    assert h1["aaa2020"] != h0["aaa2020"] and h1["bbb2021"] != h0["bbb2021"]  # direct and transitive
    assert h1["ccc2022"] == h0["ccc2022"]
    (tmp_path / "mathlib" / "_core.py").write_text("x = 2\n")
    h2 = hashes()
    assert all(h2[k] != h1[k] for k in nbs)


# --------------------------------------------------------------------------- accessibility
def test_every_figure_has_alt_text_in_its_notebook_and_on_its_page():
    """Every save_figure call passes alt=..., and every {figure} of a generated figure has :alt:."""
    missing_nb, missing_page = [], []
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code" or "save_figure(" not in cell.source:
                continue
            for call in cell.source.split("save_figure(")[1:]:
                if "alt=" not in call.split("save_figure(")[0]:
                    missing_nb.append(path.relative_to(ROOT).as_posix())
    for page in sorted((ROOT / "book").rglob("*.md")):
        if "_generated" in page.parts:
            continue
        for block in re.findall(r"```\{figure\} /book/_generated/figures/[^\n]+\n((?::[^\n]*\n)*)", page.read_text()):
            if ":alt:" not in block:
                missing_page.append(page.relative_to(ROOT).as_posix())
    assert not missing_nb, f"save_figure without alt= in {sorted(set(missing_nb))}"
    assert not missing_page, f"{{figure}} without :alt: in {sorted(set(missing_page))}"


def test_first_documents_cuts_the_single_page_between_documents():
    """Implementation check of the PDF test's cut: the root page and the first n inlined documents
    are kept with the head and the closing scripts; the rest of the content goes."""
    from mathlib.book._pdf import first_documents

    doc = lambda name: f'<span id="document-{name}"></span><section><h1>{name}</h1><p>$x_{name}$</p></section>'
    page = ('<html><head><script src="mathjax.js"></script></head><body><article><section><h1>root</h1>'
            '<div class="toctree-wrapper">' + doc("a") + doc("b") + doc("c") + '</div></section>'
            '<script>thebe</script></article><script defer src="theme.js"></script></body></html>')
    cut = first_documents(page, 2)
    assert "<h1>root</h1>" in cut and "<h1>a</h1>" in cut and "<h1>b</h1>" in cut and "<h1>c</h1>" not in cut
    assert cut.startswith('<html><head><script src="mathjax.js">') and cut.endswith('<script defer src="theme.js"></script></body></html>')
    assert first_documents(page, 3) == page and first_documents(page, 9) == page
    with pytest.raises(ValueError, match=r"documents must be an int >= 1, got 0"):
        first_documents(page, 0)
    with pytest.raises(ValueError, match="no </article>"):
        first_documents(page.replace("</article>", ""), 1)


def test_kernel_env_flags_per_mode_and_workers(tmp_path, monkeypatch):
    """Implementation check: quick mode adds the compile-speed flag, full mode does not; several
    workers pin one thread per kernel; the variable is always set (no stale flags in a worker)."""
    from mathlib.book import _execute

    monkeypatch.setattr(_execute, "_CALLER_XLA_FLAGS", "")
    env = lambda workers, quick: _execute.kernel_env(tmp_path, Path("notebooks/t/a.ipynb"), tmp_path, workers, quick=quick)["XLA_FLAGS"]  # noqa: E731
    assert env(1, False) == "" and env(1, True) == _execute.QUICK_XLA_FLAGS
    assert env(2, False) == "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    assert env(2, True) == env(2, False) + " " + _execute.QUICK_XLA_FLAGS
    monkeypatch.setattr(_execute, "_CALLER_XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert env(1, True) == "--xla_cpu_use_fusion_emitters=true"  # the caller's choice wins


def test_schedule_runs_the_longest_notebooks_first_and_unknown_ones_before_them(tmp_path):
    """Implementation check of the executor's order (LPT): this run's own record in the same mode wins
    over the committed hint, unknown notebooks go first in their given order, the rest longest first;
    the hints round-trip through ``python -m mathlib.book durations``'s writer."""
    from mathlib.book._execute import DURATIONS_FILE, STATE_FILE, load_durations, schedule, write_durations

    keys = ["a", "b", "c", "d", "e"]
    state = {"notebooks": {"a": {"mode": "full", "seconds": 5.0}, "b": {"mode": "quick", "seconds": 500.0}}}
    hints = {"full": {"a": 900.0, "b": 50.0, "c": 100.0}, "quick": {"d": 1000.0}}
    assert schedule(keys, "full", state, hints) == ["d", "e", "c", "b", "a"]
    assert schedule(keys, "quick", state, hints) == ["a", "c", "e", "d", "b"]
    (tmp_path / STATE_FILE).parent.mkdir(parents=True)
    (tmp_path / DURATIONS_FILE).parent.mkdir(parents=True)
    (tmp_path / STATE_FILE).write_text(json.dumps({"notebooks": {
        "x": {"mode": "full", "seconds": 12.34, "status": "ok"},
        "y": {"mode": "full", "seconds": 99.0, "status": "failed"}}}))
    (tmp_path / DURATIONS_FILE).write_text(json.dumps({"quick": {"x": 3.0}}))
    write_durations(tmp_path)
    assert load_durations(tmp_path) == {"full": {"x": 12.3}, "quick": {"x": 3.0}}
    (tmp_path / DURATIONS_FILE).write_text("not json")
    assert load_durations(tmp_path) == {}
