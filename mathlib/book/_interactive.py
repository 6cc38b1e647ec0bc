"""Static interactive figures: a slider over frames precomputed at build time (no kernel, offline).

Pilot (notation page): the exact MAML meta-gradient field, MAML's minimiser and the FO-MAML fixed
point of the intro notebook's task family (4 two-dimensional quadratic tasks, seed 0, one inner
step) for a grid of inner step sizes alpha. ``python -m mathlib.book pages`` writes the frames
(SVG, byte-identical) and ``book/_generated/interactive/alpha-slider.md``, which
``book/notation.md`` includes; a few lines of JavaScript show one frame at a time. Recomputed only
when mathlib or this module changes (``.inputs-sha256``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mathlib.book._paths import GENERATED

OUT = GENERATED / "interactive"
ALPHAS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.38)
DEFAULT = 0.35  # the intro notebook's alpha
SEED, NUM_TASKS = 0, 4  # the intro notebook's defaults


def _inputs_hash(root: Path) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for p in sorted((root / "mathlib").glob("_*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _frames(out: Path) -> list[dict]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import mathlib as ml
    from mathlib.figures import HOUSE_STYLE, use_style

    use_style()
    tasks = ml.sample_quadratic_tasks(jax.random.key(SEED), NUM_TASKS, 2, eig_range=(0.2, 2.5),
                                      rotation_spread=1.5, b_scale=1.5)
    pts = {a: (np.asarray(ml.quadratic_maml_minimizer(tasks, a)), np.asarray(ml.quadratic_fomaml_fixed_point(tasks, a)))
           for a in ALPHAS}
    allp = np.array([p for pair in pts.values() for p in pair])
    lo, hi = allp.min(0), allp.max(0)
    c, span = 0.5 * (lo + hi), 0.6 * float(np.max(hi - lo)) + 0.2
    n = 17
    xs, ys = np.linspace(c[0] - span, c[0] + span, n), np.linspace(c[1] - span, c[1] + span, n)
    X, Y = np.meshgrid(xs, ys)
    grid = jnp.stack([X.ravel(), Y.ravel()], axis=1)
    fine = np.linspace(-1, 1, 90)
    XF, YF = np.meshgrid(c[0] + span * fine, c[1] + span * fine)
    finegrid = jnp.stack([XF.ravel(), YF.ravel()], axis=1)
    grad = jax.jit(jax.vmap(ml.quadratic_maml_grad, in_axes=(0, None, None)))
    obj = jax.jit(jax.vmap(ml.quadratic_maml_objective, in_axes=(0, None, None)))
    frames = []
    for a in ALPHAS:
        G = np.asarray(grad(grid, tasks, a))
        U = -G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-300)
        F = np.asarray(obj(finegrid, tasks, a)).reshape(XF.shape)
        w_maml, w_fo = pts[a]
        dist = float(np.linalg.norm(w_fo - w_maml))
        fig, ax = plt.subplots(figsize=(5.2, 4.4))
        ax.contour(XF, YF, F, levels=12, colors="0.75", linewidths=0.8)
        ax.quiver(X.ravel(), Y.ravel(), U[:, 0], U[:, 1], angles="xy", scale=n * 1.6, width=0.004, color="0.25")
        ax.plot(*w_maml, "o", ms=9, color="#0072B2", label="MAML minimiser")
        ax.plot(*w_fo, "s", ms=8, color="#D55E00", label="FO-MAML fixed point")
        ax.set_title(f"$\\alpha={a:.2f}$: distance {dist:.3f}")
        ax.set_xlabel("$w_1$")
        ax.set_ylabel("$w_2$")
        ax.set_aspect("equal")
        ax.legend(loc="lower right")
        name = f"alpha-{a:.2f}.svg"
        with matplotlib.rc_context({"svg.hashsalt": HOUSE_STYLE["svg.hashsalt"]}):
            fig.savefig(out / name, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(fig)
        frames.append({"alpha": a, "file": name, "distance": dist})
    return frames


def slider_markdown(frames: list[dict]) -> str:
    idx = next(i for i, f in enumerate(frames) if abs(f["alpha"] - DEFAULT) < 1e-12)
    values = ",".join(f"{f['alpha']:.2f}" for f in frames)
    lines = [
        f'<div class="ml-slider" id="ml-alpha-slider" data-values="{values}">',
        f'<label for="ml-alpha-input">Inner step size &alpha; = <output id="ml-alpha-value">{frames[idx]["alpha"]:.2f}</output></label>',
        f'<input id="ml-alpha-input" type="range" min="0" max="{len(frames) - 1}" step="1" value="{idx}" aria-label="inner step size alpha" style="width: 60%;">',
        "</div>",
        "",
    ]
    for i, f in enumerate(frames):
        lines += [
            f"```{{image}} /book/_generated/interactive/{f['file']}",
            f":class: ml-frame{' ml-on' if i == idx else ''}",
            ":width: 70%",
            f":alt: Exact MAML meta-gradient field with alpha = {f['alpha']:.2f}; the FO-MAML fixed point lies at distance {f['distance']:.3f} from MAML's minimiser.",
            "```",
            "",
        ]
    lines += [
        "<style>img.ml-frame{display:none}img.ml-frame.ml-on{display:block}</style>",
        "<script>",
        "(function(){var s=document.getElementById('ml-alpha-slider');if(!s)return;",
        "var v=s.dataset.values.split(','),inp=document.getElementById('ml-alpha-input'),out=document.getElementById('ml-alpha-value');",
        "var fr=document.querySelectorAll('img.ml-frame');",
        "function show(){var k=+inp.value;out.textContent=v[k];fr.forEach(function(f,j){f.classList.toggle('ml-on',j===k);});}",
        "inp.addEventListener('input',show);show();})();",
        "</script>",
        "",
    ]
    return "\n".join(lines)


def build_interactive(root: Path, *, force: bool = False) -> Path | None:
    """Write the frames and the slider page if a page includes it (else None)."""
    root = root.resolve()
    page = root / "book" / "notation.md"
    if not page.is_file() or "interactive/alpha-slider.md" not in page.read_text():
        return None
    out = root / OUT
    stamp, md = out / ".inputs-sha256", out / "alpha-slider.md"
    digest = _inputs_hash(root)
    if not force and stamp.is_file() and stamp.read_text().strip() == digest and md.is_file():
        return md
    out.mkdir(parents=True, exist_ok=True)
    frames = _frames(out)
    md.write_text(slider_markdown(frames))
    stamp.write_text(digest + "\n")
    return md
