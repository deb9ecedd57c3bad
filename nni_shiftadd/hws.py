"""Heterogeneous weight sharing (HWS, paper Sec. 3.2.2): one weight pool per layer position for the Conv, Shift and
Add candidates, each reading it through its own transform.

- Conv uses the pool as it is; Shift rounds it to powers of two (:func:`~nni_shiftadd.ops.quantize.round_power_of_two`);
  Add maps it through a learnable kernel ``T`` (eq. (6), :class:`TransformKernel`) towards a Laplacian.
- The loss adds ``KL(P_conv(W) || N(0, 1)) + KL(P_add(T(W)) || Laplace(0, 1))`` (eq. (5)), estimated by
  :func:`gaussian_kl` and :func:`laplace_kl` and injected into the backward pass by :func:`add_auxiliary_loss`, so
  that any training loop (NNI's one-shot strategies included) optimises it without knowing about it.

Modes: ``"none"`` (every candidate owns its weights), ``"naive"`` (one pool, no ``T``, no KL), ``"hws"``.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .ops.quantize import round_power_of_two

Mode = Literal["none", "naive", "hws"]
MODES: tuple[str, ...] = ("none", "naive", "hws")


class TransformKernel(nn.Module):
    """``T(W)`` of eq. (6): sort the flattened weights in descending order, split them into ``segments`` equal runs,
    scale run ``i`` by a learnable ``alpha_i``, and put every element back where it was.

    ``binning="value"`` is the authors' CV-code variant: runs are equal-width bins of the value range instead of
    equal-size runs of the sorted order. ``alpha`` starts at 1 (``T`` is the identity at initialisation).
    """

    def __init__(self, segments: int = 200, binning: Literal["rank", "value"] = "rank") -> None:
        super().__init__()
        if segments < 1:
            raise ValueError(f"segments: must be >= 1, got {segments}")
        if binning not in ("rank", "value"):
            raise ValueError(f"binning: unknown value {binning!r}; expected 'rank' or 'value'")
        self.segments, self.binning = segments, binning
        self.alpha = nn.Parameter(torch.ones(segments))

    def segment_index(self, w: Tensor) -> Tensor:
        """The run (0..segments-1) each element of ``w`` falls in; piecewise constant, so it carries no gradient.

        Memoised on the tensor's identity and version counter: within one training step the KL term and the Add
        candidate map the same pool, and the sort is the costly part of ``T``."""
        key = (id(w), w._version, w.data_ptr(), tuple(w.shape))
        cached = getattr(self, "_index_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        index = self._segment_index(w)
        self._index_cache = (key, index)
        return index

    def _segment_index(self, w: Tensor) -> Tensor:
        flat = w.detach().flatten()
        n = flat.numel()
        if self.binning == "value":
            lo, hi = flat.min(), flat.max()
            scaled = (hi - flat) / (hi - lo).clamp_min(torch.finfo(flat.dtype).tiny)  # descending, like the sort
            return (scaled * self.segments).long().clamp_(0, self.segments - 1)
        order = torch.argsort(flat, descending=True)
        index = torch.empty(n, dtype=torch.long, device=w.device)
        index[order] = torch.arange(n, device=w.device) * self.segments // n
        return index

    def forward(self, w: Tensor) -> Tensor:
        return (w.flatten() * self.alpha[self.segment_index(w)]).view_as(w)

    def extra_repr(self) -> str:
        return f"segments={self.segments}, binning={self.binning!r}"


def gaussian_kl(w: Tensor) -> Tensor:
    """``KL(N(mu, sigma^2) || N(0, 1))`` with ``mu``, ``sigma`` the moments of ``w`` (eq. (5), first term).

    A moment-matched estimator: fit the reference family to the weights, then take the closed-form KL. It is
    differentiable, costs two reductions, and is zero exactly when the weights have mean 0 and variance 1.
    """
    mu, var = w.mean(), w.var(unbiased=False).clamp_min(1e-12)
    return 0.5 * (var + mu * mu - 1.0 - torch.log(var))


def laplace_kl(w: Tensor, scale: float = 1.0) -> Tensor:
    """``KL(Laplace(m, b) || Laplace(0, scale))`` with ``m`` the mean and ``b`` the mean absolute deviation of ``w``
    (the Laplace maximum-likelihood scale; eq. (5), second term). Closed form:
    ``log(scale / b) + |m| / scale + (b / scale) exp(-|m| / b) - 1``."""
    m = w.mean()
    b = (w - m).abs().mean().clamp_min(1e-12)
    am = m.abs()
    return torch.log(scale / b) + am / scale + (b / scale) * torch.exp(-am / b) - 1.0


class _PoolKL(torch.autograd.Function):
    """``gaussian_kl(w) + laplace_kl(w * alpha[index], scale)`` (eq. (5) for one pool, ``T`` of eq. (6) inside)
    with closed-form gradients: a handful of vector operations per pool instead of an autograd graph of ~40 tiny
    nodes, which is most of what HWS would otherwise add to a training step (``benchmarks/supernet.py``)."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, alpha: Tensor | None, index: Tensor | None,  # type: ignore[override]
                scale: float) -> Tensor:
        flat = w.detach().reshape(-1)
        n = flat.numel()
        var_raw, mu = torch.var_mean(flat, unbiased=False)
        var = var_raw.clamp_min(1e-12)
        kl = 0.5 * (var + mu * mu - 1.0 - torch.log(var))
        ctx.n, ctx.scale, ctx.has_t = n, scale, alpha is not None
        saved = [flat, mu, var, var_raw > 1e-12]
        if alpha is not None:
            a = alpha.detach()[index]
            u = flat * a
            m = u.mean()
            sgn = torch.sign(u - m)
            b_raw = (u - m).abs().mean()
            b = b_raw.clamp_min(1e-12)
            am = m.abs()
            e = torch.exp(-am / b)
            kl = kl + torch.log(scale / b) + am / scale + (b / scale) * e - 1.0
            saved += [a, index, m, sgn, b, b_raw > 1e-12, e]
            ctx.segments = alpha.numel()
        ctx.save_for_backward(*saved)
        ctx.w_shape = w.shape
        return kl

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor | None, None, None]:  # type: ignore[override]
        flat, mu, var, var_free, *rest = ctx.saved_tensors
        n, scale = ctx.n, ctx.scale
        g = grad / n
        coef = torch.where(var_free, 1.0 - 1.0 / var, torch.zeros_like(var))
        g_w = g * (coef * (flat - mu) + mu)
        g_alpha = None
        if ctx.has_t:
            a, index, m, sgn, b, b_free, e = rest
            am = m.abs()
            d_b = torch.where(b_free, -1.0 / b + (e / scale) * (1.0 + am / b), torch.zeros_like(b))
            d_m = torch.sign(m) / scale * (1.0 - e)
            g_u = g * (d_b * (sgn - sgn.mean()) + d_m)
            g_w = g_w + g_u * a
            if ctx.needs_input_grad[1]:
                g_alpha = torch.zeros(ctx.segments, dtype=flat.dtype, device=flat.device).index_add_(0, index,
                                                                                                   g_u * flat)
        return g_w.view(ctx.w_shape), g_alpha, None, None


