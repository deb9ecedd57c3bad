"""NNI profilers over the cost models (EyerissProfiler, OpCountProfiler), their use by NNI's Filter middleware and
one-shot RangeProfilerFilter, and the ``nni-shiftadd profile`` command."""
from __future__ import annotations

import json
import random

import nni
import pytest
import torch
from nni.mutable import ensure_frozen
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from nni.nas.space import model_context
from torch import Tensor, nn

from nni_shiftadd.cli import main
from nni_shiftadd.cost import profilers
from nni_shiftadd.cost.profile import profile
from nni_shiftadd.cost.profilers import EyerissProfiler, OpCountProfiler, canonical_sample, trace_model
from nni_shiftadd.cost.trace import trace_layers
from nni_shiftadd.ops import AdderConv2d, AdderLinear, ShiftConv2d

OPS = {0: "conv", 1: "shift", 2: "add"}


class HybridSpace(ModelSpace):
    """Stem conv, one 3x3 layer chosen among Conv/Shift/Add, global pooling, classifier; width is a choice."""

    def __init__(self) -> None:
        super().__init__()
        w = ensure_frozen(self.add_mutable(nni.choice("width", [8, 16])))
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.op = LayerChoice([nn.Conv2d(w, w, 3, padding=1), ShiftConv2d(w, w, 3, padding=1),
                               AdderConv2d(w, w, 3, padding=1)], label="op")
        self.fc = nn.Linear(w, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.op(self.stem(x)).mean((2, 3)))

    def freeze(self, sample: dict) -> nn.Module:
        with model_context(sample):
            return HybridSpace()


class NoFreezeSpace(HybridSpace):
    """The same space without its own freeze(): NNI's default raises, the profiler re-instantiates it."""

    freeze = ModelSpace.freeze


class ChoiceOnlySpace(ModelSpace):
    """Only a LayerChoice: NNI's freeze() hands back the space's own (real-device) candidate module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.op = LayerChoice([nn.Conv2d(8, 8, 3, padding=1), AdderConv2d(8, 8, 3, padding=1)], label="op")

    def forward(self, x: Tensor) -> Tensor:
        return self.op(self.stem(x))


class AttentionSpace(ModelSpace):
    """A functional activation-by-activation matmul: weights and activations must be told apart on meta too."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = LayerChoice([nn.Linear(16, 16), AdderLinear(16, 16)], label="proj")

    def forward(self, x: Tensor) -> Tensor:
        q = self.proj(x)
        return torch.matmul(q, x.transpose(-2, -1))


@pytest.fixture(scope="module")
def space() -> HybridSpace:
    return HybridSpace()


@pytest.fixture(scope="module")
def image() -> Tensor:
    return torch.randn(1, 3, 16, 16)


def all_samples() -> list[dict]:
    return [{"width": w, "op": op} for w in (8, 16) for op in OPS]


# -- metrics ------------------------------------------------------------------------------------------------------
def test_energy_add_below_conv(space: HybridSpace, image: Tensor) -> None:
    p = EyerissProfiler(space, image)
    conv, shift, add = (p.profile({"width": 16, "op": op}) for op in OPS)
    assert add < conv and shift < conv
    # adder layers are on chip: no DRAM/buffer/NoC energy, and their compute is 2 x 0.9 pJ, not 3.7 + 0.9 pJ
    report = p.report({"width": 16, "op": 2})
    row = next(r for r in report.rows if r.name == "op")
    assert row.op == "absdiff" and row.energy_breakdown_mJ["dram"] == row.energy_breakdown_mJ["noc"] == 0
    assert EyerissProfiler(space, image, adder_on_chip=False).profile({"width": 16, "op": 2}) > add
    lat = EyerissProfiler(space, image, metric="latency_ms")
    assert lat.profile({"width": 16, "op": 0}) == pytest.approx(p.report({"width": 16, "op": 0}).totals["latency_ms"])


