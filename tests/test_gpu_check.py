"""The prepared GPU check (``benchmarks/gpu.py``): on a machine without CUDA it says so and runs nothing; its checks
run on the CPU paths they can reach, the Triton kernels under Triton's interpreter (a fresh process, as
``tests/test_triton_adder.py`` explains)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check instead")
def test_without_cuda_it_says_so_and_runs_nothing(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    run = subprocess.run([sys.executable, "benchmarks/gpu.py", "--json", str(tmp_path / "gpu.json")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "no CUDA device on this machine; nothing was run" in run.stdout, run.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_every_check_runs_on_the_cpu_with_the_triton_interpreter(tmp_path: Path) -> None:
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    run = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--quick", "--json",
                          str(tmp_path / "gpu.json")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["device"] == "cpu" and not [k for k in ("kernels", "operators", "steps", "training")
                                              if "error" in report[k]], report
    kernels = {k: v for k, v in report["kernels"].items() if k != "seconds"}
    assert set(kernels) == {"conv2d/float32", "linear/float32", "conv2d/bfloat16", "linear/bfloat16"}
    assert all(v["ok"] and v["forward"] < 1e-5 for k, v in kernels.items() if k.endswith("float32")), kernels
    for tf in ("fp32", "tf32"):
        ratios = report["operators"][tf]["over_multiply"]
        assert ratios["conv2d"] == ratios["linear"] == 1.0 and all(r > 0 for r in ratios.values())
    assert report["steps"]["cv_small_supernet_step_ms"] > 0 and report["steps"]["nlp_tiny_supertransformer_update_ms"] > 0
    assert report["training"]["finite"] and report["training"]["steps"] == 4
    bad = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--only", "kernels,speed"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--only: unknown check(s) ['speed']" in bad.stderr
