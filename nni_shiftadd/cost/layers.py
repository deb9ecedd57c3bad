"""What the cost models see of a network: one record per compute layer, found by tracing a forward pass.

Every layer is a (possibly grouped) convolution in the Eyeriss sense: ``n`` images of ``c x h x w`` inputs,
``m`` filters of ``c x r x s``, ``e x f`` outputs, ``stride``. A Linear layer over ``T`` rows is
``n = T, c = in_features, m = out_features`` with ``h = w = r = s = e = f = 1``; an activation-by-activation
product (attention's ``Q K^T`` and ``A V``) is the same with ``repeat`` independent instances (one per head
and batch element) and ``weights_are_activations=True``. ``h`` and ``w`` are the input's stored (unpadded) size;
the padded row a filter slides over is ``(f - 1) * stride + s`` wide.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..vocabulary import OPERATORS

Op = Literal["multiply", "absdiff", "bitshift"]  # nni_shiftadd.vocabulary.OPERATORS
Kind = Literal["conv", "fc", "matmul"]
OPS: tuple[str, ...] = tuple(OPERATORS)


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """The loop-nest bounds of one layer; hashable, so that costs can be memoised by shape."""

    kind: Kind
    op: Op
    n: int
    c: int  # input channels per group
    m: int  # output channels per group
    h: int = 1
    w: int = 1
    r: int = 1
    s: int = 1
    e: int = 1
    f: int = 1
    stride: int = 1
    groups: int = 1
    repeat: int = 1
    weights_are_activations: bool = False
    #: a layer of a lightweight (depthwise 1-D convolution) branch: the authors' op rules single these out
    lightweight: bool = False
    #: fractions of zeros in the input and output activations (run-length compression off-chip; 0: unknown)
    input_zeros: float = 0.0
    output_zeros: float = 0.0

    @property
    def macs(self) -> int:
        """Multiply (or add/shift)-accumulates of the layer, all groups and repeats included."""
        return self.n * self.m * self.c * self.r * self.s * self.e * self.f * self.groups * self.repeat

    @property
    def weight_count(self) -> int:
        return self.m * self.c * self.r * self.s * self.groups * self.repeat

    @property
    def input_count(self) -> int:
        return self.n * self.c * self.h * self.w * self.groups * self.repeat

    @property
    def output_count(self) -> int:
        return self.n * self.m * self.e * self.f * self.groups * self.repeat


@dataclasses.dataclass(frozen=True)
class LayerRecord:
    """One traced layer: where it is (``name``, the module path), what it is, its shape and its parameters."""

    name: str
    type: str
    shape: LayerShape
    params: int
