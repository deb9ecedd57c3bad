"""The CV hybrid search space of a :class:`~nni_shiftadd.space.spec.SpaceSpec` as an NNI ``ModelSpace``.

A stem, then per stage a depth choice (``stage{i}.depth``, :class:`~nni_shiftadd.space.stage.HybridStage`) over a
chain of :class:`~nni_shiftadd.nn.HybridChoice` layers (``stage{i}.layer{j}.op``; the first layer of every stage
after the first halves the resolution), then pooling and a linear classifier. It is at once

- an NNI model space: ``freeze(arch)`` gives the subnet with the supernet's weights, and NNI's one-shot strategies
  train it through :func:`~nni_shiftadd.nn.oneshot_hooks` (the stages' one-shot twins, in
  :mod:`~nni_shiftadd.space.stage_oneshot`, load only then: NNI's one-shot package is slow to import, and a search's
  trials, which only evaluate subnets, need none of it);
- a single-path supernet for our own training loop: ``activate(arch)`` selects the path the next forward runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nni.mutable import ExpressionConstraint
from nni.nas.nn.pytorch import ModelSpace
from torch import Tensor, nn

from ..hws import HWSConfig, Mode
from .spec import SpaceSpec, depth_label, op_label, validate_arch
from .stage import HybridStage


class HybridCVSpace(ModelSpace):
    """The supernet of ``spec`` with the given weight-sharing ``mode`` (``none``, ``naive`` or ``hws``; ``hws``
    configures the last: its estimator, ``T``'s segments and binning, the Laplace scale)."""

    def extra_oneshot_hooks(self, strategy: Any) -> list[Any]:
        """The hooks NNI's ``OneShotStrategy.mutate_model`` asks a space for:
        :func:`~nni_shiftadd.space.stage_oneshot.stage_hooks`, the one-shot
        form of each stage's depth (the layers' come from :func:`~nni_shiftadd.nn.oneshot_hooks`)."""
        from .stage_oneshot import stage_hooks  # on demand: NNI's one-shot package is slow to import

        return stage_hooks()

    def __init__(self, spec: SpaceSpec, mode: Mode = "hws", kl_weight: float = 1.0,
                 hws: HWSConfig | None = None) -> None:
        super().__init__()
        self.spec, self.mode = spec, mode
        stem = [nn.Conv2d(spec.input.channels, spec.stem.channels, spec.stem.kernel, spec.stem.stride,
                          spec.stem.kernel // 2, bias=False), nn.BatchNorm2d(spec.stem.channels), nn.ReLU(inplace=True)]
        if spec.stem.pool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem)
        stages, width = [], spec.stem.channels
        for i, stage in enumerate(spec.stages):
            stages.append(HybridStage(i, stage, width, mode, kl_weight, hws))
            width = stage.width
        self.stages = nn.ModuleList(stages)
        if spec.total_depth is not None:  # e.g. cv_imagenet's 16 layer positions: NNI's samplers must respect it
            total = sum((stage.depth for stage in stages[1:]), stages[0].depth)
            self.add_mutable(ExpressionConstraint(total == spec.total_depth, label="total_depth"))
        self.pool = nn.AdaptiveMaxPool2d(1) if spec.classifier.pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.classifier.dropout)
        self.head = nn.Linear(width, spec.num_classes)

    def activate(self, arch: Mapping[str, Any]) -> None:
        """Select the path of ``arch`` (validated against the spec) for the following forward passes."""
        validate_arch(self.spec, arch)
        for i, stage in enumerate(self.stages):
            stage.active_depth = arch[depth_label(i)]
            for j, layer in enumerate(stage.layers):
                layer.active = arch[op_label(i, j)]

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        """The subnet of ``sample`` with this supernet's weights; an unknown or missing label, or a value outside a
        label's choices, raises ``ValueError`` naming the label and the allowed values (NNI would ignore an unknown
        key)."""
        validate_arch(self.spec, sample)
        return super().freeze(sample)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.dropout(torch.flatten(self.pool(x), 1)))


def supernet_parameters(spec: SpaceSpec, mode: Mode) -> int:
    """Parameters of the supernet of ``spec`` in ``mode``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        space = HybridCVSpace(spec, mode)
    return sum(p.numel() for p in space.parameters())
