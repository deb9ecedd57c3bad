"""Tests of the HAT-style latency predictor (SPEC: One-shot training and search, latency predictor).

The accuracy test fits ~2000 samples of a synthetic but structured latency over a hybrid space (per-layer
block type, depth, width) and requires < 3% mean relative error on the held-out test split (the paper claims
< 5%). Save/load must use only safetensors + JSON.
"""
from __future__ import annotations

import hashlib
import json
import math
import pickle
import random
import re
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from nni_shiftadd.cost.encoding import Aggregate, ArchEncoder, count_features
from nni_shiftadd.cost.predictor import LatencyPredictor, fit_predictor, load_predictor, save_predictor
from nni_shiftadd.cost.timing import collect_samples, measure_latency

OPS = ["attn", "conv", "shift", "add"]
N_LAYERS = 12
LAYERS = [f"layer{i}.op" for i in range(N_LAYERS)]
SPACE = {label: OPS for label in LAYERS} | {"depth": [8, 10, 12], "width": [256, 384, 512]}
GATES = {label: ("depth", i) for i, label in enumerate(LAYERS)}

# Per-op cost of one layer in ms: quadratic (weights x activations), linear (activations) and fixed (launch).
OP_COST = {"attn": (3.0, 0.9, 0.20), "conv": (2.2, 0.3, 0.10), "shift": (0.9, 0.5, 0.08), "add": (1.6, 0.7, 0.12)}


def synthetic_latency(noise: float = 0.01, seed: int = 1):
    """A plausible latency model: per active layer ``a*w^2 + b*w + c`` by block type, a kernel-switch penalty
    when consecutive layers differ, a smooth slow-down once the model outgrows a cache (so the target is not
    linear in any encoding), and 1% multiplicative measurement noise."""
    rng = random.Random(seed)

    def latency(arch: dict) -> float:
        w = arch["width"] / 256
        total, prev = 1.0, None
        for i in range(arch["depth"]):
            op = arch[f"layer{i}.op"]
            a, b, c = OP_COST[op]
            total += a * w * w + b * w + c + (0.15 * w if prev is not None and prev != op else 0.0)
            prev = op
        total *= 1 + 0.25 / (1 + math.exp(-(total - 40) / 6))
        return total * (1 + noise * rng.gauss(0, 1))

    return latency


def hybrid_encoder() -> ArchEncoder:
    """HAT-style: one-hot block type per (active) layer, scaled depth/width, layer counts per block type."""
    return ArchEncoder(SPACE, count_features(LAYERS, OPS, depth="depth"), gates=GATES)


@pytest.fixture(scope="module")
def fitted() -> tuple[LatencyPredictor, ArchEncoder, dict, list[dict]]:
    encoder = hybrid_encoder()
    archs, lat = collect_samples(SPACE, synthetic_latency(), 2000, seed=0, progress=False)
    predictor, report = fit_predictor(encoder, archs, lat, seed=0)
    return predictor, encoder, report, archs


# ---------------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------------

def test_encoder_layout() -> None:
    space = {"op": ["attn", "conv"], "dim": [64, 128, 256], "ratio": [0.5, 1.0]}
    enc = ArchEncoder(space, {"n": Aggregate("count", ("op",), "conv")})
    assert enc.feature_names == ["dim", "op=attn", "op=conv", "ratio", "n"]  # sorted labels, then extras
    x = enc.encode({"op": "conv", "dim": 128, "ratio": 1.0})
    assert x.dtype == torch.float32
    assert x.tolist() == [pytest.approx(1 / 3), 0.0, 1.0, 1.0, 1.0]
    assert enc.encode({"op": "attn", "dim": 64, "ratio": 0.5}).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    batch = enc.encode_batch([{"op": "attn", "dim": 256, "ratio": 0.5}] * 3)
    assert batch.shape == (3, enc.n_features) and batch[0, 0] == 1.0


def test_encoder_gates_and_aggregates() -> None:
    enc = ArchEncoder(SPACE, count_features(LAYERS, OPS, depth="depth")
                      | {"mean_w": Aggregate("mean", ("width",))}, gates=GATES)
    arch = {label: "attn" for label in LAYERS} | {"depth": 8, "width": 384, "layer9.op": "add"}
    row = dict(zip(enc.feature_names, enc.encode(arch).tolist()))
    assert row["layer7.op=attn"] == 1.0
    assert all(row[f"layer{i}.op={op}"] == 0.0 for i in (8, 9, 10, 11) for op in OPS)  # inactive layers
    assert (row["n_attn"], row["n_add"], row["mean_w"]) == (8.0, 0.0, 384.0)  # layer9 is beyond depth 8


