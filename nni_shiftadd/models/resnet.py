"""Small CIFAR-style ResNets (He et al., 3 stages of basic blocks) for 28x28 / 32x32 images.

``op`` picks the operator of each stage's convolutions: ``"conv"``, ``"shift"`` or ``"add"``; a sequence gives one
per stage, so ``("conv", "shift", "add")`` is a small hybrid network. The stem convolution and the classifier
stay multiplicative, as in the multiplication-free baselines of the paper (Table 4). Models are registered in
timm's registry: ``timm.create_model("shiftadd_resnet20", op="add", in_chans=1, num_classes=10)``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models import register_model
from torch import Tensor, nn

from ..ops.factory import create_layer
from ..vocabulary import CONV_FAMILY as OPS, REFERENCE_BLOCK


def make_conv(op: str, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
              op_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """A bias-free ``kernel_size`` convolution of the given operator type, padded to keep the size."""
    if op not in OPS:
        raise ValueError(f"op: unknown value {op!r}; expected one of {list(OPS)}")
    return create_layer(op, "conv2d", in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False,
                        options=op_kwargs)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions of one operator type, each followed by BatchNorm, with a residual."""

    def __init__(self, op: str, in_channels: int, out_channels: int, stride: int = 1,
                 op_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conv1 = make_conv(op, in_channels, out_channels, 3, stride, op_kwargs)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = make_conv(op, out_channels, out_channels, 3, 1, op_kwargs)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(make_conv(op, in_channels, out_channels, 1, stride, op_kwargs),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(y)) + shortcut)


class SmallResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, stages of ``depth`` basic blocks at ``widths``, global pooling, linear classifier."""

    def __init__(self, depths: Sequence[int] = (3, 3, 3), widths: Sequence[int] = (16, 32, 64),
                 op: str | Sequence[str] = REFERENCE_BLOCK, in_chans: int = 3, num_classes: int = 10,
                 op_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths: {list(depths)} and widths: {list(widths)} must have the same length")
        ops = [op] * len(depths) if isinstance(op, str) else list(op)
        if len(ops) != len(depths):
            raise ValueError(f"op: expected one operator or {len(depths)} (one per stage), got {ops}")
        for o in ops:
            if o not in OPS:
                raise ValueError(f"op: unknown value {o!r}; expected one of {list(OPS)}")
        self.num_classes, self.ops = num_classes, ops
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act = nn.ReLU(inplace=True)
        stages, channels = [], widths[0]
        for i, (depth, width, o) in enumerate(zip(depths, widths, ops)):
            blocks = []
            for j in range(depth):
                blocks.append(BasicBlock(o, channels, width, 2 if (i > 0 and j == 0) else 1, op_kwargs))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.pretrained_cfg = {"first_conv": "conv1", "classifier": "fc", "num_classes": num_classes}

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _create(variant: str, depths: Sequence[int], pretrained: bool, kwargs: dict[str, Any]) -> SmallResNet:
    """Build a variant from timm's ``create_model`` call: its factory options (``pretrained_cfg`` and the like)
    are taken here, everything else goes to :class:`SmallResNet`, whose signature rejects an unknown argument."""
    if pretrained:
        raise ValueError(f"{variant}: no pretrained weights exist; create it with pretrained=False")
    for option in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(option, None)
    return SmallResNet(depths=depths, **kwargs)


@register_model
def shiftadd_resnet8(pretrained: bool = False, **kwargs: Any) -> SmallResNet:
    """ResNet-8 (1 block per stage, widths 16/32/64)."""
    return _create("shiftadd_resnet8", (1, 1, 1), pretrained, kwargs)


@register_model
def shiftadd_resnet20(pretrained: bool = False, **kwargs: Any) -> SmallResNet:
    """ResNet-20 (3 blocks per stage, widths 16/32/64), the AdderNet / DeepShift CIFAR baseline."""
    return _create("shiftadd_resnet20", (3, 3, 3), pretrained, kwargs)
