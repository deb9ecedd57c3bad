"""The rank-statistics benchmark (``benchmarks/rank_statistics.py``) at a small size: it runs, and its vectorised
intervals equal the scipy baseline's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_runs_and_agrees_with_scipy(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "benchmarks/rank_statistics.py", "--archs", "12", "--seeds", "2",
                          "--samples", "200", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                             [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])))
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["max_abs_difference"] <= 1e-9 and result["speedup"] > 1.0, result
    assert "200 resamples, 2 seeds x 12 architectures" in run.stdout