def pool_kl(w: Tensor, transform: TransformKernel | None = None, scale: float = 1.0) -> Tensor:
    """``gaussian_kl(w) + laplace_kl(transform(w), scale)`` (eq. (5); the Laplace term only with a ``transform``),
    computed in one fused autograd node with the same value and gradients."""
    if transform is None:
        return _PoolKL.apply(w, None, None, scale)
    return _PoolKL.apply(w, transform.alpha, transform.segment_index(w), scale)


class _AuxiliaryLoss(torch.autograd.Function):
    """Identity on ``y``; in the backward pass, ``aux`` receives gradient ``weight`` (i.e. ``weight * aux`` is added
    to whatever loss ``y`` feeds)."""

    @staticmethod
    def forward(ctx: Any, y: Tensor, aux: Tensor, weight: float) -> Tensor:  # type: ignore[override]
        ctx.weight = weight
        ctx.aux_shape, ctx.aux_dtype = aux.shape, aux.dtype
        return y.view_as(y)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        return grad, torch.full(ctx.aux_shape, ctx.weight, dtype=ctx.aux_dtype, device=grad.device), None


def add_auxiliary_loss(y: Tensor, aux: Tensor, weight: float) -> Tensor:
    """``y`` unchanged, with ``weight * aux`` joining the loss that ``y`` contributes to (once per backward).

    The injected gradient does not follow the scale of the upstream one: with a loss scaler (AMP) or gradient
    accumulation over ``n`` steps, divide ``weight`` accordingly (by the scale, or by ``n``).
    """
    if weight == 0 or not torch.is_grad_enabled() or not aux.requires_grad:
        return y
    return _AuxiliaryLoss.apply(y, aux, weight)


