"""#Params, #MACs and #Mult/#Add/#Shift of a model, in the convention of the paper's Table 4.

SPEC ("One-shot training and search"): a multiply-accumulate counts one Mult and one Add, an adder
MAC (``|x - w|`` then accumulate) two Adds, a shift MAC one Shift and one Add. Bias additions,
normalisation, activations and residual additions are not counted (they are not in Table 4 either).
A b-bit model's effective FLOPs are ``FLOPs x (b / 32)^2``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..vocabulary import OPERATORS
from .layers import LayerRecord
from .trace import trace_layers

__all__ = ["OpCounts", "count_layer", "count_ops", "effective_macs"]


def effective_macs(macs: float, bits: int) -> float:
    """Effective MACs (FLOPs) of a ``bits``-bit model: ``macs x (bits / 32)^2`` (SPEC)."""
    if bits <= 0:
        raise ValueError(f"bits: must be > 0, got {bits}")
    return macs * (bits / 32) ** 2


@dataclasses.dataclass(frozen=True)
class OpCounts:
    """Parameter and operation counts of one layer or a whole model; add them up with ``+``."""

    params: int = 0
    macs: int = 0
    mult: int = 0
    add: int = 0
    shift: int = 0

    def __add__(self, other: OpCounts) -> OpCounts:
        if not isinstance(other, OpCounts):
            return NotImplemented
        return OpCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __radd__(self, other: Any) -> OpCounts:
        if other == 0:  # lets sum() start from 0
            return self
        return NotImplemented

    def scaled(self, bits: int) -> float:
        """Effective MACs of these counts at ``bits`` bits (see :func:`effective_macs`)."""
        return effective_macs(self.macs, bits)


def count_layer(record: LayerRecord) -> OpCounts:
    """The Table 4 counts of one traced layer."""
    macs = record.shape.macs
    try:
        per_mac = OPERATORS[record.shape.op]
    except KeyError:
        raise ValueError(f"{record.name}: unknown op {record.shape.op!r}; expected one of {list(OPERATORS)}") from None
    return OpCounts(record.params, macs, mult=per_mac.mult * macs, add=per_mac.add * macs, shift=per_mac.shift * macs)


def count_ops(model: nn.Module, *inputs: Any, **kwargs: Any) -> tuple[OpCounts, list[tuple[LayerRecord, OpCounts]]]:
    """Trace ``model`` on ``inputs`` (one forward pass) and count it: the totals and one row per layer.

    ``kwargs`` go to :func:`~nni_shiftadd.cost.trace.trace_layers` (``unmodelled=...``, forward keyword
    arguments). ``params`` sums the parameters of the traced compute layers only (norms, embeddings, tokens
    are not compute layers). With ``unmodelled="report"`` the unmodelled layers are not in the rows: call
    ``trace_layers`` to see them.
    """
    rows = [(record, count_layer(record)) for record in trace_layers(model, *inputs, **kwargs).layers]
    return sum((c for _, c in rows), OpCounts()), rows
