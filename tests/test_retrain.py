"""Retraining an architecture from scratch (``nni-shiftadd retrain``): short runs through the CLI on Fashion-MNIST
(8-bit fake quantisation) and on digits with a supernet checkpoint's recipe, and configuration errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nni_shiftadd.cli import main
from nni_shiftadd.config import ConfigError, from_dict, load_yaml
from nni_shiftadd.quant import cost_bits, quantized_layers
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.spec import baseline_arch, canonical_arch, load_space
from nni_shiftadd.tasks.retrain import RetrainConfig, load_retrained
from nni_shiftadd.tasks.supernet import SupernetConfig

RECIPE = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist" / "retrain_cv_small.yaml"
SPEC = load_space("cv_small")
#: every block type, with inactive layers given non-canonical values
MIXED = {"stage0.depth": 1, "stage0.layer0.op": "shift", "stage0.layer1.op": "attn",
         "stage1.depth": 2, "stage1.layer0.op": "add", "stage1.layer1.op": "conv",
         "stage2.depth": 1, "stage2.layer0.op": "attn", "stage2.layer1.op": "add", "stage2.layer2.op": "add"}


def _write_yaml(path: Path, content: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def test_example_recipe_is_the_deit_recipe_with_8_bits() -> None:
    cfg = load_yaml(RetrainConfig, RECIPE)
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.sched) == ("adamw", 5e-4, 0.05, "cosine")
    assert (cfg.arch, cfg.space, cfg.dataset, cfg.epochs, cfg.quant_bits) == ("all_conv", "cv_small",
                                                                             "fashion_mnist", 2, 8)


def test_retrain_8_bit_on_fashion_mnist_from_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    arch_file = tmp_path / "best.json"
    arch_file.write_text(json.dumps({"arch": MIXED, "val_acc": 0.5}))  # an entry of a supernet's metrics.json
    out = tmp_path / "run"
    code = main(["retrain", "--config", str(RECIPE), "--arch", str(arch_file), "--epochs", "1", "--batch-size", "32",
                 "--warmup-epochs", "0", "--lr", "0.005", "--limit-train-batches", "60", "--limit-eval-batches", "2",
                 "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "8-bit fake quantisation" in printed and "test accuracy" in printed and "cost @8" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arch"] == canonical_arch(SPEC, MIXED) and metrics["arch_source"] == str(arch_file)
    assert metrics["blocks"] == {"shift": 1, "add": 1, "conv": 1, "attn": 1}
    assert metrics["quant_bits"] == 8 and metrics["cost"]["bits"] == 8 and metrics["train_steps"] == 60
    assert metrics["recipe"]["optimizer"] == "adamw" and metrics["recipe"]["lr"] == 5e-3
    # it learns: 60 steps of 32 take this fixed-seed 8-bit network from chance (0.1) to ~0.5 on Fashion-MNIST
    assert metrics["val_acc"] >= 0.3 and metrics["test_acc"] >= 0.3, (metrics["val_acc"], metrics["test_acc"])
    cost = metrics["cost"]
    assert cost["energy_mJ"] > 0 and cost["latency_ms"] > 0 and cost["shift"] > 0 and cost["add"] > cost["mult"]

    model, cfg = load_retrained(metrics["checkpoint"])
    assert cfg.arch == metrics["arch"] and cfg.quant_bits == 8 and cfg.lr == 5e-3
    layers = quantized_layers(model)
    assert layers and all(float(m.input_quant.running_max) > 0 for m in layers.values())  # trained ranges kept
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(model(x), model(x))


def _fake_supernet_checkpoint(path: Path, cfg: SupernetConfig) -> Path:
    """What ``load_supernet`` reads from a ``train-supernet`` checkpoint: the recipe and the supernet weights."""
    supernet = HybridCVSpace(load_space(cfg.space), cfg.mode, cfg.kl_weight)
    torch.save({"hyper_parameters": {"config": dataclasses.asdict(cfg)},
                "state_dict": {f"supernet.{k}": v for k, v in supernet.state_dict().items()}}, path)
    return path


def test_retrain_takes_the_supernet_recipe_and_trains_from_scratch(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    recipe = SupernetConfig(dataset="digits", batch_size=32, lr=1e-3, weight_decay=0.01, warmup_epochs=0, epochs=1)
    ckpt = _fake_supernet_checkpoint(tmp_path / "supernet.ckpt", recipe)
    out = tmp_path / "run"
    code = main(["retrain", "--supernet", str(ckpt), "--arch", "all_shift", "--weight-decay", "0.02",
                 "--limit-train-batches", "4", "--limit-eval-batches", "1", "--output", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["supernet"] == str(ckpt) and metrics["quant_bits"] is None
    assert metrics["recipe"] == {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 1e-3,
                                 "weight_decay": 0.02, "sched": "cosine", "warmup_epochs": 0}
    assert metrics["arch"] == baseline_arch(SPEC, "shift") and metrics["cost"]["bits"] == 32
    assert metrics["train_steps"] == 4 and metrics["cost"]["shift"] > 0

    # run again: the finished run resumes from its checkpoint and trains nothing; another recipe is refused
    args = ["retrain", "--supernet", str(ckpt), "--arch", "all_shift", "--limit-train-batches", "4",
            "--limit-eval-batches", "1", "--output", str(out)]
    assert main([*args, "--weight-decay", "0.02"]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["resumed_from"] == str(out / "checkpoints" / "last.ckpt") and again["steps_this_run"] == 0
    assert again["train_steps"] == 4 and again["test_acc"] == metrics["test_acc"]
    capsys.readouterr()
    assert main(args) == 2
    assert "field 'weight_decay': 0.01 differs from 0.02 of the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("arch, message", [
    ({k: v for k, v in MIXED.items() if k != "stage1.depth"},
     r"field 'arch': arch: missing key 'stage1.depth'; expected a value out of \[1, 2\]"),
    ({**MIXED, "stage3.depth": 1}, r"field 'arch': arch: unknown key 'stage3.depth'"),
    ({**MIXED, "stage2.layer0.op": "mult"},
     r"field 'arch': arch\['stage2.layer0.op'\]: got 'mult'; expected one of \['conv', 'shift', 'add', 'attn'\]"),
    ({**MIXED, "stage0.depth": 3}, r"arch\['stage0.depth'\]: got 3; expected one of \[1, 2\]"),
    ("all_mult", r"field 'arch': 'all_mult' is neither a baseline \(all_conv, all_shift, all_add, all_attn\)"),
    (None, r"field 'arch': required"),
])
def test_bad_arch_names_key_and_allowed_values(tmp_path: Path, arch: Any, message: str) -> None:
    path = _write_yaml(tmp_path / "bad.yaml", {"arch": arch, "epochs": 1})
    with pytest.raises(ConfigError, match=message) as info:
        load_yaml(RetrainConfig, path)
    assert str(path) in str(info.value)


def test_bad_arch_in_json_file_names_the_file(tmp_path: Path) -> None:
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps({**MIXED, "stage1.layer0.op": "pool"}))
    with pytest.raises(ConfigError, match=rf"field 'arch': {arch_file}: arch\['stage1.layer0.op'\]: got 'pool'"):
        from_dict(RetrainConfig, {"arch": str(arch_file)})
    arch_file.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        from_dict(RetrainConfig, {"arch": str(arch_file)})


@pytest.mark.parametrize("content, message", [
    ({"arch": "all_conv", "learning_rate": 0.1}, r"unknown field 'learning_rate'; allowed fields are \[.*'lr'"),
    ({"arch": "all_conv", "quant_bits": 1}, r"field 'quant_bits': bits: got 1; expected an int in \[2, 16\]"),
    ({"arch": "all_conv", "quant_bits": "eight"}, r"field 'quant_bits': got 'eight'; expected int or null"),
    ({"arch": "all_conv", "lr": -1.0}, r"field 'lr': must be > 0, got -1.0"),
    ({"arch": "all_conv", "dataset": "digits", "space": "cv_imagenet"}, r"fields 'dataset', 'space'"),
    ({"arch": "all_conv", "supernet": "no/such.ckpt"}, r"field 'supernet': no such checkpoint 'no/such.ckpt'"),
    ({"arch": "all_conv", "limit_train_batches": 0}, r"field 'limit_train_batches': must be null or >= 1"),
])
def test_bad_field_in_yaml_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                             content: dict[str, Any], message: str) -> None:
    path = _write_yaml(tmp_path / "bad.yaml", content)
    with pytest.raises(ConfigError, match=message):
        load_yaml(RetrainConfig, path)
    assert main(["retrain", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nni-shiftadd retrain: error: ") and str(path) in err


def test_a_file_that_is_not_a_supernet_checkpoint_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ckpt"
    torch.save({"state_dict": {}}, bogus)
    cfg = from_dict(RetrainConfig, {"arch": "all_conv", "supernet": str(bogus)})
    with pytest.raises(ConfigError, match=r"field 'supernet': .*bogus.ckpt: not a supernet checkpoint"):
        cfg.resolved()


def test_cost_bits_is_the_word_that_holds_the_quantised_values() -> None:
    assert [cost_bits(b) for b in (None, 2, 8, 9, 16)] == [32, 8, 8, 16, 16]
