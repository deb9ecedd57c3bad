"""The supernet training techniques (``sampling``): which paths a step trains, and that a supernet trained with
them resumes exactly."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from nni_shiftadd.checkpoint import load_checkpoint
from nni_shiftadd.config import ConfigError, from_dict
from nni_shiftadd.space import arch_space, load_space, random_arch, valid_depths, validate_arch
from nni_shiftadd.space.sampling import SAMPLINGS, paths_per_step, step_paths
from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet


def test_uniform_is_one_random_path_as_before() -> None:
    spec = load_space("cv_small")
    assert step_paths(spec, random.Random(3), "uniform") == [random_arch(spec, random.Random(3))]
    assert paths_per_step(spec, "uniform") == 1


def test_fair_trains_every_block_type_of_every_layer_once_per_step() -> None:
    spec = load_space("cv_small")
    rng = random.Random(0)
    for _ in range(20):
        paths = step_paths(spec, rng, "fair")
        assert len(paths) == 4 == paths_per_step(spec, "fair")
        for arch in paths:
            validate_arch(spec, arch)
        depths = {tuple(a[f"stage{i}.depth"] for i in range(3)) for a in paths}
        assert len(depths) == 1  # one depth pattern per step
        for label in (k for k in paths[0] if k.endswith(".op")):
            assert sorted(a[label] for a in paths) == ["add", "attn", "conv", "shift"], label


def test_sandwich_trains_the_deepest_the_shallowest_and_random_depths() -> None:
    spec = load_space("cv_small")
    patterns = valid_depths(spec)
    paths = step_paths(spec, random.Random(0), "sandwich", sandwich_random=3)
    depth = [sum(a[f"stage{i}.depth"] for i in range(3)) for a in paths]
    assert len(paths) == 5 and depth[0] == max(map(sum, patterns)) and depth[1] == min(map(sum, patterns))
    with pytest.raises(ValueError, match=r"sampling: got 'greedy'; expected one of \['uniform', 'fair', 'sandwich'\]"):
        step_paths(spec, random.Random(0), "greedy")


def test_the_techniques_work_on_a_translation_space_through_its_labels() -> None:
    spec = load_space("nlp_tiny")
    paths = step_paths(spec, random.Random(0), "fair")
    assert len(paths) == 7 == paths_per_step(spec, "fair")  # the encoder offers 7 block types, the decoder 4
    for label in (k for k in paths[0] if k.endswith(".op")):
        assert set(a[label] for a in paths) == set(arch_space(spec)[label]), label
    assert len({a["decoder.depth"] for a in paths}) == 1 and len({a["encoder.embed_dim"] for a in paths}) == 1
    sandwich = step_paths(spec, random.Random(0), "sandwich", sandwich_random=1)
    assert [a["decoder.depth"] for a in sandwich[:2]] == [2, 1] and len(sandwich) == 3
    for arch in paths + sandwich:
        validate_arch(spec, arch)


def test_a_supertransformer_trains_with_a_technique(tiny_translation: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from nni_shiftadd.cli import main

    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tiny_translation["cache"]))
    args = ["train-supertransformer", "--space", str(tiny_translation["space"]), "--data",
            json.dumps({"source": str(tiny_translation["source"]), "bpe_merges": 400, "valid_size": 200,
                        "test_size": 800}),
            "--max-updates", "3", "--max-tokens", "512", "--warmup-updates", "1", "--baselines", "[]",
            "--eval-archs", "0", "--eval-test-sentences", "5", "--beam", "1", "--output", str(tmp_path / "fair"),
            "--sampling", "fair"]
    assert main(args) == 0
    assert json.loads((tmp_path / "fair" / "run.json").read_text())["fixed"]["sampling"] == "fair"
    assert main([*args, "--sampling", "sandwich"]) == 2  # another technique is another run
    assert "field 'sampling': 'sandwich' differs from 'fair'" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ({"sampling": "greedy"}, r"field 'sampling': got 'greedy'; expected one of"),
    ({"sandwich_random": -1}, r"field 'sandwich_random': must be >= 0"),
    ({"sampling": "fair", "sample_constraints": {"energy_mJ": {"max": 1}}},
     r"field 'sample_constraints': works with sampling 'uniform' only"),
])
def test_bad_technique_fields_are_named(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(SupernetConfig, bad)


@pytest.mark.parametrize("sampling", [s for s in SAMPLINGS if s != "uniform"])
def test_a_technique_resumes_exactly(sampling: str, tmp_path: Path) -> None:
    """A run stopped after its first epoch and resumed for a second ends with the weights of a run of two epochs (a
    constant learning rate, so that the longer schedule of the resumed run changes nothing)."""
    recipe = {"dataset": "digits", "batch_size": 16, "limit_train_batches": 4, "checkpoint_every": 2,
              "eval_archs": 0, "limit_eval_batches": 1, "bn_calibration_batches": 1, "warmup_epochs": 0,
              "sched": "constant", "sampling": sampling}
    whole = train_supernet(from_dict(SupernetConfig, {**recipe, "epochs": 2, "output": str(tmp_path / "whole")}))
    assert whole["global_step"] == 8
    first = train_supernet(from_dict(SupernetConfig, {**recipe, "epochs": 1, "output": str(tmp_path / "resumed")}))
    assert first["global_step"] == 4
    resumed = train_supernet(from_dict(SupernetConfig, {**recipe, "epochs": 2, "output": str(tmp_path / "resumed")}))
    assert resumed["global_step"] == 8 and resumed["steps_this_run"] == 4
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.ckpt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ and a["supernet_rng"]["arch"] == b["supernet_rng"]["arch"], differ[:8]
