"""Lightning's side of stopping on SIGTERM or SIGINT (:mod:`nni_shiftadd.stopping`): the fit stops at the end of a
training step, and a resumable checkpoint of that step is written on the way out."""
from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

from .. import stopping
from .checkpoint_io import save_resumable


class GracefulStop(pl.Callback):
    """On a stop asked for by a signal, write the full training state to ``checkpoint`` and say so."""

    def __init__(self, checkpoint: str | os.PathLike[str]) -> None:
        self.checkpoint = Path(checkpoint)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if stopping.received() is None or not trainer.is_global_zero:
            return
        if trainer.global_step > 0 and isinstance(exception, SystemExit):  # Lightning stopped at a step's end
            save_resumable(trainer, self.checkpoint)
            stopping.note(f"checkpoint {self.checkpoint} at global step {trainer.global_step}")

