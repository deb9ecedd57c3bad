"""The memory layout image networks train and run in here: channels-last (NHWC).

oneDNN's convolutions and batch norms on the CPU, like cuDNN's on recent GPUs, compute in NHWC, so a network kept in
PyTorch's default NCHW pays a reorder of its activations around every convolution. In channels-last the arithmetic
is the same (only the rounding of sums may differ), and the Conv and Shift blocks of the hybrid spaces train about a
quarter faster on the CPU; the Add block's kernel reads NCHW and neither gains nor loses (measurements:
``docs/results.md``, "Channels-last training"). timm's training script offers the same as ``--channels-last``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["channels_last", "channels_last_batch"]


def channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-d parameters and buffers in channels-last layout (in place; returned for chaining).
    Tensors of other ranks, and their values, are left as they are."""
    return module.to(memory_format=torch.channels_last)


def channels_last_batch(x: Tensor) -> Tensor:
    """A batch of images ``[B, C, H, W]`` in channels-last layout (a copy unless it already is one, as a batch of
    one channel always is); a tensor of another rank as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
