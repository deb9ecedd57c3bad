"""Quantisers of the Shift operator (DeepShift), all with straight-through-estimator (STE) gradients.

Weights are ``S * 2^P`` (paper eq. (2), middle) with ``S in {-1, 0, +1}`` and an integer exponent
``P in [-(2^(b-1) - 2), 0]`` for ``b`` weight bits (``[-14, 0]`` for the default 5 bits).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _ste(x: Tensor, q: Tensor) -> Tensor:
    """``q`` in the forward pass, identity gradient to ``x`` in the backward pass."""
    return x + (q - x).detach()


def shift_range(bits: int) -> tuple[int, int]:
    """The exponents a ``bits``-bit shift weight can hold: ``(-(2^(bits-1) - 2), 0)``."""
    if bits < 2:
        raise ValueError(f"weight_bits: must be >= 2, got {bits}")
    return -(2 ** (bits - 1) - 2), 0


def round_power_of_two(w: Tensor, bits: int = 5) -> Tensor:
    """DeepShift-Q: ``sign(w) * 2^round(log2|w|)``, |w| clamped to ``[2^-(2^(bits-1)-1), 1]``; STE.

    The rounded exponent is kept within :func:`shift_range` so that the weight fits ``bits`` bits;
    exact zeros stay zero.
    """
    lo, hi = shift_range(bits)
    mag = w.detach().abs().clamp(2.0 ** -(2 ** (bits - 1) - 1), 1.0)
    exponent = torch.log2(mag).round().clamp(lo, hi)
    return _ste(w, torch.sign(w.detach()) * torch.exp2(exponent))


def shift_sign_weight(shift: Tensor, sign: Tensor, bits: int = 5, threshold: float = 0.3) -> Tensor:
    """DeepShift-PS: the weight ``S * 2^P`` from the learnt exponent ``shift`` and sign ``sign``.

    ``P = round(shift)`` clamped to :func:`shift_range`; ``S = sign(sign)``, or 0 where ``|sign| < threshold``.
    Both roundings use an STE, so gradients reach ``shift`` (through ``d 2^P / dP = ln 2 * 2^P``) and ``sign``.
    """
    lo, hi = shift_range(bits)
    p = _ste(shift, shift.detach().round().clamp(lo, hi))
    s_q = torch.where(sign.detach().abs() < threshold, torch.zeros_like(sign), torch.sign(sign.detach()))
    s = _ste(sign, s_q)
    return s * torch.exp2(p)


def round_fixed_point(x: Tensor, int_bits: int = 16, frac_bits: int = 16) -> Tensor:
    """Fixed-point activations: ``floor(x / 2^-f) * 2^-f`` clipped to the ``int_bits.frac_bits`` range; STE."""
    if int_bits < 1 or frac_bits < 0:
        raise ValueError(f"activation_bits: need int_bits >= 1 and frac_bits >= 0, got ({int_bits}, {frac_bits})")
    delta = 2.0 ** -frac_bits
    bound = 2.0 ** (int_bits - 1)
    q = (torch.floor(x.detach() / delta) * delta).clamp(-bound, bound - delta)
    return _ste(x, q)
