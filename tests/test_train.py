"""Training from the CLI: recipes validated as data, and small runs on scikit-learn's digits."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, load_yaml
from nni_shiftadd.tasks import TrainConfig

from interrupt import ROOT, env, stop_at

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"


def _schema(recipe: Path) -> type:
    """Every example recipe is validated against the schema of the command it is for (by its name)."""
    from nni_shiftadd.experiment.demo import DemoConfig
    from nni_shiftadd.experiment.image_table import ImageTableConfig
    from nni_shiftadd.experiment.ranking import RankingConfig
    from nni_shiftadd.tasks.retrain import RetrainConfig
    from nni_shiftadd.tasks.supernet import SupernetConfig

    for prefix, schema in (("supernet_", SupernetConfig), ("retrain_", RetrainConfig), ("demo", DemoConfig),
                           ("ranking_", RankingConfig), ("table4_", ImageTableConfig)):
        if recipe.name.startswith(prefix):
            return schema
    return TrainConfig


@pytest.mark.parametrize("recipe", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_recipes_validate(recipe: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parents[1])  # recipes name other files relative to the repository root
    cfg = load_yaml(_schema(recipe), recipe)
    if hasattr(cfg, "dataset") and cfg.dataset is not None:
        assert cfg.dataset == "fashion_mnist"
    if getattr(cfg, "epochs", None) is not None:
        assert cfg.epochs >= 1


@pytest.mark.parametrize("content, message", [
    ({"modle": "x"}, r"unknown field 'modle'; allowed fields are \[.*'model'"),
    ({"epochs": "two"}, r"field 'epochs': got 'two'; expected int"),
    ({"convert": "mul"}, r"field 'convert': got 'mul'; expected one of 'none', 'shift', 'add'"),
    ({"model": "no_such_net"}, r"field 'model': unknown model 'no_such_net'"),
    ({"dataset": "cifar10"}, r"cifar10"),
    ({"lr": -1}, r"field 'lr': must be > 0, got -1"),
    ({"limit_train_batches": 0}, r"field 'limit_train_batches': null \(all\), a number of batches >= 1 or a fraction"),
    ({"limit_train_batches": 1.5}, r"field 'limit_train_batches': .* a fraction in \(0, 1\], got 1.5"),
])
def test_bad_recipe_names_file_field_and_value(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises((ConfigError, ValueError), match=message) as info:
        load_yaml(TrainConfig, path)
    if isinstance(info.value, ConfigError):
        assert str(path) in str(info.value)


def test_malformed_yaml_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("convert, extra", [
    ("none", []),
    ("shift", ["--convert-kwargs", "{variant: Q}"]),
    ("add", []),
])
def test_train_digits_from_cli(tmp_path: Path, convert: str, extra: list[str]) -> None:
    out = tmp_path / convert
    code = main(["train", "--model", "shiftadd_resnet8", "--dataset", "digits", "--convert", convert,
                 "--epochs", "3", "--batch-size", "64", "--lr", "0.05", "--output", str(out), *extra])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_loss_last"] < metrics["train_loss_first"]
    assert metrics["test_acc"] > 0.3, metrics  # chance is 0.1
    assert (out / "checkpoints" / "last.ckpt").is_file()
    expected = {"none": "Conv2d", "shift": "ShiftConv2d", "add": "AdderConv2d"}[convert]
    assert metrics["ops"].get(expected, 0) >= 6
    assert metrics["ops"]["Linear"] == 1  # the classifier stays multiplicative


def test_console_script_is_installed() -> None:
    exe = shutil.which("nni-shiftadd") or str(Path(sys.executable).parent / "nni-shiftadd")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for sub in ("train", "data", "kernels"):
        assert sub in proc.stdout


def _resumable_run(output: Path) -> dict[str, object]:
    """Two epochs of 20 steps on Fashion-MNIST, whose augmentation draws from torch's generator, with Mixup (numpy's):
    exact only when the position in the epoch, the optimiser, the schedule and the global generators all come
    back, the latter also in an epoch resumed in its middle."""
    return {"model": "shiftadd_resnet8", "dataset": "fashion_mnist", "epochs": 2, "batch_size": 16,
            "limit_train_batches": 20, "limit_eval_batches": 2, "checkpoint_every": 4, "lr": 0.05, "mixup": 0.4,
            "output": str(output)}


def _train_cli(cfg: dict[str, object]) -> list[str]:
    args = [sys.executable, "-m", "nni_shiftadd.cli", "train"]
    for key, value in cfg.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    return args


def test_a_killed_and_a_stopped_run_resume_exactly(tmp_path: Path) -> None:
    """``kill -9`` mid-epoch, resumed and stopped by SIGTERM in the next epoch, resumed again: the same steps and
    weights as a run never stopped, and a finished run started again trains nothing."""
    import torch

    from nni_shiftadd.config import from_dict
    from nni_shiftadd.tasks.classification import train

    cfg = _resumable_run(tmp_path / "stopped")
    folder = tmp_path / "stopped" / "checkpoints"
    assert 8 <= stop_at(_train_cli(cfg), folder, 8, signal.SIGKILL) < 20
    assert 24 <= stop_at(_train_cli({**cfg, "checkpoint_every": 1}), folder, 24, signal.SIGTERM) < 40
    resumed = subprocess.run(_train_cli(cfg), env=env(), cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "40 steps in all" in resumed.stdout
    reference = train(from_dict(TrainConfig, {**cfg, "output": str(tmp_path / "reference")}))
    metrics = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert metrics["train_steps"] == reference["train_steps"] == 40 and 0 < metrics["steps_this_run"] < 40
    a = torch.load(folder / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"tensors differ: {differ[:10]}"
    summary = ("train_loss_first", "train_loss_last", "test_acc")  # the loss history comes back with the weights
    assert {k: metrics[k] for k in summary} == {k: reference[k] for k in summary}

    saved = torch.load(folder / "last.ckpt", weights_only=True)["callbacks"]["GlobalRngState"]
    again = train(from_dict(TrainConfig, cfg))
    assert again["train_steps"] == 40 and again["steps_this_run"] == 0
    kept = torch.load(folder / "last.ckpt", weights_only=True)["callbacks"]["GlobalRngState"]
    assert torch.equal(kept["torch"], saved["torch"]) and kept["numpy"] == saved["numpy"]  # not this process's
    assert {k: again[k] for k in summary} == {k: reference[k] for k in summary}


@pytest.mark.parametrize("change, message", [
    ({"lr": 0.1}, r"field 'lr': 0.1 differs from 0.05 of the checkpoint .*last.ckpt"),
    ({"resume": "never"}, r"field 'resume': never would delete the 1 checkpoint\(s\) in .*add --overwrite true"),
])
def test_a_resume_with_another_recipe_is_refused_before_training(tmp_path: Path, change: dict, message: str) -> None:
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.tasks.classification import train

    cfg = {**_resumable_run(tmp_path / "run"), "epochs": 1, "limit_train_batches": 2, "mixup": 0.0}
    train(from_dict(TrainConfig, cfg))
    with pytest.raises(ConfigError, match=message):
        train(from_dict(TrainConfig, {**cfg, **change}))
    fresh = train(from_dict(TrainConfig, {**cfg, "resume": "never", "overwrite": True}))
    assert fresh["resumed_from"] is None and fresh["steps_this_run"] == 2


def test_a_checkpoint_without_its_place_in_the_epoch_is_refused(tmp_path: Path) -> None:
    """An older version's checkpoint (no loader position) would resume at the wrong batch: refused, naming the fix."""
    import torch

    from nni_shiftadd.config import from_dict
    from nni_shiftadd.tasks.classification import train

    cfg = {**_resumable_run(tmp_path / "run"), "epochs": 1, "limit_train_batches": 2, "mixup": 0.0}
    train(from_dict(TrainConfig, cfg))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    del state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    torch.save(state, last)
    with pytest.raises(ConfigError, match=r"holds no position inside its epoch .* --resume never --overwrite true"):
        train(from_dict(TrainConfig, cfg))