class SharedConvWeight(nn.Module):
    """One layer position's weight pool and the views the Conv, Shift and Add candidates take of it.

    ``weight(op)`` is the tensor the ``op`` candidate convolves with: the pool itself (conv), its power-of-two
    rounding (shift), or ``T(pool)`` (add; ``hws`` mode) / the pool (``naive``). In ``none`` mode each op owns a
    separate tensor. ``kl()`` is the eq. (5) regulariser of this position (``hws`` only).
    """

    def __init__(self, shape: tuple[int, ...], ops: tuple[str, ...], mode: Mode = "hws", *, segments: int = 200,
                 binning: Literal["rank", "value"] = "rank", weight_bits: int = 5, laplace_scale: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")
        unknown = [op for op in ops if op not in ("conv", "shift", "add")]
        if unknown:
            raise ValueError(f"ops: {unknown[0]!r} cannot share a weight pool; expected conv, shift or add")
        self.shape, self.ops, self.mode = tuple(shape), tuple(ops), mode
        self.weight_bits, self.laplace_scale = weight_bits, laplace_scale
        fan_in = math.prod(shape[1:])
        # Shift reads the N(0, 1) pool scaled by a power of two near 1/sqrt(fan_in) (exact in floating point), so
        # that its rounding does not saturate at |w| = 1; a BatchNorm follows, so the scale is immaterial otherwise.
        self.shift_prescale = 2.0 ** -round(math.log2(math.sqrt(fan_in)))
        if mode == "none":
            self.own = nn.ParameterDict({op: nn.Parameter(self._init(op, fan_in)) for op in ops})
        else:
            self.pool = nn.Parameter(torch.randn(shape))  # N(0, 1): the target of the Gaussian KL term
        self.transform = TransformKernel(segments, binning) if (mode == "hws" and "add" in ops) else None

    def _init(self, op: str, fan_in: int) -> Tensor:
        w = torch.randn(self.shape)
        return w if op == "add" else w / math.sqrt(fan_in)

    def weight(self, op: str) -> Tensor:
        if op not in self.ops:
            raise ValueError(f"op: {op!r} is not a candidate of this pool; candidates are {list(self.ops)}")
        if self.mode == "none":
            w = self.own[op]
            return round_power_of_two(w, self.weight_bits) if op == "shift" else w
        if op == "shift":
            return round_power_of_two(self.pool * self.shift_prescale, self.weight_bits)
        if op == "add" and self.transform is not None:
            return self.transform(self.pool)
        return self.pool

    def kl(self) -> Tensor | None:
        """``KL(P(W) || N(0,1)) + KL(P(T(W)) || Laplace(0, b))`` in ``hws`` mode, else ``None``."""
        if self.mode != "hws":
            return None
        return pool_kl(self.pool, self.transform, self.laplace_scale)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, ops={self.ops}, mode={self.mode!r}"
