"""The one-shot twins of :class:`~nni_shiftadd.space.stage.HybridStage` for NNI's one-shot strategies, and the hook
that makes them (:func:`stage_hooks`, which ``HybridCVSpace.extra_oneshot_hooks`` hands NNI): uniform depth
sampling for the sampling strategies, a ``softmax(alpha)``-weighted mix of the depths for the differentiable ones.
Imports run twin -> mutable, never back."""
from __future__ import annotations

from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch.base import recursive_freeze
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch import Tensor, nn

from ..nn.oneshot import UniformSuperNet, differentiable
from .stage import HybridStage


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


def stage_hooks() -> list[Any]:
    """The mutation hook of :class:`HybridStage` (with :func:`~nni_shiftadd.nn.oneshot_hooks` for the layers):
    :class:`HybridStageMixed` under a differentiable strategy, :class:`HybridStageSuperNet` under a sampling one."""
    def hook(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if isinstance(module, HybridStage) and differentiable(mutate_kwargs):
            return HybridStageMixed(module, memo[module.label], mutate_kwargs.get("softmax", nn.Softmax(-1)))
        return HybridStageSuperNet.mutate(module, name, memo, mutate_kwargs)
    return [hook]
