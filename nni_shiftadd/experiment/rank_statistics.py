"""Rank statistics of the ranking studies: how faithfully one list of scores (inherited accuracy or loss in a
supernet) orders architectures against another (stand-alone training), with bootstrap intervals over the
architectures and paired comparisons of two weight-sharing modes trained with the same seeds; and whether one list of
scores tells architectures apart beyond the noise between supernet seeds.

Kendall tau is the paper's Table 5 measure; Pearson r, Spearman rho and top-k precision are reported beside it.
They are computed for many resamples at once (:func:`rank_metrics_rows`, numpy over a ``[resamples, architectures]``
array, the same values as ``scipy.stats``' ``kendalltau`` (tau-b), ``pearsonr`` and ``spearmanr``): a bootstrap of
2,000 resamples takes milliseconds rather than the seconds of 2,000 scipy calls per metric.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

__all__ = ["architecture_effect", "bootstrap_interval", "paired_difference", "pooled_sign_test", "rank_metrics",
           "rank_metrics_rows"]


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    dx, dy = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    dx /= np.linalg.norm(dx, axis=1, keepdims=True)
    dy /= np.linalg.norm(dy, axis=1, keepdims=True)
    return np.clip((dx * dy).sum(axis=1), -1.0, 1.0)


def rank_metrics_rows(inherited: np.ndarray, standalone: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """:func:`rank_metrics` of every row pair of two ``[rows, architectures]`` arrays at once: one value per row for
    each metric (NaN for the correlations of a row where either list is constant)."""
    from scipy.stats import rankdata

    x, y = np.atleast_2d(np.asarray(inherited, dtype=float)), np.atleast_2d(np.asarray(standalone, dtype=float))
    rows, n = x.shape
    top_x = np.argsort(-x, axis=1, kind="stable")[:, :top_k]
    top_y = np.argsort(-y, axis=1, kind="stable")[:, :top_k]
    top = (top_x[:, :, None] == top_y[:, None, :]).any(axis=2).sum(axis=1) / top_k
    constant = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    out = {name: np.full(rows, math.nan) for name in ("kendall_tau", "pearson_r", "spearman_rho")}
    live = ~constant
    if live.any():
        xs, ys = x[live], y[live]
        i, j = np.triu_indices(n, 1)  # every pair once: tau-b = sum(sx sy) / sqrt(sum(sx^2) sum(sy^2)), ties 0
        sx, sy = np.sign(xs[:, i] - xs[:, j]), np.sign(ys[:, i] - ys[:, j])
        out["kendall_tau"][live] = np.clip((sx * sy).sum(axis=1) / np.sqrt((sx * sx).sum(axis=1))
                                           / np.sqrt((sy * sy).sum(axis=1)), -1.0, 1.0)
        out["pearson_r"][live] = _pearson_rows(xs, ys)
        out["spearman_rho"][live] = _pearson_rows(rankdata(xs, axis=1), rankdata(ys, axis=1))
    return {**out, "top_k_precision": top}


def rank_metrics(inherited: Sequence[float], standalone: Sequence[float], top_k: int) -> dict[str, float]:
    """Kendall tau (tau-b), Pearson r, Spearman rho and top-``k`` precision (the share of the stand-alone top
    ``k`` among the inherited top ``k``) of two score lists over the same architectures (higher is better)."""
    return {k: float(v[0]) for k, v in rank_metrics_rows(np.asarray(inherited, dtype=float)[None],
                                                         np.asarray(standalone, dtype=float)[None], top_k).items()}


def _resamples(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (samples, n))


@contextmanager
def _quiet_nan_mean() -> Iterator[None]:
    """The mean over seeds of a resample where every seed's metric is NaN (a constant resample) is NaN, silently:
    the percentiles that follow skip it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
        yield


