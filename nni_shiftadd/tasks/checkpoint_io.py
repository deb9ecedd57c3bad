"""Lightning's side of safe checkpoints: the writer plugin every Lightning run here uses, and the full-state save
that an exact resume needs. Reading and choosing checkpoints is :mod:`nni_shiftadd.checkpoint` (no Lightning)."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from ..checkpoint import (TRAINING_STATE, CheckpointError, NonFiniteCheckpointError, describe_non_finite,
                          load_checkpoint, non_finite_tensors)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, atomic and refusing non-finite weights or optimiser state.

    The file is written beside its destination under a temporary name, flushed to disk and renamed over it, so a
    crash mid-write keeps the previous checkpoint whole. A checkpoint whose ``state_dict`` or ``optimizer_states``
    hold NaN/Inf raises :class:`~nni_shiftadd.checkpoint.NonFiniteCheckpointError` and nothing is written.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        bad = [n for key in TRAINING_STATE if key in checkpoint for n in non_finite_tensors(checkpoint[key], key)]
        if bad:
            step = checkpoint.get("global_step")
            raise NonFiniteCheckpointError(
                f"not writing checkpoint {path.name} at global step {step}: the run diverged, "
                f"{describe_non_finite(bad)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(f"{path}: refusing to unpickle arbitrary objects; nni-shiftadd loads checkpoints "
                                  "weights-only")
        return load_checkpoint(path, map_location if map_location is not None else "cpu")


class _DefaultWeightsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "`weights_only` was not set" not in record.getMessage()


@contextmanager
def _quiet_default_notice() -> Iterator[None]:
    logger = logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector")
    quiet = _DefaultWeightsOnly()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def save_resumable(trainer: Any, path: str | os.PathLike[str]) -> None:
    """Write the full training state of ``trainer`` (weights, optimiser, schedulers, loops, callbacks: what an
    exact resume needs) to ``path`` through the trainer's checkpoint writer (:class:`SafeCheckpointIO`)."""
    with _quiet_default_notice():  # the full state is Lightning's default; its notice saying so is noise
        trainer.save_checkpoint(path)
