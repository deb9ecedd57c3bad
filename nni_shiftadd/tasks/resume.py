"""Where a Lightning training run resumes from, and the fit that can be stopped and resumed exactly: the part of
resuming that the supernet (``train-supernet``) and the image networks (``train``, ``retrain``) share.

A recipe that resumes has the fields ``output``, ``resume`` (``auto``: the newest good checkpoint in
``<output>/checkpoints``; ``never``; or a checkpoint's path) and ``overwrite`` (with ``resume: never``, delete the
output's checkpoints). What may differ between the checkpoint's recipe and the one asked for is the caller's to say:
``fixed`` fields must be equal (else :class:`~nni_shiftadd.config.ConfigError` naming the field and both values),
``reoptimise`` fields may change and are reported in :attr:`Resume.changes`.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from .. import stopping
from ..checkpoint import LAST, CheckpointError, find_resumable, load_checkpoint
from ..config import ConfigError
from ..lock import is_rank_zero
from .checkpoint_io import save_resumable

__all__ = ["Resume", "check_resume_fields", "fit_resumably", "last_good", "resolve_resume", "start_run"]


@dataclasses.dataclass
class Resume:
    """Where a run resumes from: the checkpoint, its global step, and the recipe fields that changed since."""

    path: Path
    step: int
    changes: dict[str, tuple[Any, Any]]
    passed_over: list[str]

    def steps_since(self, step: int) -> int:
        """The steps a run that resumed here has taken when it reaches global ``step``."""
        return step - self.step

    def describe(self) -> str:
        text = f"resuming from {self.path} (global step {self.step})"
        if self.passed_over:
            text += "; passed over: " + "; ".join(self.passed_over)
        if self.changes:
            text += "; recipe changes applied from this step on: " + ", ".join(
                f"{k} {old!r} -> {new!r}" for k, (old, new) in self.changes.items())
        return text


def check_resume_fields(cfg: Any) -> None:
    """``ValueError`` naming the field when ``cfg.resume`` is neither ``auto``, ``never`` nor an existing file, or
    when ``cfg.overwrite`` is set without ``resume: never``."""
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).is_file():
        raise ValueError(f"field 'resume': no such checkpoint {cfg.resume!r}; expected 'auto', 'never' or the "
                         "path of a checkpoint")
    if cfg.overwrite and cfg.resume != "never":
        raise ValueError("field 'overwrite': only with resume: never (it deletes the output's checkpoints to "
                         "start afresh); resume: auto goes on from them")


def resolve_resume(cfg: Any, command: str, fixed: Collection[str],
                   reoptimise: Collection[str] = ()) -> Resume | None:
    """The checkpoint ``cfg.resume`` asks for (``auto``: the newest good one in ``<output>/checkpoints``), checked
    before anything is built: readable, finite, of a ``command`` run (``nni-shiftadd <command>``), with the same
    ``fixed`` fields as ``cfg``. ``ConfigError`` naming the field, the values and the fix otherwise."""
    if cfg.resume == "never":
        existing = sorted((Path(cfg.output) / "checkpoints").glob("*.ckpt"))
        if existing and not cfg.overwrite:
            raise ConfigError(f"field 'resume': never would delete the {len(existing)} checkpoint(s) in "
                              f"{Path(cfg.output) / 'checkpoints'}; add --overwrite true to delete them and start "
                              "afresh, or choose another --output")
        return None
    skipped: list[str] = []
    if cfg.resume == "auto":
        folder = Path(cfg.output) / "checkpoints"
        path, skipped = find_resumable(folder)
        if path is None:
            if skipped:
                raise ConfigError(f"field 'resume': no usable checkpoint in {folder} to resume from: "
                                  + "; ".join(skipped) + ". Start afresh with --resume never --overwrite true (the "
                                  "folder's checkpoints are then deleted) or choose another --output")
            return None
    else:
        path = Path(cfg.resume)
    try:
        state = load_checkpoint(path, mmap=True)
    except CheckpointError as err:
        raise ConfigError(f"field 'resume': {err}") from None
    saved = (state.get("hyper_parameters") or {}).get("config")
    if not isinstance(saved, dict) or "global_step" not in state:
        raise ConfigError(f"field 'resume': {path} is not a checkpoint of `nni-shiftadd {command}` (no "
                          "'hyper_parameters.config' and 'global_step')")
    if "combined_loader" not in state.get("loops", {}).get("fit_loop", {}).get("state_dict", {}):
        raise ConfigError(f"field 'resume': {path} holds no position inside its epoch (a checkpoint of an older "
                          f"`nni-shiftadd {command}`), so no exact resume from it; start afresh with --resume never "
                          "--overwrite true, or choose another --output")
    mine = dataclasses.asdict(cfg)
    for name in fixed:
        if name in saved and saved[name] != mine[name]:
            raise ConfigError(f"field {name!r}: {mine[name]!r} differs from {saved[name]!r} of the checkpoint {path} "
                              "it would resume from; an exact resume needs the same value (or use another --output, "
                              "or --resume never --overwrite true to delete its checkpoints and start afresh)")
    changes = {name: (saved[name], mine[name]) for name in reoptimise if name in saved and saved[name] != mine[name]}
    return Resume(path, int(state["global_step"]), changes, skipped)


def start_run(cfg: Any, command: str, resume: Resume | None) -> None:
    """Say where the run of ``nni-shiftadd <command>`` starts (rank 0): with ``resume: never`` and ``overwrite``,
    delete the checkpoints of ``<output>/checkpoints`` first; when it resumes, from where."""
    if not is_rank_zero():
        return
    if cfg.resume == "never" and cfg.overwrite:
        folder = Path(cfg.output) / "checkpoints"
        for path in folder.glob("*.ckpt"):
            path.unlink()
        print(f"nni-shiftadd {command}: --resume never --overwrite true: deleted the checkpoints of {folder}",
              file=sys.stderr, flush=True)
    if resume is not None:
        print(f"nni-shiftadd {command}: {resume.describe()}", file=sys.stderr, flush=True)


def last_good(folder: Path, resume: Resume | None) -> str:
    """What a diverged run leaves to resume from, for its error message."""
    path, _ = find_resumable(folder)
    if path is None:
        return "no checkpoint was written before it diverged: run the same command with a lower --lr to start afresh"
    step = int(load_checkpoint(path, mmap=True)["global_step"])
    if resume is not None and step <= resume.step:
        return (f"it diverged again before writing a checkpoint after {path} (global step {step}), which may already "
                "hold the diverged weights (finite but far too large): start afresh with --resume never --overwrite true "
                "and a lower --lr")
    return (f"the last good checkpoint is {path} (global step {step}, all tensors finite): the same command "
            "resumes from it, e.g. with a lower --lr")


def fit_resumably(trainer: pl.Trainer, module: pl.LightningModule, train_loader: DataLoader,
                  val_loader: DataLoader | None, resume: Resume | None, folder: Path) -> None:
    """``trainer.fit`` from ``resume``'s checkpoint (or from the start), stopped by a signal at the end of a step
    (with the checkpoint :class:`~nni_shiftadd.tasks.graceful_stop.GracefulStop` writes), the full state saved to
    ``folder/last.ckpt`` at the end; a divergence (a NaN loss, non-finite weights refused by the checkpoint writer)
    raises ``FloatingPointError`` naming the checkpoint to resume from."""
    ckpt_path = str(resume.path) if resume is not None else None
    try:
        with stopping.graceful():
            trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path, weights_only=True)
            save_resumable(trainer, folder / LAST)
    except FloatingPointError as err:
        _close_progress_bars(trainer)
        raise FloatingPointError(f"{err}; {last_good(folder, resume)}") from None
    except BaseException:
        _close_progress_bars(trainer)  # else tqdm prints the half-done bar again at interpreter exit
        raise


def _close_progress_bars(trainer: pl.Trainer) -> None:
    bar = trainer.progress_bar_callback
    for name in ("_train_progress_bar", "_val_progress_bar", "_test_progress_bar", "_predict_progress_bar"):
        pbar = getattr(bar, name, None)
        if pbar is not None:
            pbar.close()
