"""BatchNorm recalibration of subnets taken from a supernet.

A supernet's BatchNorm statistics average over every path that ran through each BN during training, so a subnet
frozen from it (``space.freeze(sample)``) normalises with statistics of the wrong mixture and scores near chance.
Recomputing the statistics of the subnet alone on a few training batches (no labels, no gradients) is the usual
fix of one-shot NAS. :func:`recalibrate_batchnorm` does it for any module; :class:`BatchNormRecalibration` does it
inside Lightning (and so inside NNI's Lightning evaluators) before every validation and test.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn


def _inputs(batch: Any) -> Any:
    """The model input of a batch: a tensor as is, the first item of an ``(input, target)`` pair."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("recalibration data: an empty batch")
        return batch[0]
    return batch


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Iterable[Any], batches: int = 20,
                          device: torch.device | str | None = None) -> nn.Module:
    """Recompute the running mean and variance of every BatchNorm in ``model`` from ``batches`` batches of ``data``
    (tensors, or ``(input, target)`` pairs whose targets are ignored), as exact averages over those batches.

    The weights do not change; each module keeps its train/eval mode and each BN its momentum. Returns ``model``
    (changed in place) so that ``recalibrate_batchnorm(space.freeze(sample), loader)`` reads as one step.
    ``ValueError`` when ``batches < 1`` or ``data`` holds no batch.
    """
    if batches < 1:
        raise ValueError(f"batches: at least 1 batch is needed to recompute BatchNorm statistics, got {batches}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts alike
    model.train()
    seen = 0
    try:
        for batch in data:
            if seen >= batches:
                break
            model(_to(_inputs(batch), device))
            seen += 1
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    if seen == 0:
        raise ValueError("recalibration data: no batch to recompute BatchNorm statistics from")
    return model


class BatchNormRecalibration(pl.Callback):
    """Lightning callback: :func:`recalibrate_batchnorm` on ``data`` before every validation and test, for evaluators
    that score a subnet with the weights it inherits (``Classification(..., callbacks=[BatchNormRecalibration(
    train_loader, 20)])`` in NNI, or ``pl.Trainer(callbacks=[...]).validate(module, val_loader)``)."""

    def __init__(self, data: Iterable[Any], batches: int = 20) -> None:
        if batches < 1:
            raise ValueError(f"batches: at least 1 batch is needed to recompute BatchNorm statistics, got {batches}")
        self.data, self.batches = data, batches

    def _recalibrate(self, pl_module: pl.LightningModule) -> None:
        recalibrate_batchnorm(pl_module, self.data, self.batches, pl_module.device)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recalibrate(pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recalibrate(pl_module)
