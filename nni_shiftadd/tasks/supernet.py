"""One-shot supernet training of a hybrid CV search space with Lightning (uniform single-path sampling).

Every training step samples one architecture uniformly (:func:`~nni_shiftadd.space.spec.random_arch`), selects it
with ``supernet.activate(arch)`` and takes a cross-entropy step on that path. The recipe follows DeiT (AdamW,
lr 5e-4, weight decay 0.05, cosine, 5 warm-up epochs). At the end, ``eval_archs`` random subnets and the four
homogeneous baselines are validated with the weights they inherit from the supernet and ``metrics.json`` is
written.

Exact resumption (also after ``kill -9``): a checkpoint holds, besides what Lightning saves (weights, optimiser,
scheduler, loop progress), the architecture sampler's state, the global ``torch``/``random``/``numpy`` RNG states
(augmentation runs in the main process with ``num_workers=0``) and the position inside the epoch: the training
loader is a :class:`ResumableLoader`, which Lightning recognises as stateful and saves/restores, over a
:class:`ResumableSampler` (epoch-seeded permutation + number of batches already taken), so a mid-epoch checkpoint
resumes at the next batch of the same epoch with the same order. Checkpoints are written atomically and never
with NaN/Inf weights or optimiser state (:class:`~nni_shiftadd.tasks.checkpoint_io.SafeCheckpointIO`), so a kill during a
save keeps the previous ``last.ckpt`` and a diverged run stops with its last finite checkpoint in place.
Everything in a checkpoint is plain tensors/lists/ints/bytes, so it loads with ``torch.load(..., weights_only=True)``.
``resume: auto`` takes ``last.ckpt``, or, when that one is corrupt or non-finite, the newest good checkpoint beside
it (and says so). A resumed run must keep the fields that fix the sampled sequence (:data:`RESUME_FIXED`); the
optimisation fields (:data:`RESUME_REOPTIMISE`, e.g. a lower ``lr`` after a divergence) may change and then apply
from the resumed step on, with the checkpoint's optimiser moments. The output folder is locked while training
(:func:`~nni_shiftadd.lock.output_lock`).

DDP: the sampler shards itself (each rank takes ``perm[rank::world]`` of the epoch's permutation; Lightning's own
``DistributedSampler`` injection is turned off), and the architecture RNG is seeded identically on every rank and
advanced once per step everywhere, so all ranks train the same path at every step (their gradients must be of the
same sub-network to be averaged). Checkpoints are written by rank 0; its RNG states are restored on all ranks,
which is exact because every rank seeds its global RNGs identically and draws the same number of numbers per batch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch import Tensor
from torch.utils.data import DataLoader

from ..checkpoint import LAST, CheckpointError, load_checkpoint
from .checkpoint_io import SafeCheckpointIO
from .graceful_stop import GracefulStop
from .resumable import (GlobalRngState, MidEpochCounters, ResumableLoader, ResumableSampler, python_restore,
                        python_state, restore_global_rng)
from .resume import Resume, check_resume_fields, fit_resumably, resolve_resume, start_run
from ..config import ConfigError, check_learning_rate
from ..data import check_data_dir, create_dataset, dataset_info
from ..data.mixing import BatchMixing, check_mixing
from ..lock import check_output_dir, output_lock
from ..hws import MODES, HWSConfig, Mode
from ..nn.hybrid import HybridChoice
from ..nn.memory_format import channels_last, channels_last_batch
from ..nn.recalibration import recalibrate_batchnorm
from ..space.cv import HybridCVSpace
from ..space.sampling import SAMPLINGS, step_paths
from ..vocabulary import ATTENTION, CONV_FAMILY, REFERENCE_BLOCK
from ..space.spec import SpaceSpec, baseline_arch, load_space, random_arch
from ..cost.metrics import CONSTRAINT_METRICS, Bound, space_cost_fn
from .classification import LossHistory, check_optimization, timm_optimization

BASELINES: tuple[str, ...] = (*CONV_FAMILY, ATTENTION)
#: Recipe fields a resumed run must share with its checkpoint: they fix the data order, the sampled architectures
#: and the shapes of the saved state.
RESUME_FIXED: tuple[str, ...] = ("space", "mode", "hws", "dataset", "input_size", "batch_size", "seed",
                                 "limit_train_batches", "sample_constraints", "devices", "strategy", "optimizer",
                                 "sampling", "sandwich_random")
#: Optimisation fields that may change on resume; the optimiser's hyper-parameters and the schedule are rebuilt
#: from the new recipe at the resumed step, keeping the checkpoint's optimiser moments.
RESUME_REOPTIMISE: tuple[str, ...] = ("lr", "weight_decay", "sched", "warmup_epochs", "epochs")


@dataclasses.dataclass
class SupernetConfig:
    """Schema of a supernet training recipe (YAML)."""

    space: str = "cv_small"
    mode: Mode = "hws"
    kl_weight: float = 1.0
    hws: HWSConfig = dataclasses.field(default_factory=HWSConfig)  # estimator, T's segments/binning, Laplace scale
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    input_size: int | None = None  # None: the space's input size (digits are resized to it)
    epochs: int = 1
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.05
    sched: str = "cosine"
    warmup_epochs: int = 5
    label_smoothing: float = 0.0  # DeiT: 0.1
    mixup: float = 0.0  # Mixup alpha (DeiT: 0.8; 0: off)
    cutmix: float = 0.0  # CutMix alpha (DeiT: 1.0; 0: off)
    mix_prob: float = 1.0  # probability that a batch is mixed
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 100
    limit_train_batches: int | None = None
    limit_eval_batches: int | None = None
    eval_archs: int = 10
    bn_calibration_batches: int = 20
    # train only paths whose cost is in range (metric -> {min, max}; Eyeriss model), e.g. {energy_mJ: {max: 1}}
    sample_constraints: dict[str, Bound] = dataclasses.field(default_factory=dict)
    sample_max_rejects: int = 1000
    # the paths a step trains (nni_shiftadd.space.sampling): uniform (one), fair (FairNAS: every block type of every
    # layer once), sandwich (BigNAS: deepest, shallowest and sandwich_random random depth patterns)
    sampling: str = "uniform"
    sandwich_random: int = 2
    devices: int = 1
    strategy: Literal["auto", "ddp"] = "auto"
    output: str = "runs/supernet"
    resume: str = "auto"
    overwrite: bool = False  # with resume: never, delete the output's checkpoints (else that is refused)

    def validate(self) -> None:
        """Check the values, and that the space fits the dataset; errors name the fields."""
        if self.mode not in MODES:
            raise ValueError(f"field 'mode': got {self.mode!r}; expected one of {list(MODES)}")
        for name in ("epochs", "batch_size", "checkpoint_every", "devices"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("limit_train_batches", "limit_eval_batches"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be null or >= 1, got {getattr(self, name)}")
        for key in self.sample_constraints:
            if key not in CONSTRAINT_METRICS:
                raise ValueError(f"field 'sample_constraints': unknown metric {key!r}; allowed "
                                 f"{list(CONSTRAINT_METRICS)}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"field 'sampling': got {self.sampling!r}; expected one of {list(SAMPLINGS)}")
        if self.sandwich_random < 0:
            raise ValueError(f"field 'sandwich_random': must be >= 0, got {self.sandwich_random}")
        if self.sample_constraints and self.sampling != "uniform":
            raise ValueError(f"field 'sample_constraints': works with sampling 'uniform' only (the paths of "
                             f"{self.sampling!r} are chosen by its rule), got sampling {self.sampling!r}")
        if self.sample_max_rejects < 1:
            raise ValueError(f"field 'sample_max_rejects': must be >= 1, got {self.sample_max_rejects}")
        for name in ("warmup_epochs", "num_workers", "eval_archs", "seed", "bn_calibration_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        check_learning_rate(self.lr)
        check_mixing(self)
        if self.weight_decay < 0 or self.kl_weight < 0:
            raise ValueError(f"fields 'weight_decay', 'kl_weight': must be >= 0, got {self.weight_decay}, "
                             f"{self.kl_weight}")
        if self.strategy == "auto" and self.devices > 1:
            raise ValueError(f"field 'strategy': devices={self.devices} needs strategy 'ddp'")
        try:
            spec = load_space(self.space)
        except (ConfigError, OSError) as err:
            raise ValueError(f"field 'space': {err}") from None
        if spec.kind != "image_classification":
            raise ValueError(f"field 'space': {self.space!r} is a translation space; train it with "
                             "`nni-shiftadd train-supertransformer --space ...` (this recipe is for image spaces, "
                             "e.g. cv_small)")
        try:
            dataset_info(self.dataset)
        except ValueError as err:
            raise ValueError(f"field 'dataset': {err}") from None
        check_data_dir(self.dataset, self.data_dir)
        info = dataset_info(self.dataset, self.data_dir)
        check_optimization(self)
        check_output_dir(self.output, "field 'output'")
        check_resume_fields(self)
        if info.in_chans != spec.input.channels:
            raise ValueError(f"fields 'dataset', 'space': {self.dataset} has {info.in_chans} channel(s) but space "
                             f"{spec.name!r} takes {spec.input.channels}")
        if info.num_classes != spec.num_classes:
            where = f" at {self.data_dir}" if self.data_dir is not None else ""
            raise ValueError(f"fields 'dataset', 'space': {self.dataset}{where} has {info.num_classes} classes but "
                             f"space {spec.name!r} has {spec.num_classes} (its num_classes)")
        if self.input_size is not None and self.input_size != spec.input.size:
            raise ValueError(f"field 'input_size': got {self.input_size}, but space {spec.name!r} takes "
                             f"{spec.input.size}x{spec.input.size} inputs (field 'space')")

    def load_spec(self) -> SpaceSpec:
        return load_space(self.space)


# --- the task -----------------------------------------------------------------------------------------------------

class SupernetTask(pl.LightningModule):
    """Single-path supernet training: one uniformly sampled architecture per step, cross-entropy on its path."""

    def __init__(self, cfg: SupernetConfig, steps_per_epoch: int) -> None:
        super().__init__()
        self.cfg, self.steps_per_epoch = cfg, steps_per_epoch
        self.spec = cfg.load_spec()
        self.supernet = channels_last(HybridCVSpace(self.spec, cfg.mode, cfg.kl_weight, cfg.hws))
        self.mixing = BatchMixing(cfg, self.spec.num_classes)
        # Same seed on every rank: all ranks sample the same architecture at every step.
        self.arch_rng = random.Random(cfg.seed)
        self.current_arch: dict[str, Any] | None = None
        self._cost: Any = None
        self.reoptimise = False  # set when resuming with changed RESUME_REOPTIMISE fields
        self.save_hyperparameters({"config": dataclasses.asdict(cfg)})

    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y, soft = self.mixing.mix(*batch)
        x = channels_last_batch(x)
        if self.cfg.sampling == "uniform":
            paths = [self.sample_arch()]
        else:  # several paths on the same batch, their losses summed: one update with their gradients added
            paths = step_paths(self.spec, self.arch_rng, self.cfg.sampling, self.cfg.sandwich_random)
        losses = []
        for arch in paths:
            self.supernet.activate(arch)
            losses.append(self.mixing.loss(self(x), y, soft))
        loss = losses[0] if len(losses) == 1 else torch.stack(losses).sum()
        arch = self.current_arch = paths[-1]
        finite = torch.isfinite(loss.detach()).to(torch.float32)
        if self.trainer.world_size > 1:  # every rank stops together, not just the one that saw it
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            raise FloatingPointError(f"supernet training: loss is {loss.item()} at global step {self.global_step} "
                                     f"(epoch {self.current_epoch}, batch {batch_idx}) for the sampled arch {arch}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        if self.cfg.mode == "hws" and self.global_step % self.trainer.log_every_n_steps == 0:
            with torch.no_grad():  # every layer's KL (one sort each): only when Lightning logs
                kl = sum((m.block.kl() for m in self.supernet.modules() if isinstance(m, HybridChoice)),
                         torch.zeros(()))
            self.log("train/kl", kl, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def sample_arch(self) -> dict[str, Any]:
        """A uniformly random architecture; with ``sample_constraints``, uniform over those whose Eyeriss cost is
        in range (rejection sampling, so the distribution stays uniform on the allowed set)."""
        if not self.cfg.sample_constraints:
            return random_arch(self.spec, self.arch_rng)
        if self._cost is None:
            self._cost = space_cost_fn(self.spec)
        closest: tuple[float, dict[str, Any]] | None = None
        for _ in range(self.cfg.sample_max_rejects):
            arch = random_arch(self.spec, self.arch_rng)
            costs = self._cost(arch)
            violation = sum(b.violation(costs[m]) for m, b in self.cfg.sample_constraints.items())
            if violation == 0.0:
                return arch
            if closest is None or violation < closest[0]:
                closest = (violation, arch)
        wanted = {k: dataclasses.asdict(b) for k, b in self.cfg.sample_constraints.items()}
        raise ConfigError(f"field 'sample_constraints': no architecture of space {self.spec.name!r} met {wanted} "
                          f"in {self.cfg.sample_max_rejects} samples; the closest was {closest[1] if closest else None}"
                          f" with {self._cost(closest[1]) if closest else None}")

    def configure_optimizers(self) -> Any:
        return timm_optimization(self.supernet, self.cfg, self.steps_per_epoch)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["supernet_rng"] = {"arch": python_state(self.arch_rng.getstate())}  # the global ones: GlobalRngState

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("supernet_rng")
        if state is None:
            return
        self.arch_rng.setstate(python_restore(state["arch"]))
        if "torch" in state and "GlobalRngState" not in checkpoint.get("callbacks", {}):
            restore_global_rng(state)  # a checkpoint written when they were saved here; restored before fit starts

    def on_train_start(self) -> None:
        """After Lightning restored a checkpoint's optimiser and schedule: when the recipe's optimisation fields
        changed, take their new values from a fresh optimiser and schedule (the moments stay the checkpoint's)."""
        if not self.reoptimise:
            return
        fresh = timm_optimization(self.supernet, self.cfg, self.steps_per_epoch)
        for group, new in zip(self.trainer.optimizers[0].param_groups, fresh["optimizer"].param_groups):
            group.update({k: v for k, v in new.items() if k != "params"})
        scheduler = self.trainer.lr_scheduler_configs[0].scheduler
        scheduler.__dict__.update({k: v for k, v in fresh["lr_scheduler"]["scheduler"].__dict__.items()
                                   if k != "optimizer"})
        scheduler.step_update(num_updates=self.global_step)


# --- evaluation ------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_arch(supernet: HybridCVSpace, arch: dict[str, Any], loader: DataLoader,
                  limit_batches: int | None = None, calibration: DataLoader | None = None,
                  calibration_batches: int = 0) -> dict[str, float]:
    """Top-1 ``accuracy`` and mean cross-entropy ``loss`` of ``arch`` with the weights it inherits from
    ``supernet``.

    The supernet's BatchNorm statistics mix every path that used each BN; with ``calibration_batches > 0`` they
    are first recomputed for this path on that many batches of ``calibration`` (training data, no labels used):
    the usual BN recalibration of one-shot NAS. This overwrites the supernet's running statistics.
    """
    device = next(supernet.parameters()).device
    supernet.activate(arch)
    if calibration is not None and calibration_batches > 0:
        recalibrate_batchnorm(supernet, calibration, calibration_batches, device)
    supernet.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad():
        for i, (x, y) in enumerate(loader):
            if limit_batches is not None and i >= limit_batches:
                break
            x, y = channels_last_batch(x.to(device)), y.to(device)
            logits = supernet(x)
            correct += int((logits.argmax(1) == y).sum())
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            total += len(y)
    return {"accuracy": correct / max(total, 1), "loss": loss / max(total, 1)}


