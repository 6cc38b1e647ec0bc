#!/usr/bin/env python
"""User-path check (issue 8, item 7): a jitted step of ml.meta_gradient + optax Adam vs plain autodiff.

Sinusoid 1-40-40-1, meta-batch 25, 10+10 points, float32, one thread. Prints (1) XLA cost analysis
(FLOPs, bytes; load-independent) of three jitted steps: meta_gradient with an Estimator, the per-task
vmap-then-mean path, and the plain autodiff gradient of the batch-mean objective; (2) with --time,
interleaved wall-clock medians and median per-sample ratios to plain autodiff.

Usage: python tests/benchmarks/bench_user_path.py [--time] [--samples 30]
"""
import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import mathlib as ml  # noqa: E402


def steps_for(method, K):
    key = jax.random.key(1)
    if method == "anil":
        params, loss = ml.init_body_head(key, (1, 40, 40, 1)), ml.body_head_mse_loss
    else:
        params, loss = ml.init_mlp(key, (1, 40, 40, 1)), ml.mlp_mse_loss
    ep = ml.sample_sinusoid_episodes(jax.random.key(0), 25, 10, 10)
    est = ml.make_estimator(method, alpha=0.01, steps=K)
    opt = optax.adam(1e-3)

    def mk(gfn):
        def step(p, s, e):
            u, s = opt.update(gfn(p, e), s, p)
            return optax.apply_updates(p, u), s

        return jax.jit(step)

    fns = {
        "meta_gradient(est)": mk(lambda p, e: ml.meta_gradient(est, loss, p, e)),
        "per-task vmap+mean": mk(lambda p, e: ml.meta_gradient(ml.ESTIMATORS[method], loss, p, e, alpha=0.01, steps=K)),
        "plain autodiff": mk(lambda p, e: jax.grad(lambda q: jnp.mean(jax.vmap(lambda x: est.objective(loss, q, x))(e)))(p)),
    }
    return fns, params, opt.init(params), ep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", action="store_true")
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args()
    for method, K in (("anil", 1), ("anil", 5), ("maml", 1), ("maml", 5)):
        fns, p, s, ep = steps_for(method, K)
        line = f"{method} K={K}:"
        for name, f in fns.items():
            ca = f.lower(p, s, ep).compile().cost_analysis()
            ca = ca[0] if isinstance(ca, list) else ca
            line += f"  {name}: {ca.get('flops', 0) / 1e6:.2f} MFLOP {ca.get('bytes accessed', 0) / 1e6:.2f} MB;"
        print(line, flush=True)
        if not args.time:
            continue
        for f in fns.values():
            jax.block_until_ready(f(p, s, ep))
        res = {k: [] for k in fns}
        for _ in range(args.samples):
            for k, f in fns.items():  # interleaved
                t = time.perf_counter()
                for _ in range(20):
                    out = f(p, s, ep)
                jax.block_until_ready(out)
                res[k].append((time.perf_counter() - t) / 20 * 1e3)
        ref = res["plain autodiff"]
        print("   " + "; ".join(f"{k}: {statistics.median(v):.3f} ms, ratio {statistics.median([a / b for a, b in zip(v, ref)]):.2f}"
                                for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
