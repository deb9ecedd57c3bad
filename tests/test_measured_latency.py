"""The measured-latency predictor: subnets timed on this CPU (warm-up, trimmed mean; against a reference run for
run, so that a drifting machine speed cancels), cached so a kill resumes, the HAT MLP fitted and saved, and the
evolution's ``latency: predictor`` constraint using it end to end. The held-out error on a realistic sample count
is measured by ``benchmarks/cost.py`` (a timed number does not belong in a test)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from nni_shiftadd.cli import main
from nni_shiftadd.cost import measured
from nni_shiftadd.cost.measured import LatencyPredictorConfig, MeasureSettings, build_latency_predictor, measure_space
from nni_shiftadd.cost.predictor import load_predictor
from nni_shiftadd.cost.timing import measure_latency, measure_latency_ratio
from nni_shiftadd.space import load_space

FAST = dict(samples=12, repeats=2, warmup=0, epochs=5, threads=1)


def test_trimmed_mean_drops_the_outliers() -> None:
    delays = iter([0.001, 0.001, 0.001, 0.001, 0.06])

    class Sleepy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(next(delays))
            return x

    ms = measure_latency(Sleepy(), torch.zeros(1), warmup=0, repeats=5, trim=0.2)
    assert ms < 10  # the 60 ms run is trimmed; the mean of all five would be above 12 ms
    with pytest.raises(ValueError, match="trim"):
        measure_latency(Sleepy(), torch.zeros(1), trim=0.5)


def test_a_ratio_to_the_reference_cancels_a_drifting_machine_speed() -> None:
    """The machine runs at full speed on even rounds and at a third of it on odd ones (a neighbour on the core):
    absolute times spread threefold, the ratio of model to reference stays at 2."""
    slowdown = iter(x for _ in range(100) for x in (1, 1, 3, 3))  # (model, reference) per round

    class Sleepy(nn.Module):
        def __init__(self, ms: float) -> None:
            super().__init__()
            self.ms = ms

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(self.ms * next(slowdown) / 1e3)
            return x

    ratio, reference_ms = measure_latency_ratio(Sleepy(4.0), Sleepy(2.0), torch.zeros(1), warmup=1, repeats=8)
    assert ratio == pytest.approx(2.0, rel=0.1) and 2.0 <= reference_ms <= 7.0
    with pytest.raises(ValueError, match="trim"):
        measure_latency_ratio(Sleepy(1.0), Sleepy(1.0), torch.zeros(1), trim=0.5)


def test_build_saves_a_predictor_and_resumes_from_its_cache(tmp_path: Path, monkeypatch) -> None:
    cfg = LatencyPredictorConfig(output=str(tmp_path / "lat"), **FAST)
    report = build_latency_predictor(cfg, progress=False)
    assert report["measured"]["samples"] == 12 and report["measured"]["device"] == "cpu"
    assert 0 < report["measured"]["min_ms"] <= report["measured"]["max_ms"]
    assert report["test"]["n"] >= 1 and (tmp_path / "lat.safetensors").is_file()
    cache = tmp_path / "lat.measured.jsonl"
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 12 and json.loads(lines[0])["settings"]["trim"] == 0.2
    rows = [json.loads(line) for line in lines[1:]]
    assert all(row["ratio"] > 0 and row["reference_ms"] > 0 for row in rows)  # timed against all-Conv

    # a kill in the middle of a write: the cut line is measured again, the others are reused
    cache.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    calls = []
    real = measured.measure_latency_ratio
    monkeypatch.setattr(measured, "measure_latency_ratio", lambda *a, **k: calls.append(1) or real(*a, **k))
    archs, latencies = measure_space(cfg.settings(), 12, cache)
    assert len(calls) == 1 and len(archs) == 12 and all(v > 0 for v in latencies)
    # latency = ratio x the reference's median over the rows
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 11 + 1 + 1 and lines[-2] == lines[-1][:10]  # the cut line stays, alone on its line
    rows = [json.loads(line) for line in lines[1:] if line != lines[-2]]
    reference_ms = sorted(row["reference_ms"] for row in rows)
    median = (reference_ms[5] + reference_ms[6]) / 2
    assert sorted(latencies) == pytest.approx(sorted(row["ratio"] * median for row in rows))

    with pytest.raises(ValueError, match=r"measured with other settings \(batch: 1; now batch: 4\)"):
        measure_space(MeasureSettings("cv_small", batch=4, repeats=2, warmup=0, threads=1), 12, cache)
    with pytest.raises(ValueError, match=r"\(reference: 'conv'; now reference: None\)"):
        measure_space(MeasureSettings("cv_small", repeats=2, warmup=0, threads=1, reference=None), 12, cache)


def test_absolute_timing_without_a_reference_and_old_caches(tmp_path: Path) -> None:
    settings = MeasureSettings("cv_small", repeats=2, warmup=0, threads=1, reference=None)
    cache = tmp_path / "abs.jsonl"
    _, latencies = measure_space(settings, 5, cache, progress=False)
    rows = [json.loads(line) for line in cache.read_text().splitlines()[1:]]
    assert [row["latency_ms"] for row in rows] == latencies and all("ratio" not in row for row in rows)
    # a cache from before the reference setting (no such key: timed absolutely) is read as reference None
    lines = cache.read_text().splitlines()
    header = json.loads(lines[0])
    del header["settings"]["reference"]
    cache.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    assert measure_space(settings, 5, cache, progress=False)[1] == latencies
    with pytest.raises(ValueError, match="'reference': expected null or one of"):
        measure_space(MeasureSettings("cv_small", reference="mult"), 5, cache)
    # a space without Conv has no all-Conv reference: the error names the field and the way out
    source = (Path(__file__).resolve().parents[1] / "search_spaces" / "cv_small.yaml").read_text()
    no_conv = tmp_path / "no_conv.yaml"
    no_conv.write_text(source.replace("blocks: [conv, shift, add, attn]", "blocks: [shift, add]"))
    with pytest.raises(ValueError, match=r"'reference': baseline 'conv'.*or null to time absolutely"):
        measure_space(MeasureSettings(str(no_conv), repeats=2, warmup=0), 5, tmp_path / "nc.jsonl", progress=False)


def test_the_search_constrains_predicted_latency(tmp_path: Path) -> None:
    from nni_shiftadd.strategy import Evolution, load_preset, space_cost_fn

    cfg = LatencyPredictorConfig(output=str(tmp_path / "lat"), **{**FAST, "samples": 30})
    build_latency_predictor(cfg, progress=False)
    predictor, _, report = load_predictor(tmp_path / "lat")
    spec = load_space("cv_small")
    cost = space_cost_fn(spec, latency="predictor", predictor=str(tmp_path / "lat"))
    limit = report["measured"]["min_ms"] + 0.5 * (report["measured"]["max_ms"] - report["measured"]["min_ms"])
    preset = load_preset("cv_small", {"iterations": 2, "population": 4, "parents": 2, "mutation": 2, "crossover": 2,
                                      "constraints": {"latency_ms": {"max": limit}}, "latency": "predictor",
                                      "predictor": str(tmp_path / "lat"), "baselines": []})
    evolution = Evolution(spec, preset, cost)
    while not evolution.done:
        for arch in evolution.ask():
            evolution.tell(arch, {"accuracy": -cost(arch)["latency_ms"], **cost(arch)})
    records = evolution.records()
    assert len(records) >= 4
    for r in records:
        assert r["latency_ms"] == pytest.approx(predictor.predict(r["arch"])[0]) and r["latency_ms"] <= limit


def test_cli_builds_it_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f"--{k}={v}" for k, v in FAST.items()]
    assert main(["latency-predictor", "--output", str(tmp_path / "p"), *flags]) == 0
    out = capsys.readouterr().out
    assert "measured        12 architectures of cv_small on cpu" in out and "test  error" in out
    assert main(["latency-predictor", "--space", "nlp_tiny", "--output", str(tmp_path / "q"), *flags]) == 2
    assert "translation space" in capsys.readouterr().err
    assert main(["latency-predictor", "--trim", "0.6", "--output", str(tmp_path / "q")]) == 2
    assert "field 'trim'" in capsys.readouterr().err
