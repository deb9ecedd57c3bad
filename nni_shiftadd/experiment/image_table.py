"""The paper's Table 4 and Fig. 6 at laptop scale on an image space (``nni-shiftadd reproduce table4``), the image
kind of :mod:`.paper_table`: the supernet with Lightning, the searches scored by inherited top-1 after BatchNorm
recalibration, the picks and the space's homogeneous networks retrained with ``retrain``'s recipe, and the ResNet,
AdderNet and DeepShift families (each model of ``resnets`` with the ``op`` of ``resnet_families``) trained with the
same recipe fields. Every row is costed by the same Eyeriss model at 32 bits.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError, check_reserved, load_yaml
from ..lock import check_output_dir
from ..vocabulary import ATTENTION, BLOCK_TYPES, CONV_FAMILY, REFERENCE_BLOCK, block_type
from .ledger import trained_supernet
from .paper_table import COST_KEYS, TableKind, run_table, searches


@dataclasses.dataclass
class ImageTableConfig:
    """Schema of a Table 4 recipe (``examples/fashion_mnist/table4_cv_small.yaml``)."""

    space: str = "cv_small"
    supernet: str | None = None
    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    search_preset: str = "cv_small_pareto"
    search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    restricted_blocks: list[str] = dataclasses.field(default_factory=lambda: [ATTENTION, REFERENCE_BLOCK])
    picks: int = 3
    eval_batches: int = 10
    calibration_batches: int = 3
    eval_batch_size: int = 256
    retrain_recipe: str = "examples/fashion_mnist/retrain_cv_small.yaml"
    retrain_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    baselines: list[str] = dataclasses.field(default_factory=lambda: [*CONV_FAMILY, ATTENTION])
    resnets: list[str] = dataclasses.field(default_factory=lambda: ["shiftadd_resnet8", "shiftadd_resnet20"])
    resnet_families: dict[str, str] = dataclasses.field(
        default_factory=lambda: {b.cnn_family: name for name, b in BLOCK_TYPES.items() if b.cnn_family})
    output: str = "runs/table4_cv_small"

    def validate(self) -> None:
        """Check every field and every stage's recipe (supernet, both searches, the retrain recipe, each ResNet)
        before anything trains; errors name the field, the value and what is allowed."""
        for name in ("picks", "eval_batches", "calibration_batches", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"field 'seeds': one or more distinct seeds >= 0 (two give a seed range), got "
                             f"{self.seeds}")
        for name in ("supernet_recipe", "retrain_recipe"):
            if not Path(getattr(self, name)).is_file():
                raise ValueError(f"field {name!r}: no such file {getattr(self, name)!r}")
        if self.supernet is not None and not Path(self.supernet).is_file():
            raise ValueError(f"field 'supernet': no such checkpoint {self.supernet!r} (null trains one with "
                             "supernet_recipe)")
        for family, op in self.resnet_families.items():
            if op not in CONV_FAMILY:
                raise ValueError(f"field 'resnet_families': {family}: unknown op {op!r}; allowed {list(CONV_FAMILY)}")
        for name, reserved in (("retrain_overrides", ("arch", "seed", "output", "space", "supernet")),
                               ("supernet_overrides", ("space", "output", "resume"))):
            check_reserved(getattr(self, name), reserved, name)
        check_output_dir(self.output, "field 'output'")
        self._validate_stages()

    def _validate_stages(self) -> None:
        from ..space import load_space
        from ..space.spec import named_baselines
        from ..tasks.supernet import SupernetConfig

        try:
            spec = load_space(self.space)
        except ValueError as err:
            raise ValueError(f"field 'space': {err}") from None
        if self.supernet is None:
            try:
                load_yaml(SupernetConfig, self.supernet_recipe, self.supernet_fields(Path(self.output)))
            except ConfigError as err:
                raise ValueError(f"field 'supernet_overrides': {err}") from None
        for name, overrides in searches(self).items():
            preset = self.preset(overrides, f"search {name!r}")
            if preset.goal != "pareto" or preset.objective != "accuracy":
                raise ValueError(f"field 'search_preset': {self.search_preset!r} must search the accuracy front "
                                 f"(goal: pareto, objective: accuracy), got goal {preset.goal!r}, objective "
                                 f"{preset.objective!r}")
        try:
            named_baselines(spec, self.baselines)
        except ValueError as err:
            raise ValueError(f"field 'baselines': {err}") from None
        recipe = self.retrain_recipe_for(REFERENCE_BLOCK_ARCH, 0, Path(self.output))
        if recipe.quant_bits is not None:
            raise ValueError(f"field 'retrain_overrides': quant_bits {recipe.quant_bits}: the table compares networks "
                             "in floating point (the ResNets have no quantised recipe); set quant_bits: null")
        for model in self.resnets:
            for family, op in self.resnet_families.items():
                try:
                    self.resnet_recipe(recipe, model, op, 0, Path(self.output)).validate()
                except ValueError as err:
                    raise ValueError(f"field 'resnets': {model} ({family}, op {op}): {err}") from None

    def supernet_fields(self, out: Path) -> dict[str, Any]:
        """The supernet recipe's overrides: ``supernet_overrides`` in ``output/supernet``, resumed when killed."""
        return {**self.supernet_overrides, "space": self.space, "output": str(out / "supernet"), "resume": "auto"}

    def preset(self, overrides: Mapping[str, Any], where: str) -> Any:
        """The search preset with ``overrides``; ``ValueError`` naming the fields and ``where`` otherwise."""
        from ..strategy.evolution import load_preset

        try:
            return load_preset(self.search_preset, dict(overrides))
        except ConfigError as err:
            raise ValueError(f"fields 'search_preset', 'search_overrides', 'restricted_blocks' ({where}): {err}") \
                from None

    def retrain_recipe_for(self, arch: Mapping[str, Any] | str, seed: int, folder: Path) -> Any:
        """The one training recipe (a resolved :class:`~nni_shiftadd.tasks.retrain.RetrainConfig`) for ``arch``."""
        from ..tasks.retrain import RetrainConfig

        overrides = {**self.retrain_overrides, "space": self.space, "supernet": None, "arch": arch, "seed": seed,
                     "output": str(folder)}
        try:
            return load_yaml(RetrainConfig, self.retrain_recipe, overrides).resolved()
        except ConfigError as err:
            raise ValueError(f"field 'retrain_overrides': {err}") from None

    def resnet_recipe(self, recipe: Any, model: str, op: str, seed: int, folder: Path) -> Any:
        """The ``train`` recipe of ``model`` with ``op``: every field it shares with the retrain recipe from
        ``recipe`` (one recipe for every row of the table), at the space's input size."""
        from ..space import load_space
        from ..tasks.classification import TrainConfig

        shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(recipe)}
        fields = {name: getattr(recipe, name) for name in shared - {"seed", "output"}}
        return TrainConfig(**fields, model=model, model_kwargs={"op": op}, input_size=load_space(self.space).input.size,
                           seed=seed, output=str(folder))

    def quick(self) -> ImageTableConfig:
        """The ``--quick`` version (minutes): a few supernet steps, one generation per search, two picks, a few
        batches per network, the smallest ResNet; in ``<output>_quick``. It checks the pipeline, ranks nothing."""
        tiny = {"epochs": 1, "warmup_epochs": 0, "limit_train_batches": 4, "limit_eval_batches": 2}
        return dataclasses.replace(
            self, supernet_overrides={**self.supernet_overrides, "epochs": 1, "warmup_epochs": 0,
                                      "limit_train_batches": 8, "limit_eval_batches": 2, "eval_archs": 0},
            search_overrides={**self.search_overrides, "iterations": 1, "population": 6, "parents": 3,
                              "mutation": 2, "crossover": 2},
            picks=min(self.picks, 2), eval_batches=2, calibration_batches=1,
            retrain_overrides={**self.retrain_overrides, **tiny}, resnets=self.resnets[:1],
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


def load_config(path: str, overrides: dict[str, Any] | None = None) -> ImageTableConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(ImageTableConfig, path, overrides)


class ImageKind(TableKind):
    """Table 4: top-1 after retraining, the homogeneous networks of the space and the ResNet families beside."""

    score, score_label, restricted_family = "test_acc", "top-1", "CNN+Transformer search"

    def supernet(self, cfg: ImageTableConfig, out: Path, log: Callable[[str], None]) -> Path:
        if cfg.supernet is not None:
            return Path(cfg.supernet)
        from ..tasks.supernet import SupernetConfig

        return trained_supernet(load_yaml(SupernetConfig, cfg.supernet_recipe, cfg.supernet_fields(out)), log)

    def scorer(self, cfg: ImageTableConfig, checkpoint: Path) -> Callable[[Mapping[str, Any]], dict[str, float]]:
        from ..tasks.inherited import inherited_scorer

        return inherited_scorer(checkpoint, cfg.eval_batch_size, cfg.eval_batches, cfg.calibration_batches)

    def recipe(self, cfg: ImageTableConfig) -> dict[str, Any]:
        from ..tasks.retrain import RUN_FIELDS

        recipe = dataclasses.asdict(cfg.retrain_recipe_for(REFERENCE_BLOCK_ARCH, 0, Path(cfg.output)))
        return {k: v for k, v in recipe.items() if k not in RUN_FIELDS}

    def train_arch(self, cfg: ImageTableConfig, arch: Mapping[str, Any], seed: int, folder: Path) -> dict[str, Any]:
        from ..tasks.retrain import retrain

        return retrain(cfg.retrain_recipe_for(dict(arch), seed, folder))

    def train_resnet(self, cfg: ImageTableConfig, model: str, op: str, seed: int, folder: Path) -> dict[str, Any]:
        """``model`` with ``op`` trained from scratch with the table's recipe fields and ``seed``, with its cost."""
        import torch

        from ..cost.profile import profile
        from ..space import load_space
        from ..tasks.classification import build_model, train

        recipe = cfg.resnet_recipe(cfg.retrain_recipe_for(REFERENCE_BLOCK_ARCH, seed, folder), model, op, seed, folder)
        result = train(recipe)
        spec = load_space(cfg.space)
        size = (spec.input.channels, spec.input.size, spec.input.size)
        cost = profile(build_model(recipe, size[0], spec.num_classes).eval(), torch.zeros(1, *size), bits=32)
        return {**result, "cost": {"bits": 32, **{k: cost[k] for k in COST_KEYS}}}

    def baselines(self, cfg: ImageTableConfig, spec: Any) -> list[tuple[str, str, Any, Mapping[str, Any] | None]]:
        from ..space.spec import named_baselines

        homogeneous = named_baselines(spec, cfg.baselines)
        out: list[tuple[str, str, Any, Mapping[str, Any] | None]] = [
            (f"all_{op}", f"all-{block_type(op).display}", None, homogeneous[f"all_{op}"]) for op in cfg.baselines]
        for family, op in cfg.resnet_families.items():
            for model in cfg.resnets:
                out.append((f"{model}-{op}", family,
                            lambda seed, folder, model=model, op=op: self.train_resnet(cfg, model, op, seed, folder),
                            None))
        return out


#: The architecture the shared recipe is resolved with (any valid one: ``arch`` is not part of the recipe).
REFERENCE_BLOCK_ARCH = f"all_{REFERENCE_BLOCK}"


def run_image_table(cfg: ImageTableConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) Table 4 of ``cfg``; ``output`` is locked while it runs."""
    return run_table(cfg, ImageKind(), log)
