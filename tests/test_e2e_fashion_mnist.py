"""End-to-end: one epoch of an AdderNet- and a DeepShift-style ResNet-20 (converted with the helper) on the full
Fashion-MNIST, from the CLI. Minutes each on 2 cores: ``.venv/bin/pytest -m slow``."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"


@pytest.mark.slow
@pytest.mark.parametrize("recipe, layer", [("addernet_resnet20.yaml", "AdderConv2d"),
                                           ("deepshift_resnet20.yaml", "ShiftConv2d")])
def test_one_epoch_on_fashion_mnist(tmp_path: Path, recipe: str, layer: str) -> None:
    exe = shutil.which("nni-shiftadd") or str(Path(sys.executable).parent / "nni-shiftadd")
    proc = subprocess.run([exe, "train", "--config", str(EXAMPLES / recipe), "--epochs", "1",
                           "--output", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["ops"][layer] == 20 and metrics["ops"]["Conv2d"] == 1 and metrics["ops"]["Linear"] == 1
    assert metrics["train_steps"] == 55_000 // 128
    assert metrics["train_loss_last"] < 0.7 * metrics["train_loss_first"], metrics
    assert metrics["test_acc"] > 0.6, metrics  # chance is 0.1
