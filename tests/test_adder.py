"""Add (AdderNet) operators against SPEC (section Operators), for the "reference" and "cpu" backends.

SPEC semantics pinned here:

- forward ``Y[n,o,p] = -sum_k |X[n,k,p] - W[o,k]|``, zero padding (a padded position contributes ``-|W|``);
- weight gradient, full precision: ``dL/dW[o,k] = sum_{n,p} g[n,o,p] * (X[n,k,p] - W[o,k])``;
- input gradient: ``dL/dX[n,k,p] = sum_o g[n,o,p] * HardTanh(W[o,k] - X[n,k,p])``;
- adaptive learning rate: weight gradient rescaled to ``eta * sqrt(numel) * grad / ||grad||`` (eta=0.2 in the
  modules, ``adaptive_lr=False`` or functional ``eta=None`` turns it off); module weights start N(0, 1).

The naive implementation below is written from SPEC with ``F.unfold``/``F.fold`` and broadcasting and shares
no code with the package.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_shiftadd.kernels import cpu, reference
from nni_shiftadd.ops import (AdderConv1d, AdderConv2d, AdderLinear, adaptive_lr_scale, adder_conv1d, adder_conv2d,
                              adder_linear)
from nni_shiftadd.ops import adder as adder_mod

ROOT = Path(__file__).resolve().parents[1]
NEEDS_CXX = pytest.mark.skipif("cpu.compiler() is None", reason="no C++ compiler for the cpu backend")
BACKEND_NAMES = ("reference", "cpu")
BACKENDS = ("reference", pytest.param("cpu", marks=NEEDS_CXX))
F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------------------
# Naive implementation, straight from SPEC
# --------------------------------------------------------------------------------------------------------------

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _naive_cols_w(x, w, stride, padding, dilation, groups):
    """cols [N, G, 1, K, L] and weights [1, G, O/G, K, 1] (K = C/G * kh * kw, in the weight's (c, ky, kx) order)."""
    N = x.shape[0]
    O, Cg, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=_pair(dilation), padding=_pair(padding), stride=_pair(stride))
    L = cols.shape[-1]
    cols = cols.view(N, groups, 1, Cg * kh * kw, L)
    wg = w.reshape(1, groups, O // groups, Cg * kh * kw, 1)
    return cols, wg


def _out_hw(x, w, stride, padding, dilation):
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    return tuple((x.shape[2 + i] + 2 * p[i] - d[i] * (w.shape[2 + i] - 1) - 1) // s[i] + 1 for i in range(2))


def naive_adder_conv2d(x, w, g, stride=1, padding=0, dilation=1, groups=1):
    """SPEC forward, full-precision weight gradient and HardTanh input gradient for the upstream gradient ``g``."""
    N, O = x.shape[0], w.shape[0]
    cols, wg = _naive_cols_w(x, w, stride, padding, dilation, groups)
    diff = cols - wg                                           # X - W: [N, G, O/G, K, L]
    y = -diff.abs().sum(3).reshape(N, O, *_out_hw(x, w, stride, padding, dilation))
    gg = g.reshape(N, groups, O // groups, 1, -1)              # [N, G, O/G, 1, L]
    gw = (gg * diff).sum((0, 4)).reshape(w.shape)
    dcols = (gg * (-diff).clamp(-1, 1)).sum(2)                 # HardTanh(W - X): [N, G, K, L]
    gx = F.fold(dcols.reshape(N, -1, dcols.shape[-1]), x.shape[2:], w.shape[2:], dilation=_pair(dilation),
                padding=_pair(padding), stride=_pair(stride))
    return y, gx, gw


def naive_adder_linear(x, w, g):
    diff = x[..., None, :] - w                                 # [*, O, K]
    y = -diff.abs().sum(-1)
    gw = (g[..., None] * diff).reshape(-1, *w.shape).sum(0)
    gx = (g[..., None] * (-diff).clamp(-1, 1)).sum(-2)
    return y, gx, gw


def run_op(fn, x, w, g, **kw):
    """Output, input grad and weight grad of ``fn(x, w, **kw)`` for upstream gradient ``g``."""
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = fn(x, w, **kw)
    y.backward(g)
    return y.detach(), x.grad, w.grad


def _assert_close(a, b, tol, what=""):
    """max |a - b| <= tol * max |b| (relative to the largest reference magnitude)."""
    assert a.shape == b.shape, (what, a.shape, b.shape)
    assert a.dtype == b.dtype, (what, a.dtype, b.dtype)
    scale = b.abs().max().clamp_min(1e-30)
    err = ((a - b).abs().max() / scale).item()
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
GEOMETRIES = {
    "k3-nonsquare": (2, 3, 7, 9, 4, 3, 1, 0, 1, 1),
    "k3-s2-p1-g2": (2, 4, 8, 8, 6, 3, 2, 1, 1, 2),
    "k3-p2-d2-depthwise-batch1": (1, 4, 9, 7, 4, 3, 1, 2, 2, 4),
    "k3-s2-p2-depthwise-mult2": (2, 4, 6, 6, 8, 3, 2, 2, 1, 4),
    "k1-pointwise": (2, 6, 5, 6, 4, 1, 1, 0, 1, 1),
    "k1-pointwise-g2": (2, 6, 5, 6, 4, 1, 1, 0, 1, 2),
    "k1-pointwise-depthwise": (2, 6, 3, 5, 6, 1, 1, 0, 1, 6),
    "k1-s2": (2, 6, 5, 6, 4, 1, 2, 0, 1, 1),
    "k1-p1": (1, 6, 5, 6, 4, 1, 1, 1, 1, 1),
    "k5-p2": (2, 3, 10, 8, 5, 5, 1, 2, 1, 1),
    "k5-s2-p1-d2": (1, 2, 11, 9, 3, 5, 2, 1, 2, 1),
    "k5-p1-g2": (2, 4, 7, 6, 2, 5, 1, 1, 1, 2),
    "k3x1-mixed-tuples": (3, 2, 6, 5, 3, (3, 1), (2, 1), (1, 0), (1, 2), 1),
    "k2x3-mixed-tuples": (2, 2, 5, 7, 4, (2, 3), (1, 2), (0, 2), (2, 1), 2),
    # stride 1 with the output as wide as the input: the im2col's one-copy path (rows cut, padded, or all outside)
    "k3x1-rows-only": (2, 3, 6, 5, 4, (3, 1), 1, 0, 1, 1),
    "k1x3-p1-taller": (2, 3, 4, 6, 4, (1, 3), 1, 1, 1, 1),
    "k3-p3-d3-rows-outside": (1, 2, 3, 5, 3, 3, 1, 3, 3, 1),
}


def _conv_case(geom, dtype=F64):
    N, C, H, W, O, k, s, p, d, g = geom
    kh, kw = _pair(k)
    x = torch.randn(N, C, H, W, dtype=dtype)
    w = torch.randn(O, C // g, kh, kw, dtype=dtype)
    Ho, Wo = _out_hw(x, w, s, p, d)
    gy = torch.randn(N, O, Ho, Wo, dtype=dtype)
    return x, w, gy, dict(stride=s, padding=p, dilation=d, groups=g)


# --------------------------------------------------------------------------------------------------------------
# 1. Exactness against the naive implementation (float64)
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_conv2d_matches_naive_float64(backend, geom):
    x, w, gy, kw = _conv_case(geom)
    y, gx, gw = run_op(adder_conv2d, x, w, gy, backend=backend, **kw)
    ny, ngx, ngw = naive_adder_conv2d(x, w, gy, **kw)
    _assert_close(y, ny, 1e-12, "forward")
    _assert_close(gw, ngw, 1e-12, "weight grad")
    _assert_close(gx, ngx, 1e-12, "input grad")


def test_padding_contributes_minus_abs_weight():
    """A 1x1 input padded by 1 under a 3x3 kernel: the single output sees one real tap and eight padded
    zeros, each contributing -|W| (SPEC), i.e. the result equals -sum |x_pad - w| on the zero-padded input."""
    x = torch.randn(1, 1, 1, 1, dtype=F64)
    w = torch.randn(2, 1, 3, 3, dtype=F64)
    for backend in BACKEND_NAMES if cpu.compiler() else ("reference",):
        y = adder_conv2d(x, w, padding=1, backend=backend)
        xp = F.pad(x, (1, 1, 1, 1))  # explicit zeros
        expected = -(xp - w).abs().sum((1, 2, 3)).view(1, 2, 1, 1)
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
        # the part from the padded positions is -sum |W| over those taps
        centre = -(x[0, 0, 0, 0] - w[:, 0, 1, 1]).abs()
        pad_part = -w.abs().sum((1, 2, 3)) + w[:, 0, 1, 1].abs()
        torch.testing.assert_close(y.view(2), centre + pad_part, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7)], ids=["1d", "2d", "3d-leading-dims"])
def test_linear_matches_naive_float64(backend, shape):
    x = torch.randn(*shape, dtype=F64)
    w = torch.randn(5, 7, dtype=F64)
    gy = torch.randn(*shape[:-1], 5, dtype=F64)
    y, gx, gw = run_op(adder_linear, x, w, gy, backend=backend)
    ny, ngx, ngw = naive_adder_linear(x, w, gy)
    _assert_close(y, ny, 1e-12, "forward")
    _assert_close(gw, ngw, 1e-12, "weight grad")
    _assert_close(gx, ngx, 1e-12, "input grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", [1, 9, 17, 30, 70, 74, 90])
def test_linear_blocking_edges_match_naive_float64(backend, tokens):
    """Token counts that pick each panel width of the CPU kernel, with output channels spanning several blocks of
    the input gradient's reduction and row counts that leave remainders in every register block."""
    x = torch.randn(tokens, 37, dtype=F64)
    w = torch.randn(301, 37, dtype=F64)
    gy = torch.randn(tokens, 301, dtype=F64)
    y, gx, gw = run_op(adder_linear, x, w, gy, backend=backend)
    ny, ngx, ngw = naive_adder_linear(x, w, gy)
    _assert_close(y, ny, 1e-12, "forward")
    _assert_close(gw, ngw, 1e-12, "weight grad")
    _assert_close(gx, ngx, 1e-12, "input grad")


CONV1D = {  # (N, C, L, O, k, stride, padding, dilation, groups)
    "depthwise-k3-p1": (2, 6, 11, 6, 3, 1, 1, 1, 6),
    "depthwise-k7-p3": (3, 4, 13, 4, 7, 1, 3, 1, 4),
    "depthwise-k7-p6-d2": (1, 4, 9, 4, 7, 1, 6, 2, 4),
    "dense-k3-s2-p2": (2, 3, 10, 5, 3, 2, 2, 1, 1),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", CONV1D.values(), ids=CONV1D.keys())
def test_conv1d_matches_naive_float64(backend, geom):
    N, C, L, O, k, s, p, d, g = geom
    x = torch.randn(N, C, L, dtype=F64)
    w = torch.randn(O, C // g, k, dtype=F64)
    Lo = (L + 2 * p - d * (k - 1) - 1) // s + 1
    gy = torch.randn(N, O, Lo, dtype=F64)
    y, gx, gw = run_op(adder_conv1d, x, w, gy, stride=s, padding=p, dilation=d, groups=g, backend=backend)
    ny, ngx, ngw = naive_adder_conv2d(x[:, :, None], w[:, :, None], gy[:, :, None], stride=(1, s), padding=(0, p),
                                      dilation=(1, d), groups=g)
    _assert_close(y, ny[:, :, 0], 1e-12, "forward")
    _assert_close(gw, ngw[:, :, 0], 1e-12, "weight grad")
    _assert_close(gx, ngx[:, :, 0], 1e-12, "input grad")


# --------------------------------------------------------------------------------------------------------------
# 2. float32 on realistic shapes: cpu vs reference
# --------------------------------------------------------------------------------------------------------------
# Tolerance 1e-5 relative to max |reference| for the forward and both gradients. Each output sums K = 576
# (conv) or 256 (linear) float32 terms; the cpu kernel evaluates -sum|x - w| as 2*sum min(x, w) - sum x - sum w,
# so its rounding differs from the reference's. Typical accumulated error is ~sqrt(K) * eps32 ~ 1.5e-6 of the
# magnitude (measured: forward 1.6e-6 / 1.0e-6, input grad 4.7e-7 / 1.4e-6), worst case K * eps32 ~ 3.4e-5.
# Both backends share the weight-gradient GEMM. 1e-5 leaves a >= 6x margin over the measured error.
F32_TOL = 1e-5


@NEEDS_CXX
def test_float32_conv_cpu_vs_reference():
    x = torch.randn(8, 64, 16, 16)
    w = torch.randn(64, 64, 3, 3)
    gy = torch.randn(8, 64, 16, 16)
    ref = run_op(adder_conv2d, x, w, gy, padding=1, backend="reference")
    fast = run_op(adder_conv2d, x, w, gy, padding=1, backend="cpu")
    for a, b, what in zip(fast, ref, ("forward", "input grad", "weight grad")):
        assert a.dtype == torch.float32
        _assert_close(a, b, F32_TOL, what)


@NEEDS_CXX
@pytest.mark.parametrize("batch", [3, 5])
def test_float32_conv_7x7_panel_tails_cpu_vs_reference(batch):
    """147 and 245 positions: whole 64-column panels followed by a tail that takes a narrower panel."""
    x = torch.randn(batch, 8, 7, 7)
    w = torch.randn(16, 8, 3, 3)
    gy = torch.randn(batch, 16, 7, 7)
    ref = run_op(adder_conv2d, x, w, gy, padding=1, backend="reference")
    fast = run_op(adder_conv2d, x, w, gy, padding=1, backend="cpu")
    for a, b, what in zip(fast, ref, ("forward", "input grad", "weight grad")):
        _assert_close(a, b, F32_TOL, what)


@NEEDS_CXX
def test_float32_linear_cpu_vs_reference():
    x = torch.randn(30, 256)
    w = torch.randn(512, 256)
    gy = torch.randn(30, 512)
    ref = run_op(adder_linear, x, w, gy, backend="reference")
    fast = run_op(adder_linear, x, w, gy, backend="cpu")
    for a, b, what in zip(fast, ref, ("forward", "input grad", "weight grad")):
        assert a.dtype == torch.float32
        _assert_close(a, b, F32_TOL, what)


# --------------------------------------------------------------------------------------------------------------
# 3. gradcheck and surrogate derivatives (float64)
# --------------------------------------------------------------------------------------------------------------

GRAD_GEOMS = {  # (N, C, H, W, O, kernel, stride, padding, dilation, groups)
    "k3-p1": (2, 3, 5, 4, 4, 3, 1, 1, 1, 1),
    "k3-s2-p2-g2": (2, 4, 5, 5, 4, 3, 2, 2, 1, 2),
    "k3-d2-p1-depthwise": (1, 3, 6, 5, 3, 3, 1, 1, 2, 3),
    "k1-pointwise": (2, 4, 3, 3, 3, 1, 1, 0, 1, 1),
}


def _separated_case(geom):
    """Inputs in [-0.4, 0.4], weights with |w| in [1.5, 2.5] and random signs: every |w - x| >= 1.1."""
    N, C, H, W, O, k, s, p, d, g = geom
    x = (torch.rand(N, C, H, W, dtype=F64) - 0.5) * 0.8
    mag = 1.5 + torch.rand(O, C // g, k, k, dtype=F64)
    sign = torch.where(torch.rand(O, C // g, k, k) < 0.5, -1.0, 1.0).to(F64)
    return x, mag * sign, dict(stride=s, padding=p, dilation=d, groups=g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", GRAD_GEOMS.values(), ids=GRAD_GEOMS.keys())
def test_gradcheck_input_where_hardtanh_is_exact(backend, geom):
    """gradcheck w.r.t. the input only.

    AdderNet's backward is a surrogate by design: the input gradient uses HardTanh(w - x) instead of the true
    derivative sign(w - x) of -|x - w|, and the weight gradient is the full-precision (x - w), not sign(x - w).
    So a numerical gradcheck cannot pass in general. It does pass for the input when every |w - x| >= 1, where
    HardTanh(w - x) = sign(w - x) exactly: inputs lie in [-0.4, 0.4] (zero padding, 0, also lies in that range)
    and |w| in [1.5, 2.5], so |w - x| >= 1.1 even after gradcheck's small perturbations. The weight is held
    fixed (requires_grad=False); its gradient is checked against the surrogate in the next tests.
    """
    x, w, kw = _separated_case(geom)
    x.requires_grad_()
    assert not w.requires_grad
    assert torch.autograd.gradcheck(lambda t: adder_conv2d(t, w, backend=backend, **kw), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_input_linear_and_conv1d(backend):
    """As above (all |w - x| >= 1, so HardTanh equals the exact sign derivative), for linear and conv1d."""
    x = ((torch.rand(2, 3, 5, dtype=F64) - 0.5) * 0.8).requires_grad_()
    w = (1.5 + torch.rand(4, 5, dtype=F64)) * torch.where(torch.rand(4, 5) < 0.5, -1.0, 1.0).to(F64)
    assert torch.autograd.gradcheck(lambda t: adder_linear(t, w, backend=backend), (x,))
    x1 = ((torch.rand(2, 4, 7, dtype=F64) - 0.5) * 0.8).requires_grad_()
    w1 = (1.5 + torch.rand(4, 1, 3, dtype=F64)) * torch.where(torch.rand(4, 1, 3) < 0.5, -1.0, 1.0).to(F64)
    assert torch.autograd.gradcheck(lambda t: adder_conv1d(t, w1, padding=2, groups=4, backend=backend), (x1,))


def _surrogate(x, w, elementwise, stride=1, padding=0, dilation=1, groups=1):
    """``sum_k elementwise(X[n,k,p] - W[o,k])`` computed with autograd-differentiable torch ops."""
    cols, wg = _naive_cols_w(x, w, stride, padding, dilation, groups)
    y = elementwise(cols - wg).sum(3)
    return y.reshape(x.shape[0], w.shape[0], *_out_hw(x, w, stride, padding, dilation))


def _quadratic(d):
    return -0.5 * d * d                 # d/dW = (X - W): AdderNet's full-precision weight gradient


def _neg_huber(d):
    return -F.huber_loss(d, torch.zeros_like(d), reduction="none", delta=1.0)  # d/dX = clamp(W - X, -1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", GRAD_GEOMS.values(), ids=GRAD_GEOMS.keys())
def test_weight_grad_is_exact_grad_of_quadratic_surrogate(backend, geom):
    """The full-precision weight gradient sum g*(X - W) is the exact weight gradient of -0.5 * sum (X - W)^2."""
    x, w, gy, kw = _conv_case(geom)
    _, _, gw = run_op(adder_conv2d, x, w, gy, backend=backend, **kw)
    wr = w.clone().requires_grad_()
    (expected,) = torch.autograd.grad(_surrogate(x, wr, _quadratic, **kw), wr, gy)
    _assert_close(gw, expected, 1e-12, "weight grad")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", GRAD_GEOMS.values(), ids=GRAD_GEOMS.keys())
def test_input_grad_is_exact_grad_of_huber_surrogate(backend, geom):
    """On unrestricted N(0,1) data (many |w - x| < 1), the HardTanh input gradient equals the exact input
    gradient of -sum huber(X - W, delta=1), whose derivative is clamp(W - X, -1, 1)."""
    x, w, gy, kw = _conv_case(geom)
    assert ((x.abs() < 1).any())  # the clamp region is exercised
    _, gx, _ = run_op(adder_conv2d, x, w, gy, backend=backend, **kw)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(_surrogate(xr, w, _neg_huber, **kw), xr, gy)
    _assert_close(gx, expected, 1e-12, "input grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_surrogate_grads(backend):
    x = torch.randn(3, 2, 6, dtype=F64)
    w = torch.randn(4, 6, dtype=F64)
    gy = torch.randn(3, 2, 4, dtype=F64)
    _, gx, gw = run_op(adder_linear, x, w, gy, backend=backend)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    (ew,) = torch.autograd.grad(_quadratic(xr[..., None, :] - wr).sum(-1), wr, gy)
    (ex,) = torch.autograd.grad(_neg_huber(xr[..., None, :] - wr).sum(-1), xr, gy)
    _assert_close(gw, ew, 1e-12, "weight grad")
    _assert_close(gx, ex, 1e-12, "input grad")


# --------------------------------------------------------------------------------------------------------------
# 4. Batch chunking
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("geom", [(5, 4, 6, 5, 6, 3, 2, 1, 1, 2), (4, 6, 3, 4, 5, 1, 1, 0, 1, 1)],
                         ids=["k3-s2-g2", "pointwise"])
def test_chunked_equals_unchunked(monkeypatch, backend, geom):
    x, w, gy, kw = _conv_case(geom)
    full = run_op(adder_conv2d, x, w, gy, backend=backend, **kw)

    impl = {"reference": reference, "cpu": cpu}[backend]  # the module AdderFunction dispatches to
    calls = {"l1mm": [], "htmm": []}
    for name in calls:
        original = getattr(impl, name)

        def spy(*args, _orig=original, _name=name):
            calls[_name].append(args[1].shape[-1])  # columns = chunk * L
            return _orig(*args)

        monkeypatch.setattr(impl, name, spy)
    monkeypatch.setattr(adder_mod, "WORKSPACE_BYTES", 1)  # one sample per chunk ...
    monkeypatch.setattr(adder_mod, "MAX_CHUNKS", x.shape[0])  # ... when the batch may be split that finely
    chunked = run_op(adder_conv2d, x, w, gy, backend=backend, **kw)

    N, L = x.shape[0], gy.shape[2] * gy.shape[3]
    assert calls["l1mm"] == [L] * N and calls["htmm"] == [L] * N
    for a, b, what in zip(chunked, full, ("forward", "input grad", "weight grad")):
        _assert_close(a, b, 1e-13, what)


# --------------------------------------------------------------------------------------------------------------
# 5. Adaptive learning rate
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_adaptive_lr_module_default_eta(backend):
    m = AdderConv2d(4, 6, 3, padding=1, backend=backend).double()
    assert m.adaptive_lr and m.eta == 0.2
    x = torch.randn(2, 4, 5, 5, dtype=F64)
    gy = torch.randn(2, 6, 5, 5, dtype=F64)
    m(x).backward(gy)
    raw = naive_adder_conv2d(x, m.weight.detach(), gy, padding=1)[2]
    g = m.weight.grad
    assert g.norm().item() == pytest.approx(0.2 * math.sqrt(m.weight.numel()), rel=1e-12)
    torch.testing.assert_close(g, raw * (0.2 * math.sqrt(raw.numel()) / raw.norm()), rtol=1e-12, atol=0)
    torch.testing.assert_close(m.bias.grad, gy.sum((0, 2, 3)))  # the bias is not rescaled


@pytest.mark.parametrize("eta", [0.05, 0.5])
def test_adaptive_lr_functional_eta(eta):
    x = torch.randn(3, 5, dtype=F64)
    w = torch.randn(4, 5, dtype=F64, requires_grad=True)
    adder_linear(x, w, eta=eta).sum().backward()
    assert w.grad.norm().item() == pytest.approx(eta * math.sqrt(20), rel=1e-12)


@pytest.mark.parametrize("cls, args, shape", [(AdderConv2d, (3, 4, 3), (2, 3, 5, 5)), (AdderLinear, (5, 3), (4, 5)),
                                              (AdderConv1d, (2, 2, 3), (2, 2, 6))])
def test_adaptive_lr_zero_grad_stays_zero(cls, args, shape):
    m = cls(*args)
    (m(torch.randn(*shape)) * 0).sum().backward()
    assert torch.isfinite(m.weight.grad).all()
    assert torch.count_nonzero(m.weight.grad) == 0
    assert torch.count_nonzero(adaptive_lr_scale(torch.zeros(3, 4), 0.2)) == 0
    big = adaptive_lr_scale(torch.zeros(4096), 0.2)  # eta * sqrt(n) / tiny overflows float32
    assert torch.isfinite(big).all() and torch.count_nonzero(big) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_adaptive_lr_off_gives_raw_gradient(backend):
    m = AdderConv2d(4, 6, 3, stride=2, bias=False, adaptive_lr=False, backend=backend).double()
    x = torch.randn(2, 4, 7, 7, dtype=F64)
    gy = torch.randn(2, 6, 3, 3, dtype=F64)
    m(x).backward(gy)
    raw = naive_adder_conv2d(x, m.weight.detach(), gy, stride=2)[2]
    _assert_close(m.weight.grad, raw, 1e-12, "weight grad")
    assert m.weight.grad.norm().item() != pytest.approx(0.2 * math.sqrt(raw.numel()), rel=1e-3)


# --------------------------------------------------------------------------------------------------------------
# 6. Bad input
# --------------------------------------------------------------------------------------------------------------

BAD = {
    "rank-3-into-conv2d": (lambda: AdderConv2d(3, 4, 3)(torch.randn(2, 3, 8)),
                           r"input: expected a 4-D tensor .*got shape \(2, 3, 8\)"),
    "rank-5-into-conv2d": (lambda: AdderConv2d(3, 4, 3)(torch.randn(1, 2, 3, 8, 8)),
                           r"input: expected a 4-D tensor .*\(1, 2, 3, 8, 8\)"),
    "rank-4-into-conv1d": (lambda: AdderConv1d(3, 4, 3)(torch.randn(2, 3, 8, 8)),
                           r"input: expected a 3-D tensor .*\(2, 3, 8, 8\)"),
    "channel-mismatch": (lambda: AdderConv2d(3, 4, 3)(torch.randn(2, 5, 8, 8)),
                         r"input: expected 3 channels.*got 5"),
    "channel-mismatch-groups": (lambda: AdderConv2d(4, 4, 3, groups=2)(torch.randn(2, 6, 8, 8)),
                                r"input: expected 4 channels.*groups=2.*got 6"),
    "integer-input": (lambda: AdderConv2d(3, 4, 3)(torch.ones(2, 3, 8, 8, dtype=torch.int64)),
                      r"input: expected a floating-point dtype, got torch\.int64"),
    "integer-input-linear": (lambda: AdderLinear(3, 4)(torch.ones(2, 3, dtype=torch.int32)),
                             r"input: expected a floating-point dtype, got torch\.int32"),
    "dtype-mismatch": (lambda: AdderConv2d(3, 4, 3)(torch.randn(2, 3, 8, 8, dtype=F64)),
                       r"input: dtype torch\.float64 differs from weight dtype torch\.float32"),
    "groups-in-channels": (lambda: AdderConv2d(3, 4, 3, groups=2), r"groups: 2 must divide in_channels=3"),
    "groups-out-channels": (lambda: AdderConv2d(4, 6, 3, groups=4), r"groups: 4 must divide out_channels=6"),
    "groups-conv1d": (lambda: AdderConv1d(6, 4, 3, groups=3), r"groups: 3 must divide out_channels=4"),
    "groups-zero": (lambda: AdderConv2d(4, 4, 3, groups=0), r"groups: must be >= 1, got 0"),
    "unknown-backend-module": (lambda: AdderConv2d(3, 4, 3, backend="cuda"), r"backend: unknown value 'cuda'"),
    "unknown-backend-linear": (lambda: AdderLinear(3, 4, backend="fast"), r"backend: unknown value 'fast'"),
    "unknown-backend-functional": (lambda: adder_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3),
                                                        backend="gpu"), r"backend: unknown value 'gpu'"),
    "cpu-backend-half": (lambda: adder_conv2d(torch.randn(1, 2, 4, 4).half(), torch.randn(3, 2, 3, 3).half(),
                                              backend="cpu"), r"backend: 'cpu' cannot run on a torch\.float16"),
    "padding-mode-conv2d": (lambda: AdderConv2d(3, 4, 3, padding=1, padding_mode="reflect"),
                            r"padding_mode: only 'zeros' .*got 'reflect'"),
    "padding-mode-conv1d": (lambda: AdderConv1d(3, 4, 3, padding=1, padding_mode="circular"),
                            r"padding_mode: only 'zeros' .*got 'circular'"),
    "linear-in-features": (lambda: AdderLinear(5, 3)(torch.randn(2, 4)),
                           r"input: expected in_features=5 in the last dim, got shape \(2, 4\)"),
    "linear-in-features-3d": (lambda: AdderLinear(5, 3)(torch.randn(2, 3, 6)),
                              r"input: expected in_features=5 .*\(2, 3, 6\)"),
    "eta-nonpositive": (lambda: AdderLinear(5, 3, eta=0.0), r"eta: must be > 0, got 0.0"),
    "input-too-small": (lambda: AdderConv2d(2, 2, 5)(torch.randn(1, 2, 3, 8)),
                        r"input: spatial size \(3, 8\) is too small for kernel \(5, 5\)"),
    "weight-rank-functional": (lambda: adder_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3)),
                               r"weight: expected a 4-D tensor .*\(3, 2, 3\)"),
}


@pytest.mark.parametrize("make, pattern", BAD.values(), ids=BAD.keys())
def test_bad_input_raises_value_error(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# --------------------------------------------------------------------------------------------------------------
# 7. NaN / Inf propagate, nothing is clamped
# --------------------------------------------------------------------------------------------------------------

def _receptive_mask(bad, w_shape, **kw):
    """Outputs whose receptive field contains a flagged input (all output channels of the group)."""
    ones = torch.ones(1, 1, *w_shape[2:], dtype=F64)
    hit = F.conv2d(bad.to(F64).sum(1, keepdim=True), ones, stride=kw.get("stride", 1), padding=kw.get("padding", 0))
    return hit > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k, pad", [(1, 0), (3, 1)], ids=["1x1", "3x3-p1"])
def test_nan_input_propagates_only_where_it_is_used(backend, k, pad):
    x = torch.randn(2, 3, 5, 6)
    x[1, 2, 1, 3] = float("nan")
    w = torch.randn(4, 3, k, k, requires_grad=True)
    xr = x.clone().requires_grad_()
    y = adder_conv2d(xr, w, padding=pad, backend=backend)
    mask = _receptive_mask(x.isnan(), w.shape, padding=pad).expand_as(y)
    assert torch.equal(y.isnan(), mask)
    assert mask.sum() == (4 if k == 1 else 4 * 9)
    if k == 1:  # exactly y[1, :, 1, 3]
        assert y[1, :, 1, 3].isnan().all() and y.isnan().sum() == 4
    assert torch.isfinite(y[~mask]).all()
    y.backward(torch.ones_like(y))
    if k == 1:
        # input grad: NaN only at the NaN element; weight grad: NaN in column c=2 for every output channel
        assert torch.equal(xr.grad.isnan(), x.isnan())
        expected = torch.zeros(4, 3, 1, 1, dtype=torch.bool)
        expected[:, 2] = True
        assert torch.equal(w.grad.isnan(), expected)
    else:
        assert xr.grad[1, 2, 1, 3].isnan() and w.grad.isnan().any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_weight_propagates_to_its_output_channel(backend):
    x = torch.randn(2, 3, 4, 4)
    w = torch.randn(4, 3, 3, 3)
    w[2, 1, 0, 2] = float("nan")
    y = adder_conv2d(x, w, padding=1, backend=backend)
    assert y[:, 2].isnan().all()
    assert torch.isfinite(y[:, [0, 1, 3]]).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_pos_inf_input_gives_nonfinite_affected_outputs(backend):
    x = torch.randn(2, 3, 5, 6)
    x[0, 1, 2, 2] = float("inf")
    w = torch.randn(4, 3, 3, 3)
    y = adder_conv2d(x, w, padding=1, backend=backend)
    mask = _receptive_mask(x.isinf(), w.shape, padding=1).expand_as(y)
    assert not torch.isfinite(y[mask]).any()
    assert torch.isneginf(y[mask]).all()  # -|inf - w| = -inf
    assert torch.isfinite(y[~mask]).all()


@NEEDS_CXX
def test_cpu_neg_inf_input_forward_matches_reference():
    x = torch.randn(1, 3, 2, 2)
    x[0, 0, 0, 0] = float("-inf")
    w = torch.randn(2, 3, 1, 1)
    ref = adder_conv2d(x, w, backend="reference")
    assert torch.isneginf(ref[0, :, 0, 0]).all()
    torch.testing.assert_close(adder_conv2d(x, w, backend="cpu"), ref, rtol=1e-5, atol=1e-5)


@NEEDS_CXX
def test_cpu_pos_inf_input_grad_matches_reference():
    x = torch.randn(1, 3, 2, 2)
    x[0, 0, 0, 0] = float("inf")
    w = torch.randn(2, 3, 1, 1)
    grads = []
    for backend in BACKEND_NAMES:
        xr = x.clone().requires_grad_()
        adder_conv2d(xr, w, backend=backend).sum().backward()
        grads.append(xr.grad)
    assert grads[0][0, 0, 0, 0] == -2.0  # sum over 2 output channels of HardTanh(w - inf) = -1
    torch.testing.assert_close(grads[1], grads[0])


@NEEDS_CXX
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_cpu_nonfinite_input_in_full_panels_matches_reference(dtype, value):
    """Positions enough for every packed panel of the CPU kernel to be full, where its vectorised epilogues run."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 16, 16, dtype=dtype, generator=gen)
    x[1, 3, 5, 7] = value
    w = torch.randn(16, 8, 3, 3, dtype=dtype, generator=gen)
    grad = torch.randn(4, 16, 16, 16, dtype=dtype, generator=gen)
    results = []
    for backend in BACKEND_NAMES:
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = adder_conv2d(xr, wr, padding=1, eta=None, backend=backend)
        y.backward(grad)
        results.append((y.detach(), xr.grad, wr.grad))
    assert not torch.isfinite(results[0][0]).all()  # the case is one the epilogues must notice
    for fast, ref in zip(*results[::-1]):
        torch.testing.assert_close(fast, ref, equal_nan=True, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------------------------------------------
# 8. CPU kernel build, cache and fallback
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_kernel_state(monkeypatch, tmp_path):
    """An empty kernel cache and a forgotten library; the loaded state is forgotten again afterwards, when the
    environment is restored, so later tests load the real kernel again."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(cache))
    cpu.reset()
    yield cache
    cpu.reset()


@pytest.mark.parametrize("cxx, message", [("no-such-compiler-xyz", "is not an executable on PATH"),
                                          ("false", "the fast CPU adder kernel is unavailable")],
                         ids=["missing", "failing"])
def test_auto_falls_back_to_reference_with_one_warning(monkeypatch, fresh_kernel_state, cxx, message):
    if cxx == "no-such-compiler-xyz":
        cxx = str(fresh_kernel_state / "bin" / cxx)
    monkeypatch.setenv("CXX", cxx)
    x = torch.randn(2, 3, 5, 5, dtype=F64)
    w = torch.randn(4, 3, 3, 3, dtype=F64)
    gy = torch.randn(2, 4, 5, 5, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [run_op(adder_conv2d, x, w, gy, padding=1, backend="auto") for _ in range(2)]
    runtime = [c for c in caught if issubclass(c.category, RuntimeWarning)]
    assert len(runtime) == 1, [str(c.message) for c in caught]
    assert message in str(runtime[0].message)
    assert cpu.load() is None
    assert not list(fresh_kernel_state.glob("kernels/*.so"))
    expected = naive_adder_conv2d(x, w, gy, padding=1)
    for res in results:
        for a, b, what in zip(res, expected, ("forward", "input grad", "weight grad")):
            _assert_close(a, b, 1e-12, what)
    with pytest.raises(RuntimeError, match="backend: 'cpu' was requested"):
        adder_conv2d(x, w, backend="cpu")


@NEEDS_CXX
def test_cpu_kernel_build_is_cached(fresh_kernel_state):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lib = cpu.load()
    assert lib is not None
    path = Path(lib._name)
    assert path.parent == fresh_kernel_state / "kernels" and path.exists() and path.suffix == ".so"
    stat = path.stat()
    cpu.reset()
    again = cpu.load()
    assert Path(again._name) == path
    assert path.stat().st_mtime_ns == stat.st_mtime_ns and path.stat().st_ino == stat.st_ino  # not rebuilt
    assert list((fresh_kernel_state / "kernels").iterdir()) == [path]  # no temporary build dir left over
    x, w = torch.randn(1, 2, 4, 4, dtype=F64), torch.randn(3, 2, 3, 3, dtype=F64)
    _assert_close(adder_conv2d(x, w, backend="cpu"), naive_adder_conv2d(x, w, torch.zeros(1, 3, 2, 2, dtype=F64))[0],
                  1e-12, "forward")


# --------------------------------------------------------------------------------------------------------------
# 9. Modules are drop-in replacements
# --------------------------------------------------------------------------------------------------------------

MODULES = {
    "conv2d": (AdderConv2d, nn.Conv2d, (3, 8, 3), dict(stride=2, padding=1, bias=False), (2, 3, 9, 7)),
    "conv2d-tuple-groups-dil": (AdderConv2d, nn.Conv2d, (4, 8, (3, 5)), dict(padding=(1, 2), dilation=(2, 1),
                                                                            groups=2), (1, 4, 8, 9)),
    "conv2d-same": (AdderConv2d, nn.Conv2d, (4, 6, 3), dict(padding="same", dilation=2), (2, 4, 7, 6)),
    "conv2d-same-even": (AdderConv2d, nn.Conv2d, (2, 3, 4), dict(padding="same"), (2, 2, 5, 6)),
    "conv2d-valid": (AdderConv2d, nn.Conv2d, (2, 3, 3), dict(padding="valid", bias=True), (1, 2, 5, 6)),
    "linear": (AdderLinear, nn.Linear, (5, 7), {}, (2, 3, 5)),
    "linear-nobias": (AdderLinear, nn.Linear, (5, 7), dict(bias=False), (4, 5)),
    "conv1d-depthwise": (AdderConv1d, nn.Conv1d, (6, 6, 7), dict(padding=3, groups=6), (2, 6, 10)),
    "conv1d-same-even": (AdderConv1d, nn.Conv1d, (4, 8, 4), dict(padding="same"), (2, 4, 9)),
}


def _module_expected(cls, module, x):
    """Naive adder output of ``module`` on ``x``: padding taken from an equivalent ordinary conv."""
    w, b = module.weight.detach(), module.bias
    if cls is AdderLinear:
        y = naive_adder_linear(x, w, torch.zeros(*x.shape[:-1], w.shape[0], dtype=x.dtype))[0]
        return y if b is None else y + b
    conv1d = x.dim() == 3
    if conv1d:
        x, w = x[:, :, None], w[:, :, None]
    if isinstance(module.padding, str):
        pads = list(module._reversed_padding_repeated_twice) + ([0, 0] if conv1d else [])
        x, padding = F.pad(x, pads), 0
    else:
        padding = (0, module.padding[0]) if conv1d else module.padding
    stride = (1, module.stride[0]) if conv1d else module.stride
    dilation = (1, module.dilation[0]) if conv1d else module.dilation
    N, O = x.shape[0], w.shape[0]
    cols, wg = _naive_cols_w(x, w, stride, padding, dilation, module.groups)
    y = -(cols - wg).abs().sum(3).reshape(N, O, *_out_hw(x, w, stride, padding, dilation))
    if conv1d:
        y = y[:, :, 0]
    return y if b is None else y + b.view(1, -1, *([1] * (y.dim() - 2)))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("cls, base, args, kwargs, shape", MODULES.values(), ids=MODULES.keys())
def test_module_is_drop_in(cls, base, args, kwargs, shape):
    m, ref = cls(*args, **kwargs), base(*args, **kwargs)
    assert list(m.state_dict()) == list(ref.state_dict())
    assert {k: v.shape for k, v in m.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    m.load_state_dict(ref.state_dict())  # loads a torch layer's weights
    assert torch.equal(m.weight, ref.weight)
    x = torch.randn(*shape)
    y = m(x)
    assert y.shape == ref(x).shape
    if m.bias is not None:
        with torch.no_grad():
            m.bias.normal_()
    md = m.to(torch.float64)
    assert md is m and m.weight.dtype == F64
    xd = x.double()
    yd = m(xd)
    assert yd.dtype == F64
    _assert_close(yd, _module_expected(cls, m, xd), 1e-12, "module forward")
    with torch.no_grad():
        yn = m(xd)
    assert not yn.requires_grad and yd.requires_grad
    assert torch.equal(yn, yd)


def test_same_padding_even_kernel_matches_explicit_pad():
    """padding='same' with an even kernel pads like nn.Conv2d (extra row/column at the bottom/right)."""
    conv = nn.Conv2d(2, 3, 4, padding="same", bias=False).double()
    m = AdderConv2d(2, 3, 4, padding="same", bias=False).double()
    x = torch.randn(2, 2, 5, 6, dtype=F64)
    torch.testing.assert_close(conv(x), F.conv2d(F.pad(x, (1, 2, 1, 2)), conv.weight))
    expected = -(F.unfold(F.pad(x, (1, 2, 1, 2)), 4)[:, None] - m.weight.detach().view(1, 3, -1, 1)).abs().sum(2)
    torch.testing.assert_close(m(x), expected.view(2, 3, 5, 6), rtol=0, atol=1e-12)


@pytest.mark.parametrize("cls, args", [(AdderConv2d, (64, 64, 3)), (AdderLinear, (256, 384)),
                                       (AdderConv1d, (128, 128, 15))])
def test_module_init_is_standard_normal(cls, args):
    m = cls(*args)
    w = m.weight.detach()
    assert w.numel() > 30000
    assert abs(w.mean().item()) < 0.02 and abs(w.std().item() - 1) < 0.02
    assert torch.count_nonzero(m.bias) == 0
    assert "adaptive_lr=True, eta=0.2" in repr(m)


def test_training_step_reduces_loss():
    net = nn.Sequential(AdderConv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                        AdderLinear(4 * 5 * 5, 2), nn.BatchNorm1d(2))
    x = torch.randn(16, 1, 5, 5)
    target = torch.randint(0, 2, (16,))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), target)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --------------------------------------------------------------------------------------------------------------
# Triton backend end to end (CPU tensors through Triton's interpreter, in a fresh process)
# --------------------------------------------------------------------------------------------------------------

_TRITON_CHILD = r"""
import json, torch
from nni_shiftadd.kernels import triton_adder
from nni_shiftadd.ops import adder_conv2d
torch.manual_seed(0)
x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
g = torch.randn(2, 6, 3, 3, dtype=torch.float64)
out = {}
for backend in ("triton", "reference"):
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = adder_conv2d(xr, wr, stride=2, padding=1, groups=2, backend=backend)
    y.backward(g)
    out[backend] = (y.detach(), xr.grad, wr.grad)
err = [((a - b).abs().max() / b.abs().max()).item() for a, b in zip(out["triton"], out["reference"])]
print(json.dumps({"interpreted": triton_adder.interpreted(), "err": err, "shape": list(out["triton"][0].shape)}))
"""


def test_triton_backend_end_to_end_interpreted():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _TRITON_CHILD], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["interpreted"] and res["shape"] == [2, 6, 3, 3]
    assert max(res["err"]) < 1e-12, res["err"]


# --------------------------------------------------------------------------------------------------------------
# Layouts, empty batches, low precision
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k, pad", [(3, 1), (1, 0)], ids=["k3", "pointwise"])
def test_channels_last_and_noncontiguous_inputs(backend, k, pad):
    x = torch.randn(2, 4, 6, 5, dtype=F64)
    w = torch.randn(6, 4, k, k, dtype=F64)
    gy = torch.randn(2, 6, 6 + 2 * pad - k + 1, 5 + 2 * pad - k + 1, dtype=F64)
    expected = naive_adder_conv2d(x, w, gy, padding=pad)
    got = run_op(adder_conv2d, x.to(memory_format=torch.channels_last), w, gy, padding=pad, backend=backend)
    for a, b, what in zip(got, expected, ("forward", "input grad", "weight grad")):
        _assert_close(a, b, 1e-12, what)
    xl = torch.randn(7, 5, dtype=F64).t()                      # non-contiguous [5, 7]
    wl = torch.randn(3, 7, dtype=F64)
    gl = torch.randn(5, 3, dtype=F64)
    for a, b, what in zip(run_op(adder_linear, xl, wl, gl, backend=backend), naive_adder_linear(xl, wl, gl),
                          ("forward", "input grad", "weight grad")):
        _assert_close(a, b, 1e-12, what)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    x = torch.randn(0, 2, 4, 4, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, requires_grad=True)
    y = adder_conv2d(x, w, padding=1, eta=0.2, backend=backend)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(w.grad) == 0 and torch.isfinite(w.grad).all()
    assert AdderLinear(5, 3, backend=backend)(torch.randn(0, 5)).shape == (0, 3)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)])
def test_half_precision_auto_falls_back_to_reference(dtype, tol):
    m = AdderConv2d(2, 3, 3, padding=1, adaptive_lr=False).to(dtype)
    x = torch.randn(2, 2, 5, 5)
    gy = torch.randn(2, 3, 5, 5)
    xr = x.to(dtype).requires_grad_()
    y = m(xr)
    y.backward(gy.to(dtype))
    assert y.dtype == xr.grad.dtype == m.weight.grad.dtype == dtype
    w = m.weight.detach().double()
    ny, ngx, ngw = naive_adder_conv2d(x.to(dtype).double(), w, gy.to(dtype).double(), padding=1)
    _assert_close(y.detach().double(), ny + m.bias.detach().double().view(1, -1, 1, 1), tol, "forward")
    _assert_close(xr.grad.double(), ngx, tol, "input grad")
    _assert_close(m.weight.grad.double(), ngw, tol, "weight grad")


def test_chunk_count_is_bounded(monkeypatch):
    """A tiny workspace does not split a large batch into more than MAX_CHUNKS chunks."""
    calls = []
    original = cpu.l1mm if cpu.load() is not None else reference.l1mm
    module = cpu if cpu.load() is not None else reference

    def spy(*args):
        calls.append(args[1].shape[-1])
        return original(*args)

    monkeypatch.setattr(module, "l1mm", spy)
    monkeypatch.setattr(adder_mod, "WORKSPACE_BYTES", 1)
    x, w = torch.randn(20, 3, 4, 4), torch.randn(2, 3, 3, 3)
    adder_conv2d(x, w, padding=1)
    assert len(calls) == adder_mod.MAX_CHUNKS - 1 and sum(calls) == 20 * 16  # ceil(20 / 8) = 3 per chunk


@pytest.mark.parametrize("batch, channels, length, k, padding", [(3, 8, 11, 3, 1), (2, 16, 20, 7, 3), (4, 5, 9, 5, 0),
                                                                  (1, 3, 4, 7, 6)])
@pytest.mark.parametrize("eta", [None, 0.2])
def test_depthwise_conv1d_fast_path_matches_the_reference(batch: int, channels: int, length: int, k: int,
                                                          padding: int, eta: float | None) -> None:
    """The NLP lightweight branch's depthwise 1-D adder convolution (its own vectorised path) against the
    reference backend: outputs and both AdderNet gradients, float64."""
    from nni_shiftadd.ops import adder_conv1d

    gen = torch.Generator().manual_seed(batch * 100 + k)
    x = torch.randn(batch, channels, length, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(channels, 1, k, dtype=torch.float64, generator=gen, requires_grad=True)
    g = torch.randn(batch, channels, length + 2 * padding - k + 1, dtype=torch.float64, generator=gen)
    fast = adder_conv1d(x, w, padding=padding, groups=channels, eta=eta)
    ref = adder_conv1d(x, w, padding=padding, groups=channels, eta=eta, backend="reference")
    assert torch.allclose(fast, ref, atol=1e-12, rtol=0)
    for a, b in zip(torch.autograd.grad(fast, (x, w), g), torch.autograd.grad(ref, (x, w), g)):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-12)
