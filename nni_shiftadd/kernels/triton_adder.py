"""Triton adder kernels for CUDA: tiled ``l1mm`` and ``htmm`` with the contract of :mod:`.reference`.

Each program computes one 2-D output tile of one group and walks the reduction axis in small steps,
reducing a 3-D broadcast ``[rows, step, columns]`` in registers. Inputs may be strided (strides are
passed explicitly) and of any float dtype; sums accumulate in float32, or float64 when an input is
float64, and the output has ``cols``' dtype, like the reference.

Triton is imported under a guard: without it :func:`available` and :func:`supports` are False. Whether
the kernels run compiled (CUDA tensors) or in Triton's interpreter (CPU tensors, for tests) is fixed
when this module is imported, by ``TRITON_INTERPRET`` as Triton reads it then.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

# Tile sizes: (rows of the output tile, columns, reduction step). The 3-D temporary of one step has
# rows * step * columns = 16384 elements, i.e. 128 registers a thread with 4 warps.
L1MM_BLOCKS = (32, 64, 8)   # BLOCK_O, BLOCK_P, BLOCK_K
HTMM_BLOCKS = (32, 64, 8)   # BLOCK_K, BLOCK_P, BLOCK_O
NUM_WARPS = 4


if triton is not None:

    @triton.jit
    def _l1mm_kernel(w_ptr, x_ptr, out_ptr, O, K, P,
                     s_wg, s_wo, s_wk, s_xg, s_xk, s_xp, s_og, s_oo, s_op,
                     ACC: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_o = tl.program_id(1)
        g = tl.program_id(2).to(tl.int64)
        offs_o = (pid_o * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
        offs_p = (pid_p * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
        mask_o = offs_o < O
        mask_p = offs_p < P
        w_base = w_ptr + g * s_wg + offs_o[:, None] * s_wo
        x_base = x_ptr + g * s_xg + offs_p[None, :] * s_xp
        acc = tl.zeros((BLOCK_O, BLOCK_P), dtype=ACC)
        for k0 in range(0, K, BLOCK_K):
            offs_k = (k0 + tl.arange(0, BLOCK_K)).to(tl.int64)
            mask_k = offs_k < K
            # Padding both operands with 0 makes the tail terms |0 - 0| = 0.
            w = tl.load(w_base + offs_k[None, :] * s_wk, mask=mask_o[:, None] & mask_k[None, :], other=0.0)
            x = tl.load(x_base + offs_k[:, None] * s_xk, mask=mask_k[:, None] & mask_p[None, :], other=0.0)
            d = x.to(ACC)[None, :, :] - w.to(ACC)[:, :, None]           # O K P
            acc += tl.sum(tl.abs(d), axis=1)
        out = out_ptr + g * s_og + offs_o[:, None] * s_oo + offs_p[None, :] * s_op
        tl.store(out, (-acc).to(out_ptr.dtype.element_ty), mask=mask_o[:, None] & mask_p[None, :])

    @triton.jit
    def _htmm_kernel(w_ptr, x_ptr, g_ptr, out_ptr, O, K, P,
                     s_wg, s_wo, s_wk, s_xg, s_xk, s_xp, s_gg, s_go, s_gp, s_og, s_ok, s_op,
                     ACC: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr):
        pid_p = tl.program_id(0)
        pid_k = tl.program_id(1)
        grp = tl.program_id(2).to(tl.int64)
        offs_k = (pid_k * BLOCK_K + tl.arange(0, BLOCK_K)).to(tl.int64)
        offs_p = (pid_p * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
        mask_k = offs_k < K
        mask_p = offs_p < P
        mask_kp = mask_k[:, None] & mask_p[None, :]
        x = tl.load(x_ptr + grp * s_xg + offs_k[:, None] * s_xk + offs_p[None, :] * s_xp,
                    mask=mask_kp, other=0.0).to(ACC)
        w_base = w_ptr + grp * s_wg + offs_k[None, :] * s_wk
        g_base = g_ptr + grp * s_gg + offs_p[None, :] * s_gp
        acc = tl.zeros((BLOCK_K, BLOCK_P), dtype=ACC)
        for o0 in range(0, O, BLOCK_O):
            offs_o = (o0 + tl.arange(0, BLOCK_O)).to(tl.int64)
            mask_o = offs_o < O
            # Tail rows load grad = 0, so they add 0 * clamp(...) = 0 (NaN only where x is NaN anyway).
            w = tl.load(w_base + offs_o[:, None] * s_wo, mask=mask_o[:, None] & mask_k[None, :], other=0.0)
            gr = tl.load(g_base + offs_o[:, None] * s_go, mask=mask_o[:, None] & mask_p[None, :], other=0.0)
            d = w.to(ACC)[:, :, None] - x[None, :, :]                   # O K P
            # HardTanh via selects: comparisons with NaN are false, so NaN passes through
            # (tl.clamp/minimum/maximum default to NaN-dropping fmin/fmax semantics).
            ht = tl.where(d > 1.0, 1.0, tl.where(d < -1.0, -1.0, d))
            acc += tl.sum(gr.to(ACC)[:, None, :] * ht, axis=0)
        out = out_ptr + grp * s_og + offs_k[:, None] * s_ok + offs_p[None, :] * s_op
        tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask_kp)

    try:
        from triton.runtime.interpreter import InterpretedFunction as _Interpreted
        _INTERPRETED = isinstance(_l1mm_kernel, _Interpreted)
    except ImportError:  # pragma: no cover
        _INTERPRETED = False
else:  # pragma: no cover
    _INTERPRETED = False


def available() -> bool:
    """Whether Triton could be imported."""
    return triton is not None


def interpreted() -> bool:
    """Whether the kernels were built for Triton's interpreter (``TRITON_INTERPRET=1`` at import)."""
    return _INTERPRETED


