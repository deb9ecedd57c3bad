"""The top-level API carries a user's whole workflow (space, supernet training, search, cost, retraining), loads
lazily (importing the package imports neither torch nor NNI), and lists its lazy names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nni_shiftadd

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_resolves_and_is_listed() -> None:
    names = [n for n in nni_shiftadd.__all__ if n != "__version__"]
    for stage in ("load_space", "HybridCVSpace", "train_supernet", "Evolution", "ShiftAddEvolutionStrategy",
                  "ShiftAddEvolutionTuner", "profile", "space_cost_fn", "retrain", "train_supertransformer"):
        assert stage in names, stage
    assert set(names) <= set(dir(nni_shiftadd))
    for name in names:
        assert getattr(nni_shiftadd, name) is not None, name
    assert nni_shiftadd.ShiftAddEvolutionStrategy is not nni_shiftadd.ShiftAddEvolutionTuner  # distinct names


def test_importing_the_package_is_light() -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    code = "import sys, nni_shiftadd; print(sorted(m for m in ('torch', 'nni', 'timm') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr
