"""Image classification with Lightning: a model from timm's registry, optionally converted to Add or Shift
layers, trained with timm's optimizer and scheduler factories, validated, tested, checkpointed.

A killed run (a signal, ``kill -9``, a machine that went away) resumes exactly when run again (``resume: auto``): the
training loader is a :class:`~nni_shiftadd.tasks.resumable.ResumableLoader` (the position inside the epoch is in the
checkpoint), the global random generators are saved and restored (:class:`~nni_shiftadd.tasks.resumable.GlobalRngState`),
a checkpoint is written every ``checkpoint_every`` steps and on a signal, and the recipe must be the one the
checkpoint was trained with (every field but :data:`RESUME_FREE`)."""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import timm
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .. import models as _models  # noqa: F401  (registers the shiftadd_* models in timm)
from .checkpoint_io import SafeCheckpointIO
from .graceful_stop import GracefulStop
from .resumable import GlobalRngState, MidEpochCounters, ResumableLoader, ResumableSampler
from .resume import Resume, check_resume_fields, fit_resumably, resolve_resume, start_run
from ..atomic import atomic_write_json
from ..checkpoint import LAST
from ..config import check_learning_rate
from ..vocabulary import MULTIPLICATION_FREE, block_type
from ..data import check_data_dir, create_dataset, create_loader, dataset_info, resolve_input_size
from ..data.mixing import BatchMixing, check_mixing
from ..kernels import select
from ..lock import check_output_dir, output_lock
from ..nn.memory_format import channels_last, channels_last_batch
from ..ops import convert_model


#: Training steps between two checkpoints of an image run (there is one more on a signal, and one at the end).
CHECKPOINT_EVERY: int = 100