def supports(t: Tensor) -> bool:
    """Whether the kernels can run on ``t``: a float CUDA tensor, or a CPU one in interpreter mode."""
    if triton is None or t.dtype not in _DTYPES:
        return False
    return t.device.type == "cuda" or (_INTERPRETED and t.device.type == "cpu")


def _acc_dtype(*tensors: Tensor) -> "tl.dtype":
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def l1mm(weight: Tensor, cols: Tensor) -> Tensor:
    """``out[g, o, p] = -sum_k |cols[g, k, p] - weight[g, o, k]|``; see :func:`reference.l1mm`."""
    G, O, K = weight.shape
    P = cols.shape[2]
    out = torch.empty((G, O, P), dtype=cols.dtype, device=cols.device)
    if out.numel() == 0:
        return out
    bo, bp, bk = L1MM_BLOCKS
    grid = (triton.cdiv(P, bp), triton.cdiv(O, bo), G)
    with torch.cuda.device(cols.device) if cols.is_cuda else nullcontext():
        _l1mm_kernel[grid](weight, cols, out, O, K, P, *weight.stride(), *cols.stride(), *out.stride(),
                           ACC=_acc_dtype(weight, cols), BLOCK_O=bo, BLOCK_P=bp, BLOCK_K=bk,
                           num_warps=NUM_WARPS)
    return out


def htmm(weight: Tensor, cols: Tensor, grad: Tensor) -> Tensor:
    """``out[g, k, p] = sum_o grad[g, o, p] * HardTanh(weight[g, o, k] - cols[g, k, p])``."""
    G, O, K = weight.shape
    P = cols.shape[2]
    out = torch.empty((G, K, P), dtype=cols.dtype, device=cols.device)
    if out.numel() == 0:
        return out
    bk, bp, bo = HTMM_BLOCKS
    grid = (triton.cdiv(P, bp), triton.cdiv(K, bk), G)
    with torch.cuda.device(cols.device) if cols.is_cuda else nullcontext():
        _htmm_kernel[grid](weight, cols, grad, out, O, K, P,
                           *weight.stride(), *cols.stride(), *grad.stride(), *out.stride(),
                           ACC=_acc_dtype(weight, cols, grad), BLOCK_K=bk, BLOCK_P=bp, BLOCK_O=bo,
                           num_warps=NUM_WARPS)
    return out

