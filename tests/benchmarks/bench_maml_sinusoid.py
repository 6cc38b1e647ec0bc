#!/usr/bin/env python
"""Benchmark: MAML-family meta-iterations on sinusoid regression, mathlib vs a hand-written JAX reference.

Setting (Finn et al. 2017): MLP 1-40-40-1 with ReLU, 25 tasks per meta-batch, 10 support + 10 query
points per task, inner SGD with alpha = 0.01 and K in {1, 5} steps, outer Adam (optax) with step
1e-3, float32. One *meta-iteration* is one jitted call ``(params, opt_state) <- step(params,
opt_state, episodes)``: the meta-gradient averaged over the 25 tasks plus the Adam update (the
episode batch is pre-sampled and fixed, so sampling cost is excluded).

Implementations:

* ``mathlib``: ``ml.meta_gradient(ml.make_estimator(...), loss, params, episodes)`` with the models
  and sinusoid sampler of mathlib (MAML, FO-MAML, HF-MAML, ANIL, Sign-MAML);
* ``reference``: a minimal hand-written jitted JAX version in this file (tuple parameters, Python-
  unrolled inner loop, ``jax.vmap`` over tasks); it does not import mathlib;
* ``torch``: ``torch.func`` MAML, only if PyTorch is importable (never installed by this script).

Measurements, each implementation and configuration in its own subprocess (XLA flags are
process-wide, and the peak RSS is then per configuration): time to lower+compile, peak resident
memory (``ru_maxrss``) and its increase over the baseline after imports and backend start-up
(so it covers parameters, data, compilation and execution), and the median wall
time per meta-iteration after compilation over many samples (each sample times a run of
consecutive calls). Because the machine may be shared, the mathlib process then also compiles the
reference and times both *interleaved* (alternating samples); the table reports those paired
medians and the median [IQR] of the per-sample ratios, which is robust to load drift. The
fraction of the machine's float32 peak uses a large jitted matmul timed in the same thread mode. FLOPs per meta-iteration are XLA's ``cost_analysis()`` of the *reference*
step (inner loops unrolled, so no while loop hides trip counts; the same count is used for
mathlib, i.e. "useful" FLOPs of the algorithm).

Thread modes: ``single`` sets ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"``; ``default`` leaves XLA's threading alone.

Usage::

    python tests/benchmarks/bench_maml_sinusoid.py                 # full run (several minutes)
    python tests/benchmarks/bench_maml_sinusoid.py --quick         # smoke run (~15 s)
    python tests/benchmarks/bench_maml_sinusoid.py --json out.json --threads single

Prints a Markdown table to stdout. Timings on a shared machine depend on its load: the load
average at start and end is printed with the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
SIZES = (1, 40, 40, 1)
NUM_TASKS, K_SUPPORT, K_QUERY = 25, 10, 10
ALPHA, OUTER_LR, HF_DELTA = 0.01, 1e-3, 1e-3
MARK = "BENCH-RESULT "

# method -> inner-step counts benchmarked (HF-MAML is a one-step method)
METHODS = {"maml": (1, 5), "fomaml": (1, 5), "hf_maml": (1,), "anil": (1, 5), "sign_maml": (1, 5)}
LABELS = {"maml": "MAML", "fomaml": "FO-MAML", "hf_maml": "HF-MAML", "anil": "ANIL", "sign_maml": "Sign-MAML"}


# =========================================================================== worker side
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _sinusoid_batch_plain(jax, jnp):
    """Episodes with plain JAX (reference/torch workers do not import mathlib)."""
    k = jax.random.split(jax.random.key(0), 4)
    amp = jax.random.uniform(k[0], (NUM_TASKS, 1, 1), jnp.float32, 0.1, 5.0)
    ph = jax.random.uniform(k[1], (NUM_TASKS, 1, 1), jnp.float32, 0.0, jnp.pi)
    xs = jax.random.uniform(k[2], (NUM_TASKS, K_SUPPORT, 1), jnp.float32, -5.0, 5.0)
    xq = jax.random.uniform(k[3], (NUM_TASKS, K_QUERY, 1), jnp.float32, -5.0, 5.0)
    return xs, amp * jnp.sin(xs - ph), xq, amp * jnp.sin(xq - ph)


def _reference_step(method: str, steps: int):
    """Hand-written reference: returns (step_fn, params, opt_state, batch)."""
    import jax
    import jax.numpy as jnp
    import optax

    keys = jax.random.split(jax.random.key(1), 3)
    params = []
    for k, m, n in zip(keys, SIZES[:-1], SIZES[1:]):
        kw, kb = jax.random.split(k)
        bound = 1.0 / m**0.5
        params += [jax.random.uniform(kw, (m, n), jnp.float32, -bound, bound),
                   jax.random.uniform(kb, (n,), jnp.float32, -bound, bound)]
    params = tuple(params)
    batch = _sinusoid_batch_plain(jax, jnp)

    def body(p, x):
        w1, b1, w2, b2 = p
        return jax.nn.relu(jax.nn.relu(x @ w1 + b1) @ w2 + b2)

    def head_loss(h, z, y):
        return jnp.mean((z @ h[0] + h[1] - y) ** 2)

    def loss(p, x, y):
        return head_loss(p[4:], body(p[:4], x), y)

    grad = jax.grad(loss)

    def inner(p, x, y, sign=False):
        for _ in range(steps):  # unrolled
            g = grad(p, x, y)
            p = tuple(a - ALPHA * (jnp.sign(d) if sign else d) for a, d in zip(p, g))
        return p

    def task_grad(p, xs, ys, xq, yq):
        if method == "maml":
            return jax.grad(lambda p: loss(inner(p, xs, ys), xq, yq))(p)
        if method in ("fomaml", "sign_maml"):
            a = jax.lax.stop_gradient(inner(p, xs, ys, sign=method == "sign_maml"))
            return grad(a, xq, yq)
        if method == "hf_maml":
            v = grad(tuple(a - ALPHA * d for a, d in zip(p, grad(p, xs, ys))), xq, yq)
            gp = grad(tuple(a + HF_DELTA * d for a, d in zip(p, v)), xs, ys)
            gm = grad(tuple(a - HF_DELTA * d for a, d in zip(p, v)), xs, ys)
            return tuple(vv - ALPHA * (u - w) / (2 * HF_DELTA) for vv, u, w in zip(v, gp, gm))
        if method == "anil":  # body features computed once, head adapted on them

            def objective(p):
                zs, zq = body(p[:4], xs), body(p[:4], xq)
                h = p[4:]
                for _ in range(steps):
                    h = tuple(a - ALPHA * d for a, d in zip(h, jax.grad(head_loss)(h, zs, ys)))
                return head_loss(h, zq, yq)

            return jax.grad(objective)(p)
        raise ValueError(method)

    opt = optax.adam(OUTER_LR)

    def task_objective(p, xs, ys, xq, yq):
        if method == "maml":
            return loss(inner(p, xs, ys), xq, yq)
        zs, zq = body(p[:4], xs), body(p[:4], xq)  # anil
        h = p[4:]
        for _ in range(steps):
            h = tuple(a - ALPHA * d for a, d in zip(h, jax.grad(head_loss)(h, zs, ys)))
        return head_loss(h, zq, yq)

    def step(p, s, batch):
        if method in ("maml", "anil"):
            # plain autodiff, as a user writes it: the gradient of the batch-mean objective
            g = jax.grad(lambda p: jnp.mean(jax.vmap(task_objective, in_axes=(None, 0, 0, 0, 0))(p, *batch)))(p)
        else:  # first-order methods: per-task gradients at the adapted points, then the mean
            g = jax.vmap(task_grad, in_axes=(None, 0, 0, 0, 0))(p, *batch)
            g = tuple(jnp.mean(x, axis=0) for x in g)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    return step, params, opt.init(params), batch


def _mathlib_step(method: str, steps: int):
    import jax
    import jax.numpy as jnp
    import optax

    import mathlib as ml

    key = jax.random.key(1)
    if method == "anil":
        params = ml.init_body_head(key, SIZES, dtype=jnp.float32)
        loss = ml.body_head_mse_loss
    else:
        params = ml.init_mlp(key, SIZES, dtype=jnp.float32)
        loss = ml.mlp_mse_loss
    hyper = {"alpha": ALPHA}
    if method == "hf_maml":
        hyper["delta"] = HF_DELTA
    else:
        hyper["steps"] = steps
    est = ml.make_estimator(method, **hyper)
    episodes = ml.sample_sinusoid_episodes(jax.random.key(0), NUM_TASKS, K_SUPPORT, K_QUERY, dtype=jnp.float32)
    opt = optax.adam(OUTER_LR)

    def step(p, s, episodes):
        g = ml.meta_gradient(est, loss, p, episodes)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    return step, params, opt.init(params), episodes


def _torch_measure(cfg: dict) -> dict:  # pragma: no cover - only when PyTorch is installed
    """torch.func MAML (second order), same setting; timings only (no XLA cost analysis)."""
    import torch
    from torch.func import functional_call, grad, vmap

    if cfg["threads"] == "single":
        torch.set_num_threads(1)
    steps = cfg["steps"]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40),
                              torch.nn.ReLU(), torch.nn.Linear(40, 1))
    params = {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}
    amp = torch.empty(NUM_TASKS, 1, 1).uniform_(0.1, 5.0)
    ph = torch.empty(NUM_TASKS, 1, 1).uniform_(0.0, 3.14159)
    xs = torch.empty(NUM_TASKS, K_SUPPORT, 1).uniform_(-5, 5)
    xq = torch.empty(NUM_TASKS, K_QUERY, 1).uniform_(-5, 5)
    ys, yq = amp * torch.sin(xs - ph), amp * torch.sin(xq - ph)

    def loss(p, x, y):
        return torch.mean((functional_call(net, p, (x,)) - y) ** 2)

    def task_obj(p, xs, ys, xq, yq):
        for _ in range(steps):
            g = grad(loss)(p, xs, ys)
            p = {k: p[k] - ALPHA * g[k] for k in p}
        return loss(p, xq, yq)

    opt = torch.optim.Adam(params.values(), lr=OUTER_LR)

    def step():
        g = vmap(grad(task_obj), in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq)
        for k, v in params.items():
            v.grad = g[k].mean(0)
        opt.step()

    base = _rss_mb()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    return {**_time_loop(step, lambda: None, cfg), "compile_s": first, "base_rss_mb": base,
            "peak_rss_mb": _rss_mb(), "flops": None, "xla_temp_mb": None, "version": torch.__version__}


def _time_loop(call, block, cfg: dict) -> dict:
    """Median seconds per call: ``samples`` samples, each a run of n consecutive calls (>= min_sample_s)."""
    for _ in range(3):
        call()
    block()
    n, t = 1, 0.0
    while True:  # calibrate n so that one sample takes >= min_sample_s
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        block()
        t = time.perf_counter() - t0
        if t >= cfg["min_sample_s"] or n >= 4096:
            break
        n = min(4096, max(2 * n, int(n * cfg["min_sample_s"] / max(t, 1e-9) * 1.2)))
    per = []
    for _ in range(cfg["samples"]):
        t0 = time.perf_counter()
        for _ in range(n):
            call()
        block()
        per.append((time.perf_counter() - t0) / n)
    q = statistics.quantiles(per, n=4) if len(per) >= 2 else [per[0]] * 3
    return {"median_ms": 1e3 * statistics.median(per), "q25_ms": 1e3 * q[0], "q75_ms": 1e3 * q[2],
            "min_ms": 1e3 * min(per), "samples": len(per), "calls_per_sample": n}


def _compiled_runner(build, method, steps):
    """Compile one implementation; returns (call, block, info) with info = compile time, FLOPs, temp memory."""
    import jax

    step, params, opt_state, batch = build(method, steps)
    jax.block_until_ready((params, opt_state, batch))
    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, opt_state, batch).compile()
    compile_s = time.perf_counter() - t0
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    flops = float(ca.get("flops", float("nan"))) if ca else None
    try:
        temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
    except Exception:  # noqa: BLE001 - optional diagnostic
        temp_mb = None
    state = {"p": params, "s": opt_state}

    def call():
        state["p"], state["s"] = compiled(state["p"], state["s"], batch)

    def block():
        jax.block_until_ready(state["p"])

    def finite():
        return all(bool(jax.numpy.isfinite(x).all()) for x in jax.tree_util.tree_leaves(state["p"]))

    return call, block, {"compile_s": compile_s, "flops": flops, "xla_temp_mb": temp_mb, "finite": finite}


def _paired(a, b, cfg: dict) -> dict:
    """Interleaved timing of two runners in one process: robust ratio under a varying machine load."""
    (call_a, block_a), (call_b, block_b) = a, b
    for _ in range(3):
        call_a(), call_b()
    block_a(), block_b()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            call_a()
        block_a()
        if time.perf_counter() - t0 >= cfg["min_sample_s"] or n >= 4096:
            break
        n *= 2
    ta, tb = [], []
    for i in range(cfg["samples"]):
        for which in ((0, 1) if i % 2 == 0 else (1, 0)):
            call, block, out = ((call_a, block_a, ta), (call_b, block_b, tb))[which]
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            block()
            out.append((time.perf_counter() - t0) / n)
    ratios = [x / y for x, y in zip(ta, tb)]
    return {"a_median_ms": 1e3 * statistics.median(ta), "b_median_ms": 1e3 * statistics.median(tb),
            "ratio_median": statistics.median(ratios), "ratio_q25": statistics.quantiles(ratios, n=4)[0],
            "ratio_q75": statistics.quantiles(ratios, n=4)[2], "calls_per_sample": n}


def _jax_measure(cfg: dict) -> dict:
    import jax

    import optax  # noqa: F401 - imported before the baseline, like mathlib below

    if cfg["impl"] == "mathlib":
        import mathlib  # noqa: F401
    jax.numpy.zeros(1).block_until_ready()  # initialise the CPU backend before the baseline
    build = _mathlib_step if cfg["impl"] == "mathlib" else _reference_step
    base = _rss_mb()
    call, block, info = _compiled_runner(build, cfg["method"], cfg["steps"])
    res = _time_loop(call, block, cfg)
    out = {**res, "compile_s": info["compile_s"], "base_rss_mb": base, "peak_rss_mb": _rss_mb(),
           "flops": info["flops"], "xla_temp_mb": info["xla_temp_mb"], "finite": info["finite"](),
           "version": jax.__version__}
    if cfg["impl"] == "mathlib" and cfg.get("paired", True):
        # after the solo measurement (RSS, compile time): time mathlib and the reference interleaved
        rcall, rblock, _ = _compiled_runner(_reference_step, cfg["method"], cfg["steps"])
        out["paired"] = _paired((call, block), (rcall, rblock), cfg)
    return out


def _peak_measure(cfg: dict) -> dict:
    """float32 matmul peak: median GFLOP/s of a jitted n x n @ n x n product."""
    import jax
    import jax.numpy as jnp

    n = cfg["n"]
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b).lower(a, b).compile()
    out = {}

    def call():
        out["c"] = f(a, b)

    res = _time_loop(call, lambda: out["c"].block_until_ready(), {**cfg, "min_sample_s": 0.0})
    return {"n": n, "gflops": 2 * n**3 / (res["median_ms"] * 1e-3) / 1e9, **res}


def worker(cfg: dict) -> None:
    if cfg["impl"] == "peak":
        res = _peak_measure(cfg)
    elif cfg["impl"] == "torch":
        res = _torch_measure(cfg)
    else:
        res = _jax_measure(cfg)
    print(MARK + json.dumps({**cfg, **res}), flush=True)


# =========================================================================== driver side
def _run(cfg: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if cfg["threads"] == "single":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_FLAGS).strip()
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)],
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**cfg, "error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {**cfg, "error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}


def _machine() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def _fmt(x, spec=".3g", none="–"):
    return none if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def _table(rows: list[dict], peaks: dict) -> str:
    head = ["method", "K", "threads", "mathlib ms", "reference ms", "ratio ml/ref", "torch ms",
            "compile s ml / ref", "peak RSS MB ml / ref", "ΔRSS MB ml / ref", "MFLOP/iter",
            "% f32 peak ml / ref"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    keys = []
    for r in rows:
        k = (r["method"], r["steps"], r["threads"])
        if k not in keys:
            keys.append(k)
    by = {(r["impl"], r["method"], r["steps"], r["threads"]): r for r in rows}
    for method, steps, threads in keys:
        ml_, ref, th = (by.get((i, method, steps, threads), {}) for i in ("mathlib", "reference", "torch"))

        def get(r, k):
            return None if "error" in r else r.get(k)

        pair = get(ml_, "paired")
        if pair:  # interleaved in one process: the robust comparison
            m_ms, r_ms, ratio = pair["a_median_ms"], pair["b_median_ms"], pair["ratio_median"]
        else:
            m_ms, r_ms = get(ml_, "median_ms"), get(ref, "median_ms")
            ratio = m_ms / r_ms if m_ms and r_ms else None
        flops = get(ref, "flops")
        peak = peaks.get(threads)

        def pct(ms):
            return 100 * flops / (ms * 1e-3) / (peak * 1e9) if flops and ms and peak else None

        def drss(r):
            return get(r, "peak_rss_mb") - get(r, "base_rss_mb") if get(r, "peak_rss_mb") else None

        def ms(r, paired_ms=None):
            if "error" in r:
                return "error"
            if paired_ms is not None:
                return f"{paired_ms:.3f}"
            if r.get("median_ms") is None:
                return "–"
            return f"{r['median_ms']:.3f} [{r['q25_ms']:.3f}, {r['q75_ms']:.3f}]"

        ratio_cell = _fmt(ratio, ".2f")
        if pair:
            ratio_cell += f" [{pair['ratio_q25']:.2f}, {pair['ratio_q75']:.2f}]"
        cells = [LABELS.get(method, method), str(steps), threads, ms(ml_, m_ms if pair else None),
                 ms(ref, r_ms if pair else None), ratio_cell,
                 ms(th) if th else "–",
                 f"{_fmt(get(ml_, 'compile_s'), '.2f')} / {_fmt(get(ref, 'compile_s'), '.2f')}",
                 f"{_fmt(get(ml_, 'peak_rss_mb'), '.0f')} / {_fmt(get(ref, 'peak_rss_mb'), '.0f')}",
                 f"{_fmt(drss(ml_), '.0f')} / {_fmt(drss(ref), '.0f')}",
                 _fmt(flops / 1e6 if flops else None, ".2f"),
                 f"{_fmt(pct(m_ms), '.1f')} / {_fmt(pct(r_ms), '.1f')}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: MAML K=1 only, default threads, few samples")
    ap.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    ap.add_argument("--threads", choices=("single", "default", "both"), default=None)
    ap.add_argument("--methods", default=None, help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--samples", type=int, default=None, help="timing samples per configuration")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per configuration")
    ap.add_argument("--no-torch", action="store_true", help="skip torch.func even if PyTorch is importable")
    ap.add_argument("--markdown", metavar="PATH", help="also write the table as Markdown (the status page reads book/data/benchmark.md)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0

    quick = args.quick
    threads = {"single": ["single"], "default": ["default"], "both": ["single", "default"]}[
        args.threads or ("default" if quick else "both")]
    methods = args.methods.split(",") if args.methods else (["maml"] if quick else list(METHODS))
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"argument --methods: unknown {bad}; expected a subset of {list(METHODS)}")
    samples = args.samples or (5 if quick else 60)
    timing = {"samples": samples, "min_sample_s": 0.002 if quick else 0.02}
    have_torch = importlib.util.find_spec("torch") is not None and not args.no_torch

    load0 = os.getloadavg()
    t_start = time.time()
    peaks, rows = {}, []
    for th in threads:
        p = _run({"impl": "peak", "threads": th, "n": 1024 if quick else 2048, "samples": 5 if quick else 15}, args.timeout)
        peaks[th] = p.get("gflops")
        rows_peak = p
        print(f"# peak float32 matmul ({th} threads): {_fmt(peaks[th], '.1f')} GFLOP/s"
              + (f" ERROR {p['error']}" if "error" in p else ""), file=sys.stderr, flush=True)
        rows.append(rows_peak)
        for method in methods:
            for steps in (METHODS[method][:1] if quick else METHODS[method]):
                impls = ["mathlib", "reference"] + (["torch"] if have_torch and method == "maml" else [])
                for impl in impls:
                    cfg = {"impl": impl, "method": method, "steps": steps, "threads": th, **timing}
                    r = _run(cfg, args.timeout)
                    rows.append(r)
                    msg = r.get("error") or f"{r['median_ms']:.3f} ms, compile {r['compile_s']:.2f} s"
                    print(f"# {impl:9s} {method:9s} K={steps} {th:7s}: {msg}", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    bench_rows = [r for r in rows if r["impl"] != "peak"]
    machine = _machine()
    report = []
    out = report.append
    out(f"Setting: MLP {'-'.join(map(str, SIZES))} ReLU, {NUM_TASKS} tasks/meta-batch, {K_SUPPORT}+{K_QUERY} "
          f"points, inner SGD alpha={ALPHA}, Adam {OUTER_LR}, float32; one meta-iteration = meta-gradient + "
          f"Adam update on a fixed batch.  Machine: {machine['cpu']}, {machine['cpu_count']} CPUs; "
          f"float32 matmul peak: " + ", ".join(f"{k} {_fmt(v, '.1f')} GFLOP/s" for k, v in peaks.items()) + ".")
    out(f"Load average at start {load0[0]:.2f}, at end {load1[0]:.2f} (shared machine: timings vary with load). "
          f"mathlib and reference times are medians over {samples} interleaved samples in one process; the "
          f"ratio is the median [IQR] of the per-sample ratios. Compile time and RSS come from separate "
          f"processes per implementation; % peak uses the reference's XLA FLOP count. Torch: "
          + ("included for MAML." if have_torch else "not installed, skipped.") + "\n")
    out(_table(bench_rows, peaks))
    print("## MAML sinusoid benchmark (mathlib vs hand-written JAX reference)\n")
    print("\n".join(report))
    if args.markdown:
        cmd = "make bench" if argv is None and sys.argv[1:] == ["--markdown", args.markdown] else \
            "python tests/benchmarks/bench_maml_sinusoid.py " + " ".join(sys.argv[1:] if argv is None else argv)
        stamp = time.strftime("%Y-%m-%d", time.gmtime())
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(
            f"MAML sinusoid regression, mathlib against a hand-written jitted JAX reference, measured on "
            f"{stamp} with `{cmd}` (script: `tests/benchmarks/bench_maml_sinusoid.py`; see its README).\n\n"
            + "\n".join(report) + "\n")
    failed = [r for r in bench_rows if "error" in r and r["impl"] != "torch"]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"setting": {"sizes": SIZES, "num_tasks": NUM_TASKS, "k_support": K_SUPPORT,
                                   "k_query": K_QUERY, "alpha": ALPHA, "outer_lr": OUTER_LR,
                                   "hf_delta": HF_DELTA, "dtype": "float32", "quick": quick},
                       "machine": machine, "load_average": {"start": load0, "end": load1},
                       "peak_gflops": peaks, "wall_s": time.time() - t_start, "results": rows}, fh, indent=1)
    for r in failed:
        print(f"\nFAILED {r['impl']} {r['method']} K={r['steps']} {r['threads']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
