"""The space protocol: image and translation specs are two implementations of one interface, looked up by their
``kind``, and a third kind plugs in from its own module (here: a toy one defined in this file) without any change
to the package."""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from nni_shiftadd.config import ConfigError
from nni_shiftadd.space import SPACE_KINDS, SearchSpaceSpec, arch_gates, load_space, register_space_kind
from nni_shiftadd.strategy import Evolution, load_preset


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """A kind of space with two block positions and a width: enough to search."""

    name: str
    kind: str = "toy"
    widths: tuple[int, ...] = (8, 16)

    def arch_space(self) -> dict[str, list[Any]]:
        return {"layer0.op": ["conv", "add"], "layer1.op": ["conv", "add"], "width": list(self.widths)}

    def arch_gates(self) -> dict[str, tuple[str, int]]:
        return {}

    def validate_arch(self, arch: Mapping[str, Any]) -> None:
        for label, choices in self.arch_space().items():
            if arch.get(label) not in choices:
                raise ValueError(f"arch: {label!r} must be one of {choices}, got {arch.get(label)!r}")

    def canonical_arch(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        self.validate_arch(arch)
        return {label: arch[label] for label in self.arch_space()}

    def structurally_valid(self, arch: Mapping[str, Any]) -> bool:
        return True

    def random_arch(self, rng: Any = None) -> dict[str, Any]:
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        return {label: rng.choice(choices) for label, choices in self.arch_space().items()}

    def baseline_arch(self, op: str, **options: Any) -> dict[str, Any]:
        return {"layer0.op": op, "layer1.op": op, "width": max(self.widths)}

    def named_baselines(self, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {f"all_{op}": self.baseline_arch(op) for op in ops}

    def restrict_blocks(self, blocks: Sequence[str]) -> ToySpec:
        return self

    def count_subnets(self) -> int:
        return 8


def test_both_kinds_implement_one_protocol() -> None:
    image, translation = load_space("cv_small"), load_space("nlp_tiny")
    assert (image.kind, translation.kind) == ("image_classification", "translation")
    assert isinstance(image, SearchSpaceSpec) and isinstance(translation, SearchSpaceSpec)
    assert set(SPACE_KINDS) >= {"image_classification", "translation"}
    # every operation of the protocol answers for either kind (arch_gates of a translation space raised before)
    assert set(arch_gates(translation)) == {f"decoder.layer{j}.{what}" for j in (0, 1)
                                            for what in ("op", "heads", "ffn_dim", "attend")}
    assert set(arch_gates(image)) == {f"stage{i}.layer{j}.op" for i, n in enumerate((2, 2, 3)) for j in range(n)}


def test_a_third_kind_plugs_in_from_its_own_module(tmp_path: Path) -> None:
    register_space_kind("toy", ToySpec)
    try:
        path = tmp_path / "toy.yaml"
        path.write_text("name: toy\nkind: toy\nwidths: [8, 16]\n")
        spec = load_space(str(path))
        assert isinstance(spec, ToySpec) and isinstance(spec, SearchSpaceSpec)
        search = Evolution(spec, load_preset("cv_small", {"constraints": {}, "iterations": 2, "population": 4,
                                                          "parents": 2, "mutation": 1, "crossover": 1,
                                                          "baselines": ["conv", "add"]}))
        while not search.done:
            for arch in search.ask():
                search.tell(arch, {"accuracy": (arch["layer0.op"] == "conv") + arch["width"] / 100})
        assert search.best()["accuracy"] == pytest.approx(1.16) and search.best()["arch"]["layer0.op"] == "conv"
        with pytest.raises(ValueError, match="registered already"):
            register_space_kind("toy", dict)
    finally:
        SPACE_KINDS.pop("toy")
    with pytest.raises(ConfigError, match=r"field 'kind': got 'toy'; expected one of \['image_classification', "
                                          r"'translation'\]"):
        load_space(str(path))


def toy_claims(checkpoint: str | Path) -> bool:
    import torch

    return torch.load(checkpoint, weights_only=True).get("space_kind") == "toy"


def toy_trial(cfg: Any, arch: Mapping[str, Any], start: float) -> dict[str, Any]:
    return {"default": 1.0, "arch": dict(arch)}


def test_a_third_kind_registers_its_tasks_and_claims_its_checkpoints(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from nni_shiftadd.space.kinds import DEFAULT_KIND
    from nni_shiftadd.tasks import kinds
    from nni_shiftadd.tasks.trial import TrialConfig, evaluate_subnet

    monkeypatch.setattr(kinds, "TASK_KINDS", dict(kinds.TASK_KINDS))
    with pytest.raises(ValueError, match="'claims' names how to recognise its checkpoints"):
        kinds.register_task_kind(kinds.TaskKind("toy", trial=f"{__name__}:toy_trial", retrain=f"{__name__}:toy_trial"))
    toy = kinds.register_task_kind(kinds.TaskKind("toy", trial=f"{__name__}:toy_trial", retrain=f"{__name__}:toy_trial",
                                                  claims=f"{__name__}:toy_claims"))
    mine, other = tmp_path / "toy.ckpt", tmp_path / "other.ckpt"
    torch.save({"space_kind": "toy"}, mine)
    torch.save({"state_dict": {}}, other)
    assert kinds.task_kind_of(mine) is toy
    # what no kind claims (and no checkpoint at all) goes to the default kind, whose loader names the problem
    assert kinds.task_kind_of(other).kind == kinds.task_kind_of(None).kind == DEFAULT_KIND
    # the trial looks its kind up from the checkpoint, never asking what it is
    assert evaluate_subnet(TrialConfig(supernet=str(mine)), {"w": 8}) == {"default": 1.0, "arch": {"w": 8}}
