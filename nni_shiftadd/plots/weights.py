"""Histograms of the weights a supernet's Conv, Shift and Add candidates compute with (paper Fig. 3 and Fig. 7).

Heterogeneous weight sharing (:mod:`nni_shiftadd.hws`) is meant to give Conv Gaussian weights, Shift discrete
powers of two and Add Laplacian weights, all read from one pool per layer position. These plots show whether a
trained supernet got there: per weight pool, a histogram of each view with the fitted density overlaid (a Gaussian
by moments for Conv, a Laplace by maximum likelihood for Add) and, for Shift, the frequency of each power of two.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from ..hws import SharedConvWeight, spacing_kl
from ..nn.hybrid import HybridBlock
from ..vocabulary import CONV_FAMILY, block_type
from .subnet import OP_COLORS, OP_NAMES, save_figure

#: The candidates that read a weight pool, in column order.
POOL_OPS: tuple[str, ...] = CONV_FAMILY

Fits = dict[str, dict[str, dict[str, float]]]


def weight_pools(supernet: nn.Module) -> dict[str, SharedConvWeight]:
    """Every weight pool of the supernet's hybrid layers in network order, named ``<layer>.<pool>``, e.g.
    ``stage1.layer0.spatial`` (pools: ``reduce``, ``spatial`` (the 3x3), ``expand``, ``shortcut``).

    Works on the model space and on its one-shot form: any module with a ``label`` and a
    :class:`~nni_shiftadd.nn.hybrid.HybridBlock` ``block`` is a hybrid layer. Attn-only layers have no pool."""
    pools: dict[str, SharedConvWeight] = {}
    for module in supernet.modules():
        block = getattr(module, "block", None)
        if isinstance(block, HybridBlock) and hasattr(module, "label") and block.conv_ops:
            layer = str(module.label).removesuffix(".op")
            for key, pool in block.pools.items():
                pools.setdefault(f"{layer}.{key}", pool)
    return pools


def _select(pools: dict[str, SharedConvWeight], layers: Sequence[str] | None) -> dict[str, SharedConvWeight]:
    """``layers`` by name (a bare layer name means its 3x3 ``spatial`` pool); default: the 3x3 pool of the first
    layer of every stage, i.e. one layer per resolution."""
    if not pools:
        raise ValueError("supernet: it has no Conv/Shift/Add weight pools (no hybrid layer offers those blocks)")
    if layers is None:
        chosen = [name for name in pools if name.endswith(".layer0.spatial")]
        return {name: pools[name] for name in chosen or list(pools)[:4]}
    out = {}
    for name in layers:
        key = name if name in pools else f"{name}.spatial"
        if key not in pools:
            raise ValueError(f"layers: unknown weight pool {name!r}; the supernet has {list(pools)}")
        out[key] = pools[key]
    if not out:
        raise ValueError("layers: empty; name at least one weight pool, or pass None for the default")
    return out


@torch.no_grad()
def pool_weights(pool: SharedConvWeight) -> dict[str, np.ndarray]:
    """The flattened weights each candidate of ``pool`` computes with: Conv the pool (its own tensor in ``none``
    mode), Shift the power-of-two rounding, Add ``T(W)`` (``hws``) or the pool (``naive``)."""
    return {op: pool.weight(op).detach().to("cpu", torch.float64).flatten().numpy() for op in POOL_OPS
            if op in pool.ops}


def fit_gaussian(w: np.ndarray) -> dict[str, float]:
    """Maximum-likelihood Gaussian: the sample mean and the (biased, ``ddof=0``) standard deviation."""
    return {"mean": float(np.mean(w)), "std": float(np.std(w))}


def fit_laplace(w: np.ndarray) -> dict[str, float]:
    """Maximum-likelihood Laplace: location the median, scale the mean absolute deviation from it."""
    loc = float(np.median(w))
    return {"loc": loc, "scale": float(np.mean(np.abs(w - loc)))}


def shift_levels(w: np.ndarray) -> dict[str, float]:
    """Summary of power-of-two weights: number of distinct values, share of zeros, range of the exponent of the
    non-zero ones (``nan`` if all are zero)."""
    nonzero = np.abs(w[w != 0])
    exps = np.log2(nonzero) if nonzero.size else np.array([math.nan])
    return {"levels": float(np.unique(w).size), "zero_fraction": float(np.mean(w == 0)),
            "min_exponent": float(np.min(exps)), "max_exponent": float(np.max(exps))}


def _discrete(op: str) -> bool:
    """Whether ``op`` computes with a few power-of-two levels (a bar chart of levels) rather than a density."""
    return block_type(op).pool_view == "power_of_two"


def _fit(op: str) -> Any:
    """How the weights ``op`` computes with are summarised: their power-of-two levels, or a fit of the
    distribution they should follow (eq. (5): Gaussian for Conv, Laplace for Add)."""
    return shift_levels if _discrete(op) else {"gaussian": fit_gaussian, "laplace": fit_laplace}[block_type(op).prior]


def weight_fits(supernet: nn.Module, layers: Sequence[str] | None = None) -> Fits:
    """``{pool name: {op: fitted parameters}}`` for the pools :func:`plot_weight_histograms` draws: Conv
    ``{mean, std}`` (:func:`fit_gaussian`), Add ``{loc, scale}`` (:func:`fit_laplace`), Shift
    :func:`shift_levels`."""
    return {name: {op: _fit(op)(w) for op, w in pool_weights(pool).items()}
            for name, pool in _select(weight_pools(supernet), layers).items()}


def shape_stats(w: np.ndarray) -> dict[str, float]:
    """How Gaussian or Laplacian the sample ``w`` is, whatever its location and scale: its excess kurtosis (0 for a
    Gaussian, 3 for a Laplacian) and the KL divergence of its distribution from its maximum-likelihood Gaussian and
    Laplace fits (nats; :func:`nni_shiftadd.hws.spacing_kl` on the standardised sample, so a value near 0 means that
    family's shape)."""
    x = torch.from_numpy(np.asarray(w, dtype=np.float64).ravel())
    g, lp = fit_gaussian(x.numpy()), fit_laplace(x.numpy())
    centred = x - x.mean()
    kurtosis = float((centred.pow(4).mean() / centred.pow(2).mean().clamp_min(1e-300) ** 2).item()) - 3.0
    return {"excess_kurtosis": kurtosis,
            "kl_gaussian": float(spacing_kl((x - g["mean"]) / max(g["std"], 1e-12))),
            "kl_laplace": float(spacing_kl((x - lp["loc"]) / max(lp["scale"], 1e-12), "laplace"))}


def weight_shapes(supernet: nn.Module, layers: Sequence[str] | None = None) -> Fits:
    """``{pool name: {op: shape_stats}}`` of the Conv and Add views of the pools :func:`plot_weight_histograms`
    draws (default: the 3x3 pool of each stage's first layer): whether HWS made Add's ``T(W)`` Laplacian (Fig. 3)."""
    return {name: {op: shape_stats(w) for op, w in pool_weights(pool).items() if not _discrete(op)}
            for name, pool in _select(weight_pools(supernet), layers).items()}


def _pow2_label(v: float) -> str:
    if v == 0:
        return "0"
    return f"${'-' if v < 0 else ''}2^{{{int(round(math.log2(abs(v))))}}}$"


def _gaussian_pdf(x: np.ndarray, fit: dict[str, float]) -> np.ndarray:
    sd = max(fit["std"], 1e-12)
    return np.exp(-0.5 * ((x - fit["mean"]) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _laplace_pdf(x: np.ndarray, fit: dict[str, float]) -> np.ndarray:
    b = max(fit["scale"], 1e-12)
    return np.exp(-np.abs(x - fit["loc"]) / b) / (2 * b)


def _draw_continuous(ax: Any, w: np.ndarray, op: str, fit: dict[str, float]) -> str:
    """Histogram of Conv or Add weights with the op's fit (solid) and, for contrast, the other family's fit
    (dashed): HWS should leave Conv Gaussian and make Add Laplacian."""
    bins = int(np.clip(np.sqrt(w.size), 20, 80))
    ax.hist(w, bins=bins, density=True, color=OP_COLORS[op], alpha=0.6, edgecolor="none")
    lo, hi = np.min(w), np.max(w)
    pad = 0.05 * (hi - lo or 1.0)
    x = np.linspace(lo - pad, hi + pad, 400)
    gauss, laplace = ("Gaussian", _gaussian_pdf, fit_gaussian), ("Laplace", _laplace_pdf, fit_laplace)
    gaussian = block_type(op).prior == "gaussian"
    (name, pdf, _), (other, other_pdf, other_fit) = (gauss, laplace) if gaussian else (laplace, gauss)
    ax.plot(x, pdf(x, fit), color="black", lw=1.3, label=f"{name} fit")
    ax.plot(x, other_pdf(x, other_fit(w)), color="#777777", lw=1.0, ls="--", label=f"{other} fit")
    if gaussian:
        return f"Gaussian: \u03bc={fit['mean']:#.3g}, \u03c3={fit['std']:#.3g}"
    return f"Laplace: loc={fit['loc']:#.3g}, b={fit['scale']:#.3g}"


def _draw_levels(ax: Any, w: np.ndarray, op: str, fit: dict[str, float]) -> str:
    values, counts = np.unique(w, return_counts=True)
    pos = np.arange(values.size)
    ax.bar(pos, counts / w.size, width=0.8, color=OP_COLORS[op], edgecolor="none")
    step = max(1, math.ceil(values.size / 14))  # keep the tick labels readable
    ax.set_xticks(pos[::step], [_pow2_label(v) for v in values[::step]], fontsize=7, rotation=90)
    ax.set_ylabel("fraction", fontsize=8)
    if math.isnan(fit["min_exponent"]):
        return "all zero"
    return (f"$\\pm 2^P$, P\u2208[{fit['min_exponent']:.0f}, {fit['max_exponent']:.0f}], "
            f"{fit['levels']:.0f} levels")


def plot_weight_histograms(supernet: nn.Module, path: str | os.PathLike[str],
                           layers: Sequence[str] | None = None) -> Path:
    """Draw, for each selected weight pool (one row) and each of Conv, Shift, Add (one column), the histogram of
    the weights that candidate computes with, with its fit (:func:`weight_fits`, also in the panel titles), to
    ``path``; return the path.

    ``layers``: pool names of :func:`weight_pools` (``stage0.layer0.spatial``; a bare ``stage0.layer0`` means its
    3x3 pool); default the 3x3 pool of the first layer of every stage. Unknown names raise ``ValueError``.
    """
    selected = _select(weight_pools(supernet), layers)
    cols = [op for op in POOL_OPS if any(op in pool.ops for pool in selected.values())]
    fig = Figure(figsize=(4.3 * len(cols), 2.7 * len(selected) + 0.6), layout="constrained")
    axes = fig.subplots(len(selected), len(cols), squeeze=False)
    for row, (name, pool) in zip(axes, selected.items()):
        weights = pool_weights(pool)
        for ax, op in zip(row, cols):
            if op not in weights:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"no {OP_NAMES[op]} candidate", ha="center", va="center", transform=ax.transAxes)
                continue
            w, fit = weights[op], _fit(op)(weights[op])
            what = _draw_levels(ax, w, op, fit) if _discrete(op) else _draw_continuous(ax, w, op, fit)
            ax.set_title(f"{name} \u00b7 {OP_NAMES[op]} (n={w.size})\n{what}", fontsize=8.5)
            ax.tick_params(labelsize=7)
            if not _discrete(op):
                ax.legend(fontsize=7, frameon=False, loc="upper right")
                ax.set_ylabel("density", fontsize=8)
    mode = next(iter(selected.values())).mode
    transform = {"hws": "Add reads T(W)", "naive": "one shared pool, no T", "none": "separate weights per op"}[mode]
    fig.suptitle(f"Weight distributions of the supernet ({mode} mode: {transform})", fontsize=10)
    return save_figure(fig, path)
