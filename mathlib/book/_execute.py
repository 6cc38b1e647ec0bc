"""Execute the book's notebooks with papermill: incremental, parallel, atomic.

* A notebook is re-executed only when its *content hash* changed: the source notebook, the
  numerical library (``mathlib/**/*.py`` except this build tooling), the parameters and the
  lock file ``requirements.lock``.
* Each notebook runs in a staging folder; only on success are its figures and the executed
  notebook moved into ``book/_generated`` (``os.replace``), so a failed or interrupted run never
  replaces the last good outputs.
* A failure names the notebook and the failing cell, the other notebooks still run, and the
  command exits non-zero.
* Every cell has a time limit (``cell_timeout``; quick mode 300 s, full mode 3600 s) and the kernel
  has a start-up limit: a hung kernel (a lost reply, a dead process) fails that notebook with its
  name instead of stalling the whole run. A notebook that fails for such an infrastructure reason
  (timeout, dead kernel) is retried once; a Python error in a cell is not.
* Full mode passes no parameters, so the published notebook has no injected-parameters cell
  (every notebook's default is ``quick = False``); quick mode injects ``quick = True``.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from mathlib.book._paths import GENERATED, executed_path, toc_notebooks

STATE_FILE = GENERATED / "state.json"
#: Committed schedule hints: the seconds each notebook took in its last recorded run, per mode
#: (written by ``python -m mathlib.book durations``). They only order the work (longest first, so
#: that no long notebook starts last while the other worker idles); they never decide what runs.
DURATIONS_FILE = Path("notebooks") / "durations.json"
FIGURES = GENERATED / "figures"
STAGING = GENERATED / ".staging"


_EXPERIMENT_IMPORT = re.compile(
    r"(?:from\s+mathlib\.experiments\s+import\s+([\w\s,]+?)(?:\s+as\s+\w+)?\s*(?:$|\\n|\")"
    r"|mathlib\.experiments\.(\w+))",
    re.M,
)


def _experiment_modules(root: Path, text: str) -> set[str]:
    """Chapter driver modules (``mathlib/experiments/<key>.py``) that ``text`` imports, transitively."""
    found: set[str] = set()
    todo = [text]
    while todo:
        for m in _EXPERIMENT_IMPORT.finditer(todo.pop()):
            names = [m.group(2)] if m.group(2) else [n.split(" as ")[0].strip() for n in m.group(1).split(",")]
            for name in names:
                path = root / "mathlib" / "experiments" / f"{name}.py"
                if name and name not in found and path.is_file():
                    found.add(name)
                    todo.append(path.read_text())
    return found


def content_hash(root: Path, source: Path, parameters: dict[str, Any]) -> str:
    """SHA-256 over the notebook, the library it runs, the parameters and the lock file.

    The library is the core (``mathlib/*.py``, ``mathlib/experiments/__init__.py``) plus the chapter
    driver modules the notebook imports (``from mathlib.experiments import <key>``, followed
    transitively), so editing one chapter's driver re-executes only the notebooks that use it.
    The build tooling ``mathlib/book/`` is not computation and is left out.
    """
    h = hashlib.sha256()
    nb_bytes = (root / source).read_bytes()
    h.update(b"notebook\0" + nb_bytes)
    paths = [p for p in (root / "mathlib").glob("*.py")]
    paths += [root / "mathlib" / "experiments" / "__init__.py"]
    paths += [root / "mathlib" / "experiments" / f"{k}.py" for k in _experiment_modules(root, nb_bytes.decode("utf-8"))]
    for path in sorted(p for p in paths if p.is_file()):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0" + path.read_bytes())
    h.update(b"parameters\0" + json.dumps(parameters, sort_keys=True).encode())
    lock = root / "requirements.lock"
    if lock.is_file():
        h.update(b"lock\0" + lock.read_bytes())
    return h.hexdigest()


def load_state(root: Path) -> dict[str, Any]:
    path = root / STATE_FILE
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    return {"notebooks": {}}


def save_state(root: Path, state: dict[str, Any]) -> None:
    path = root / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


_CALLER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "")
# Quick mode (what `make test` runs) compiles with XLA's classic CPU emitters: the notebooks'
# programs are small and compiling them is most of a quick run. Measured one notebook at a time,
# CPU time with a cold compile cache: chayti2024/04 28.0 -> 19.4 s, wang2020/03 34.7 -> 29.8 s,
# mishchenko2023/02 25.0 -> 22.7 s, ji2020/02 85.4 -> 77.9 s, ji2020/04 46.4 -> 41.8 s. Full mode
# keeps XLA's defaults (a long run of a compiled program can be slower with them).
QUICK_XLA_FLAGS = "--xla_cpu_use_fusion_emitters=false"


def kernel_env(root: Path, source: Path, staging_figs: Path, workers: int, quick: bool = False) -> dict[str, str]:
    """Environment of the kernel: figure folder, notebook name, CPU-only JAX with a compile cache;
    one thread per notebook with several workers, and :data:`QUICK_XLA_FLAGS` in quick mode."""
    env = {
        "MATHLIB_FIGURES_DIR": str(staging_figs),
        "MATHLIB_NOTEBOOK": source.as_posix(),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(root / ".cache" / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONHASHSEED": "0",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    flags = _CALLER_XLA_FLAGS
    if workers > 1:  # one core per notebook instead of oversubscribing the machine
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        # LAPACK (eigh, svd, solve) runs in scipy's OpenBLAS: its spinning second thread made a
        # small eigvalsh 30x slower on a loaded 2-core machine. One BLAS thread per notebook.
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if quick and "fusion_emitters" not in flags:
        flags = f"{flags} {QUICK_XLA_FLAGS}".strip()
    env["XLA_FLAGS"] = flags  # always set: a worker that ran a notebook of the other mode keeps no stale flags
    return env


def _kernel_transport(staging: Path) -> dict[str, Any]:
    """On POSIX, talk to the kernel over Unix sockets in a fresh temporary folder of this run.

    The default TCP transport makes ipykernel >= 7.4 print a warning about unencrypted TCP for
    every notebook; Unix sockets are local by construction. Each run gets its own folder (short,
    as a socket path is limited to about 100 bytes), so parallel workers cannot collide. The
    folder is removed after the run. Elsewhere (Windows) keep papermill's default transport.
    """
    if os.name != "posix":
        return {}
    from traitlets.config import Config

    sock_dir = Path(tempfile.mkdtemp(prefix="mlk-"))
    (staging / ".sockets").write_text(str(sock_dir))
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(sock_dir / "k")
    return {"config": config}


def provenance_env(source: Path, parameters: dict[str, Any], digest: str) -> dict[str, str]:
    """What ``mathlib.figures.save_figure`` embeds in every figure: deterministic for identical inputs."""
    return {
        "MATHLIB_MODE": "quick" if parameters.get("quick") else "full",
        "MATHLIB_PARAMETERS": json.dumps(parameters, sort_keys=True),
        "MATHLIB_INPUTS_SHA256": digest,
    }


DOWNLOAD_TAG = "download-executed"


def add_download_cell(path: Path) -> None:
    """Insert, after the title cell, a note linking the executed notebook itself as a download."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if DOWNLOAD_TAG not in c.get("metadata", {}).get("tags", [])]
    cell = nbformat.v4.new_markdown_cell(
        f"{{download}}`Download this notebook, executed <{path.name}>` "
        f"(open it in JupyterLab from the repository, see *Running locally* in the README)."
    )
    cell.metadata["tags"] = [DOWNLOAD_TAG]
    cell.pop("id", None)
    cell["id"] = "download-executed"
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(at, cell)
    nbformat.write(nb, path)


QUICK_CELL_TIMEOUT = 300
FULL_CELL_TIMEOUT = 3600
KERNEL_START_TIMEOUT = 120
QUICK_NOTEBOOK_TIMEOUT = 1200
FULL_NOTEBOOK_TIMEOUT = 4 * 3600


# A kernel whose process tree uses no CPU for this long while its notebook runs is wedged: killed,
# so that its notebook fails with DeadKernelError and is retried (instead of waiting for the cell
# limit, an hour in full mode). Seen in full mode (2026-11-29, wang2020/03, and again in its
# retry): the kernel sat in np.asarray(jax_array) -> tsl::BlockUntilReady with every XLA thread
# idle: an XLA CPU runtime deadlock in a large vmapped batch of small LAPACK solves, since avoided
# by mathlib._rl.solve_diagonally_dominant. The watchdog stays for the next one. No
# notebook here waits on anything but its own computation, so an idle minute and a half is never
# legitimate.
STALL_TIMEOUT = 90.0


def _stalled_kernels(pool: cf.ProcessPoolExecutor, seen: dict[int, tuple[float, float]], now: float,
                     stall_timeout: float) -> list:
    """The kernels (children of the pool's workers) whose process tree's CPU time has not changed
    for ``stall_timeout`` seconds; ``seen`` maps a kernel's pid to (CPU seconds, when it last changed)."""
    import psutil

    stalled, alive = [], set()
    for proc in list(getattr(pool, "_processes", {}).values()):
        try:
            kernels = psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess:
            continue
        for k in kernels:
            try:
                cpu = sum(sum(p.cpu_times()[:2]) for p in (k, *k.children(recursive=True)))
            except psutil.NoSuchProcess:
                continue
            alive.add(k.pid)
            last = seen.get(k.pid)
            if last is None or abs(cpu - last[0]) > 0.02:
                seen[k.pid] = (cpu, now)
            elif now - last[1] > stall_timeout:
                stalled.append(k)
    for pid in set(seen) - alive:
        seen.pop(pid)
    return stalled


def _kill_tree(proc) -> None:
    """Kill a process (a ``psutil.Process`` or anything with a ``pid``) and all its descendants."""
    import psutil

    try:
        parent = proc if isinstance(proc, psutil.Process) else psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except psutil.NoSuchProcess:
        pass


def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Kill the pool's worker processes and everything they started (kernels)."""
    for proc in list(getattr(pool, "_processes", {}).values()):
        _kill_tree(proc)


def run_one(
    root_s: str,
    source_s: str,
    parameters: dict[str, Any],
    workers: int,
    digest: str = "",
    cell_timeout: float | None = None,
) -> dict[str, Any]:
    """Execute one notebook into staging; promote its outputs only on success. Runs in a worker."""
    root, source = Path(root_s), Path(source_s)
    if cell_timeout is None:
        cell_timeout = QUICK_CELL_TIMEOUT if parameters.get("quick") else FULL_CELL_TIMEOUT
    print(f"[start] {source.as_posix()}", flush=True)
    slug = source.with_suffix("").as_posix().replace("/", "__")
    staging = root / STAGING / slug
    shutil.rmtree(staging, ignore_errors=True)
    figs = staging / "figures"
    figs.mkdir(parents=True)
    os.environ.update(kernel_env(root, source, figs, workers, quick=bool(parameters.get("quick"))))
    os.environ.update(provenance_env(source, parameters, digest))
    out_tmp = staging / source.name
    t0 = time.perf_counter()
    result: dict[str, Any] = {"source": source.as_posix()}
    # The kernel inherits this process's stderr: send it to a log in staging, so that kernel
    # chatter (shutdown messages) stays out of the build's output; a failure quotes its tail.
    kernel_log = staging / "kernel.log"
    sys.stderr.flush()
    saved_stderr, log_fd = os.dup(2), os.open(kernel_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 2)
    try:
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError

        try:
            pm.execute_notebook(
                str(root / source),
                str(out_tmp),
                parameters=parameters or None,
                kernel_name="python3",
                cwd=str((root / source).parent),
                progress_bar=False,
                log_output=False,
                request_save_on_cell_execute=False,
                execution_timeout=int(cell_timeout),
                start_timeout=KERNEL_START_TIMEOUT,
                **_kernel_transport(staging),
            )
        except PapermillExecutionError as err:
            result.update(
                status="failed",
                cell=f"In [{err.exec_count}]",
                cell_index=err.cell_index,
                error=f"{err.ename}: {err.evalue}".strip()[:2000],
            )
            return result
    except Exception as err:  # kernel died or hung (timeout), bad notebook, missing kernel...
        result.update(status="failed", cell="-", error="".join(traceback.format_exception_only(err)).strip()[:2000])
        name = type(err).__name__
        if name in ("CellTimeoutError", "DeadKernelError", "TimeoutError") or "timeout" in str(err).lower() or "timed out" in str(err).lower() \
                or "didn't respond" in str(err) or "Kernel died" in str(err):
            result["retryable"] = True
            result["error"] = f"{result['error']} (limits: {int(cell_timeout)} s per cell, {KERNEL_START_TIMEOUT} s to start the kernel)"
        return result
    finally:
        result["seconds"] = round(time.perf_counter() - t0, 2)
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(log_fd)
        marker = staging / ".sockets"
        if marker.is_file():
            shutil.rmtree(marker.read_text(), ignore_errors=True)
            marker.unlink()
        if result.get("status") == "failed":
            tail = [l for l in kernel_log.read_text(errors="replace").splitlines() if l.strip()][-15:]
            if tail:
                result["kernel_log"] = "\n".join(tail)[-3000:]
            shutil.rmtree(staging, ignore_errors=True)

    # Promote: figures first, then the notebook (the notebook is the marker of a good run).
    (root / FIGURES).mkdir(parents=True, exist_ok=True)
    produced = []
    for f in sorted(figs.iterdir()):
        if f.name.startswith("."):
            continue
        os.replace(f, root / FIGURES / f.name)
        produced.append(f.name)
    final = root / executed_path(source)
    final.parent.mkdir(parents=True, exist_ok=True)
    add_download_cell(out_tmp)
    os.replace(out_tmp, final)
    shutil.rmtree(staging, ignore_errors=True)
    result.update(status="ok", figures=sorted({Path(p).stem for p in produced}))
    return result


def load_durations(root: Path) -> dict[str, dict[str, float]]:
    """The committed schedule hints ``{mode: {notebook: seconds}}`` (empty if absent or unreadable)."""
    path = root / DURATIONS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {m: {k: float(v) for k, v in d.items() if isinstance(v, (int, float))}
            for m, d in data.items() if isinstance(d, dict)} if isinstance(data, dict) else {}


def schedule(keys: list[str], mode: str, state: dict[str, Any], hints: dict[str, dict[str, float]]) -> list[str]:
    """Order notebooks longest first (LPT): a notebook's expected seconds are those of its last run in
    this mode recorded in ``state``, else the committed hint, else unknown. Unknown ones go first (they
    may be long), in the given order; ties keep the given order."""
    def expected(key: str) -> float:
        prev = state.get("notebooks", {}).get(key, {})
        if prev.get("mode") == mode and isinstance(prev.get("seconds"), (int, float)):
            return float(prev["seconds"])
        return hints.get(mode, {}).get(key, float("inf"))

    return sorted(keys, key=lambda k: -expected(k))


def write_durations(root: Path) -> Path:
    """Record the seconds of every notebook's last successful run (``state.json``), per mode, into the
    committed schedule hints :data:`DURATIONS_FILE`, keeping the hints of the other mode."""
    hints = load_durations(root)
    for key, rec in load_state(root).get("notebooks", {}).items():
        if rec.get("status") == "ok" and isinstance(rec.get("seconds"), (int, float)) and rec.get("mode"):
            hints.setdefault(rec["mode"], {})[key] = round(float(rec["seconds"]), 1)
    path = root / DURATIONS_FILE
    path.write_text(json.dumps({m: dict(sorted(d.items())) for m, d in sorted(hints.items())}, indent=1) + "\n")
    return path


def execute(
    root: Path,
    sources: list[Path] | None = None,
    *,
    quick: bool = False,
    extra_parameters: dict[str, Any] | None = None,
    workers: int = 2,
    force: bool = False,
    cell_timeout: float | None = None,
    retries: int = 1,
    notebook_timeout: float | None = None,
    stall_timeout: float = STALL_TIMEOUT,
    stream=sys.stdout,
) -> int:
    """Execute notebooks (default: all in ``_toc.yml``). Returns the number of failures.

    ``cell_timeout`` (seconds) limits every cell (default 300 in quick mode, 3600 in full mode);
    a notebook that times out or whose kernel dies is retried ``retries`` times. A watchdog stops
    the run if one notebook's worker outlives ``notebook_timeout`` (default 1200 s in quick mode,
    4 h in full mode): that is a worker wedged outside any cell, and the run names it. A kernel
    whose processes use no CPU for ``stall_timeout`` seconds (default :data:`STALL_TIMEOUT`) is
    killed, so its notebook fails with a dead kernel and is retried.
    """
    root = root.resolve()
    sources = [Path(s) for s in (sources or toc_notebooks(root))]
    for s in sources:
        if not (root / s).is_file():
            raise FileNotFoundError(f"execute: notebook {s} does not exist (paths are relative to {root})")
    parameters: dict[str, Any] = dict(extra_parameters or {})
    if quick:
        parameters["quick"] = True
    state = load_state(root)
    todo, skipped = [], 0
    for s in sources:
        key = s.as_posix()
        digest = content_hash(root, s, parameters)
        prev = state["notebooks"].get(key, {})
        if (
            not force
            and prev.get("hash") == digest
            and prev.get("status") == "ok"
            and (root / executed_path(s)).is_file()
        ):
            skipped += 1
            print(f"[skip] {key} (unchanged since {prev.get('finished', '?')})", file=stream, flush=True)
            continue
        todo.append((s, digest))
    mode = "quick" if quick else "full"
    order = {k: i for i, k in enumerate(schedule([s.as_posix() for s, _ in todo], mode, state, load_durations(root)))}
    todo.sort(key=lambda sd: order[sd[0].as_posix()])
    print(f"executing {len(todo)} notebook(s) in {mode} mode with {workers} worker(s); {skipped} unchanged", file=stream, flush=True)
    failures = 0
    if not todo:
        return 0
    t_start = time.perf_counter()
    if notebook_timeout is None:
        notebook_timeout = QUICK_NOTEBOOK_TIMEOUT if quick else FULL_NOTEBOOK_TIMEOUT
    ctx = multiprocessing.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=max(1, workers), mp_context=ctx)
    try:
        submit = lambda s, d: pool.submit(run_one, str(root), s.as_posix(), parameters, workers, d, cell_timeout)  # noqa: E731
        futures = {submit(s, d): (s, d, 0) for s, d in todo}
        running_since: dict[Any, float] = {}
        kernel_cpu: dict[int, tuple[float, float]] = {}
        n = 0
        while futures:
            done, _ = cf.wait(list(futures), timeout=5, return_when=cf.FIRST_COMPLETED)
            now = time.perf_counter()
            for k in _stalled_kernels(pool, kernel_cpu, now, stall_timeout):
                print(f"[stall] a kernel (pid {k.pid}) used no CPU for {stall_timeout:.0f} s: killed, its notebook is retried",
                      file=stream, flush=True)
                _kill_tree(k)
            for f in futures:
                if f.running():
                    running_since.setdefault(f, now)
            stuck = [f for f, t0 in running_since.items() if f in futures and now - t0 > notebook_timeout]
            if not done and stuck:
                # Watchdog: a worker that outlives every cell limit is wedged outside a cell (kernel
                # start-up, shutdown, a lost reply). Stop everything, name what did not finish.
                _kill_pool(pool)
                for f, (s, _d, _a) in futures.items():
                    why = (f"still running after {notebook_timeout:.0f} s (the notebook limit); the run was stopped"
                           if f in stuck else "not finished: the run was stopped by the watchdog")
                    n += 1
                    failures += 1
                    entry = state["notebooks"].setdefault(s.as_posix(), {})
                    entry.update(mode=mode, parameters=parameters, status="failed", cell="-", error=why,
                                 finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
                    entry.pop("hash", None)
                    print(f"[{n}/{len(todo)}] FAILED {s.as_posix()}: {why}", file=stream, flush=True)
                save_state(root, state)
                futures = {}
                break
            if not done:
                continue
            fut = next(iter(done))
            s, digest, attempt = futures.pop(fut)
            running_since.pop(fut, None)
            try:
                res = fut.result()
            except Exception as err:  # worker crashed
                res = {"source": s.as_posix(), "status": "failed", "cell": "-", "error": repr(err), "seconds": 0.0}
            if res["status"] != "ok" and res.get("retryable") and attempt < retries:
                print(f"[retry] {s.as_posix()} after {res.get('seconds', 0):.1f} s: {res.get('error')}", file=stream, flush=True)
                futures[submit(s, digest)] = (s, digest, attempt + 1)
                continue
            n += 1
            entry = state["notebooks"].setdefault(s.as_posix(), {})
            entry.update(
                mode=mode,
                parameters=parameters,
                seconds=res.get("seconds"),
                finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                status=res["status"],
            )
            if res["status"] == "ok":
                entry.update(hash=digest, figures=res.get("figures", []), error=None, cell=None)
                print(f"[{n}/{len(todo)}] ok     {s.as_posix()}  {res['seconds']:.1f} s", file=stream, flush=True)
            else:
                failures += 1
                entry.update(error=res.get("error"), cell=res.get("cell"))
                entry.pop("hash", None)
                print(
                    f"[{n}/{len(todo)}] FAILED {s.as_posix()} at cell {res.get('cell')} after {res.get('seconds', 0):.1f} s\n"
                    f"        {res.get('error')}\n"
                    f"        (the previous executed copy and figures, if any, are kept)"
                    + ("\n        kernel's stderr (last lines):\n" + "\n".join("          " + l for l in res["kernel_log"].splitlines())
                       if res.get("kernel_log") else ""),
                    file=stream,
                    flush=True,
                )
            save_state(root, state)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    print(
        f"done in {time.perf_counter() - t_start:.1f} s: {len(todo) - failures} ok, {failures} failed, {skipped} unchanged",
        file=stream,
        flush=True,
    )
    return failures
