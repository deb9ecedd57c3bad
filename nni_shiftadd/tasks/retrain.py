"""Retraining of one architecture of a hybrid CV search space from scratch (``nni-shiftadd retrain``).

The network is the standalone subnet of ``arch``, freshly initialised: the space is built in ``none`` weight-sharing
mode (each operator with its own initialisation: Conv and Shift ~ N(0, 1/fan_in), Add ~ N(0, 1) as AdderNet) and
frozen to ``arch`` with :meth:`HybridCVSpace.freeze`, so nothing is inherited from a supernet. It is trained with
the supernet's recipe, by default the DeiT one of :class:`~nni_shiftadd.tasks.supernet.SupernetConfig` (AdamW,
lr 5e-4, weight decay 0.05, cosine, 5 warm-up epochs), or that of a trained supernet's checkpoint (``supernet``),
optionally with ``quant_bits``-bit fake quantisation (:func:`nni_shiftadd.quant.fake_quantize`). The result is
validated, tested and costed on the Eyeriss model, and ``metrics.json`` and a checkpoint are written.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ..atomic import atomic_write_json
from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ConfigError
from ..cost.profile import profile
from ..data.mixing import check_mixing
from ..lock import check_output_dir, output_lock
from ..quant import check_bits, cost_bits, fake_quantize
from ..space.cv import HybridCVSpace
from ..space.spec import SpaceSpec, canonical_arch, layer_plan, load_space, named_baselines
from .classification import CHECKPOINT_EVERY, classification_loaders, fit_and_test, resume_of
from .resume import Resume, check_resume_fields, start_run
from .kinds import task_kind_of
from .supernet import BASELINES, SupernetConfig, load_supernet

#: The fields that make up the training recipe: taken from the supernet checkpoint (``supernet``) when left null,
#: else from :class:`SupernetConfig`'s defaults.
RECIPE_FIELDS: tuple[str, ...] = ("space", "dataset", "data_dir", "epochs", "batch_size", "optimizer", "lr",
                                  "weight_decay", "sched", "warmup_epochs")
#: The fields that name one run of a recipe rather than the recipe: the network, its seed, where it goes and how its
#: run is checkpointed and resumed. A study's cache of networks is pinned to the rest (``recipe.json``).
RUN_FIELDS: tuple[str, ...] = ("arch", "seed", "output", "checkpoint_every", "resume", "overwrite")
#: Names of the homogeneous baselines ``arch`` may be (Conv where a stage does not offer the op).
BASELINE_ARCHS: dict[str, str] = {f"all_{op}": op for op in BASELINES}


@dataclasses.dataclass
class RetrainConfig:
    """Schema of a retraining recipe (YAML).

    ``arch``: a mapping of the space's labels to values, the path of a JSON file holding one (or an object with an
    ``arch`` mapping, as the entries of a supernet's ``metrics.json``), or a baseline name (``all_conv``,
    ``all_shift``, ``all_add``, ``all_attn``). The fields of :data:`RECIPE_FIELDS` left null come from the
    checkpoint ``supernet`` when it is given, else from :class:`SupernetConfig`'s defaults.
    """

    arch: dict[str, Any] | str | None = None
    supernet: str | None = None
    space: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    sched: str | None = None
    warmup_epochs: int | None = None
    momentum: float = 0.9  # SGD-type optimizers only
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Mixup alpha (DeiT: 0.8; 0: off)
    cutmix: float = 0.0  # CutMix alpha (DeiT: 1.0; 0: off)
    mix_prob: float = 1.0  # probability that a batch is mixed
    quant_bits: int | None = None
    seed: int = 0
    num_workers: int = 0
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    max_updates: int | None = None  # translation: updates (default: the SuperTransformer's)
    test_sentences: int | None = None  # translation: BLEU on the first N test sentences (default: all)
    checkpoint_every: int | None = None  # image: steps between checkpoints (null: CHECKPOINT_EVERY)
    output: str = "runs/retrain"
    resume: str = "auto"  # auto (from <output>/checkpoints if there is one), never, or (image) a checkpoint's path
    overwrite: bool = False  # with resume: never, delete the output's checkpoints (else that is refused)

    def validate(self) -> None:
        """Check the values; without ``supernet`` also the recipe and ``arch`` against the space (with it, they are
        checked by :meth:`resolved` once the checkpoint is read). Errors name the field."""
        if self.quant_bits is not None:
            try:
                check_bits(self.quant_bits)
            except ValueError as err:
                raise ValueError(f"field 'quant_bits': {err}; or null for floating point") from None
        for name in ("limit_train_batches", "limit_eval_batches", "max_updates", "test_sentences"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be null or >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"field 'checkpoint_every': must be null or >= 1, got {self.checkpoint_every}")
        check_resume_fields(self)
        check_mixing(self)
        if self.momentum < 0:
            raise ValueError(f"field 'momentum': must be >= 0, got {self.momentum}")
        check_output_dir(self.output, "field 'output'")
        if self.arch is None:
            raise ValueError(f"field 'arch': required; an architecture mapping, the path of a JSON file holding "
                             f"one, or one of {list(BASELINE_ARCHS)}")
        if self.supernet is None:
            self._resolve(SupernetConfig())
        elif not Path(self.supernet).is_file():
            raise ValueError(f"field 'supernet': no such checkpoint {self.supernet!r} (train one with "
                             "`nni-shiftadd train-supernet`, or leave it null for the default recipe)")

    def _resolve(self, base: SupernetConfig) -> RetrainConfig:
        given = {name: getattr(self, name) for name in RECIPE_FIELDS if getattr(self, name) is not None}
        recipe = dataclasses.replace(base, **given)
        recipe.validate()  # the recipe's own checks: values, and that the space fits the dataset
        try:
            arch = load_arch(recipe.load_spec(), self.arch)
        except ValueError as err:
            raise ValueError(f"field 'arch': {err}") from None
        every = CHECKPOINT_EVERY if self.checkpoint_every is None else self.checkpoint_every
        return dataclasses.replace(self, arch=arch, checkpoint_every=every,
                                   **{name: getattr(recipe, name) for name in RECIPE_FIELDS})

    def resolved(self) -> RetrainConfig:
        """A copy with every recipe field filled in (from ``supernet``'s checkpoint or the defaults) and ``arch``
        as a validated, canonical mapping; ``ConfigError`` naming the field otherwise."""
        base = SupernetConfig()
        if self.supernet is not None:
            try:
                base = load_supernet(self.supernet)[1]
            except ValueError as err:
                raise ConfigError(f"retrain config: field 'supernet': {err}") from None
        try:
            return self._resolve(base)
        except ValueError as err:
            raise ConfigError(f"retrain config: {err}") from None


def load_arch(spec: Any, arch: Mapping[str, Any] | str) -> dict[str, Any]:
    """The canonical architecture ``arch`` names in ``spec`` (an image or a translation space): a mapping, a baseline
    name (:data:`BASELINE_ARCHS`), or a JSON file holding a mapping (or an object with an ``arch`` mapping). A missing
    or unknown key, or a value outside the space, raises ``ValueError`` naming the key and the allowed values."""
    source = ""
    if isinstance(arch, str):
        if arch in BASELINE_ARCHS:
            return named_baselines(spec, [BASELINE_ARCHS[arch]])[arch]
        path = Path(arch)
        if not path.is_file():
            raise ValueError(f"{arch!r} is neither a baseline ({', '.join(BASELINE_ARCHS)}) nor an existing JSON "
                             "file")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
        if isinstance(data, dict) and isinstance(data.get("arch"), dict):
            data = data["arch"]
        arch, source = data, f"{path}: "
    if not isinstance(arch, Mapping):
        raise ValueError(f"{source}expected a mapping of the space's labels to values, got {type(arch).__name__}")
    try:
        return canonical_arch(spec, arch)
    except ValueError as err:
        raise ValueError(f"{source}{err}") from None


def build_subnet(spec: SpaceSpec, arch: Mapping[str, Any], quant_bits: int | None = None) -> nn.Module:
    """A freshly initialised standalone network of ``arch`` (nothing inherited: a ``none``-mode space frozen to
    ``arch``), fake-quantised to ``quant_bits`` bits when given."""
    model = HybridCVSpace(spec, mode="none").freeze(canonical_arch(spec, arch))
    return model if quant_bits is None else fake_quantize(model, quant_bits)


def load_retrained(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module,
                                                                                           RetrainConfig]:
    """The trained network of a ``retrain`` checkpoint (fake-quantised as it was trained) and its resolved recipe.

    Loads with ``torch.load(weights_only=True)``; a file that is not a retrain checkpoint raises ``ValueError``.
    """
    path = Path(checkpoint)
    state = load_checkpoint(path, map_location)
    config = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("arch"), dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of `nni-shiftadd retrain` (no 'hyper_parameters.config.arch' "
                         "and 'state_dict')")
    fields = {f.name for f in dataclasses.fields(RetrainConfig)}
    cfg = RetrainConfig(**{k: v for k, v in config.items() if k in fields})
    model = build_subnet(load_space(cfg.space), cfg.arch, cfg.quant_bits)
    model.load_state_dict({k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    return model.to(map_location).eval(), cfg


#: The fields of an image retrain that a translation retrain (whose recipe is its SuperTransformer's) does not take.
IMAGE_ONLY_FIELDS: tuple[str, ...] = ("dataset", "data_dir", "epochs", "batch_size", "optimizer", "weight_decay",
                                      "sched", "warmup_epochs", "limit_train_batches",
                                      "limit_eval_batches", "checkpoint_every")


def retrain(cfg: RetrainConfig) -> dict[str, Any]:
    """Train ``cfg.arch`` from scratch, validate and test it, cost it; write ``metrics.json`` and return it. The
    output folder is locked while it runs.

    With ``supernet`` a SuperTransformer checkpoint (``train-supertransformer``), the architecture is a translation
    subnet: it is trained with fairseq and that supernet's recipe (``max_updates`` and ``lr`` may change it) and
    scored (validation loss, test BLEU) beside the same subnet with the weights it inherits from the supernet
    (:func:`~nni_shiftadd.tasks.supertransformer.retrain_subnet`)."""
    try:
        task_kind = task_kind_of(cfg.supernet)
    except CheckpointError as err:
        raise ConfigError(f"retrain config: field 'supernet': {err}") from None
    return task_kind.function("retrain")(cfg)


def retrain_image(cfg: RetrainConfig) -> dict[str, Any]:
    """:func:`retrain` of an image subnet (no supernet, or a ``train-supernet`` checkpoint)."""
    for name in ("max_updates", "test_sentences"):
        if getattr(cfg, name) is not None:
            raise ConfigError(f"retrain config: field {name!r}: applies to translation subnets (a --supernet "
                              "checkpoint of train-supertransformer); an image retrain counts epochs")
    source = cfg.arch if isinstance(cfg.arch, str) else "inline"
    cfg = cfg.resolved()
    with output_lock(cfg.output, "output", "retrain"):
        return _retrain(cfg, source, resume_of(cfg, "retrain"))


def retrain_translation(cfg: RetrainConfig) -> dict[str, Any]:
    """:func:`retrain` of a translation subnet (a ``train-supertransformer`` checkpoint)."""
    from .supertransformer import recipe_of, retrain_subnet

    given = [name for name in IMAGE_ONLY_FIELDS if getattr(cfg, name) is not None]
    if given:
        raise ConfigError(f"retrain config: field {given[0]!r}: applies to image spaces; a translation subnet is "
                          f"retrained with the recipe of its SuperTransformer {cfg.supernet} (change max_updates, lr or quant_bits)")
    spec = load_space(recipe_of(cfg.supernet).space)
    if cfg.space is not None and load_space(cfg.space) != spec:
        raise ConfigError(f"retrain config: field 'space': {cfg.space!r} is not the space {spec.name!r} the "
                          f"SuperTransformer {cfg.supernet} was trained on")
    try:
        arch = load_arch(spec, cfg.arch)
    except ValueError as err:
        raise ConfigError(f"retrain config: field 'arch': {err}") from None
    changes = {k: v for k, v in (("max_updates", cfg.max_updates), ("lr", cfg.lr), ("quant_bits", cfg.quant_bits))
               if v is not None}
    if cfg.resume not in ("auto", "never"):
        raise ConfigError(f"retrain config: field 'resume': a translation subnet resumes from its output's "
                          f"checkpoint_last.pt: 'auto' or 'never', got {cfg.resume!r}")
    changes.update(resume=cfg.resume, overwrite=cfg.overwrite)  # fairseq's own resume (checkpoint_last.pt)
    result = retrain_subnet(cfg.supernet, arch, cfg.output, test_sentences=cfg.test_sentences, seed=cfg.seed,
                            **changes)
    return {**result, "kind": spec.kind, "arch_source": cfg.arch if isinstance(cfg.arch, str) else "inline"}


def _retrain(cfg: RetrainConfig, source: str, resume: Resume | None) -> dict[str, Any]:
    start_run(cfg, "retrain", resume)
    spec = load_space(cfg.space)
    pl.seed_everything(cfg.seed, workers=True)
    size = (spec.input.channels, spec.input.size, spec.input.size)
    loaders = classification_loaders(cfg.dataset, size, cfg.batch_size, data_dir=cfg.data_dir,
                                     num_workers=cfg.num_workers, seed=cfg.seed,
                                     limit_train_batches=cfg.limit_train_batches)
    model = build_subnet(spec, cfg.arch)
    # The cost model counts operations and data movement of the structure, whatever the weights hold; the float
    # network is costed at the word width that holds quant_bits (its quantisers are not compute layers).
    bits = cost_bits(cfg.quant_bits)
    cost = profile(model.eval(), torch.zeros(1, *size), bits=bits)
    model.train()  # Lightning keeps each module's train/eval mode as it finds it
    if cfg.quant_bits is not None:
        fake_quantize(model, cfg.quant_bits)
    fit = fit_and_test(model, cfg, *loaders, cfg.output, spec.num_classes, resume)
    result = {
        "kind": spec.kind, "space": spec.name, "arch_source": source, "arch": cfg.arch, "supernet": cfg.supernet,
        "dataset": cfg.dataset, "quant_bits": cfg.quant_bits,
        "blocks": dict(Counter(layer.op for layer in layer_plan(spec, cfg.arch))),
        "recipe": {name: getattr(cfg, name) for name in RECIPE_FIELDS if name not in ("space", "dataset", "data_dir")},
        "params": sum(p.numel() for p in model.parameters()),
        "cost": {"bits": bits, **{k: cost[k] for k in ("energy_mJ", "latency_ms", "macs", "mult", "add", "shift",
                                                       "params")}},
        **fit,
    }
    atomic_write_json(Path(cfg.output) / "metrics.json", result)
    return result
