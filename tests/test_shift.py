"""Shift (DeepShift) operators against SPEC (section Operators, Shift).

Weights are ``S * 2^P`` with ``S in {-1, 0, +1}`` and an integer ``P in [-(2^(b-1) - 2), 0]`` ([-14, 0] for the
default 5 bits). Variant Q rounds a real weight, ``sign(w) * 2^round(log2|w|)`` with |w| clamped to
``[2^-(2^(b-1)-1), 1]``; variant PS learns ``P`` (``shift``) and ``S`` (``sign``), a sign below 0.3 in magnitude
becoming 0. All roundings use straight-through estimators. Activations are optionally rounded to fixed point
``floor(x / 2^-f) * 2^-f`` clipped to the integer range.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_shiftadd.ops import (ShiftConv2d, ShiftLinear, round_fixed_point, round_power_of_two, shift_range,
                              shift_sign_weight)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _assert_powers_of_two(q, lo, hi):
    nz = q[q != 0]
    e = torch.log2(nz.abs())
    assert torch.equal(e, e.round()), "exponents must be integers"
    assert e.min() >= lo and e.max() <= hi, (e.min(), e.max())


# --------------------------------------------------------------------------------------------------------------
# Q: power-of-two rounding
# --------------------------------------------------------------------------------------------------------------

def test_shift_range():
    assert shift_range(5) == (-14, 0)
    assert shift_range(3) == (-2, 0)
    assert shift_range(2) == (0, 0)
    assert shift_range(8) == (-126, 0)


def test_q_rounding_is_exact_power_of_two_in_range():
    w = torch.cat([torch.randn(4000) * 0.3, torch.randn(100) * 10, torch.randn(100) * 1e-6, torch.zeros(7)])
    q = round_power_of_two(w)
    _assert_powers_of_two(q, -14, 0)
    assert torch.equal(torch.sign(q), torch.sign(w))           # sign preserved, zeros stay zero
    assert torch.count_nonzero(q[-7:]) == 0
    nz = w != 0
    # round(log2|w|) of the clamped magnitude: within half an octave of |w| inside the representable range
    inside = nz & (w.abs() >= 2.0 ** -14) & (w.abs() <= 1)
    ratio = torch.log2(q[inside].abs() / w[inside].abs())
    assert ratio.abs().max() <= 0.5 + 1e-6


@pytest.mark.parametrize("bits, value, expected", [
    (5, 0.3, 0.25), (5, -0.3, -0.25), (5, 0.75, 1.0), (5, 0.7, 0.5), (5, 3.0, 1.0), (5, -100.0, -1.0),
    (5, 2.0 ** -10, 2.0 ** -10), (5, 1e-9, 2.0 ** -14), (5, -1e-9, -(2.0 ** -14)), (5, 0.0, 0.0),
    (3, 0.01, 0.25), (3, 0.3, 0.25), (3, 0.6, 0.5), (3, 7.0, 1.0), (3, -0.05, -0.25),
])
def test_q_rounding_values(bits, value, expected):
    assert round_power_of_two(torch.tensor([value], dtype=torch.float64), bits).item() == expected


def test_q_ste_gradient_is_identity():
    w = (torch.randn(5, 7) * 0.5).requires_grad_()
    round_power_of_two(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    g = torch.randn(5, 7)
    w.grad = None
    round_power_of_two(w).backward(g)
    assert torch.equal(w.grad, g)


# --------------------------------------------------------------------------------------------------------------
# PS: sign and shift
# --------------------------------------------------------------------------------------------------------------

def test_ps_weight_values():
    shift = torch.tensor([-3.4, -0.2, 2.0, -20.0, -5.6, -1.0])
    sign = torch.tensor([0.5, -0.9, 0.1, -0.31, 0.29, -0.3])
    w = shift_sign_weight(shift, sign)
    assert w.tolist() == [2.0 ** -3, -1.0, 0.0, -(2.0 ** -14), 0.0, -0.5]


def test_ps_weight_structure_random():
    shift = torch.empty(2000).uniform_(-16, 2)
    sign = torch.empty(2000).uniform_(-1, 1)
    w = shift_sign_weight(shift, sign)
    s = torch.where(sign.abs() < 0.3, 0.0, torch.sign(sign))
    assert set(torch.unique(torch.sign(w)).tolist()) <= {-1.0, 0.0, 1.0}
    assert torch.equal(torch.sign(w), s)                        # |sign| < 0.3 -> 0
    _assert_powers_of_two(w, -14, 0)
    p = shift.round().clamp(-14, 0)
    assert torch.equal(w, s * torch.exp2(p))


def test_ps_gradients_reach_shift_and_sign():
    shift = torch.tensor([-3.4, -0.2, -7.0, -2.6], requires_grad=True)
    sign = torch.tensor([0.5, -0.9, 0.1, -0.4], requires_grad=True)
    shift_sign_weight(shift, sign).sum().backward()
    p = torch.tensor([-3.0, 0.0, -7.0, -3.0])
    s = torch.tensor([1.0, -1.0, 0.0, -1.0])
    # d(S * 2^P)/dP = S * ln2 * 2^P (through the rounding STE), d/dS = 2^P
    torch.testing.assert_close(shift.grad, s * math.log(2) * torch.exp2(p))
    torch.testing.assert_close(sign.grad, torch.exp2(p))


def test_ps_module_gradients_reach_parameters():
    m = ShiftConv2d(3, 4, 3, padding=1, variant="PS")
    m(torch.randn(2, 3, 5, 5)).square().sum().backward()
    assert m.shift.grad is not None and m.sign.grad is not None
    assert m.sign.grad.abs().sum() > 0 and m.shift.grad.abs().sum() > 0
    assert m.bias.grad is not None


# --------------------------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["Q", "PS"])
def test_shift_conv2d_equals_conv_with_quantized_weight(variant):
    m = ShiftConv2d(4, 6, 3, stride=2, padding=1, groups=2, variant=variant)
    with torch.no_grad():
        m.bias.normal_()
    x = torch.randn(2, 4, 9, 8)
    qw = m.quantized_weight()
    _assert_powers_of_two(qw.detach(), -14, 0)
    y = m(x)
    expected = F.conv2d(x, qw.detach(), m.bias, stride=2, padding=1, groups=2)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert y.shape == nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)(x).shape


@pytest.mark.parametrize("variant", ["Q", "PS"])
def test_shift_linear_equals_linear_with_quantized_weight(variant):
    m = ShiftLinear(5, 3, variant=variant)
    x = torch.randn(2, 4, 5)
    qw = m.quantized_weight().detach()
    _assert_powers_of_two(qw, -14, 0)
    torch.testing.assert_close(m(x), F.linear(x, qw, m.bias), rtol=0, atol=0)


def test_q_module_weight_grad_is_straight_through():
    m = ShiftConv2d(2, 3, 3, bias=False)
    x = torch.randn(2, 2, 5, 5)
    gy = torch.randn(2, 3, 3, 3)
    m(x).backward(gy)
    w = m.quantized_weight().detach().requires_grad_()
    F.conv2d(x, w).backward(gy)
    torch.testing.assert_close(m.weight.grad, w.grad)  # gradient w.r.t. the quantised weight, passed through


@pytest.mark.parametrize("variant", ["Q", "PS"])
def test_weight_bits_changes_range(variant):
    m = ShiftConv2d(8, 16, 3, variant=variant, weight_bits=3)
    if variant == "Q":
        with torch.no_grad():
            m.weight.copy_(torch.randn_like(m.weight) * 0.1)   # many weights below 2^-2
    q = m.quantized_weight().detach()
    _assert_powers_of_two(q, -2, 0)
    assert (q.abs() == 0.25).any()
    if variant == "PS":
        assert m.shift.min() >= -2 and m.shift.max() <= 0      # SPEC: P ~ U(lo, 0)


def test_ps_init_ranges():
    m = ShiftLinear(64, 64, variant="PS")
    assert m.shift.min() >= -14 and m.shift.max() <= 0 and m.shift.min() < -12 and m.shift.max() > -2
    assert m.sign.min() >= -1 and m.sign.max() <= 1
    assert torch.count_nonzero(m.bias) == 0


def test_activation_fixed_point_values_and_ste():
    # (4, 2): step 2^-2 = 0.25, range [-2^3, 2^3 - 0.25] = [-8, 7.75]
    x = torch.tensor([0.3, -0.3, 1.0, 0.126, -0.01, 7.9, 100.0, -8.1, -100.0, 3.74], requires_grad=True)
    q = round_fixed_point(x, 4, 2)
    assert q.tolist() == [0.25, -0.5, 1.0, 0.0, -0.25, 7.75, 7.75, -8.0, -8.0, 3.5]
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # default 16.16: a fine grid
    y = torch.randn(1000) * 100
    qd = round_fixed_point(y)
    assert ((y - qd) >= 0).all() and ((y - qd) < 2.0 ** -16).all()
    assert torch.equal(qd * 2 ** 16, (qd * 2 ** 16).round())


def test_activation_bits_in_module():
    m = ShiftConv2d(2, 3, 3, padding=1, activation_bits=(4, 2))
    x = torch.randn(2, 2, 5, 5) * 4
    xq = torch.floor(x / 0.25).mul(0.25).clamp(-8, 7.75)
    torch.testing.assert_close(m(x), F.conv2d(xq, m.quantized_weight().detach(), m.bias, padding=1), rtol=0, atol=0)
    lin = ShiftLinear(4, 2, activation_bits=(4, 2))
    xl = torch.randn(3, 4) * 4
    xlq = torch.floor(xl / 0.25).mul(0.25).clamp(-8, 7.75)
    torch.testing.assert_close(lin(xl), F.linear(xlq, lin.quantized_weight().detach(), lin.bias), rtol=0, atol=0)
    # no activation rounding by default
    m0 = ShiftConv2d(2, 3, 3, padding=1)
    torch.testing.assert_close(m0(x), F.conv2d(x, m0.quantized_weight().detach(), m0.bias, padding=1))


@pytest.mark.parametrize("make, pattern", [
    (lambda: ShiftConv2d(2, 3, 3, variant="QP"), r"variant: unknown value 'QP'"),
    (lambda: ShiftLinear(2, 3, variant="float"), r"variant: unknown value 'float'"),
    (lambda: ShiftConv2d(2, 3, 3, weight_bits=1), r"weight_bits: must be in \[2, 8\], got 1"),
    (lambda: ShiftLinear(2, 3, weight_bits=0), r"weight_bits: must be in \[2, 8\], got 0"),
    (lambda: ShiftConv2d(2, 3, 3, activation_bits=(0, 4)), r"activation_bits: .*\(0, 4\)"),
    (lambda: ShiftLinear(2, 3, activation_bits=(4, -1)), r"activation_bits: .*\(4, -1\)"),
    (lambda: round_power_of_two(torch.ones(2), 1), r"weight_bits"),
], ids=["variant-conv", "variant-linear", "bits-conv", "bits-linear", "act-int", "act-frac", "functional-bits"])
def test_bad_arguments_raise_value_error(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_variant_is_case_insensitive():
    assert ShiftLinear(2, 3, variant="ps").variant == "PS"
    assert ShiftConv2d(2, 3, 1, variant="q").variant == "Q"


def test_state_dict_keys():
    ps = ShiftConv2d(2, 3, 3, variant="PS")
    assert set(ps.state_dict()) == {"shift", "sign", "bias"}
    assert "weight" not in dict(ps.named_parameters())
    assert ps.state_dict()["shift"].shape == (3, 2, 3, 3) == ps.state_dict()["sign"].shape
    assert set(ShiftLinear(2, 3, variant="PS", bias=False).state_dict()) == {"shift", "sign"}
    q = ShiftConv2d(2, 3, 3)
    assert list(q.state_dict()) == list(nn.Conv2d(2, 3, 3).state_dict())
    # PS state dicts round-trip
    ps2 = ShiftConv2d(2, 3, 3, variant="PS")
    ps2.load_state_dict(ps.state_dict())
    assert torch.equal(ps2.quantized_weight(), ps.quantized_weight())


def test_load_float_weight_round_trip_q():
    conv = nn.Conv2d(3, 4, 3)
    m = ShiftConv2d(3, 4, 3)
    m.load_float_weight(conv.weight.detach())
    assert torch.equal(m.weight, conv.weight)
    assert torch.equal(m.quantized_weight(), round_power_of_two(conv.weight.detach()))
    m2 = ShiftConv2d(3, 4, 3)
    m2.load_state_dict(m.state_dict())
    assert torch.equal(m2.quantized_weight(), m.quantized_weight())


def test_load_float_weight_ps_reproduces_power_of_two_weight():
    exponent = torch.randint(-14, 1, (4, 3, 3, 3)).float()
    sign = torch.where(torch.rand(4, 3, 3, 3) < 0.5, -1.0, 1.0)
    w = sign * torch.exp2(exponent)
    m = ShiftConv2d(3, 4, 3, variant="PS")
    m.load_float_weight(w)
    assert torch.equal(m.quantized_weight().detach(), w)
    # a generic float weight lands on its Q rounding (same sign, nearest exponent in range)
    wf = torch.randn(4, 3, 3, 3) * 0.2
    m.load_float_weight(wf)
    torch.testing.assert_close(m.quantized_weight().detach(), round_power_of_two(wf))


def test_weight_bits_above_the_float32_exponent_range_are_rejected():
    with pytest.raises(ValueError, match=r"weight_bits: must be in \[2, 8\], got 9"):
        ShiftConv2d(2, 2, 1, weight_bits=9)
    w = torch.tensor([1e-3, -0.3, 0.7, 1e-40])  # the last is below 2^-126 (a float32 denormal)
    q8 = round_power_of_two(w, 8)  # exponents down to -126 stay exact on the C++ path
    assert torch.equal(q8[:3], torch.tensor([2.0 ** -10, -0.25, 0.5])) and q8[3] == 2.0 ** -126