def bootstrap_interval(per_seed: Sequence[Sequence[float]], standalone: Sequence[float], top_k: int, samples: int,
                       seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of the seed-mean of each :func:`rank_metrics` when the architectures are resampled
    with replacement (``samples`` times; the same resample for every seed)."""
    inherited = np.asarray(per_seed, dtype=float)
    target = np.asarray(standalone, dtype=float)
    idx = _resamples(target.size, samples, seed)
    runs = [rank_metrics_rows(row[idx], target[idx], min(top_k, target.size)) for row in inherited]
    with _quiet_nan_mean():
        draws = {key: np.nanmean([r[key] for r in runs], axis=0) for key in runs[0]}
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


def paired_difference(first: Sequence[Sequence[float]], second: Sequence[Sequence[float]],
                      standalone: Sequence[float], top_k: int, samples: int, seed: int = 0,
                      metric: str = "kendall_tau") -> dict[str, object]:
    """``metric`` of ``first`` minus that of ``second``, seed by seed (row ``i`` of each was trained with the same
    seed: the same data order and sampled paths), averaged over the seeds; with the per-seed differences, their
    range, and a 95% bootstrap interval over architectures (one resample shared by both modes and all seeds).
    ``beyond_noise`` says whether that interval excludes 0 and every seed's difference has the same sign."""
    a, b = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: both modes need the same seeds and architectures, got {a.shape} and "
                         f"{b.shape}")
    target = np.asarray(standalone, dtype=float)
    k = min(top_k, target.size)
    per_seed = [rank_metrics(x, target, k)[metric] - rank_metrics(y, target, k)[metric] for x, y in zip(a, b)]
    idx = _resamples(target.size, samples, seed)
    differences = [rank_metrics_rows(x[idx], target[idx], k)[metric] - rank_metrics_rows(y[idx], target[idx], k)[metric]
                   for x, y in zip(a, b)]
    with _quiet_nan_mean():
        draws = np.nanmean(differences, axis=0)
    lo, hi = float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))
    same_sign = all(d > 0 for d in per_seed) or all(d < 0 for d in per_seed)
    return {"metric": metric, "mean": float(np.mean(per_seed)), "per_seed": [float(d) for d in per_seed],
            "range": [float(min(per_seed)), float(max(per_seed))], "interval": [lo, hi],
            "beyond_noise": bool((lo > 0 or hi < 0) and same_sign)}


def pooled_sign_test(differences: Sequence[float]) -> dict[str, object]:
    """Paired differences pooled over several comparisons (one mode minus another, every seed of every budget): how
    many are positive and negative, their mean, and the two-sided sign test's p-value (ties dropped). Where the
    comparisons share seeds (a budget's run starts with the same data order as the smaller budget's), the pairs are
    not independent and the p-value summarises rather than decides."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    positive, negative = int((d > 0).sum()), int((d < 0).sum())
    p = float(stats.binomtest(positive, positive + negative).pvalue) if positive + negative else math.nan
    return {"pairs": int(d.size), "positive": positive, "negative": negative,
            "mean": float(d.mean()) if d.size else math.nan, "sign_test_p": p}


def architecture_effect(per_seed: Sequence[Sequence[float]], alpha: float = 0.05) -> dict[str, object]:
    """How much of the spread of one score over architectures is theirs rather than the supernet seed's, for what a
    ranking sees: a two-way ANOVA without replication of ``per_seed`` (a row per supernet seed, a column per
    architecture; every supernet scores every architecture). A seed's supernet that scores every architecture
    alike higher (``seed_shifts``) reorders nothing, so the noise is what is left after the architecture and the
    seed: one architecture's score moving against the others' from seed to seed. Returns the architectures'
    standard deviation (their variance component) beside that noise's, the consistency ICC (the share of the
    variance the architecture holds: 1 without noise, about 0 when it is all noise), the F test of architecture
    against the noise (``F``, its degrees of freedom, ``p_value``) and ``beyond_noise``: ``p_value < alpha``
    (without any noise: whether the architectures differ at all; ``F`` and ``p_value`` are then ``None``, and so is
    ``icc`` when nothing varies)."""
    from scipy import stats

    x = np.asarray(per_seed, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise ValueError(f"architecture_effect: needs two or more seeds of two or more architectures, got shape "
                         f"{x.shape}")
    if not np.isfinite(x).all():
        seed, arch = np.argwhere(~np.isfinite(x))[0]
        raise ValueError(f"architecture_effect: score {x[seed, arch]} of architecture {arch} with seed {seed} is not "
                         "finite")
    seeds, archs = x.shape
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    df = (archs - 1, (archs - 1) * (seeds - 1))
    between = seeds * float(x.mean(axis=0).var(ddof=1))  # the architectures' mean square
    noise = float((residual ** 2).sum()) / df[1]  # the residual mean square: architecture x seed
    f: float | None = None
    p: float | None = None
    if noise > 0:
        f = between / noise
        p = float(stats.f.sf(f, *df))
        beyond = p < alpha
    else:  # no F test without noise (F and p None)
        beyond = between > 0
    return {"arch_std": math.sqrt(max(between - noise, 0.0) / seeds), "seed_noise_std": math.sqrt(noise),
            "seed_shifts": [float(v) for v in x.mean(axis=1) - x.mean()],
            "icc": (between - noise) / (between + (seeds - 1) * noise) if between + noise > 0 else None,
            "F": f, "df": list(df), "p_value": p, "beyond_noise": bool(beyond)}
