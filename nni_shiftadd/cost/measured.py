"""Latency measured on this device, and the HAT latency predictor fitted on it (paper Sec. 4.1, after HAT).

:func:`measure_space` samples distinct architectures of an image space, builds each subnet, and times its forward
pass at batch ``batch`` on ``device`` (warm-up runs, then the mean of the runs left after trimming the fastest and
slowest ``trim`` fraction). With ``reference`` (the default, the space's all-Conv baseline) each architecture is
timed alternately with the reference and recorded as its latency ratio to it, which repeats on a machine whose
speed drifts where absolute times do not; the cache's latencies are those ratios times the reference's median
latency over all its measurements. Every measurement is appended to a JSON-lines cache as it is made, so a killed
build resumes where it stopped; the cache's first line records the settings, and a cache made with other settings
is refused. :func:`build_latency_predictor` fits the 3 x 400 MLP on the measurements (train/val/test split), saves it
(safetensors + JSON) and returns its report, whose ``test`` entry is the held-out error on measured latencies. The
evolution's ``latency: predictor`` constraint loads the saved file.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import statistics
from pathlib import Path
from typing import Any

import torch

from ..vocabulary import BLOCKS, REFERENCE_BLOCK
from .encoding import cv_encoder
from .predictor import fit_predictor, save_predictor
from .timing import measure_latency, measure_latency_ratio

__all__ = ["LatencyPredictorConfig", "MeasureSettings", "build_latency_predictor", "measure_space"]


@dataclasses.dataclass
class MeasureSettings:
    """How latency is measured; a cache holds measurements of one setting only."""

    space: str = "cv_small"
    device: str = "cpu"
    batch: int = 1
    warmup: int = 5
    repeats: int = 40
    trim: float = 0.2
    threads: int | None = None
    #: block type of the homogeneous baseline every architecture is timed against, run for run (None: absolute)
    reference: str | None = "conv"

    def validate(self) -> None:
        for name in ("batch", "repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}': must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"'warmup': must be >= 0, got {self.warmup}")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"'trim': a fraction in [0, 0.5) dropped from each end, got {self.trim}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"'device': expected 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"'device': {self.device!r} asked for, but CUDA is not available here")
        if self.reference is not None and self.reference not in BLOCKS:
            raise ValueError(f"'reference': expected null or one of {list(BLOCKS)}, got {self.reference!r}")


def _read_cache(path: Path, settings: MeasureSettings) -> dict[str, dict[str, float]]:
    """The rows of a cache made with ``settings``, by architecture key: ``latency_ms`` (absolute timing) or
    ``ratio`` and ``reference_ms`` (timing against the reference)."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    header = json.loads(lines[0])
    wanted = dataclasses.asdict(settings)
    saved = header.get("settings", {})
    changed = sorted(k for k in wanted if saved.get(k) != wanted[k])  # a setting an older cache lacks was None
    if changed:
        was = ", ".join(f"{k}: {saved.get(k)!r}" for k in changed)
        now = ", ".join(f"{k}: {wanted[k]!r}" for k in changed)
        raise ValueError(f"{path}: measured with other settings ({was}; now {now}); remove it or choose another "
                         "output")
    done: dict[str, dict[str, float]] = {}
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill: measured again
            continue
        done[row.pop("key")] = row
    return done


def _latencies(rows: list[dict[str, float]]) -> list[float]:
    """Latency (ms) of each row: as timed, or its ratio times the reference's median over all the rows."""
    if all("latency_ms" in row for row in rows):
        return [row["latency_ms"] for row in rows]
    reference_ms = statistics.median(row["reference_ms"] for row in rows)
    return [row["ratio"] * reference_ms for row in rows]