@pytest.mark.parametrize("arch, words", [
    ({"op": "conv"}, ["missing", "'dim'", "[64, 128]"]),
    ({"op": "conv", "dim": 64, "extra": 1}, ["unknown", "'extra'", "1"]),
    ({"op": "mlp", "dim": 64}, ["'op'", "'mlp'", "['attn', 'conv']"]),
    ({"op": "conv", "dim": 96}, ["'dim'", "96", "[64, 128]"]),
    ({"op": "conv", "dim": "64"}, ["'dim'", "'64'", "[64, 128]"]),
])
def test_encoder_rejects_bad_archs(arch: dict, words: list[str]) -> None:
    enc = ArchEncoder({"op": ["attn", "conv"], "dim": [64, 128]})
    with pytest.raises(ValueError) as info:
        enc.encode(arch)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ValueError):
        enc.encode_batch([{"op": "conv", "dim": 64}, arch])


def test_encoder_rejects_bad_spaces() -> None:
    with pytest.raises(ValueError, match="'a'"):
        ArchEncoder({"a": []})
    with pytest.raises(ValueError, match="duplicate"):
        ArchEncoder({"a": [1, 1]})
    with pytest.raises(ValueError, match="'nope'"):
        ArchEncoder({"a": [1, 2]}, {"f": Aggregate("sum", ("nope",))})
    with pytest.raises(ValueError, match="numeric"):
        ArchEncoder({"a": ["x", "y"]}, {"f": Aggregate("mean", ("a",))})
    with pytest.raises(ValueError, match="'zzz'"):
        ArchEncoder({"a": [1, 2]}, gates={"a": ("zzz", 0)})


def test_encoder_dict_round_trip() -> None:
    enc = hybrid_encoder()
    data = json.loads(json.dumps(enc.to_dict()))  # JSON-able
    again = ArchEncoder.from_dict(data)
    archs, _ = collect_samples(SPACE, lambda a: 1.0, 20, seed=3, progress=False)
    assert torch.equal(enc.encode_batch(archs), again.encode_batch(archs))

    def custom(arch: dict) -> float:
        return float(arch["depth"] * arch["width"])

    enc = ArchEncoder(SPACE, {"flops": custom})
    with pytest.raises(ValueError, match="'flops'.*user callable"):
        ArchEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    again = ArchEncoder.from_dict(enc.to_dict(), extra_features={"flops": custom})
    assert torch.equal(enc.encode_batch(archs), again.encode_batch(archs))


# ---------------------------------------------------------------------------------------------------------------
# Sampling and fitting
# ---------------------------------------------------------------------------------------------------------------

def test_collect_samples_distinct_and_seeded() -> None:
    space = {"a": [1, 2, 3], "b": ["x", "y"]}
    calls: list[dict] = []
    archs, values = collect_samples(space, lambda arch: calls.append(arch) or arch["a"] * 2.0, 6, seed=0,
                                    progress=False)
    assert len({tuple(sorted(a.items())) for a in archs}) == 6 == len(calls)  # the whole space, each once
    assert values == [a["a"] * 2.0 for a in archs]
    assert collect_samples(space, lambda arch: 0.0, 4, seed=5, progress=False)[0] == \
        collect_samples(space, lambda arch: 0.0, 4, seed=5, progress=False)[0]
    with pytest.raises(ValueError, match="only 6"):
        collect_samples(space, lambda arch: 0.0, 7, seed=0, progress=False)
    big = {f"x{i}": [0, 1] for i in range(10)}
    archs, _ = collect_samples(big, lambda arch: 0.0, 300, seed=0, progress=False)  # rejection sampling
    assert len({tuple(a.values()) for a in archs}) == 300
    archs, _ = collect_samples(big, lambda arch: 0.0, 1000, seed=0, progress=False)  # without replacement
    assert len({tuple(a.values()) for a in archs}) == 1000
    assert all(set(a) == set(big) and set(a.values()) <= {0, 1} for a in archs)


def test_fit_is_deterministic_and_reports() -> None:
    encoder = hybrid_encoder()
    archs, lat = collect_samples(SPACE, synthetic_latency(), 200, seed=1, progress=False)
    kwargs = dict(hidden=32, epochs=5, seed=7)
    p1, r1 = fit_predictor(encoder, archs, lat, **kwargs)
    p2, r2 = fit_predictor(encoder, archs, lat, **kwargs)
    assert p1.predict(archs) == p2.predict(archs)
    assert r1["test"] == r2["test"]
    assert (r1["n_train"], r1["n_val"], r1["n_test"], r1["n_samples"]) == (160, 20, 20, 200)
    for part in ("train", "val", "test"):
        assert set(r1[part]) == {"n", "mean_rel_err", "max_rel_err", "rmse"}
    p3, _ = fit_predictor(encoder, archs, lat, hidden=32, epochs=5, seed=8)
    assert p3.predict(archs) != p1.predict(archs)
    with pytest.raises(ValueError, match="split"):
        fit_predictor(encoder, archs, lat, split=(0.9, 0.0, 0.1))
    with pytest.raises(ValueError, match="targets"):
        fit_predictor(encoder, archs, lat[:-1])


