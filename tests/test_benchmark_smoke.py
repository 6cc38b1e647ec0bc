"""Smoke test of the benchmark script: ``--quick`` runs and prints a parseable Markdown table.

No timing assertions (the machine is shared); only that the script works end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import caller_env

SCRIPT = Path(__file__).resolve().parent / "benchmarks" / "bench_maml_sinusoid.py"


def test_benchmark_quick_runs_and_table_parses(tmp_path):
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--json", str(out_json)],
                          capture_output=True, text=True, timeout=300, env=caller_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [l for l in proc.stdout.splitlines() if l.startswith("|")]
    assert len(rows) >= 3, proc.stdout
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert {"method", "K", "threads", "mathlib ms", "reference ms", "ratio ml/ref"} <= set(header)
    assert set(rows[1].replace("|", "").replace("-", "")) <= {""}
    body = [dict(zip(header, (c.strip() for c in r.strip("|").split("|")))) for r in rows[2:]]
    maml = [r for r in body if r["method"] == "MAML" and r["K"] == "1"]
    assert maml, body
    assert float(maml[0]["mathlib ms"].split()[0]) > 0 and float(maml[0]["reference ms"].split()[0]) > 0
    assert float(maml[0]["ratio ml/ref"].split()[0]) > 0
    data = json.loads(out_json.read_text())
    assert data["setting"]["quick"] is True and data["peak_gflops"]["default"] > 0
    impls = {r["impl"] for r in data["results"]}
    assert {"peak", "mathlib", "reference"} <= impls
    assert all("error" not in r for r in data["results"] if r["impl"] != "torch")
