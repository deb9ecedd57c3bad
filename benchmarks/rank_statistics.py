"""Bootstrap intervals of the ranking studies: the vectorised rank statistics
(:func:`nni_shiftadd.experiment.rank_statistics.bootstrap_interval`, numpy over all resamples at once) against the
baseline of one ``scipy.stats`` call per metric, seed and resample, on the image study's shape (30 architectures, 3
supernet seeds, 2,000 resamples). Target: at least 10x faster, with intervals equal to the baseline's to 1e-9. A
measurement, not a test: the exit status is 0 whatever the outcome.

Usage::

    .venv/bin/python benchmarks/rank_statistics.py [--archs 30] [--seeds 3] [--samples 2000] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from nni_shiftadd.experiment.rank_statistics import bootstrap_interval

TARGET_SPEEDUP = 10.0


def scipy_interval(per_seed: np.ndarray, target: np.ndarray, samples: int, seed: int = 0) -> dict[str, list[float]]:
    """The baseline: the same resamples (:func:`bootstrap_interval`'s generator), scipy per resample and seed."""
    draws: dict[str, list[float]] = {"kendall_tau": [], "pearson_r": [], "spearman_rho": []}
    for idx in np.random.default_rng(seed).integers(0, target.size, (samples, target.size)):
        y = target[idx]
        runs = {k: [] for k in draws}
        for row in per_seed:
            x = row[idx]
            if np.ptp(x) == 0 or np.ptp(y) == 0:
                continue
            runs["kendall_tau"].append(stats.kendalltau(x, y).statistic)
            runs["pearson_r"].append(stats.pearsonr(x, y).statistic)
            runs["spearman_rho"].append(stats.spearmanr(x, y).statistic)
        for k, v in runs.items():
            draws[k].append(float(np.mean(v)) if v else np.nan)
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=30)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--json", type=Path, help="also write the results to this path")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    target = rng.normal(size=args.archs)
    per_seed = target + rng.normal(scale=1.0, size=(args.seeds, args.archs))
    start = time.perf_counter()
    ours = bootstrap_interval(per_seed, target, 5, args.samples)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    baseline = scipy_interval(per_seed, target, args.samples)
    slow = time.perf_counter() - start
    error = max(abs(a - b) for k in baseline for a, b in zip(ours[k], baseline[k]))
    speedup = slow / fast
    verdict = "ok" if speedup >= TARGET_SPEEDUP and error <= 1e-9 else "MISS"
    print(f"bootstrap of {args.samples} resamples, {args.seeds} seeds x {args.archs} architectures: "
          f"vectorised {fast:.3f} s, scipy per resample {slow:.3f} s: {speedup:.1f}x (target >= {TARGET_SPEEDUP:.0f}x), "
          f"largest interval difference {error:.1e} (<= 1e-9): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"vectorised_s": fast, "scipy_s": slow, "speedup": speedup,
                                         "max_abs_difference": error, "verdict": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