def test_fit_accuracy_on_hybrid_space(fitted) -> None:
    predictor, encoder, report, archs = fitted
    summary = {part: {k: round(v, 4) for k, v in report[part].items()} for part in ("train", "val", "test")}
    print(f"\nlatency predictor: {summary}, best epoch {report['best_epoch']}/{report['epochs_run']}, "
          f"{report['fit_seconds']:.1f} s")
    assert (report["n_train"], report["n_val"], report["n_test"]) == (1600, 200, 200)
    assert report["test"]["mean_rel_err"] < 0.03
    assert report["val"]["mean_rel_err"] < 0.03
    preds = predictor.predict(archs[:5])
    assert len(preds) == 5 and all(isinstance(p, float) and p > 0 for p in preds)
    assert predictor.predict(archs[0]) == preds[:1]  # a single dict is a batch of one


# ---------------------------------------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every pickle entry point (and torch.save/load, which use it) fail."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle must not be used")
    for name in ("dump", "dumps", "load", "loads", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "save", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


def _is_safetensors(path: Path) -> bool:
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    return isinstance(header, dict) and all("dtype" in v for k, v in header.items() if k != "__metadata__")


def test_save_load_round_trip(fitted, tmp_path: Path, no_pickle: None) -> None:
    predictor, encoder, report, archs = fitted
    weights, sidecar = save_predictor(tmp_path / "lat", predictor, encoder, report)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.json", "lat.safetensors"]
    assert _is_safetensors(weights)
    meta = json.loads(sidecar.read_text())
    assert meta["hparams"] == {"in_features": encoder.n_features, "hidden": 400, "layers": 3, "log_target": True}
    assert meta["report"]["test"] == pytest.approx(report["test"])

    loaded, enc2, report2 = load_predictor(tmp_path / "lat.safetensors")  # either name works
    assert enc2.to_dict() == encoder.to_dict()
    assert report2["test"] == pytest.approx(report["test"])
    assert loaded.predict(archs[:50]) == predictor.predict(archs[:50])


def test_load_rejects_bad_files(fitted, tmp_path: Path) -> None:
    predictor, encoder, report, _ = fitted
    weights, sidecar = save_predictor(tmp_path / "a", predictor, encoder, report)

    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(weights)) + ".*SHA-256"):
        load_predictor(tmp_path / "a")

    weights.write_bytes(b"garbage")
    meta = json.loads(sidecar.read_text())
    meta["weights_sha256"] = hashlib.sha256(b"garbage").hexdigest()
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=re.escape(str(weights)) + ".*not a valid"):
        load_predictor(tmp_path / "a")

    save_predictor(tmp_path / "b", predictor, encoder, report)
    small, _ = fit_predictor(encoder, *collect_samples(SPACE, synthetic_latency(), 50, 0, progress=False),
                             hidden=8, epochs=1)
    other, _ = save_predictor(tmp_path / "c", small, encoder, {})
    (tmp_path / "b.safetensors").write_bytes(other.read_bytes())  # weights of another save
    with pytest.raises(ValueError, match=r"b\.safetensors does not match the SHA-256"):
        load_predictor(tmp_path / "b")
    meta = json.loads((tmp_path / "b.json").read_text())
    meta["weights_sha256"] = json.loads((tmp_path / "c.json").read_text())["weights_sha256"]
    (tmp_path / "b.json").write_text(json.dumps(meta))  # checksum forged: the tensor shapes still disagree
    with pytest.raises(ValueError, match=r"b\.safetensors: tensors do not match"):
        load_predictor(tmp_path / "b")

    save_predictor(tmp_path / "d", predictor, encoder, report)
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"d\.json is not a valid"):
        load_predictor(tmp_path / "d")
    (tmp_path / "d.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match=r"d\.json is not a valid.*format"):
        load_predictor(tmp_path / "d")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_predictor(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------

def test_measure_latency_smoke() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    net.train()
    x = torch.randn(2, 3, 32, 32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spinning OpenMP threads make timings erratic on a busy 2-core machine
    try:
        a = measure_latency(net, x, warmup=3, repeats=15)
        b = measure_latency(net, x, warmup=3, repeats=15, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert isinstance(a, float) and a > 0 and b > 0
    assert 0.5 < a / b < 2.0, (a, b)
    assert net.training  # mode restored
    with pytest.raises(ValueError):
        measure_latency(net, x, repeats=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_measure_latency_cuda() -> None:
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU())
    ms = measure_latency(net, torch.randn(1, 3, 64, 64), device="cuda")
    assert ms > 0 and next(net.parameters()).is_cuda
