"""The CV hybrid search space of a :class:`~nni_shiftadd.space.spec.SpaceSpec` as an NNI ``ModelSpace``.

A stem, then per stage a depth choice (``stage{i}.depth``) over a chain of :class:`~nni_shiftadd.nn.HybridChoice`
layers (``stage{i}.layer{j}.op``; the first layer of every stage after the first halves the resolution), then
pooling and a linear classifier. It is at once

- an NNI model space: ``freeze(arch)`` gives the subnet with the supernet's weights, and NNI's one-shot strategies
  train it through :func:`~nni_shiftadd.nn.oneshot_hooks`;
- a single-path supernet for our own training loop: ``activate(arch)`` selects the path the next forward runs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nni.mutable import Categorical, ExpressionConstraint, ensure_frozen
from nni.nas.nn.pytorch import ModelSpace, MutableModule
from nni.nas.nn.pytorch.base import recursive_freeze
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch import Tensor, nn

from ..hws import HWSConfig, Mode
from ..nn.hybrid import HybridChoice, build_then_freeze
from ..nn.oneshot import UniformSuperNet, differentiable
from .spec import SpaceSpec, StageSpec, depth_label, op_label, validate_arch


class HybridStage(MutableModule):
    """One stage: ``depth`` (an ``nni.choice``) of its :class:`HybridChoice` layers run in order."""

    def __init__(self, index: int, stage: StageSpec, in_width: int, mode: Mode, kl_weight: float,
                 hws: HWSConfig | None = None) -> None:
        super().__init__()
        # the dry-run default is the stage's default depth, so that spaces with a total depth have a valid default
        default = stage.default_depth if stage.default_depth is not None else stage.depths[0]
        self.depth = Categorical(list(stage.depths), default=default, label=depth_label(index))
        self.add_mutable(self.depth)
        self._dry_run_depth = ensure_frozen(self.depth)
        self.active_depth: int | None = None
        layers = []
        for j in range(max(stage.depths)):
            layers.append(HybridChoice(
                in_width if j == 0 else stage.width, stage.width, 2 if (index > 0 and j == 0) else 1,
                stage.blocks, label=op_label(index, j), mode=mode, expansion=stage.bottleneck, kl_weight=kl_weight,
                attn_kwargs={"heads": stage.heads, "mlp_ratio": stage.mlp_ratio}, hws=hws))
        self.layers = nn.ModuleList(layers)

    @property
    def label(self) -> str:
        return self.depth.label

    def check_contains(self, sample: Mapping[str, Any]) -> Any:
        return self.depth.check_contains(dict(sample))

    def freeze(self, sample: Mapping[str, Any]) -> nn.Module:
        depth = self.depth.freeze(dict(sample))
        # under a model_context the layers were built frozen already (HybridChoice.create_fixed_module)
        return nn.Sequential(*[layer.freeze(dict(sample)) if isinstance(layer, HybridChoice) else layer
                               for layer in self.layers[:depth]])

    @classmethod
    def create_fixed_module(cls, sample: dict, *args: Any, **kwargs: Any) -> nn.Module:
        return build_then_freeze(cls, sample, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:self.active_depth or self._dry_run_depth]:
            x = layer(x)
        return x


class HybridStageSuperNet(UniformSuperNet):
    """One-shot form of :class:`HybridStage` for NNI's strategies: samples the depth uniformly."""

    def __init__(self, stage: HybridStage) -> None:
        super().__init__(stage.depth)
        self.layers = stage.layers

    @property
    def depth(self) -> Categorical:
        return self.choice

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers[:self.sampled()]:
            x = layer(x)
        return x

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        return cls(module) if isinstance(module, HybridStage) else None


class HybridStageMixed(BaseSuperNetModule):
    """Differentiable one-shot form of :class:`HybridStage` (DARTS, GumbelDARTS, Proxyless): the stage returns the
    ``softmax(alpha)``-weighted sum of its outputs at each allowed depth, ``alpha`` being the strategy's architecture
    logits of the depth label; ``export`` takes the most likely depth."""

    _arch_parameter_names = ["_arch_alpha"]

    def __init__(self, stage: HybridStage, alpha: torch.Tensor, softmax: nn.Module) -> None:
        super().__init__()
        self.choice = stage.depth
        self.add_mutable(self.choice)
        self.layers = stage.layers
        self.names = list(stage.depth.values)
        if len(alpha) != len(self.names):
            raise ValueError(f"{self.label}: {len(alpha)} architecture logits for {len(self.names)} depths")
        self._arch_alpha, self._softmax = alpha, softmax

    @property
    def label(self) -> str:
        return self.choice.label

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {}

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {} if self.label in memo else {self.label: self.names[int(torch.argmax(self._arch_alpha))]}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        if self.label in memo:
            return {}
        return {self.label: dict(zip(self.names, self._softmax(self._arch_alpha).tolist()))}

    def arch_parameters(self) -> Any:
        yield self._arch_alpha

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        depth = self.choice.freeze(dict(sample))
        return nn.Sequential(*[recursive_freeze(layer, dict(sample))[0] for layer in self.layers[:depth]])

    def forward(self, x: Tensor) -> Tensor:
        at_depth = {}
        for i, layer in enumerate(self.layers[:max(self.names)]):
            x = layer(x)
            at_depth[i + 1] = x
        weights = self._softmax(self._arch_alpha)
        return sum(w * at_depth[d] for w, d in zip(weights, self.names))


class HybridCVSpace(ModelSpace):
    """The supernet of ``spec`` with the given weight-sharing ``mode`` (``none``, ``naive`` or ``hws``; ``hws``
    configures the last: its estimator, ``T``'s segments and binning, the Laplace scale)."""

    def extra_oneshot_hooks(self, strategy: Any) -> list[Any]:
        """The hooks NNI's ``OneShotStrategy.mutate_model`` asks a space for: :func:`stage_hooks`, the one-shot
        form of each stage's depth (the layers' come from :func:`~nni_shiftadd.nn.oneshot_hooks`)."""
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


def stage_hooks() -> list[Any]:
    """The mutation hook of :class:`HybridStage` (with :func:`~nni_shiftadd.nn.oneshot_hooks` for the layers):
    :class:`HybridStageMixed` under a differentiable strategy, :class:`HybridStageSuperNet` under a sampling one."""
    def hook(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if isinstance(module, HybridStage) and differentiable(mutate_kwargs):
            return HybridStageMixed(module, memo[module.label], mutate_kwargs.get("softmax", nn.Softmax(-1)))
        return HybridStageSuperNet.mutate(module, name, memo, mutate_kwargs)
    return [hook]


def supernet_parameters(spec: SpaceSpec, mode: Mode) -> int:
    """Parameters of the supernet of ``spec`` in ``mode``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        space = HybridCVSpace(spec, mode)
    return sum(p.numel() for p in space.parameters())
