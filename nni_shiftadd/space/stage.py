"""A stage of the CV hybrid space as an NNI mutable: ``depth`` (an ``nni.choice``, ``stage{i}.depth``) of its
:class:`~nni_shiftadd.nn.HybridChoice` layers run in order. Its one-shot twins live apart, in
:mod:`~nni_shiftadd.space.stage_oneshot`, as NNI keeps its supermodules apart from its mutables."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nni.mutable import Categorical, ensure_frozen
from nni.nas.nn.pytorch import MutableModule
from torch import Tensor, nn

from ..hws import HWSConfig, Mode
from ..nn.hybrid import HybridChoice, build_then_freeze
from .spec import StageSpec, depth_label, op_label


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
