"""The supernet-overhead benchmark (``benchmarks/supernet_overhead.py``) in its quick mode, for an image and a
translation space: it times the three models on the same paths and breaks the forward pass down by block type."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("space, where", [("cv_small", {"28", "14", "7"}), ("nlp_tiny", {"encoder", "decoder"})])
def test_supernet_overhead_benchmark_times_every_model_and_block(space: str, where: set[str], tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    run = subprocess.run([sys.executable, "benchmarks/supernet_overhead.py", "--quick", "--space", space,
                          "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
                             [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])))
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["space"] == space and result["archs"] == 6
    for model in ("hws", "naive", "standalone"):
        assert result["step_ms_mean"][model] > 0 and math.isfinite(result["step_ms_mean"][model])
        assert set(result["phases_ms_mean"][model]) == {"forward", "backward", "optimizer"}
    assert set(result["over_standalone"]) == {"hws", "naive"}
    assert ("PASS" in run.stdout or "MISS" in run.stdout) and "x the stand-alone step" in run.stdout
    rows = result["layer_forward_ms_per_path"]
    assert {name.split("@")[1] for name in rows} <= where and rows
    # every layer the sampled paths ran was clocked in the stand-alone subnet and in both supernets
    assert all(row["standalone"] > 0 and row["hws"] > 0 and row["naive"] > 0 for row in rows.values())
