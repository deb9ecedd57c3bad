"""Quantisers of the Shift operator (DeepShift), all with straight-through-estimator (STE) gradients.

Weights are ``S * 2^P`` (paper eq. (2), middle) with ``S in {-1, 0, +1}`` and an integer exponent
``P in [-(2^(b-1) - 2), 0]`` for ``b`` weight bits (``[-14, 0]`` for the default 5 bits).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..kernels import cpu


def _ste(x: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return x + (q - x).detach()


#: 8 bits give exponents down to -126, the smallest normal float32 exponent.
MAX_WEIGHT_BITS = 8


def shift_range(bits: int) -> tuple[int, int]:
    """The exponents a ``bits``-bit shift weight can hold: ``(-(2^(bits-1) - 2), 0)``."""
    if not 2 <= bits <= MAX_WEIGHT_BITS:
        raise ValueError(f"weight_bits: must be in [2, {MAX_WEIGHT_BITS}], got {bits}")
    return -(2 ** (bits - 1) - 2), 0


def _use_cpu_kernel(*tensors: Tensor) -> bool:
    return all(cpu.supports(t) for t in tensors) and cpu.load("shift") is not None


# Smallest value of the mantissa fraction f (|w| = 2^e * (1 + f)) for which log2|w| rounds up: f >= sqrt(2) - 1,
# as an exact threshold on frexp's m = (1 + f) / 2 in [0.5, 1) (sqrt(2) is irrational, so there are no ties).
_ROUND_UP_M = {torch.float32: (1 + 0x3504F4 / 2.0**23) / 2, torch.float64: (1 + 0x6A09E667F3BCD / 2.0**52) / 2}


def _pow2_torch(w: Tensor, amin: int, lo: int, hi: int) -> Tensor:
    m, e = torch.frexp(w.abs().clamp(2.0 ** amin, 1.0))
    threshold = _ROUND_UP_M.get(w.dtype, 2 ** -0.5)
    exponent = (e - 1 + (m >= threshold).to(e.dtype)).clamp(lo, hi)
    q = torch.sign(w) * torch.ldexp(torch.ones_like(w), exponent)
    return torch.where(torch.isnan(w), w, q)


class _PowerOfTwo(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, bits: int) -> Tensor:  # type: ignore[override]
        lo, hi = shift_range(bits)
        amin = max(-(2 ** (bits - 1) - 1), lo)  # below 2^lo the clamp to [lo, hi] decides anyway
        return cpu.pow2_round(w, amin, lo, hi) if _use_cpu_kernel(w) else _pow2_torch(w, amin, lo, hi)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None  # straight-through estimator


def round_power_of_two(w: Tensor, bits: int = 5) -> Tensor:
    """DeepShift-Q: ``sign(w) * 2^round(log2|w|)``, |w| clamped to ``[2^-(2^(bits-1)-1), 1]``; STE.

    The rounded exponent is kept within :func:`shift_range` so that the weight fits ``bits`` bits;
    exact zeros stay zero, NaN stays NaN. Rounding is exact (on the mantissa, not through ``log2``).
    """
    shift_range(bits)
    return _PowerOfTwo.apply(w, bits)


def _ps_torch(shift: Tensor, sign: Tensor, lo: int, hi: int, threshold: float) -> Tensor:
    s_q = (sign >= threshold).to(sign.dtype) - (sign <= -threshold).to(sign.dtype)
    # (x - x) is 0, or NaN for a non-finite parameter, which must not turn into a finite weight
    return s_q * torch.exp2(shift.round().clamp(lo, hi)) + (shift - shift) + (sign - sign)


class _ShiftSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shift: Tensor, sign: Tensor, bits: int, threshold: float) -> Tensor:  # type: ignore[override]
        lo, hi = shift_range(bits)
        if _use_cpu_kernel(shift, sign) and shift.dtype == sign.dtype:
            w = cpu.ps_weight(shift, sign, lo, hi, threshold)
        else:
            w = _ps_torch(shift, sign, lo, hi, threshold)
        ctx.save_for_backward(shift, w)
        ctx.range = (lo, hi)
        return w

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        shift, w = ctx.saved_tensors
        lo, hi = ctx.range
        need_shift, need_sign = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if _use_cpu_kernel(shift, w, grad):
            d_shift, d_sign = cpu.ps_weight_backward(shift, w, grad, lo, hi, need_shift, need_sign)
        else:
            d_shift = grad * w * math.log(2) if need_shift else None
            d_sign = grad * torch.exp2(shift.round().clamp(lo, hi)) + (shift - shift) if need_sign else None
        return d_shift, d_sign, None, None


def shift_sign_weight(shift: Tensor, sign: Tensor, bits: int = 5, threshold: float = 0.3) -> Tensor:
    """DeepShift-PS: the weight ``S * 2^P`` from the learnt exponent ``shift`` and sign ``sign``.

    ``P = round(shift)`` (half to even) clamped to :func:`shift_range`; ``S = sign(sign)``, or 0 where
    ``|sign| < threshold``; a NaN or infinite parameter gives a NaN weight. Both roundings use an STE, so gradients reach ``shift`` (``g * S * 2^P * ln 2``)
    and ``sign`` (``g * 2^P``).
    """
    shift_range(bits)
    return _ShiftSign.apply(shift, sign, bits, threshold)


def round_fixed_point(x: Tensor, int_bits: int = 16, frac_bits: int = 16) -> Tensor:
    """Fixed-point activations: ``floor(x / 2^-f) * 2^-f`` clipped to the ``int_bits.frac_bits`` range; STE."""
    if int_bits < 1 or frac_bits < 0:
        raise ValueError(f"activation_bits: need int_bits >= 1 and frac_bits >= 0, got ({int_bits}, {frac_bits})")
    delta = 2.0 ** -frac_bits
    bound = 2.0 ** (int_bits - 1)
    q = (torch.floor(x.detach() / delta) * delta).clamp(-bound, bound - delta)
    return _ste(x, q)