@pytest.mark.parametrize("width", [8, 16])
def test_op_counts_follow_table4(space: HybridSpace, image: Tensor, width: int) -> None:
    stem, body, fc = 16 * 16 * width * 3 * 9, 16 * 16 * width * width * 9, width * 10
    expected = {  # op -> (mult, add, shift): a MAC is Mult+Add, an adder MAC two Adds, a shift MAC Shift+Add
        0: (stem + body + fc, stem + body + fc, 0),
        1: (stem + fc, stem + body + fc, body),
        2: (stem + fc, stem + 2 * body + fc, 0),
    }
    for op, counts in expected.items():
        sample = {"width": width, "op": op}
        got = tuple(OpCountProfiler(space, image, metric=m).profile(sample) for m in ("mult", "add", "shift"))
        assert got == counts, OPS[op]
        assert OpCountProfiler(space, image, metric="macs").profile(sample) == stem + body + fc
        assert OpCountProfiler(space, image, metric="effective_macs", bits=8).profile(sample) == \
            (stem + body + fc) / 16


def test_matches_profile_of_the_frozen_model(space: HybridSpace, image: Tensor) -> None:
    p = EyerissProfiler(space, image, bits=16)
    for sample in all_samples():
        assert p.report(sample).totals == profile(space.freeze(sample), image, bits=16).totals


def test_bad_metric_and_option(space: HybridSpace, image: Tensor) -> None:
    with pytest.raises(ValueError, match=r"'energy'.*'energy_mJ', 'latency_ms'"):
        EyerissProfiler(space, image, metric="energy")
    with pytest.raises(ValueError, match=r"'energy_mJ'.*'macs', 'mult', 'add', 'shift', 'params'"):
        OpCountProfiler(space, image, metric="energy_mJ")
    with pytest.raises(ValueError, match="bogus"):
        EyerissProfiler(space, image, bogus=1)


@pytest.mark.parametrize("sample, match", [
    ({"width": 16}, r"missing key 'op'.*\[0, 1, 2\]"),
    ({"width": 12, "op": 0}, r"sample\['width'\]: 12 is not allowed; allowed values \[8, 16\]"),
    ({"width": 16, "op": 3}, r"sample\['op'\]: 3 is not allowed; allowed values \[0, 1, 2\]"),
    ({"width": 16, "op": 0, "depth": 2}, r"unknown key 'depth'; the space's keys are \['op', 'width'\]"),
])
def test_invalid_samples(space: HybridSpace, image: Tensor, sample: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EyerissProfiler(space, image).profile(sample)


# -- meta-device tracing --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [HybridSpace, NoFreezeSpace, ChoiceOnlySpace])
def test_meta_trace_equals_real_trace(cls: type, image: Tensor) -> None:
    space = cls()
    p = OpCountProfiler(space, image)
    samples = [{"op": 0}, {"op": 1}] if cls is ChoiceOnlySpace else all_samples()
    for sample in samples:
        meta = p.trace(sample, device="meta")
        real = p.trace(sample, device="real")
        assert meta.layers == real.layers and meta.layers
    assert p.stats.meta_traces == p.stats.real_traces == len(samples)
    if cls is ChoiceOnlySpace:  # the space's own modules stay where they were
        assert all(t.device.type == "cpu" for t in space.parameters())


def test_meta_trace_is_exact_for_functional_products() -> None:
    space, x = AttentionSpace(), torch.randn(1, 5, 16)
    p = OpCountProfiler(space, x)
    meta = p.trace({"proj": 0}, device="meta")
    assert meta.layers == trace_layers(space.freeze({"proj": 0}), x).layers
    matmul = next(r for r in meta.layers if r.type == "matmul")
    assert matmul.shape.weights_are_activations and matmul.params == 0
    linear = next(r for r in meta.layers if r.type == "Linear")
    assert linear.params == 16 * 16 + 16
    assert p.stats.real_traces == 0 and p.stats.meta_traces == 1


def test_trace_model_helper(image: Tensor) -> None:
    trace, device = trace_model(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), AdderConv2d(4, 4, 3)), image)
    assert device == "meta" and [r.type for r in trace.layers] == ["Conv2d", "AdderConv2d"]
    model = nn.Sequential(nn.Conv2d(3, 4, 3))  # built once, on the real device: meta must not be used
    _, device = trace_model(lambda: model, image)
    assert device == "real"