def measure_space(settings: MeasureSettings, samples: int, cache: str | os.PathLike[str], *, seed: int = 0,
                  progress: bool = True) -> tuple[list[dict[str, Any]], list[float]]:
    """``samples`` distinct architectures of ``settings.space`` (an image space) and their measured forward
    latency in ms, in a seeded order; measurements already in ``cache`` are reused. Timed against a reference, the
    latencies are the ratios times the reference's median over these samples' rounds."""
    from tqdm.auto import tqdm

    from ..space.cv import HybridCVSpace
    from ..space.spec import baseline_arch, canonical_arch, load_space, random_arch, structurally_valid
    settings.validate()
    spec = load_space(settings.space)
    if spec.kind != "image_classification":
        raise ValueError(f"space: {settings.space!r} is a translation space; measured latency is built for image "
                         "spaces (translation searches use the Eyeriss latency or a predictor fitted on it)")
    path = Path(cache)
    done = _read_cache(path, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else ""
    if not text.strip():
        path.write_text(json.dumps({"settings": dataclasses.asdict(settings), "torch": torch.__version__,
                                    "machine": platform.machine(), "processor": platform.processor()}) + "\n")
    elif not text.endswith("\n"):  # a line cut by a kill: the next row starts on a line of its own
        with open(path, "a") as log:
            log.write("\n")
    rng = random.Random(seed)
    archs: list[dict[str, Any]] = []
    keys: set[str] = set()
    x = torch.randn(settings.batch, spec.input.channels, spec.input.size, spec.input.size)
    reference = None
    if settings.reference is not None:
        try:
            reference_arch = baseline_arch(spec, settings.reference, fallback=REFERENCE_BLOCK)
        except ValueError as err:
            raise ValueError(f"'reference': {err}; or null to time absolutely") from None
        reference = HybridCVSpace(spec, "none").freeze(reference_arch)
    timing = dict(warmup=settings.warmup, repeats=settings.repeats, device=settings.device, trim=settings.trim)
    previous = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        with tqdm(total=samples, desc=f"measuring {spec.name} on {settings.device}", unit="arch",
                  disable=not progress) as bar, open(path, "a") as log:
            for _ in range(samples * 1000):
                if len(archs) == samples:
                    break
                arch = random_arch(spec, rng)
                if not structurally_valid(spec, arch):
                    continue
                arch = canonical_arch(spec, arch)
                key = json.dumps(arch)  # canonical: label order, plain values
                if key in keys:
                    continue
                keys.add(key)
                if key not in done:
                    model = HybridCVSpace(spec, "none").freeze(arch)
                    if reference is None:
                        done[key] = {"latency_ms": measure_latency(model, x, **timing)}
                    else:
                        ratio, reference_ms = measure_latency_ratio(model, reference, x, **timing)
                        done[key] = {"ratio": ratio, "reference_ms": reference_ms}
                    log.write(json.dumps({"key": key, **done[key]}) + "\n")
                    log.flush()
                    os.fsync(log.fileno())
                archs.append(arch)
                bar.update()
    finally:
        torch.set_num_threads(previous)
    if len(archs) < samples:
        raise ValueError(f"samples: the space {spec.name!r} has fewer than {samples} distinct architectures")
    return archs, _latencies([done[json.dumps(a)] for a in archs])


@dataclasses.dataclass
class LatencyPredictorConfig(MeasureSettings):
    """Schema of ``nni-shiftadd latency-predictor``: what to measure (the :class:`MeasureSettings` fields), how many
    architectures, the fit, and where the predictor goes (``<output>.safetensors``/``.json``, the measurements in
    ``<output>.measured.jsonl``)."""

    output: str = "runs/latency_cv_small"
    samples: int = 300
    seed: int = 0
    epochs: int = 150

    def settings(self) -> MeasureSettings:
        return MeasureSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(MeasureSettings)})

    def validate(self) -> None:
        try:
            super().validate()
        except ValueError as err:
            raise ValueError(f"field {err}") from None
        if self.samples < 10:
            raise ValueError(f"field 'samples': the fit splits them 80/10/10, so at least 10, got {self.samples}")
        if self.epochs < 1:
            raise ValueError(f"field 'epochs': must be >= 1, got {self.epochs}")


def build_latency_predictor(cfg: LatencyPredictorConfig, *, progress: bool = True) -> dict[str, Any]:
    """Measure ``cfg.samples`` architectures (:func:`measure_space`, cached in ``<output>.measured.jsonl``), fit the
    predictor and save it as ``<output>.safetensors`` + ``<output>.json``; returns the fit report with the
    measurement settings, whose ``test`` entry is the held-out error on measured latencies."""
    from ..space.spec import load_space

    cfg.validate()
    output = Path(cfg.output)
    archs, latencies = measure_space(cfg.settings(), cfg.samples, output.with_name(output.name + ".measured.jsonl"),
                                     seed=cfg.seed, progress=progress)
    encoder = cv_encoder(load_space(cfg.space))
    predictor, report = fit_predictor(encoder, archs, latencies, epochs=cfg.epochs, seed=cfg.seed, progress=progress)
    report = {**report, "measured": {**dataclasses.asdict(cfg.settings()), "samples": cfg.samples,
                                     "min_ms": min(latencies), "max_ms": max(latencies)}}
    save_predictor(output, predictor, encoder, report)
    return report
