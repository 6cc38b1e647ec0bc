"""Command line of the book tooling: ``python -m mathlib.book {execute,pages,list,durations,check-html}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _param(pairs):
    out = {}
    for name, value in pairs or []:
        out[name] = yaml.safe_load(value)
    return out


def main(argv=None) -> int:
    from mathlib.book._paths import repo_root, toc_notebooks

    parser = argparse.ArgumentParser(prog="python -m mathlib.book", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("execute", help="execute notebooks with papermill (incremental, atomic)")
    ex.add_argument("notebooks", nargs="*", help="source notebooks (default: every notebook in _toc.yml)")
    ex.add_argument("--quick", action="store_true", help="inject quick=True (fast preview; what CI runs)")
    ex.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="inject a parameter (YAML value), e.g. -p seed 3 -p alphas '[0.01, 0.1]'")
    ex.add_argument("--workers", type=int, default=2)
    ex.add_argument("--force", action="store_true", help="execute even when nothing changed")
    ex.add_argument("--cell-timeout", type=float, default=None, metavar="SECONDS",
                    help="time limit of every cell (default: 300 in quick mode, 3600 in full mode)")
    ex.add_argument("--notebook-timeout", type=float, default=None, metavar="SECONDS",
                    help="watchdog: stop the run if one notebook's worker runs longer (default: 1200 quick, 14400 full)")
    ex.add_argument("--stall-timeout", type=float, default=None, metavar="SECONDS",
                    help="kill a kernel whose processes use no CPU for this long (a deadlock) and retry its notebook (default: 90)")
    ex.add_argument("--retries", type=int, default=1,
                    help="re-runs of a notebook that timed out or whose kernel died (default: 1)")
    sub.add_parser("pages", help="regenerate the figure gallery and the status page")
    pk = sub.add_parser("pack", help="build the lecturer pack (figures.zip, figures.bib, slides) in book/_generated/pack")
    pk.add_argument("--force", action="store_true")
    pdf = sub.add_parser("pdf", help="print an HTML page (the single-page book) to PDF with headless Chromium")
    pdf.add_argument("html", type=Path)
    pdf.add_argument("pdf", type=Path)
    sub.add_parser("list", help="list the notebooks in _toc.yml")
    sub.add_parser("durations", help="record the last run's seconds per notebook into notebooks/durations.json "
                                     "(schedule hints: the executor starts the longest notebooks first)")
    fb = sub.add_parser("fix-bootstrap", help="make the first code cell of notebooks the canonical bootstrap cell")
    fb.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/**/*.ipynb")
    fb.add_argument("--check", action="store_true", help="only report notebooks that differ (exit 1 if any)")
    ch = sub.add_parser("check-html", help="check a built book: no external scripts/styles, no broken links")
    ch.add_argument("html_dir", type=Path)
    args = parser.parse_args(argv)
    root = repo_root()
    if args.cmd == "execute":
        from mathlib.book._execute import execute
        from mathlib.book._pages import write_pages

        if args.workers < 1:
            parser.error(f"argument --workers must be >= 1, got {args.workers}")
        if args.cell_timeout is not None and args.cell_timeout <= 0:
            parser.error(f"argument --cell-timeout must be > 0 seconds, got {args.cell_timeout}")
        if args.notebook_timeout is not None and args.notebook_timeout <= 0:
            parser.error(f"argument --notebook-timeout must be > 0 seconds, got {args.notebook_timeout}")
        if args.stall_timeout is not None and args.stall_timeout <= 0:
            parser.error(f"argument --stall-timeout must be > 0 seconds, got {args.stall_timeout}")
        if args.retries < 0:
            parser.error(f"argument --retries must be >= 0, got {args.retries}")
        failures = execute(root, [Path(n) for n in args.notebooks] or None, quick=args.quick,
                           extra_parameters=_param(args.parameter), workers=args.workers, force=args.force,
                           cell_timeout=args.cell_timeout, retries=args.retries,
                           notebook_timeout=args.notebook_timeout,
                           **({} if args.stall_timeout is None else {"stall_timeout": args.stall_timeout}))
        write_pages(root)
        return 1 if failures else 0
    if args.cmd == "durations":
        from mathlib.book._execute import write_durations

        print(write_durations(root).relative_to(root))
        return 0
    if args.cmd == "pages":
        from mathlib.book._pages import write_pages

        for p in write_pages(root):
            print(p.relative_to(root))
        return 0
    if args.cmd == "pack":
        from mathlib.book._pack import build_pack

        written = build_pack(root, force=args.force)
        print(f"lecturer pack: {len(written)} file(s) written" if written else "lecturer pack: up to date")
        return 0
    if args.cmd == "pdf":
        from mathlib.book._pdf import print_book

        info = print_book(args.html, args.pdf)
        print(f"{args.pdf}: {info['pages']} pages, {info['bytes'] / 1e6:.1f} MB in {info['seconds']:.1f} s")
        return 0
    if args.cmd == "list":
        for nb in toc_notebooks(root):
            print(nb.as_posix())
        return 0
    if args.cmd == "fix-bootstrap":
        import nbformat

        from mathlib.book._bootstrap import bootstrap_problem, fix_notebook

        paths = args.notebooks or sorted(p for p in (root / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        bad = 0
        for p in paths:
            if args.check:
                why = bootstrap_problem(nbformat.read(p, as_version=4))
                if why:
                    bad += 1
                    print(f"{p}: {why}")
            elif fix_notebook(p):
                print(f"fixed {p}")
        return 1 if bad else 0
    if args.cmd == "check-html":
        from mathlib.book._check import check_html

        problems = check_html(args.html_dir)
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s) in {args.html_dir}")
        return 1 if problems else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
