"""The search trial (``nni-shiftadd trial``): one architecture evaluated with inherited supernet weights on
Fashion-MNIST, whose training transform draws random crops, so that the trial's seeding is really exercised."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from nni_shiftadd.cli import main
from nni_shiftadd.config import from_dict
from nni_shiftadd.space import baseline_arch, load_space, random_arch
from nni_shiftadd.tasks.trial import TrialConfig, evaluate_subnet
from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

METRICS = {"default", "accuracy", "loss", "energy_mJ", "latency_ms", "mult_G", "add_G", "shift_G", "params_M", "macs_M"}


@pytest.fixture(scope="module")
def supernet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("supernet")
    train_supernet(from_dict(SupernetConfig, {
        "dataset": "fashion_mnist", "batch_size": 32, "epochs": 1, "limit_train_batches": 4, "warmup_epochs": 0,
        "eval_archs": 0, "limit_eval_batches": 1, "bn_calibration_batches": 1, "output": str(out)}))
    return out / "checkpoints" / "last.ckpt"


def test_an_arch_scores_the_same_in_every_trial(supernet: Path) -> None:
    cfg = TrialConfig(supernet=str(supernet), space="cv_small", batch_size=64, eval_batches=2,
                      calibration_batches=3, threads=1)
    arch = random_arch(load_space("cv_small"), 3)
    first = evaluate_subnet(cfg, arch)
    random.random(), torch.rand(3)  # whatever ran before must not matter
    second = evaluate_subnet(cfg, arch)
    assert METRICS <= set(first)
    assert {k: v for k, v in first.items() if k != "eval_seconds"} == \
           {k: v for k, v in second.items() if k != "eval_seconds"}
    # the share of correct predictions among the 2 x 64 scored images (a count, not a training outcome: the
    # supernet fixture trains 4 steps; tests/test_supernet_train.py checks that training learns)
    assert float(first["accuracy"] * 128).is_integer() and 0 < first["loss"] < 10
    assert first["energy_mJ"] > 0 and first["latency_ms"] > 0


def test_cli_trial_prints_the_metrics_and_rejects_a_foreign_arch(supernet: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    arch = baseline_arch(load_space("cv_small"), "shift")
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    common = ["trial", "--supernet", str(supernet), "--eval-batches", "1", "--calibration-batches", "1",
              "--batch-size", "32"]
    assert main([*common, "--arch", str(tmp_path / "arch.json")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["arch"] == arch and METRICS <= set(printed)
    assert printed["shift_G"] > 0 and printed["mult_G"] < printed["shift_G"]  # stem and head stay multiplicative
    bad = {**arch, "stage2.layer0.op": "winograd"}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main([*common, "--arch", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "stage2.layer0.op" in err and "winograd" in err and "conv" in err


def test_the_callers_thread_count_is_restored(supernet: Path) -> None:
    before = torch.get_num_threads()
    evaluate_subnet(TrialConfig(supernet=str(supernet), batch_size=16, eval_batches=1, calibration_batches=0,
                                threads=before + 1), random_arch(load_space("cv_small"), 0))
    assert torch.get_num_threads() == before


def test_a_named_space_reads_the_checkpoint_once_and_a_foreign_one_is_refused(
        supernet: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--space`` the trial takes its kind from the space instead of opening the checkpoint to recognise it
    (what the demo's trials do); a space of the other kind is refused by that kind's loader, naming the file."""
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    arch = random_arch(load_space("cv_small"), 1)
    named = evaluate_subnet(TrialConfig(supernet=str(supernet), space="cv_small", batch_size=16, eval_batches=1,
                                        calibration_batches=0), arch)
    assert len(loads) == 1
    recognised = evaluate_subnet(TrialConfig(supernet=str(supernet), batch_size=16, eval_batches=1,
                                             calibration_batches=0), arch)
    assert len(loads) == 3  # recognised first (memory-mapped), then loaded
    assert named["accuracy"] == recognised["accuracy"]
    nlp_arch = random_arch(load_space("nlp_tiny"), 0)
    assert main(["trial", "--supernet", str(supernet), "--space", "nlp_tiny", "--arch", json.dumps(nlp_arch)]) == 2
    err = capsys.readouterr().err
    assert str(supernet) in err and "not a checkpoint of the fairseq model shiftadd_supertransformer" in err
