"""The training data of a latency predictor: architectures sampled and profiled (:func:`collect_samples`), and
latencies measured on this device (:func:`measure_latency`, and :func:`measure_latency_ratio` against a reference
network run beside each, which cancels a drifting machine speed).
"""
from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .encoding import Choice

__all__ = ["collect_samples", "measure_latency", "measure_latency_ratio"]

def collect_samples(space: Mapping[str, Sequence[Choice]], profile_fn: Callable[[dict], float], n: int, seed: int,
                    *, progress: bool = True) -> tuple[list[dict], list[float]]:
    """``n`` distinct uniformly random architectures of ``space`` and ``profile_fn`` of each (e.g. latency)."""
    labels = sorted(space)
    size = math.prod(len(space[label]) for label in labels)
    if n > size:
        raise ValueError(f"asked for {n} distinct architectures but the space has only {size}")
    from tqdm.auto import tqdm
    rng = random.Random(seed)
    choices = [list(space[label]) for label in labels]

    def candidates():
        if 2 * n > size:  # most of a small space: draw without replacement instead of rejecting duplicates
            for idx in rng.sample(range(size), n):
                key = []
                for options in reversed(choices):
                    idx, i = divmod(idx, len(options))
                    key.append(options[i])
                yield tuple(reversed(key))
        else:
            while True:
                yield tuple(rng.choice(options) for options in choices)

    seen: set[tuple] = set()
    archs: list[dict] = []
    values: list[float] = []
    with tqdm(total=n, desc="profiling architectures", unit="arch", disable=not progress) as bar:
        for key in candidates():
            if len(archs) == n:
                break
            if key in seen:
                continue
            seen.add(key)
            arch = dict(zip(labels, key))
            value = float(profile_fn(dict(arch)))
            if not math.isfinite(value):
                raise ValueError(f"profile_fn returned {value} for {arch!r}")
            archs.append(arch)
            values.append(value)
            bar.update()
    return archs, values


def _infer_device(model: nn.Module, inputs: Sequence[Any]) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    for x in inputs:
        if isinstance(x, Tensor):
            return x.device
    return torch.device("cpu")


def _timed_runs(models: Sequence[nn.Module], inputs: Sequence[Any], warmup: int, repeats: int,
                device: str | torch.device | None) -> list[list[float]]:
    """Wall-clock times (ms) of ``repeats`` forward passes of each model, the models run one after another within
    each round (after ``warmup`` untimed rounds), in eval mode under ``torch.no_grad()``."""
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    dev = torch.device(device) if device is not None else _infer_device(models[0], inputs)
    for model in models:
        model.to(dev)
    inputs = tuple(x.to(dev) if isinstance(x, Tensor) else x for x in inputs)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    was_training = [model.training for model in models]
    times: list[list[float]] = [[] for _ in models]
    try:
        for model in models:
            model.eval()
        with torch.no_grad():
            for i in range(warmup + repeats):
                for model, runs in zip(models, times):
                    sync()
                    t0 = time.perf_counter()
                    model(*inputs)
                    sync()
                    if i >= warmup:
                        runs.append((time.perf_counter() - t0) * 1e3)
    finally:
        for model, training in zip(models, was_training):
            model.train(training)
    return times


def _check_trim(trim: float | None) -> None:
    if trim is not None and not 0 <= trim < 0.5:
        raise ValueError(f"trim: a fraction in [0, 0.5) dropped from each end, got {trim}")


def _summary(values: list[float], trim: float | None) -> float:
    """The median of ``values``, or with ``trim`` the mean of those left after dropping that fraction at each end."""
    if trim is None:
        return float(statistics.median(values))
    cut = int(len(values) * trim)
    return float(statistics.fmean(sorted(values)[cut:len(values) - cut]))


def measure_latency(model: nn.Module, *inputs: Any, warmup: int = 3, repeats: int = 10,
                    device: str | torch.device | None = None, trim: float | None = None) -> float:
    """Median wall-clock time (ms) of ``model(*inputs)`` under ``torch.no_grad()`` in eval mode; with ``trim``, the
    mean of the runs left after dropping that fraction of the fastest and of the slowest (outliers: a page fault,
    another process taking the core).

    ``device`` defaults to the model's (or the inputs') device; with an explicit device the model is moved
    there (in place) and tensor inputs are copied there. On CUDA each run is bracketed by synchronisations so
    that asynchronous kernel launches are timed to completion. The model's train/eval mode is restored.
    """
    _check_trim(trim)
    return _summary(_timed_runs([model], inputs, warmup, repeats, device)[0], trim)


def measure_latency_ratio(model: nn.Module, reference: nn.Module, *inputs: Any, warmup: int = 3,
                          repeats: int = 10, device: str | torch.device | None = None,
                          trim: float | None = None) -> tuple[float, float]:
    """``(ratio, reference_ms)``: the latency of ``model`` relative to ``reference``, each run of the one timed
    right after a run of the other, summarised like :func:`measure_latency` over the per-round ratios; and the
    reference's own latency (ms) over the same rounds.

    On a shared machine the speed of a core drifts by tens of percent within seconds (another tenant on the same
    physical core); both models of a round see the same drift, so their ratio repeats where absolute times do not
    (measured on the 2-core VM of ``benchmarks/cost.py`` (f): two passes over the same subnets differ by 16-22% on
    average in absolute time, 3-5% in ratio)."""
    _check_trim(trim)
    runs, ref_runs = _timed_runs([model, reference], inputs, warmup, repeats, device)
    return _summary([a / b for a, b in zip(runs, ref_runs)], trim), _summary(ref_runs, trim)
