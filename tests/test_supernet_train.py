"""One-shot supernet training (``nni-shiftadd train-supernet``) on scikit-learn's digits resized to 28x28: a short
run, exact resumption after ``kill -9``, DDP on two CPU processes, and config errors (NaN stops, corrupt
checkpoints and locked folders: ``tests/test_reliability.py``)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, from_dict, load_yaml
from nni_shiftadd.tasks.resumable import ResumableSampler
from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

from interrupt import env, stop_at

ROOT = Path(__file__).resolve().parents[1]

RECIPE = ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"


def _config(output: Path, **overrides: Any) -> dict[str, Any]:
    cfg = {"dataset": "digits", "batch_size": 16, "epochs": 1, "limit_train_batches": 12, "checkpoint_every": 5,
           "eval_archs": 1, "limit_eval_batches": 2, "warmup_epochs": 0, "output": str(output)}
    return {**cfg, **overrides}


def _cli(cfg: dict[str, Any]) -> list[str]:
    args = [sys.executable, "-m", "nni_shiftadd.cli", "train-supernet"]
    for key, value in cfg.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_example_recipe_validates() -> None:
    cfg = load_yaml(SupernetConfig, RECIPE)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.sched, cfg.warmup_epochs) == ("adamw", 5e-4, 0.05,
                                                                                       "cosine", 5)


def test_supernet_training_learns(tmp_path: Path) -> None:
    """A fixed-seed run of six epochs on digits (~270 steps of uniformly sampled paths) takes the homogeneous
    subnets, scored with inherited weights after BN recalibration, well above chance (0.1): ~0.28 on average here,
    where a supernet whose training is broken stays at chance."""
    result = train_supernet(from_dict(SupernetConfig, _config(
        tmp_path, epochs=6, limit_train_batches=None, batch_size=32, lr=0.005, checkpoint_every=1000, eval_archs=0,
        limit_eval_batches=4, bn_calibration_batches=4)))
    baselines = result["baselines"]
    assert sum(baselines.values()) / len(baselines) >= 0.2 and min(baselines.values()) > 0.12, baselines
    assert result["train_loss_last"] < result["train_loss_first"] - 0.1


def test_short_run_writes_checkpoint_and_baselines(tmp_path: Path) -> None:
    cfg = from_dict(SupernetConfig, _config(tmp_path, limit_train_batches=12, batch_size=32))
    result = train_supernet(cfg)
    assert result["global_step"] == 12
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 12 and "supernet_rng" in ckpt
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"conv", "shift", "add", "attn"}
    assert len(metrics["archs"]) == 1 + 4 and all(0.0 <= r["val_acc"] <= 1.0 for r in metrics["archs"].values())
    # the trained supernet loads back (weights_only) with its recipe; a subnet gets the same weights it trained
    from nni_shiftadd.tasks.supernet import load_supernet

    supernet, recipe = load_supernet(tmp_path / "checkpoints" / "last.ckpt", "cv_small")
    assert recipe.space == "cv_small" and recipe.limit_train_batches == 12
    assert torch.equal(supernet.head.weight, ckpt["state_dict"]["supernet.head.weight"])
    with pytest.raises(ValueError, match=r"trained on space 'cv_small'.*requested space 'cv_imagenet'"):
        load_supernet(tmp_path / "checkpoints" / "last.ckpt", "cv_imagenet")
    with pytest.raises(ValueError, match="not a supernet checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        load_supernet(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_supernet(tmp_path / "missing.ckpt")


def test_sampler_resumes_mid_epoch_and_shards() -> None:
    full = ResumableSampler(100, 8, seed=3)
    full.set_epoch(2)
    order = list(full)
    part = ResumableSampler(100, 8, seed=3)
    part.set_epoch(2)
    it = iter(part)
    taken = [next(it) for _ in range(3 * 8)]
    state = part.state_dict()
    assert state == {"epoch": 2, "batches_taken": 3}
    resumed = ResumableSampler(100, 8, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert taken + list(resumed) == order
    shards = [ResumableSampler(100, 8, seed=3, num_replicas=2) for _ in range(2)]
    rank0, rank1 = shards[0]._ranked(0), shards[1]._ranked(1)
    assert len(shards[0]) == len(rank0) == len(rank1) == 48 and not set(rank0) & set(rank1)


def test_kill9_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "killed", limit_train_batches=20, checkpoint_every=4, eval_archs=0)
    proc = subprocess.Popen(_cli(cfg), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(m.group(1)) for p in ckpts.glob("*.ckpt") if (m := re.search(r"step=(\d+)", p.name))]
            if steps and max(steps) >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = _load(ckpts / "last.ckpt")["global_step"]
    assert 4 <= killed_at < 20
    resumed = subprocess.run(_cli(cfg), env=env(), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    reference = train_supernet(from_dict(SupernetConfig, _config(tmp_path / "reference", limit_train_batches=20,
                                                                 checkpoint_every=4, eval_archs=0)))
    assert reference["global_step"] == 20
    a = _load(ckpts / "last.ckpt")
    b = _load(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 20
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"resumed from step {killed_at}: tensors differ: {differ[:10]}"
    assert a["supernet_rng"]["arch"] == b["supernet_rng"]["arch"]


def _stop_at(cfg: dict[str, Any], step: int, signum: int) -> int:
    """:func:`interrupt.stop_at` of a ``train-supernet`` run of ``cfg``."""
    return stop_at(_cli(cfg), Path(cfg["output"]) / "checkpoints", step, signum)


def test_a_resumed_run_stopped_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    """Killed at an epoch's last batch, resumed, stopped in the middle of the next epoch, resumed again: the same
    steps and weights as a run never stopped. (Lightning does not count the epoch after such a resume as started, so
    without :class:`~nni_shiftadd.tasks.resumable.MidEpochCounters` the last resume trains that epoch again.)"""
    cfg = _config(tmp_path / "stopped", epochs=3, limit_train_batches=16, checkpoint_every=16, eval_archs=0,
                  mixup=0.4)  # numpy's generator, restored mid-epoch too
    assert _stop_at(cfg, 16, signal.SIGKILL) == 16  # a checkpoint of the first epoch's last batch, and no other
    assert 18 <= _stop_at({**cfg, "checkpoint_every": 1}, 18, signal.SIGTERM) < 32
    resumed = subprocess.run(_cli(cfg), env=env(), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = train_supernet(from_dict(SupernetConfig, {**cfg, "output": str(tmp_path / "reference")}))
    a = _load(tmp_path / "stopped" / "checkpoints" / "last.ckpt")
    b = _load(tmp_path / "reference" / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == reference["global_step"] == 48
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"tensors differ: {differ[:10]}"


@pytest.mark.parametrize("content, message", [
    ({"space": "no_such_space"}, r"field 'space'.*no_such_space"),
    ({"input_size": 32}, r"field 'input_size': got 32.*28x28"),
    ({"dataset": "cifar10"}, r"field 'dataset'.*cifar10"),
    ({"mode": "full"}, r"field 'mode'"),
    ({"checkpoint_every": 0}, r"field 'checkpoint_every': must be >= 1"),
    ({"devices": 2}, r"field 'strategy'"),
])
def test_bad_config_names_the_field(content: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(SupernetConfig, content, "recipe.yaml")


def test_cli_reports_bad_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-supernet", "--space", "no_such_space"]) == 2
    assert "field 'space'" in capsys.readouterr().err


def test_ddp_two_cpu_processes(tmp_path: Path) -> None:
    cfg = _config(tmp_path, devices=2, strategy="ddp", limit_train_batches=4, checkpoint_every=2, eval_archs=0)
    run = subprocess.run(_cli(cfg), env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = _load(tmp_path / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 4
    assert json.loads((tmp_path / "metrics.json").read_text())["baselines"].keys() == {"conv", "shift", "add", "attn"}


def test_sampling_can_be_restricted_to_a_cost_range() -> None:
    from nni_shiftadd.strategy import space_cost_fn
    from nni_shiftadd.tasks.supernet import SupernetTask

    cfg = from_dict(SupernetConfig, {"sample_constraints": {"energy_mJ": {"max": 0.3}, "latency_ms": {"min": 0.1}}})
    task = SupernetTask(cfg, steps_per_epoch=10)
    cost = space_cost_fn(task.spec)
    archs = [task.sample_arch() for _ in range(40)]
    assert all(cost(a)["energy_mJ"] <= 0.3 and cost(a)["latency_ms"] >= 0.1 for a in archs)
    assert len({json.dumps(a, sort_keys=True) for a in archs}) > 20  # still a spread of paths, not one
    impossible = SupernetTask(from_dict(SupernetConfig, {"sample_constraints": {"energy_mJ": {"max": 1e-6}},
                                                         "sample_max_rejects": 20}), steps_per_epoch=10)
    with pytest.raises(ConfigError, match=r"sample_constraints.*no architecture .* in 20 samples; the closest"):
        impossible.sample_arch()
    with pytest.raises(ConfigError, match=r"unknown metric 'energy'"):
        from_dict(SupernetConfig, {"sample_constraints": {"energy": {"max": 1.0}}})
