"""Heterogeneous weight sharing (HWS, paper Sec. 3.2.2): one weight pool per layer position for the Conv, Shift and
Add candidates, each reading it through its own transform.

- Conv uses the pool as it is; Shift rounds it to powers of two (:func:`~nni_shiftadd.ops.quantize.round_power_of_two`);
  Add maps it through a learnable kernel ``T`` (eq. (6), :class:`TransformKernel`) towards a Laplacian.
- The loss adds ``KL(P_conv(W) || N(0, 1)) + KL(P_add(T(W)) || Laplace(0, b))`` (eq. (5)), injected into the backward
  pass by :func:`add_auxiliary_loss`, so that any training loop (NNI's one-shot strategies included) optimises it
  without knowing about it. The paper does not say how the KL between a tensor and a density is estimated; three
  estimators are named options (:class:`HWSConfig`):

  * ``spacing`` (the default): ``KL = -H(P) - E_P[log q]``, the entropy ``H`` by Vasicek's m-spacing estimator on
    the sorted sample (Ebrahimi's boundary correction) and the cross-entropy as the sample mean of ``-log q``
    (:func:`spacing_kl`). It sees the shape of the distribution: of samples with equal moments it puts the matching
    family closest, and minimising it over ``T``'s alphas alone turns a Gaussian pool into a Laplacian one.
  * ``moments``: fit the reference family by its moments (mean and variance, mean absolute deviation), closed-form
    KL (:func:`gaussian_kl`, :func:`laplace_kl`). Cheap, but blind to shape: one scale factor satisfies it.
  * ``softmax``: the authors' code, ``kl_div(log_softmax(T(W)), softmax(z))`` with a fresh sample ``z`` of the
    Laplacian each step, on the Add term only (as their code applies it in effect).

Modes: ``"none"`` (every candidate owns its weights), ``"naive"`` (one pool, no ``T``, no KL), ``"hws"``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from .kernels import cpu as cpu_kernels
from .ops.quantize import round_power_of_two
from .vocabulary import CONV_FAMILY, block_type

Mode = Literal["none", "naive", "hws"]
MODES: tuple[str, ...] = ("none", "naive", "hws")
Estimator = Literal["spacing", "moments", "softmax"]
ESTIMATORS: tuple[str, ...] = ("spacing", "moments", "softmax")


@dataclasses.dataclass(frozen=True)
class HWSConfig:
    """How heterogeneous weight sharing maps the pool for Add and estimates the eq. (5) terms: the ``hws`` block of a
    supernet recipe (its weight is the recipe's ``kl_weight``).

    Attributes:
        estimator: ``spacing`` (default), ``moments`` or ``softmax`` (see the module docstring).
        segments: the number of runs of ``T`` (eq. (6): 200).
        binning: ``rank`` (eq. (6): equal runs of the sorted order) or ``value`` (the authors' CV code: equal-width
            bins of the value range).
        laplace_scale: ``b`` of the Laplace reference (1 in eq. (5); the authors' code uses 2).
        max_samples: ``spacing``: a pool larger than this is estimated on that many of its elements, drawn afresh
            as the weights change (the sort dominates the cost; 4,096 order statistics pin a shape down well).
        add_adaptive_lr: where AdderNet's adaptive learning rate (``eta sqrt(n) grad / ||grad||``) rescales the Add
            candidate's weight gradient: ``own`` (default) only where Add owns its weights (mode ``none``),
            ``always`` (the authors' code), ``never``. On a shared pool it makes Add's gradient ~100x the Conv and
            Shift ones, and they share the pool's optimiser state: in the cv_small supernet under AdamW, a Conv or
            Shift step then moves the pool along its own descent direction at 0.12-0.15x the pace it has with its
            own weights (Add: 1.16x); without it the three move at 0.43-0.63x alike, so no further per-candidate
            normalisation is needed (``benchmarks/pool_gradients.py``).
    """

    estimator: Estimator = "spacing"
    segments: int = 200
    binning: Literal["rank", "value"] = "rank"
    laplace_scale: float = 1.0
    max_samples: int = 4096
    add_adaptive_lr: Literal["own", "always", "never"] = "own"

    def add_eta(self, mode: str, eta: float | None) -> float | None:
        """The ``eta`` of the Add candidate's adaptive learning rate in a pool of ``mode`` (``None``: off)."""
        if self.add_adaptive_lr == "always" or (self.add_adaptive_lr == "own" and mode == "none"):
            return eta
        return None

    def validate(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"field 'estimator': got {self.estimator!r}; expected one of {list(ESTIMATORS)}")
        if self.binning not in ("rank", "value"):
            raise ValueError(f"field 'binning': got {self.binning!r}; expected 'rank' or 'value'")
        if self.segments < 1:
            raise ValueError(f"field 'segments': must be >= 1, got {self.segments}")
        if not self.laplace_scale > 0:
            raise ValueError(f"field 'laplace_scale': must be > 0, got {self.laplace_scale}")
        if self.add_adaptive_lr not in ("own", "always", "never"):
            raise ValueError(f"field 'add_adaptive_lr': got {self.add_adaptive_lr!r}; expected 'own', 'always' or "
                             "'never'")
        if self.max_samples < 16:
            raise ValueError(f"field 'max_samples': must be >= 16 (an entropy estimate needs order statistics), got "
                             f"{self.max_samples}")


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
        if cpu_kernels.supports(flat) and n < 2 ** 31 and cpu_kernels.load("hws") is not None:  # int32 ranks
            return cpu_kernels.rank_segments(flat, self.segments)  # a radix sort: O(n)
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


_LOG_2PI = math.log(2.0 * math.pi)
TARGETS: tuple[str, ...] = ("gaussian", "laplace")


def _spacing_kl_and_grad(x: Tensor, target: str, scale: float) -> tuple[Tensor, Tensor]:
    """``KL(P_x || q)`` of the 1-D sample ``x`` against ``q = N(0, 1)`` or ``Laplace(0, scale)``, and its gradient
    with respect to ``x`` (closed form, no autograd graph): see :func:`spacing_kl`."""
    n = x.numel()
    if n < 4:
        return x.new_zeros(()), torch.zeros_like(x)
    m = max(1, min(n // 2, round(math.sqrt(n))))
    xs, order = torch.sort(x)
    i = torch.arange(n, device=x.device)
    hi, lo = (i + m).clamp_(max=n - 1), (i - m).clamp_(min=0)
    raw = xs.index_select(0, hi) - xs.index_select(0, lo)
    spread = raw.clamp_min(1e-12)
    entropy = torch.log(spread * (n / (hi - lo).to(x.dtype))).mean()
    inv = torch.where(raw > 1e-12, 1.0 / (n * spread), torch.zeros_like(spread))
    d_entropy_sorted = torch.zeros_like(xs).index_add_(0, hi, inv).index_add_(0, lo, -inv)
    d_entropy = torch.empty_like(x).index_copy_(0, order, d_entropy_sorted)
    if target == "gaussian":
        cross = 0.5 * _LOG_2PI + 0.5 * (x * x).mean()
        d_cross = x / n
    else:
        cross = math.log(2.0 * scale) + x.abs().mean() / scale
        d_cross = torch.sign(x) / (scale * n)
    return cross - entropy, d_cross - d_entropy


def _subset(flat: Tensor, size: int) -> Tensor:
    """``size`` distinct indices of ``flat``, drawn with a generator seeded by a few of its values: a fresh subset
    whenever the weights change, and the same one for the same weights, so a resumed run repeats an uninterrupted
    one exactly (the global RNG is not part of a checkpoint) and nothing else's random stream moves."""
    n = flat.numel()
    probe = flat.detach()[torch.tensor([0, n // 3, (2 * n) // 3, n - 1], device=flat.device)]
    bits = probe.double().view(torch.int64).tolist()
    seed = (sum(b * p for b, p in zip(bits, (1_000_003, 998_244_353, 1_000_000_007, 2_147_483_647))) + n) % (2 ** 63)
    generator = torch.Generator(device=flat.device).manual_seed(seed)
    return torch.randperm(n, generator=generator, device=flat.device)[:size]


class _SpacingKL(torch.autograd.Function):
    """``sum_p spacing_kl(w_p, "gaussian") + spacing_kl(T_p(w_p), "laplace", scale)`` over a layer's pools (eq. (5),
    the ``spacing`` estimator; ``terms`` says which of the two) in one autograd node. The gradient is closed-form and
    computed with the value (each term sorts its sample once), so the backward pass only scales it. A pool above
    ``max_samples`` elements is estimated on a subset of that size, drawn afresh as its weights change
    (:func:`_subset`; its other elements get no gradient this step). Without ``alpha``/``index`` the Laplace term is
    of the pool itself (``T`` the identity)."""

    @staticmethod
    def forward(ctx: Any, scale: float, max_samples: int, terms: tuple[str, ...],  # type: ignore[override]
                n_pools: int, *tensors: Tensor) -> Tensor:
        ws, alphas, indices = tensors[:n_pools], tensors[n_pools:2 * n_pools], tensors[2 * n_pools:]
        flats = [w.detach().reshape(-1) for w in ws]
        picks = [_subset(f, max_samples) if f.numel() > max_samples else None for f in flats]
        xs = [f if pick is None else f.index_select(0, pick) for f, pick in zip(flats, picks)]
        segs = [None if not alphas else (idx if pick is None else idx.index_select(0, pick))
                for idx, pick in zip(indices or [None] * n_pools, picks)]
        laplace = "laplace" in terms
        if cpu_kernels.supports(xs[0]) and all(a.dtype == xs[0].dtype for a in alphas) \
                and cpu_kernels.load("hws") is not None:  # hws_cpu.cpp: every pool in one call
            x = torch.cat(xs) if n_pools > 1 else xs[0]
            lengths = torch.tensor([t.numel() for t in xs])
            alpha = torch.stack([a.detach() for a in alphas]) if (laplace and alphas) else None
            index = torch.cat(segs) if alpha is not None else None
            total, g_x, g_alpha = cpu_kernels.spacing_kl(x, lengths, alpha, index, scale, "gaussian" in terms, laplace)
            g_xs = list(g_x.split(lengths.tolist()))
            g_alphas = list(g_alpha.unbind(0)) if g_alpha is not None else []
            total_t = xs[0].new_tensor(total)
        else:
            total_t, g_xs, g_alphas = xs[0].new_zeros(()), [], []
            for p, x in enumerate(xs):
                kl, g_x = x.new_zeros(()), torch.zeros_like(x)
                if "gaussian" in terms:
                    kl, g_x = _spacing_kl_and_grad(x, "gaussian", 1.0)
                if laplace:
                    a = alphas[p].detach().index_select(0, segs[p]) if alphas else torch.ones_like(x)
                    kl_add, g_u = _spacing_kl_and_grad(x * a, "laplace", scale)
                    kl, g_x = kl + kl_add, g_x + g_u * a
                    if alphas:
                        g_alphas.append(torch.zeros_like(alphas[p]).index_add_(0, segs[p], g_u * x))
                g_xs.append(g_x)
                total_t = total_t + kl
        g_ws = [(g if pick is None else torch.zeros_like(f).index_copy_(0, pick, g)).view_as(w)
                for g, pick, f, w in zip(g_xs, picks, flats, ws)]
        ctx.save_for_backward(*g_ws, *g_alphas)
        ctx.n_pools = n_pools
        return total_t

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        saved = ctx.saved_tensors
        g_ws, g_alphas = saved[:ctx.n_pools], saved[ctx.n_pools:]
        return (None, None, None, None, *(g * grad for g in g_ws), *(g * grad for g in g_alphas),
                *([None] * len(g_alphas)))


def spacing_kl(w: Tensor, target: Literal["gaussian", "laplace"] = "gaussian", scale: float = 1.0) -> Tensor:
    """``KL(P_w || q)`` of the elements of ``w`` against ``q = N(0, 1)`` or ``Laplace(0, scale)`` (eq. (5)), estimated
    as ``-H(P_w) - mean(log q(w))``: the differential entropy ``H`` by Vasicek's m-spacing estimator with Ebrahimi's
    boundary correction, ``H = mean_i log(n (x_(i+m) - x_(i-m)) / (hi_i - lo_i))`` on the sorted sample with the
    indices clamped to the sample and ``m = round(sqrt(n))``, and the cross-entropy as the sample mean.

    Unlike the moment-matched :func:`gaussian_kl`/:func:`laplace_kl` it sees the shape: of a Gaussian, a Laplacian
    and a uniform sample with equal moments it puts the matching family closest. Differentiable (through the order
    statistics), one sort per call; every element counts (no subsampling)."""
    if target not in TARGETS:
        raise ValueError(f"target: got {target!r}; expected one of {list(TARGETS)}")
    return _SpacingKL.apply(scale, max(w.numel(), 1), (target,), 1, w)


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

    def __init__(self, shape: tuple[int, ...], ops: tuple[str, ...], mode: Mode = "hws", *, weight_bits: int = 5,
                 hws: HWSConfig | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")
        unknown = [op for op in ops if op not in CONV_FAMILY]
        if unknown:
            raise ValueError(f"ops: {unknown[0]!r} cannot share a weight pool; expected one of {list(CONV_FAMILY)}")
        self.hws = hws if hws is not None else HWSConfig()
        self.hws.validate()
        self.shape, self.ops, self.mode = tuple(shape), tuple(ops), mode
        self.weight_bits, self.laplace_scale = weight_bits, self.hws.laplace_scale
        fan_in = math.prod(shape[1:])
        # Shift reads the N(0, 1) pool scaled by a power of two near 1/sqrt(fan_in) (exact in floating point), so
        # that its rounding does not saturate at |w| = 1; a BatchNorm follows, so the scale is immaterial otherwise.
        self.shift_prescale = 2.0 ** -round(math.log2(math.sqrt(fan_in)))
        if mode == "none":
            self.own = nn.ParameterDict({op: nn.Parameter(self._init(op, fan_in)) for op in ops})
        else:
            self.pool = nn.Parameter(torch.randn(shape))  # N(0, 1): the target of the Gaussian KL term
        transformed = any(block_type(op).pool_view == "transform" for op in ops)
        self.transform = TransformKernel(self.hws.segments, self.hws.binning) if (mode == "hws" and transformed) \
            else None

    def _init(self, op: str, fan_in: int) -> Tensor:
        w = torch.randn(self.shape)
        return w if block_type(op).own_init == "unit" else w / math.sqrt(fan_in)

    def stored(self, op: str) -> Tensor:
        """The tensor a ``none``-mode layer of ``op`` would store for this pool's view (before Shift's rounding):
        its own tensor in ``none`` mode, else the pool as ``op`` reads it: as it is (Conv), scaled for rounding
        (Shift), through ``T`` (Add, ``hws``; the pool itself under ``naive``)."""
        if op not in self.ops:
            raise ValueError(f"op: {op!r} is not a candidate of this pool; candidates are {list(self.ops)}")
        if self.mode == "none":
            return self.own[op]
        view = block_type(op).pool_view
        if view == "power_of_two":
            return self.pool * self.shift_prescale
        if view == "transform" and self.transform is not None:
            return self.transform(self.pool)
        return self.pool

    def weight(self, op: str) -> Tensor:
        """The tensor the ``op`` candidate convolves with: :meth:`stored`, rounded to powers of two for Shift."""
        w = self.stored(op)
        return round_power_of_two(w, self.weight_bits) if block_type(op).pool_view == "power_of_two" else w

    def add_eta(self, eta: float | None) -> float | None:
        """The ``eta`` of AdderNet's adaptive learning rate for the Add candidate reading this pool (``None``: off;
        :attr:`HWSConfig.add_adaptive_lr`)."""
        return self.hws.add_eta(self.mode, eta)

    def kl(self) -> Tensor | None:
        """``KL(P(W) || N(0,1)) + KL(P(T(W)) || Laplace(0, b))`` in ``hws`` mode (the configured estimator), else
        ``None``."""
        if self.mode != "hws":
            return None
        return position_kl([self])

    def extra_repr(self) -> str:
        return f"shape={self.shape}, ops={self.ops}, mode={self.mode!r}" + \
            (f", estimator={self.hws.estimator!r}" if self.mode == "hws" else "")


def position_kl(pools: Sequence[SharedConvWeight]) -> Tensor:
    """The eq. (5) terms of one layer position: the sum over its ``hws`` pools (the Laplace terms where an Add
    candidate reads them through ``T``) with the pools' estimator (:class:`HWSConfig`), in one fused node; 0 when no
    pool is in ``hws`` mode."""
    pools = [p for p in pools if p.mode == "hws"]
    if not pools:
        return torch.zeros(())
    cfg = pools[0].hws
    if any(p.hws != cfg for p in pools):
        raise ValueError("pools: the pools of one layer position must share one HWSConfig")
    transforms = [p.transform for p in pools]
    with_t = all(t is not None for t in transforms)  # else no Add candidate: the Gaussian terms only
    if cfg.estimator == "moments":
        return pools_kl([p.pool for p in pools], transforms if with_t else None, cfg.laplace_scale)
    if cfg.estimator == "softmax":
        return _softmax_kl(pools) if with_t else pools[0].pool.new_zeros(())
    extra = [*(t.alpha for t in transforms), *(t.segment_index(p.pool) for t, p in zip(transforms, pools))] \
        if with_t else []
    return _SpacingKL.apply(cfg.laplace_scale, cfg.max_samples, ("gaussian", "laplace") if with_t else ("gaussian",),
                            len(pools), *(p.pool for p in pools), *extra)


def _softmax_kl(pools: Sequence[SharedConvWeight]) -> Tensor:
    """The authors' estimator (``softmax``): ``kl_div(log_softmax(T(W)), softmax(z))`` with a fresh Laplace sample
    ``z`` per pool and step, with PyTorch's default reduction of ``kl_div`` (the mean over elements of
    ``softmax(z) (log softmax(z) - log_softmax(T(W)))``), on the Add term only."""
    total = pools[0].pool.new_zeros(())
    for p in pools:
        u = p.transform(p.pool).reshape(-1)
        z = torch.distributions.Laplace(0.0, p.hws.laplace_scale).sample(u.shape).to(u)
        target = torch.softmax(z, dim=0)
        total = total + (torch.xlogy(target, target) - target * torch.log_softmax(u, dim=0)).mean()
    return total

