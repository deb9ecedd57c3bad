"""Training from the CLI: recipes validated as data, and small runs on scikit-learn's digits."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, load_yaml
from nni_shiftadd.tasks import TrainConfig

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