# -- memoisation and the records_fn fast path ------------------------------------------------------------------------
def test_memoised_per_sample(space: HybridSpace, image: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_trace = profilers.trace_layers
    monkeypatch.setattr(profilers, "trace_layers", lambda *a, **k: calls.append(1) or real_trace(*a, **k))
    p = EyerissProfiler(space, image, cache_size=2)
    a, b, c = {"width": 8, "op": 0}, {"width": 8, "op": 1}, {"width": 8, "op": 2}
    first = p.profile(a)
    assert p.profile({"op": 0, "width": 8}) == first and len(calls) == 1  # key order does not matter
    p.profile(b), p.profile(c)  # evicts a (LRU of 2)
    assert len(calls) == 3
    p.profile(c), p.profile(b)
    assert len(calls) == 3
    p.profile(a)
    assert len(calls) == 4 and p.stats.hits == 3 and p.stats.misses == 4
    assert canonical_sample({"b": [1, {"x": 2}], "a": 1}) == canonical_sample({"a": 1, "b": (1, {"x": 2})})


def test_records_fn_fast_path(space: HybridSpace, image: Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    traced = {canonical_sample(s): trace_layers(space.freeze(s), image).layers for s in all_samples()}
    monkeypatch.setattr(profilers, "trace_layers", lambda *a, **k: pytest.fail("records_fn must skip tracing"))
    fast = EyerissProfiler(space, records_fn=lambda s: traced[canonical_sample(s)])
    slow = EyerissProfiler(space, image)
    monkeypatch.undo()
    for sample in all_samples():
        assert fast.report(sample).totals == slow.report(sample).totals
    assert fast.stats.records_fn_calls == len(all_samples())
    with pytest.raises(ValueError, match="'op'"):
        fast.profile({"width": 8, "op": 7})  # still validated


# -- NNI integration -------------------------------------------------------------------------------------------------
def test_filter_middleware_rejects_heavy_models(space: HybridSpace, image: Tensor) -> None:
    """A multi-trial search (Random strategy, sequential engine) chained with NNI's Filter middleware."""
    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import ModelStatus, SimplifiedModelSpace
    from nni.nas.strategy import Random
    from nni.nas.strategy.middleware import Chain, Filter

    p = EyerissProfiler(space, image)
    energies = {canonical_sample(s): p.profile(s) for s in all_samples()}
    threshold = sorted(energies.values())[3]  # keep the 4 lightest of 6
    seen = []

    def light_enough(model) -> bool:
        seen.append(dict(model.sample))
        return p.profile(model.sample) <= threshold

    def evaluate(model: nn.Module) -> None:
        nni.report_final_result(float(sum(t.numel() for t in model.parameters())))

    strategy = Chain(Random(seed=0), Filter(light_enough))
    strategy(SimplifiedModelSpace.from_model(space, FunctionalEvaluator(evaluate)), SequentialExecutionEngine())
    models = list(strategy.list_models(sort=False))
    assert len(seen) == len(models) == 6  # the whole space, deduplicated by Random
    trained = [m.sample for m in models if m.status == ModelStatus.Trained]
    invalid = [m.sample for m in models if m.status == ModelStatus.Invalid]
    assert len(trained) == 4 and len(invalid) == 2
    assert all(energies[canonical_sample(s)] <= threshold for s in trained)
    assert all(energies[canonical_sample(s)] > threshold for s in invalid)
    assert p.stats.hits >= 6 and p.stats.misses == 6  # the search reused the memoised reports


def test_one_shot_range_profiler_filter(space: HybridSpace, image: Tensor) -> None:
    import pytorch_lightning as pl
    from nni.nas.oneshot.pytorch.profiler import RangeProfilerFilter
    from nni.nas.oneshot.pytorch.sampling import RandomSamplingLightningModule
    from nni.nas.strategy import RandomOneShot

    p = EyerissProfiler(space, image)
    threshold = p.profile({"width": 16, "op": 2})
    strategy = RandomOneShot(filter={"profiler": p, "max": threshold})
    assert isinstance(strategy.filter, RangeProfilerFilter)
    assert strategy.filter({"width": 16, "op": 2}) and not strategy.filter({"width": 16, "op": 0})
    # RandomOneShot's rejection sampling, as its Lightning module runs it on every training step
    module = RandomSamplingLightningModule(pl.LightningModule(), strategy.filter)
    rng = random.Random(0)
    drawn = []

    def draw() -> dict:
        drawn.append({"width": rng.choice([8, 16]), "op": rng.choice(list(OPS))})
        return drawn[-1]

    kept = [module._repeat_until_valid(draw) for _ in range(20)]
    assert all(p.profile(s) <= threshold for s in kept)
    assert len(drawn) > len(kept)  # something heavy was drawn and rejected
    mult_filter = RangeProfilerFilter(OpCountProfiler(space, image, metric="mult"), max=60_000)  # stem+fc: 55 K
    assert mult_filter({"width": 8, "op": 2}) and mult_filter({"width": 8, "op": 1})
    assert not mult_filter({"width": 8, "op": 0})


# -- command line ----------------------------------------------------------------------------------------------------
def test_cli_profile_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", "--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--convert", "add", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert {"totals", "breakdown_mJ", "rows", "unmodelled", "hardware", "bits"} <= set(out)
    assert {"energy_mJ", "latency_ms", "params", "macs", "mult", "add", "shift", "effective_macs"} <= set(out["totals"])
    assert {r["name"] for r in out["rows"] if r["mult"]} == {"conv1", "fc"}  # stem and classifier stay Mult
    assert out["totals"]["shift"] == 0 and out["totals"]["add"] > out["totals"]["macs"]


def test_cli_profile_table(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["profile", "--model", "shiftadd_resnet8", "--input-size", "3,32,32", "--model-kwargs",
               "{op: [conv, shift, add]}", "--bits", "16", "--option", "adder_on_chip=false", "--max-rows", "3"])
    out = capsys.readouterr().out
    assert rc == 0 and "... 7 more layers" in out and "16-bit" in out and "energy" in out


def test_cli_profile_on_a_named_preset(capsys: pytest.CaptureFixture[str]) -> None:
    """``--option preset=NAME`` picks an Eyeriss preset (the chip's here); a bad name lists the presets."""
    argv = ["profile", "--model", "shiftadd_resnet8", "--input-size", "3,32,32", "--bits", "16", "--json"]
    assert main(argv) == 0
    authors = json.loads(capsys.readouterr().out)["totals"]
    assert main(argv + ["--option", "preset=jssc2017"]) == 0
    chip = json.loads(capsys.readouterr().out)["totals"]
    assert chip["macs"] == authors["macs"] and chip["latency_ms"] != authors["latency_ms"]
    assert main(argv + ["--option", "preset=eyeriss9"]) == 2
    assert "unknown Eyeriss preset 'eyeriss9'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--model", "no_such_model", "--input-size", "3,32,32"], "--model: unknown model 'no_such_model'"),
    (["--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option", "bogus=1"], "--option bogus=1"),
    (["--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--option", "pe_rows"],
     "--option: bad value 'pe_rows'"),
    (["--model", "shiftadd_resnet8", "--input-size", "1,28"], "--input-size: bad value '1,28'"),
    (["--model", "shiftadd_resnet8", "--input-size", "a,b,c"], "--input-size: bad value 'a,b,c'"),
    (["--model", "shiftadd_resnet8"], "--input-size: required"),
    (["--model", "shiftadd_resnet8", "--input-size", "1,28,28", "--model-kwargs", "[1, 2]"], "--model-kwargs"),
])
def test_cli_profile_errors(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["profile", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_profile_bad_choice_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--model", "shiftadd_resnet8", "--bits", "4"])
    assert exc.value.code == 2 and "--bits" in capsys.readouterr().err
