"""Shift (DeepShift) operators: convolution and linear layers whose weights are ``S * 2^P`` (eq. (2), middle).

Two variants, chosen by ``variant``:

- ``"Q"``: a real weight is trained and rounded to a power of two in every forward pass (STE).
- ``"PS"``: the exponent ``P`` (``shift``) and sign ``S`` (``sign``) are the parameters (STE through both
  roundings). SPEC: PS needs an adaptive optimiser (RAdam, lr 0.01 from scratch) to converge.

The product is computed with the ordinary conv2d/linear kernels on the quantised weight: on CPUs and GPUs a
float multiply is the fastest way to apply a power of two, and the result is bit-identical to a shift.
Optionally activations are rounded to fixed point (``activation_bits=(int_bits, frac_bits)``).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function_variadic

from .quantize import round_fixed_point, round_power_of_two, shift_range, shift_sign_weight

VARIANTS = ("Q", "PS")


def shift_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """:func:`torch.nn.functional.linear` on power-of-two ``weight`` (already rounded, e.g. by
    :func:`~nni_shiftadd.ops.quantize.round_power_of_two`): the float kernel, bit-identical to shifting, under a name
    of its own in ``__torch_function__`` dispatch, so that the cost tracer counts shifts, not multiplications."""
    if has_torch_function_variadic(x, weight, bias):
        return handle_torch_function(shift_linear, (x, weight, bias), x, weight, bias)
    return F.linear(x, weight, bias)


def shift_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1) -> Tensor:
    """:func:`torch.nn.functional.conv1d` on power-of-two ``weight``; dispatched like :func:`shift_linear`."""
    if has_torch_function_variadic(x, weight, bias):
        return handle_torch_function(shift_conv1d, (x, weight, bias), x, weight, bias, stride=stride,
                                     padding=padding, dilation=dilation, groups=groups)
    return F.conv1d(x, weight, bias, stride, padding, dilation, groups)


def _check_variant(variant: str) -> str:
    v = str(variant).upper()
    if v not in VARIANTS:
        raise ValueError(f"variant: unknown value {variant!r}; expected one of {list(VARIANTS)}")
    return v


class _ShiftMixin:
    """Weight parametrisation and activation rounding shared by the shift layers."""

    weight_threshold = 0.3

    def _init_shift(self, variant: str, weight_bits: int, activation_bits: tuple[int, int] | None) -> None:
        shift_range(weight_bits)
        if activation_bits is not None:
            round_fixed_point(torch.zeros(()), *activation_bits)
        self.variant, self.weight_bits, self.activation_bits = _check_variant(variant), weight_bits, activation_bits

    def _make_ps_parameters(self) -> None:
        """Replace ``weight`` with the PS parameters ``shift`` and ``sign`` of the same shape."""
        w = self.weight
        del self.weight
        self.shift = nn.Parameter(torch.empty_like(w))
        self.sign = nn.Parameter(torch.empty_like(w))

    def reset_parameters(self) -> None:
        if self.variant == "PS" and not hasattr(self, "shift"):
            return  # called by the torch layer's __init__ before the PS parameters exist
        if self.variant == "PS":
            lo, hi = shift_range(self.weight_bits)
            nn.init.uniform_(self.shift, lo, hi)  # SPEC: P ~ U(-14, 0), S ~ U(-1, 1)
            nn.init.uniform_(self.sign, -1.0, 1.0)
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def quantized_weight(self) -> Tensor:
        """The power-of-two weight used in the forward pass (differentiable through the STE)."""
        if self.variant == "PS":
            return shift_sign_weight(self.shift, self.sign, self.weight_bits, self.weight_threshold)
        return round_power_of_two(self.weight, self.weight_bits)

    @torch.no_grad()
    def load_float_weight(self, weight: Tensor) -> None:
        """Initialise from a float weight (e.g. a trained conv): copied for Q, ``P = log2|w|``, ``S = sign(w)`` for PS."""
        if self.variant == "PS":
            lo, hi = shift_range(self.weight_bits)
            self.shift.copy_(torch.log2(weight.abs().clamp_min(2.0 ** (lo - 1))).clamp(lo, hi))
            self.sign.copy_(torch.sign(weight))
        else:
            self.weight.copy_(weight)

    def _round_input(self, x: Tensor) -> Tensor:
        return x if self.activation_bits is None else round_fixed_point(x, *self.activation_bits)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", variant={self.variant!r}, weight_bits={self.weight_bits}, "
                                       f"activation_bits={self.activation_bits}")


class ShiftConv2d(_ShiftMixin, nn.Conv2d):
    """Drop-in :class:`torch.nn.Conv2d` with power-of-two weights (DeepShift ``Q`` or ``PS``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: Any = None, *, variant: str = "Q", weight_bits: int = 5,
                 activation_bits: tuple[int, int] | None = None) -> None:
        self._init_shift(variant, weight_bits, activation_bits)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        if self.variant == "PS":
            self._make_ps_parameters()
            self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self._round_input(x), self.quantized_weight(), self.bias)


class ShiftLinear(_ShiftMixin, nn.Linear):
    """Drop-in :class:`torch.nn.Linear` with power-of-two weights (DeepShift ``Q`` or ``PS``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, variant: str = "Q", weight_bits: int = 5,
                 activation_bits: tuple[int, int] | None = None) -> None:
        self._init_shift(variant, weight_bits, activation_bits)
        super().__init__(in_features, out_features, bias, device, dtype)
        if self.variant == "PS":
            self._make_ps_parameters()
            self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self._round_input(x), self.quantized_weight(), self.bias)