@dataclasses.dataclass
class TrainConfig:
    """Schema of a training recipe (YAML): model, operator conversion, data, optimisation and output."""

    model: str = "shiftadd_resnet20"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    convert: str = "none"  # or a multiplication-free block type (vocabulary.MULTIPLICATION_FREE)
    convert_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    input_size: int | None = None
    epochs: int = 1
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    sched: str = "cosine"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Mixup alpha (DeiT: 0.8; 0: off)
    cutmix: float = 0.0  # CutMix alpha (DeiT: 1.0; 0: off)
    mix_prob: float = 1.0  # probability that a batch is mixed
    seed: int = 0
    num_workers: int = 0
    limit_train_batches: int | float | None = None
    limit_eval_batches: int | float | None = None
    checkpoint_every: int = CHECKPOINT_EVERY
    output: str = "runs/train"
    resume: str = "auto"  # auto: from <output>/checkpoints if there is one; never; or a checkpoint's path
    overwrite: bool = False  # with resume: never, delete the output's checkpoints (else that is refused)

    def validate(self) -> None:
        if self.model not in timm.list_models():
            close = timm.list_models(f"*{self.model.split('_')[-1]}*")[:8]
            raise ValueError(f"field 'model': unknown model {self.model!r}; e.g. {close or timm.list_models('shiftadd_*')}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        check_resume_fields(self)
        check_batch_limit(self.limit_train_batches, "limit_train_batches")
        check_learning_rate(self.lr)
        try:
            dataset_info(self.dataset)
        except ValueError as err:
            raise ValueError(f"field 'dataset': {err}") from None
        check_data_dir(self.dataset, self.data_dir)
        check_optimization(self)
        check_mixing(self)
        if self.convert != "none" and self.convert not in MULTIPLICATION_FREE:
            allowed = ", ".join(repr(name) for name in ("none", *MULTIPLICATION_FREE))
            raise ValueError(f"field 'convert': got {self.convert!r}; expected one of {allowed}")
        check_model_kwargs(self.model, self.model_kwargs)
        check_output_dir(self.output, "field 'output'")


def check_model_kwargs(model: str, kwargs: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming ``model_kwargs`` when timm cannot build ``model`` with ``kwargs`` (an unknown
    keyword, a bad value); built on the meta device, so nothing is allocated."""
    for key in ("in_chans", "num_classes"):
        if key in kwargs:
            raise ValueError(f"field 'model_kwargs': {key!r} is set from the dataset; remove it from model_kwargs")
    try:
        with torch.device("meta"):
            timm.create_model(model, **kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"field 'model_kwargs': {model} does not take {kwargs!r}: {err}") from None


def build_model(cfg: TrainConfig, in_chans: int, num_classes: int) -> nn.Module:
    """Create ``cfg.model`` through timm and convert its layers to Add/Shift when ``cfg.convert`` asks."""
    model = timm.create_model(cfg.model, in_chans=in_chans, num_classes=num_classes, **cfg.model_kwargs)
    if cfg.convert != "none":
        kwargs = dict(cfg.convert_kwargs)
        # a block type whose own weights start at N(0, 1) (AdderNet's) trains from scratch, not from the float ones
        kwargs.setdefault("copy_weights", block_type(cfg.convert).own_init != "unit")
        model = convert_model(model, cfg.convert, **kwargs)
    return model


class LossHistory(Callback):
    """Keeps every training loss so that the summary can show the loss going down; saved in the checkpoints, so
    that a resumed run's summary is the whole run's."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def state_dict(self) -> dict[str, list[float]]:
        return {"losses": list(self.losses)}

    def load_state_dict(self, state_dict: dict[str, list[float]]) -> None:
        self.losses = [float(x) for x in state_dict["losses"]]

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def summary(self) -> dict[str, float]:
        """Mean loss of the first and of the last tenth of the steps: whether the loss went down."""
        tenth = max(1, len(self.losses) // 10)
        mean = lambda xs: sum(xs) / len(xs) if xs else math.nan  # noqa: E731
        return {"train_loss_first": mean(self.losses[:tenth]), "train_loss_last": mean(self.losses[-tenth:])}


class ClassificationTask(pl.LightningModule):
    """Cross-entropy training of ``model``; logs loss and top-1 accuracy for train, val and test.

    ``cfg`` is a :class:`TrainConfig` or another recipe dataclass with its optimiser fields (``optimizer``, ``lr``,
    ``momentum``, ``weight_decay``, ``sched``, ``epochs``, ``warmup_epochs``), ``label_smoothing`` and the
    Mixup/CutMix fields (``mixup``, ``cutmix``, ``mix_prob``; :class:`~nni_shiftadd.data.mixing.BatchMixing`).
    """

    def __init__(self, model: nn.Module, cfg: Any, steps_per_epoch: int, num_classes: int) -> None:
        super().__init__()
        self.model, self.cfg, self.steps_per_epoch = channels_last(model), cfg, steps_per_epoch
        self.mixing = BatchMixing(cfg, num_classes)
        self.save_hyperparameters({"config": dataclasses.asdict(cfg)})

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        x = channels_last_batch(x)
        if stage == "train":
            x, y, soft = self.mixing.mix(x, y)
            logits = self.model(x)
            loss = self.mixing.loss(logits, y, soft)
        else:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage} loss is {loss.item()} at step {self.global_step}")
        acc = (logits.argmax(1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", on_step=stage == "train", on_epoch=True,
                 batch_size=len(y))
        self.log(f"{stage}/acc", acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        opt_kwargs = {"momentum": cfg.momentum} if cfg.optimizer in ("sgd", "momentum", "nesterov") else {}
        return timm_optimization(self.model, cfg, self.steps_per_epoch, **opt_kwargs)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        scheduler.step_update(num_updates=self.global_step)  # timm schedulers step per update, not per epoch


def timm_optimization(model: nn.Module, cfg: Any, steps_per_epoch: int, **opt_kwargs: Any) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer from timm's factories: ``cfg.optimizer``/``lr``/``weight_decay``
    and a ``cfg.sched`` schedule over ``cfg.epochs`` with ``cfg.warmup_epochs``, stepped every update."""
    # foreach (multi-tensor) updates on every device: PyTorch enables them on CUDA only, but on the CPU they also
    # take ~15% off a cv_small supernet step (benchmarks/supernet.py), most of it the many small HWS/BN tensors
    opt_kwargs.setdefault("foreach", True)
    optimizer = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **opt_kwargs)
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.warmup_epochs, step_on_epochs=False,
                                       updates_per_epoch=steps_per_epoch)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


#: The schedules of timm's ``create_scheduler_v2`` that step per update without a monitored metric (``plateau``
#: needs one and is left out).
SCHEDULES: tuple[str, ...] = ("cosine", "tanh", "step", "multistep", "poly", "constant", "rsqrt")


def check_optimization(cfg: Any) -> None:
    """Raise ``ValueError`` naming the field when ``cfg.optimizer`` or ``cfg.sched`` is not one timm's factories
    build (tried on a one-parameter model, so an optimiser whose package is missing fails here too), or when
    ``cfg.warmup_epochs`` is negative."""
    from timm.optim import list_optimizers

    if cfg.optimizer not in list_optimizers():
        common = ["adamw", "adam", "sgd", "momentum", "nesterov", "radam", "lamb", "lion", "rmsprop"]
        raise ValueError(f"field 'optimizer': unknown optimizer {cfg.optimizer!r}; e.g. {common} (all "
                         f"{len(list_optimizers())}: timm.optim.list_optimizers())")
    try:
        create_optimizer_v2(nn.Linear(1, 1), opt=cfg.optimizer, lr=1e-3)
    except Exception as err:  # noqa: BLE001 - e.g. bitsandbytes or apex not installed
        raise ValueError(f"field 'optimizer': timm cannot build {cfg.optimizer!r} here: "
                         f"{type(err).__name__}: {err}") from None
    if cfg.sched not in SCHEDULES:
        raise ValueError(f"field 'sched': unknown schedule {cfg.sched!r}; expected one of {list(SCHEDULES)}")
    if cfg.warmup_epochs < 0:
        raise ValueError(f"field 'warmup_epochs': must be >= 0, got {cfg.warmup_epochs}")


#: Recipe fields a resumed run may change: where things are and how often they are saved, not what is trained.
RESUME_FREE: tuple[str, ...] = ("output", "resume", "overwrite", "checkpoint_every", "num_workers", "data_dir",
                                "limit_eval_batches", "supernet")


def resume_of(cfg: Any, command: str) -> Resume | None:
    """Where the classification run of ``cfg`` resumes from (:func:`~nni_shiftadd.tasks.resume.resolve_resume`):
    every field of its recipe but :data:`RESUME_FREE` must be the checkpoint's."""
    fixed = [f.name for f in dataclasses.fields(cfg) if f.name not in RESUME_FREE]
    return resolve_resume(cfg, command, fixed)


def check_batch_limit(limit: int | float | None, field: str) -> None:
    """``ValueError`` naming ``field`` unless ``limit`` is null (all), a number of batches >= 1 or a fraction in
    (0, 1] of an epoch (Lightning's convention)."""
    if limit is None:
        return
    if isinstance(limit, bool) or (isinstance(limit, int) and limit < 1) or (
            isinstance(limit, float) and not 0 < limit <= 1):
        raise ValueError(f"field {field!r}: null (all), a number of batches >= 1 or a fraction in (0, 1], "
                         f"got {limit!r}")


def _limit(n: int, limit: int | float | None) -> int:
    if limit is None:
        return n
    return min(n, int(limit)) if isinstance(limit, int) else max(1, int(n * limit))


def classification_loaders(dataset: str, input_size: tuple[int, int, int], batch_size: int, *,
                           data_dir: str | None = None, num_workers: int = 0, seed: int = 0,
                           limit_train_batches: int | float | None = None) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train (augmented, shuffled in ``seed``'s order per epoch, last batch dropped, cut to ``limit_train_batches``;
    resumable mid-epoch), val and test loaders of ``dataset``."""
    def loader(split: str) -> DataLoader:
        return create_loader(create_dataset(dataset, split, data_dir=data_dir, input_size=input_size), batch_size,
                             is_training=False, num_workers=num_workers, seed=seed)

    train_set = create_dataset(dataset, "train", data_dir=data_dir, is_training=True, input_size=input_size)
    sampler = ResumableSampler(len(train_set), batch_size, seed=seed,
                               limit_batches=_limit(len(train_set) // batch_size, limit_train_batches))
    return ResumableLoader(train_set, sampler, num_workers=num_workers), loader("val"), loader("test")


def fit_and_test(model: nn.Module, cfg: Any, train_loader: DataLoader, val_loader: DataLoader,
                 test_loader: DataLoader, output: str | Path, num_classes: int,
                 resume: Resume | None = None) -> dict[str, Any]:
    """Train ``model`` in a :class:`ClassificationTask` with the recipe ``cfg`` (a :class:`TrainConfig`, or any
    dataclass with its ``epochs``, optimiser, ``label_smoothing``, ``limit_*_batches`` and ``checkpoint_every``
    fields), from ``resume``'s checkpoint when given (:func:`resume_of`), validate each epoch, test the final model;
    checkpoints and CSV logs go to ``output``.

    Returns the steps taken (``train_steps`` in all, ``steps_this_run``), the fit time of this run, the loss summary
    of all steps, ``val_acc``, ``test_acc``, ``test_loss``, the checkpoint it resumed from and the path of
    the last checkpoint.
    """
    steps = len(train_loader)  # the loader is cut to limit_train_batches (classification_loaders)
    task = ClassificationTask(model, cfg, steps, num_classes)
    out = Path(output)
    history = LossHistory()
    folder = out / "checkpoints"
    checkpoint = ModelCheckpoint(dirpath=str(folder), every_n_train_steps=cfg.checkpoint_every, save_last=True)
    trainer = pl.Trainer(
        max_epochs=cfg.epochs, accelerator="auto", devices=1, default_root_dir=str(out),
        logger=CSVLogger(str(out), name="logs"), log_every_n_steps=min(50, steps),
        callbacks=[checkpoint, history, GracefulStop(folder / LAST), MidEpochCounters(), GlobalRngState()],
        plugins=[SafeCheckpointIO()], use_distributed_sampler=False,
        limit_val_batches=cfg.limit_eval_batches,
        limit_test_batches=cfg.limit_eval_batches, enable_model_summary=resume is None)
    start = time.perf_counter()
    fit_resumably(trainer, task, train_loader, val_loader, resume, folder)
    fit_s = time.perf_counter() - start
    if "val/acc" not in trainer.callback_metrics:  # resumed after its last epoch: nothing was validated this run
        trainer.validate(task, val_loader, verbose=False)
    val_acc = float(trainer.callback_metrics.get("val/acc", math.nan))
    test = trainer.test(task, test_loader, verbose=False)[0]
    return {
        "train_steps": trainer.global_step,
        "steps_this_run": resume.steps_since(trainer.global_step) if resume else trainer.global_step,
        "fit_seconds": round(fit_s, 1), **history.summary(), "val_acc": val_acc, "test_acc": float(test["test/acc"]),
        "test_loss": float(test["test/loss"]), "resumed_from": str(resume.path) if resume is not None else None,
        "checkpoint": str(folder / LAST),
    }


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, validate each epoch, test the final model; write ``metrics.json`` in ``cfg.output`` (locked while
    it runs)."""
    with output_lock(cfg.output, "output", "train"):
        return _train(cfg, resume_of(cfg, "train"))


def _train(cfg: TrainConfig, resume: Resume | None) -> dict[str, Any]:
    start_run(cfg, "train", resume)
    pl.seed_everything(cfg.seed, workers=True)
    info = dataset_info(cfg.dataset, cfg.data_dir)
    size = resolve_input_size(cfg.dataset, cfg.input_size)
    loaders = classification_loaders(cfg.dataset, size, cfg.batch_size, data_dir=cfg.data_dir,
                                     num_workers=cfg.num_workers, seed=cfg.seed,
                                     limit_train_batches=cfg.limit_train_batches)
    model = build_model(cfg, size[0], info.num_classes)
    fit = fit_and_test(model, cfg, *loaders, cfg.output, info.num_classes, resume)
    result = {
        "model": cfg.model, "convert": cfg.convert, "ops": _op_census(model),
        "adder_backend": select(next(model.parameters())).__name__.rsplit(".", 1)[-1],
        "epochs": cfg.epochs, **fit,
    }
    atomic_write_json(Path(cfg.output) / "metrics.json", result)
    return result


def _op_census(model: nn.Module) -> dict[str, int]:
    """How many layers of each operator type the model holds."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts
