"""Blocks and NNI mutables of the hybrid search space: the Attn block, the hybrid layer choice whose
Conv/Shift/Add candidates share weights (``HybridChoice``), with its one-shot forms for NNI's one-shot strategies
(``oneshot_hooks``), and the BatchNorm recalibration of subnets taken from a supernet. The translation space's
blocks are the SuperTransformer's (:mod:`.transformer`).

The one-shot forms load on first use: NNI's one-shot package (tianshou and numba behind it) is slow to import and a
search's trial, which only evaluates subnets, needs none of it."""
from __future__ import annotations

import importlib
from typing import Any

from .attention import AttnBlock
from .hybrid import CANDIDATES, Bottleneck, HybridBlock, HybridChoice
from .memory_format import channels_last, channels_last_batch
from .recalibration import BatchNormRecalibration, recalibrate_batchnorm

_ONESHOT = ("HybridCandidate", "HybridSuperNet", "oneshot_hooks")

__all__ = ["CANDIDATES", "AttnBlock", "BatchNormRecalibration", "Bottleneck", "HybridBlock", "HybridCandidate",
           "HybridChoice", "HybridSuperNet", "channels_last", "channels_last_batch", "oneshot_hooks",
           "recalibrate_batchnorm"]


def __getattr__(name: str) -> Any:
    if name in _ONESHOT:
        return getattr(importlib.import_module(f"{__name__}.oneshot"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
