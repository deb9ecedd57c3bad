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

import contextlib
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .kernels import cpu as cpu_kernels
from .ops.quantize import round_power_of_two

Mode = Literal["none", "naive", "hws"]
MODES: tuple[str, ...] = ("none", "naive", "hws")


@functools.lru_cache(maxsize=256)
def _rank_segments(n: int, segments: int) -> np.ndarray:
    """The segment of each rank ``0..n-1`` when ``n`` sorted values are cut into ``segments`` equal runs."""
    table = np.arange(n, dtype=np.int64) * segments // n
    table.flags.writeable = False
    return table


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

        Inside :func:`ranks_memoised` (one forward pass of a layer, where the KL term and the Add candidate map the
        same pool and the sort is the costly part of ``T``) it is computed once per tensor; outside, every call
        sorts. The memo lives no longer than that: an optimiser that updates ``param.data`` (fairseq's) changes a
        pool without bumping its version counter, so no key can tell a stale memo from a fresh one across steps."""
        if not getattr(self, "_memo_depth", 0):
            return self._segment_index(w)
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
        if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
            # in NumPy: torch's CPU sort is 6-7x slower from ~8K elements on, and its scatter 3x slower
            # (benchmarks/supernet.py)
            index = np.empty(n, dtype=np.int64)
            index[np.argsort(-flat.numpy())] = _rank_segments(n, self.segments)
            return torch.from_numpy(index)
        order = torch.argsort(flat, descending=True)
        index = torch.empty(n, dtype=torch.long, device=w.device)
        index[order] = torch.arange(n, device=w.device) * self.segments // n
        return index

    def forward(self, w: Tensor) -> Tensor:
        return (w.flatten() * self.alpha.index_select(0, self.segment_index(w))).view_as(w)

    def extra_repr(self) -> str:
        return f"segments={self.segments}, binning={self.binning!r}"


@contextlib.contextmanager
def ranks_memoised(pools: Sequence[SharedConvWeight]) -> Iterator[None]:
    """Within the block, each pool's sort (the rank segments of ``T``) is computed once; after it, forgotten."""
    transforms = [p.transform for p in pools if getattr(p, "transform", None) is not None]
    for t in transforms:
        t._memo_depth = getattr(t, "_memo_depth", 0) + 1
    try:
        yield
    finally:
        for t in transforms:
            t._memo_depth -= 1
            if not t._memo_depth:
                t._index_cache = None


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


def _segment_sum(v: Tensor, lengths: Tensor) -> Tensor:
    """Sums of the consecutive runs of ``v`` with the given ``lengths`` (a quarter of the time of ``index_add_``)."""
    return torch.segment_reduce(v, "sum", lengths=lengths)


def _expand(per_run: Tensor, lengths: Tensor, total: int) -> Tensor:
    """``per_run[i]`` repeated ``lengths[i]`` times (a third of the time of a gather with run ids)."""
    return per_run.repeat_interleave(lengths, output_size=total)


class _PoolsKL(torch.autograd.Function):
    """``sum_p gaussian_kl(w_p) + laplace_kl(w_p * alpha_p[index_p], scale)`` over a layer's pools (eq. (5), with
    ``T`` of eq. (6) inside) in one autograd node with closed-form gradients: most of what HWS would otherwise add to
    a training step is an autograd graph of ~40 tiny nodes per pool (``benchmarks/supernet.py``). On the CPU the
    C++ kernel ``kernels/hws_cpu.cpp`` makes two passes over the concatenated pools; elsewhere (or without a
    compiler) the moments are segment sums over the runs of the concatenation, a dozen vector operations a layer.
    ``alpha``/``index`` are ``None`` for the Gaussian term alone; otherwise every pool has a transform."""

    @staticmethod
    def forward(ctx: Any, scale: float, n_pools: int, *tensors: Tensor) -> Tensor:  # type: ignore[override]
        ws, alphas, indices = tensors[:n_pools], tensors[n_pools:2 * n_pools], tensors[2 * n_pools:]
        flat = torch.cat([w.detach().reshape(-1) for w in ws])
        sizes = [w.numel() for w in ws]
        lengths = torch.tensor(sizes, device=flat.device)
        ctx.scale, ctx.n_pools, ctx.shapes, ctx.sizes = scale, n_pools, [w.shape for w in ws], sizes
        ctx.has_t = len(alphas) > 0
        ctx.cpu_kernel = cpu_kernels.supports(flat) and all(a.dtype == flat.dtype for a in alphas) \
            and cpu_kernels.load("hws") is not None
        if ctx.cpu_kernel:  # hws_cpu.cpp: the same sums in two passes over the pools
            alpha = torch.stack([a.detach() for a in alphas]) if ctx.has_t else None
            index = torch.cat(list(indices)) if ctx.has_t else None
            kl, stats = cpu_kernels.pools_kl_forward(flat, lengths, alpha, index, scale)
            ctx.save_for_backward(flat, lengths, stats, *((alpha, index) if ctx.has_t else ()))
            return torch.tensor(kl, dtype=flat.dtype)
        n = lengths.to(flat.dtype)
        mu = _segment_sum(flat, lengths) / n
        centred = flat - _expand(mu, lengths, flat.numel())
        var_raw = _segment_sum(centred * centred, lengths) / n
        var = var_raw.clamp_min(1e-12)
        kl = 0.5 * (var + mu * mu - 1.0 - torch.log(var))
        saved = [lengths, n, centred, mu, var, var_raw > 1e-12]
        if ctx.has_t:
            segments = alphas[0].numel()
            gidx = torch.cat([idx + p * segments for p, idx in enumerate(indices)])
            a = torch.cat([alpha.detach() for alpha in alphas]).index_select(0, gidx)
            u = flat * a
            m = _segment_sum(u, lengths) / n
            d = u - _expand(m, lengths, flat.numel())
            sgn = torch.sign(d)
            b_raw = _segment_sum(d.abs(), lengths) / n
            b = b_raw.clamp_min(1e-12)
            am = m.abs()
            e = torch.exp(-am / b)
            kl = kl + torch.log(scale / b) + am / scale + (b / scale) * e - 1.0
            saved += [flat, a, gidx, m, sgn, b, b_raw > 1e-12, e]
            ctx.segments = segments
        ctx.save_for_backward(*saved)
        return kl.sum()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        if ctx.cpu_kernel:
            flat, lengths, stats, *t_args = ctx.saved_tensors
            alpha, index = t_args if ctx.has_t else (None, None)
            g_w, g_alpha = cpu_kernels.pools_kl_backward(flat, lengths, alpha, index, ctx.scale, stats, float(grad))
            g_ws = [part.view(shape) for part, shape in zip(g_w.split(ctx.sizes), ctx.shapes)]
            g_alphas = list(g_alpha.unbind(0)) if g_alpha is not None else []
            return (None, None, *g_ws, *g_alphas, *([None] * len(g_alphas)))
        lengths, n, centred, mu, var, var_free, *rest = ctx.saved_tensors
        scale, n_pools, total = ctx.scale, ctx.n_pools, centred.numel()
        g = grad / n  # per pool
        coef = torch.where(var_free, 1.0 - 1.0 / var, torch.zeros_like(var))
        g_w = _expand(g * coef, lengths, total) * centred + _expand(g * mu, lengths, total)
        g_alphas: list[Tensor | None] = []
        if ctx.has_t:
            flat, a, gidx, m, sgn, b, b_free, e = rest
            am = m.abs()
            d_b = torch.where(b_free, -1.0 / b + (e / scale) * (1.0 + am / b), torch.zeros_like(b))
            d_m = torch.sign(m) / scale * (1.0 - e)
            sgn_mean = _segment_sum(sgn, lengths) / n
            g_u = _expand(g * d_b, lengths, total) * (sgn - _expand(sgn_mean, lengths, total)) \
                + _expand(g * d_m, lengths, total)
            g_w = g_w + g_u * a
            g_alpha = torch.zeros(n_pools * ctx.segments, dtype=flat.dtype, device=flat.device)
            g_alpha.index_add_(0, gidx, g_u * flat)
            g_alphas = list(g_alpha.view(n_pools, ctx.segments).unbind(0))
        g_ws = [part.view(shape) for part, shape in zip(g_w.split(ctx.sizes), ctx.shapes)]
        return (None, None, *g_ws, *g_alphas, *([None] * len(g_alphas)))


def pools_kl(pools: Sequence[Tensor], transforms: Sequence[TransformKernel] | None = None,
             scale: float = 1.0) -> Tensor:
    """``sum_p gaussian_kl(w_p) + laplace_kl(transform_p(w_p), scale)`` (eq. (5) for every pool of a layer; the
    Laplace terms only with ``transforms``, one per pool, all with the same number of segments), computed in one
    fused autograd node with the same value and gradients as the composition of those functions."""
    pools = list(pools)
    if not transforms:
        return _PoolsKL.apply(scale, len(pools), *pools)
    transforms = list(transforms)
    if len(transforms) != len(pools) or len({t.segments for t in transforms}) != 1:
        raise ValueError("transforms: one per pool, all with the same number of segments")
    return _PoolsKL.apply(scale, len(pools), *pools, *(t.alpha for t in transforms),
                          *(t.segment_index(w) for t, w in zip(transforms, pools)))


def pool_kl(w: Tensor, transform: TransformKernel | None = None, scale: float = 1.0) -> Tensor:
    """:func:`pools_kl` of one pool."""
    return pools_kl([w], [transform] if transform is not None else None, scale)


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


def position_kl(pools: Sequence[SharedConvWeight]) -> Tensor:
    """The eq. (5) terms of one layer position: the sum over its ``hws`` pools (the Laplace terms where an Add
    candidate reads them through ``T``) in one fused node; 0 when no pool is in ``hws`` mode."""
    pools = [p for p in pools if p.mode == "hws"]
    if not pools:
        return torch.zeros(())
    transforms = [p.transform for p in pools]
    if any(t is None for t in transforms):  # no Add candidate: the Gaussian terms only
        return pools_kl([p.pool for p in pools], None)
    return pools_kl([p.pool for p in pools], transforms, pools[0].laplace_scale)