# --- entry point ------------------------------------------------------------------------------------------------

def _strategy(cfg: SupernetConfig) -> Any:
    if cfg.strategy == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        # single-path: most parameters are unused at each step
        return DDPStrategy(find_unused_parameters=True,
                           process_group_backend=None if torch.cuda.is_available() else "gloo")
    return "auto"


def train_supernet(cfg: SupernetConfig) -> dict[str, Any]:
    """Train the supernet, then validate random subnets and the homogeneous baselines; write ``metrics.json``
    (rank 0) and return the metrics. The output folder is locked while it runs."""
    with output_lock(cfg.output, "output", "train-supernet"):
        return _train_supernet(cfg, resolve_resume(cfg, "train-supernet", RESUME_FIXED, RESUME_REOPTIMISE))


def _train_supernet(cfg: SupernetConfig, resume: Resume | None) -> dict[str, Any]:
    start_run(cfg, "train-supernet", resume)
    pl.seed_everything(cfg.seed, workers=True)
    spec = cfg.load_spec()
    size = (spec.input.channels, spec.input.size, spec.input.size)
    train_set = create_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, is_training=True, input_size=size)
    val_set = create_dataset(cfg.dataset, "val", data_dir=cfg.data_dir, input_size=size)
    world = cfg.devices if cfg.strategy == "ddp" else 1
    sampler = ResumableSampler(len(train_set), cfg.batch_size, seed=cfg.seed, num_replicas=world,
                               limit_batches=cfg.limit_train_batches)
    train_loader = ResumableLoader(train_set, sampler, num_workers=cfg.num_workers)
    val_loader = DataLoader(val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)

    task = SupernetTask(cfg, sampler.num_batches)
    task.reoptimise = resume is not None and bool(resume.changes)
    out = Path(cfg.output)
    history = LossHistory()
    checkpoint = ModelCheckpoint(dirpath=str(out / "checkpoints"), every_n_train_steps=cfg.checkpoint_every,
                                 save_last=True)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator="auto", devices=cfg.devices, strategy=_strategy(cfg),
        default_root_dir=str(out), logger=CSVLogger(str(out), name="logs"),
        log_every_n_steps=min(50, sampler.num_batches),
        callbacks=[checkpoint, history, GracefulStop(out / "checkpoints" / LAST), MidEpochCounters(),
                   GlobalRngState()],
        plugins=[SafeCheckpointIO()], use_distributed_sampler=False, limit_val_batches=0,
        num_sanity_val_steps=0, enable_model_summary=False, deterministic=False)
    ckpt_path = str(resume.path) if resume is not None else None
    start = time.perf_counter()
    fit_resumably(trainer, task, train_loader, None, resume, out / "checkpoints")
    fit_s = time.perf_counter() - start

    result: dict[str, Any] = {}
    if trainer.is_global_zero:
        rng = random.Random(cfg.seed + 1)
        archs = {f"random{i}": random_arch(spec, rng) for i in range(cfg.eval_archs)}
        # all-Attn where the space allows Attn, Conv elsewhere (cv_imagenet has no Attn at 56^2 and 28^2)
        archs.update({f"all_{op}": baseline_arch(spec, op, fallback=REFERENCE_BLOCK) for op in BASELINES})
        calibration = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                 generator=torch.Generator().manual_seed(cfg.seed))
        evaluated = {}
        for name, arch in archs.items():
            scores = evaluate_arch(task.supernet, arch, val_loader, cfg.limit_eval_batches, calibration,
                                   cfg.bn_calibration_batches)
            evaluated[name] = {"arch": arch, "val_acc": scores["accuracy"], "val_loss": scores["loss"]}
        result = {
            "space": spec.name, "mode": cfg.mode, "dataset": cfg.dataset, "epochs": cfg.epochs,
            "global_step": trainer.global_step, "resumed_from": ckpt_path,
            "recipe_changes": {k: list(v) for k, v in resume.changes.items()} if resume else {},
            "steps_this_run": resume.steps_since(trainer.global_step) if resume else trainer.global_step,
            "fit_seconds": round(fit_s, 1),
            **history.summary(), "archs": evaluated,
            "baselines": {op: evaluated[f"all_{op}"]["val_acc"] for op in BASELINES},
            "checkpoint": str(out / "checkpoints" / "last.ckpt"),
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def load_supernet(checkpoint: str | os.PathLike[str], space: str | SpaceSpec | None = None,
                  map_location: str | torch.device = "cpu") -> tuple[HybridCVSpace, SupernetConfig]:
    """The trained supernet of a ``train-supernet`` checkpoint and the recipe it was trained with.

    Loads with ``torch.load(weights_only=True)``. ``space`` (a name, a path or a spec), when given, must be the
    space the checkpoint was trained on: a mismatch raises ``ValueError`` naming both, as does a file that is not
    a supernet checkpoint or whose weights do not fit the space.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"supernet checkpoint {str(path)!r}: no such file (train one with "
                                "`nni-shiftadd train-supernet --config ...`)")
    state = load_checkpoint(path, map_location)
    config = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a supernet checkpoint of `nni-shiftadd train-supernet` (it has no "
                         "'hyper_parameters.config' and 'state_dict')")
    fields = {f.name for f in dataclasses.fields(SupernetConfig)}
    cfg = SupernetConfig(**{k: v for k, v in config.items() if k in fields})
    if isinstance(cfg.hws, dict):  # saved as a mapping (asdict); absent in checkpoints older than the field
        cfg = dataclasses.replace(cfg, hws=HWSConfig(**cfg.hws))
    spec = cfg.load_spec()
    if space is not None:
        wanted = space if isinstance(space, SpaceSpec) else load_space(space)
        if wanted != spec:
            raise CheckpointError(f"{path}: the supernet was trained on space {spec.name!r}, which does not match the "
                             f"requested space {wanted.name!r}; train a supernet on it or pass the matching space")
    supernet = HybridCVSpace(spec, cfg.mode, cfg.kl_weight, cfg.hws)
    weights = {k[len("supernet."):]: v for k, v in state["state_dict"].items() if k.startswith("supernet.")}
    missing, unexpected = supernet.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: its weights do not fit space {spec.name!r} in mode {cfg.mode!r}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    channels_last(supernet.to(map_location)).eval()
    return supernet, cfg
