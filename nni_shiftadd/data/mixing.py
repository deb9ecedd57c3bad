"""Mixup and CutMix of a training batch (DeiT's recipe: mixup 0.8, cutmix 1.0, label smoothing 0.1), through timm.

timm's :class:`~timm.data.Mixup` mixes a batch with its reverse and returns soft targets (label smoothing folded in);
the loss is then timm's :class:`~timm.loss.SoftTargetCrossEntropy`. :class:`BatchMixing` holds both for the three
image recipes (``train``, ``retrain``, ``train-supernet``), whose ``mixup``, ``cutmix``, ``mix_prob`` and
``label_smoothing`` fields :func:`check_mixing` validates.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchMixing", "check_mixing"]


def check_mixing(cfg: Any) -> None:
    """Raise ``ValueError`` naming the field when a recipe's mixing or smoothing value is out of range."""
    for name in ("mixup", "cutmix"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"field {name!r}: a Beta distribution's alpha, must be >= 0 (0: off), got "
                             f"{getattr(cfg, name)}")
    if not 0 <= cfg.mix_prob <= 1:
        raise ValueError(f"field 'mix_prob': the probability that a batch is mixed, in [0, 1], got {cfg.mix_prob}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"field 'label_smoothing': must be in [0, 1), got {cfg.label_smoothing}")


class BatchMixing:
    """The training loss of one batch: soft-target cross-entropy on a Mixup/CutMix-mixed batch when the recipe asks
    for mixing (``mixup`` or ``cutmix`` > 0 and ``mix_prob`` > 0), else cross-entropy with label smoothing."""

    def __init__(self, cfg: Any, num_classes: int) -> None:
        check_mixing(cfg)
        self.smoothing = cfg.label_smoothing
        self.mixup = None
        if (cfg.mixup > 0 or cfg.cutmix > 0) and cfg.mix_prob > 0:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mix_prob,
                               label_smoothing=cfg.label_smoothing, num_classes=num_classes)
            self.soft_loss = SoftTargetCrossEntropy()

    @property
    def active(self) -> bool:
        return self.mixup is not None

    def mix(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The batch to train on, its hard labels and its soft targets (``None``: not mixed). timm mixes a batch
        with its reverse, so an odd batch leaves its last image out of this step."""
        if self.mixup is None:
            return x, y, None
        if len(x) % 2:
            x, y = x[:-1], y[:-1]
        if len(x) == 0:
            return x, y, None
        mixed, soft = self.mixup(x, y)
        return mixed, y, soft

    def loss(self, logits: Tensor, y: Tensor, soft: Tensor | None) -> Tensor:
        """Soft-target cross-entropy against ``soft`` when the batch was mixed, else smoothed cross-entropy."""
        if soft is not None:
            return self.soft_loss(logits, soft)
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing)
