"""Reference adder kernels in plain PyTorch: the definition every fast path is tested against.

They follow SPEC literally (no algebraic rewriting) and bound their workspace by processing the
columns in chunks, so they run on any device and any size, only slowly.
"""
from __future__ import annotations

from torch import Tensor

#: Upper bound, in elements, of the broadcast temporary one chunk may allocate.
CHUNK_ELEMENTS = 1 << 22


def _column_chunk(rows: int, reduce: int, total: int) -> int:
    return max(1, min(total, CHUNK_ELEMENTS // max(1, rows * reduce)))


def l1mm(weight: Tensor, cols: Tensor) -> Tensor:
    """``out[g, o, p] = -sum_k |cols[g, k, p] - weight[g, o, k]|`` (paper eq. (2), right)."""
    G, O, K = weight.shape
    P = cols.shape[2]
    out = cols.new_empty(G, O, P)
    step = _column_chunk(G * O, K, P)
    for p0 in range(0, P, step):
        c = cols[:, None, :, p0:p0 + step]                       # G 1 K p
        out[:, :, p0:p0 + step] = -(c - weight[..., None]).abs().sum(2)
    return out


def htmm(weight: Tensor, cols: Tensor, grad: Tensor) -> Tensor:
    """``out[g, k, p] = sum_o grad[g, o, p] * HardTanh(weight[g, o, k] - cols[g, k, p])``: AdderNet's input gradient."""
    G, O, K = weight.shape
    P = cols.shape[2]
    out = cols.new_empty(G, K, P)
    step = _column_chunk(G * O, K, P)
    for p0 in range(0, P, step):
        c = cols[:, None, :, p0:p0 + step]                       # G 1 K p
        ht = (weight[..., None] - c).clamp(-1, 1)                # G O K p
        out[:, :, p0:p0 + step] = (ht * grad[:, :, None, p0:p0 + step]).sum(1)
    return out
