"""Translation subnets on the cost model: SPEC's 30-token workload, the lightweight branch's products counted as
mults, adds or shifts, filter rows longer than the spads folded, and the per-layer fast path of the profiler."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from nni_shiftadd.cost import EyerissConfig, LayerShape, layer_cost, profile, trace_layers
from nni_shiftadd.cost.eyeriss import fold_long_rows
from nni_shiftadd.cost.layerwise import TranslationRecords, TranslationWorkload, space_profiler
from nni_shiftadd.cost.profile import report_from_records
from nni_shiftadd.cost.workloads import transformer_big
from nni_shiftadd.space import baseline_arch, load_space, random_arch
from nni_shiftadd.space.nlp import HybridNLPSpace


@pytest.fixture(scope="module")
def small():
    return load_space("nlp_small")


def _by_layer(records, prefix: str):
    return [r for r in records if r.name.startswith(prefix)]


def test_all_attention_wmt14_subnet_is_transformer_big() -> None:
    """The largest all-Attn subnet of Table 1's space is Transformer-big: the same 4.17 G MACs, energy and latency
    as the reference workload (paper Table 3: 214 mJ, 130 ms)."""
    spec = load_space("nlp_wmt14")
    arch = baseline_arch(spec, "attn")
    assert arch["encoder.embed_dim"] == 1024 and arch["decoder.depth"] == 6
    ours = report_from_records(TranslationRecords(spec)(arch))
    model, inputs = transformer_big()
    reference = profile(model, *inputs)
    assert ours["macs"] == reference["macs"] == pytest.approx(4.17e9, rel=0.01)
    assert ours["energy_mJ"] == pytest.approx(reference["energy_mJ"], rel=1e-6)
    assert ours["latency_ms"] == pytest.approx(reference["latency_ms"], rel=1e-6)
    assert ours["add"] == ours["macs"] and ours["shift"] == 0  # every MAC's accumulation is an add


@pytest.mark.parametrize("op, fn_op", [("add", "absdiff"), ("shift", "bitshift"), ("conv", "multiply")])
def test_lightweight_branch_counts_its_operator(small, op: str, fn_op: str) -> None:
    arch = baseline_arch(small, op)
    arch["encoder.layer1.op"] = f"attn+{op}"
    records = TranslationRecords(small)(arch)
    c, t = arch["encoder.embed_dim"], 30
    k = small.encoder.kernel_sizes[0]
    branch = _by_layer(records, "subnet.encoder_layers.0.branch.")
    assert [r.shape.op for r in branch] == [fn_op] * 3
    assert [r.shape.macs for r in branch] == [t * c * c, t * c * k, t * c * c]
    assert sum(r.params for r in branch) == 2 * c * c + c * k
    half = _by_layer(records, "subnet.encoder_layers.1.branch.")  # the multi-branch block: half the channels
    assert [r.shape.macs for r in half] == [t * (c // 2) ** 2, t * (c // 2) * small.encoder.kernel_sizes[1],
                                            t * (c // 2) ** 2]
    attn = _by_layer(records, "subnet.encoder_layers.1.candidates.")
    assert {r.shape.op for r in attn} == {"multiply"} and len(attn) == 8  # q k v qk av out fc1 fc2
    assert not _by_layer(records, "subnet.encoder_layers.0.candidates.attn")


def test_tracer_marks_the_lightweight_branch(small) -> None:
    """Only the lightweight branch's layers are marked, so the authors' op rules reach them and nothing else: its
    shift layers run in half the cycles of the same shape elsewhere (a shift FFN would not)."""
    arch = baseline_arch(small, "shift")
    records = TranslationRecords(small)(arch)
    branch = _by_layer(records, "subnet.encoder_layers.0.branch.")
    assert branch and all(r.shape.lightweight for r in branch)
    assert not any(r.shape.lightweight for r in records if ".branch." not in r.name)
    for r in branch:
        plain = dataclasses.replace(r.shape, lightweight=False)
        assert layer_cost(r.shape).latency_ms == pytest.approx(layer_cost(plain).latency_ms / 2)


def test_multiplication_free_encoders_save_multiplications(small) -> None:
    records = TranslationRecords(small)
    cost = {op: report_from_records(records(baseline_arch(small, op))) for op in ("attn", "conv", "shift", "add")}
    assert cost["add"]["mult"] < cost["conv"]["mult"] and cost["shift"]["mult"] < cost["conv"]["mult"]
    assert cost["shift"]["shift"] > 0 and cost["add"]["shift"] == cost["conv"]["shift"] == 0
    assert cost["add"]["energy_mJ"] < cost["conv"]["energy_mJ"]
    assert cost["shift"]["energy_mJ"] < cost["conv"]["energy_mJ"]


def test_records_are_those_of_a_real_trace_and_memoised_per_layer(small) -> None:
    records = TranslationRecords(small)
    arch = random_arch(small, 3)
    fast = records(arch)
    space = HybridNLPSpace(small, vocab_size=50, padding_idx=1)
    tokens = torch.full((1, 30), 4)
    real = trace_layers(TranslationWorkload(space.freeze(arch)), tokens, tokens).layers
    assert [(r.name, r.shape, r.params) for r in fast] == [(r.name, r.shape, r.params) for r in real]
    traces = records.traces
    assert records(arch) == fast and records.traces == traces  # known layers: no new trace
    assert not any("embed" in r.name for r in fast)  # lookups and the vocabulary projection are not the workload


def test_profiler_of_a_translation_space(small) -> None:
    profiler = space_profiler(small, "energy_mJ")
    arch = random_arch(small, 1)
    energy = profiler.profile(arch)
    assert energy == pytest.approx(report_from_records(TranslationRecords(small)(arch))["energy_mJ"])
    with pytest.raises(ValueError, match="encoder.layer0.op"):
        profiler.profile({**arch, "encoder.layer0.op": "lstm"})


def test_long_filter_rows_are_folded() -> None:
    """The 1-D kernels of 15 and 31 exceed the 11 words an ifmap spad may use: they run as 2 and 3 folded rows,
    reading the input row from DRAM once and counting the MACs of the real kernel."""
    cfg = EyerissConfig()
    costs = {}
    for s in (7, 11, 15, 31):
        shape = LayerShape("conv", "absdiff", n=1, c=1, m=1, w=30 + s - 1, s=s, f=30, groups=64)
        folded, k = fold_long_rows(shape, cfg)
        assert k == max(1, -(-s // cfg.max_ifmap_spad_use)) and folded.s * k >= s and folded.s <= 11
        cost = layer_cost(shape, cfg)
        assert cost.mapping.c0 * folded.s <= cfg.max_ifmap_spad_use
        assert cost.utilization == pytest.approx(shape.macs / (cost.cycles * cfg.pe_rows * cfg.pe_cols))
        no_chip = layer_cost(shape, dataclasses.replace(cfg, adder_on_chip=False))
        words = 64 * (folded.r * folded.s + shape.w + shape.f)  # weights (zero-padded), one input row, outputs
        assert no_chip.accesses["dram"] + no_chip.accesses["dram_w"] == pytest.approx(words)
        costs[s] = cost
    assert costs[7].total_mj < costs[11].total_mj < costs[15].total_mj < costs[31].total_mj
    assert costs[7].cycles < costs[31].cycles
    two_d = LayerShape("conv", "multiply", n=1, c=1, m=1, h=20, w=20, r=15, s=15, e=6, f=6)
    assert fold_long_rows(two_d, cfg) == (two_d, 1)  # only 1-D rows are folded


def test_latency_predictor_encodes_translation_archs(small) -> None:
    """HAT's features: per-stack block counts, mean heads and FFN dims, mean encoder layers attended, over the
    active decoder layers only; the labels of layers beyond the decoder depth are zeroed."""
    from nni_shiftadd.cost.encoding import translation_encoder

    encoder = translation_encoder(small)
    arch = {**random_arch(small, 0), "decoder.depth": 1, "decoder.layer0.attend": 2, "decoder.layer1.attend": 1}
    row = dict(zip(encoder.feature_names, encoder.encode(arch).tolist()))
    depth = small.encoder.max_depth
    assert sum(row[f"encoder.n_{b}"] for b in small.encoder.blocks) == depth
    assert sum(row[f"decoder.n_{b}"] for b in small.decoder.blocks) == 1
    assert row[f"decoder.n_{arch['decoder.layer0.op']}"] == 1
    assert row["decoder.mean_attend"] == 2
    assert row["encoder.mean_ffn_dim"] == pytest.approx(
        sum(arch[f"encoder.layer{i}.ffn_dim"] for i in range(depth)) / depth)
    assert all(v == 0 for k, v in row.items() if k.startswith(("decoder.layer1.", "decoder.layer2.")))
    deeper = dict(zip(encoder.feature_names, encoder.encode({**arch, "decoder.depth": 3}).tolist()))
    assert deeper["decoder.layer0.attend"] == 1.0  # scaled to [0, 1] by the choice range
    assert deeper["decoder.mean_attend"] == pytest.approx((2 + 1 + arch["decoder.layer2.attend"]) / 3)
    with pytest.raises(ValueError, match="decoder.layer0.op"):
        encoder.encode({**arch, "decoder.layer0.op": "add"})  # the decoder takes attn or attn+X only


def test_a_search_under_the_latency_predictor(small, tmp_path) -> None:
    """``latency: predictor`` end to end on a translation space: Eyeriss latencies of random subnets, a fitted and
    saved predictor (safetensors + JSON, HAT's features), and the evolution constrained by its predictions."""
    from nni_shiftadd.cost.encoding import translation_encoder
    from nni_shiftadd.cost.predictor import fit_predictor, save_predictor
    from nni_shiftadd.strategy import Evolution, load_preset, space_cost_fn

    records = TranslationRecords(small)
    archs = [random_arch(small, seed) for seed in range(60)]
    latencies = [report_from_records(records(a))["latency_ms"] for a in archs]
    encoder = translation_encoder(small)
    predictor, report = fit_predictor(encoder, archs, latencies, epochs=60, seed=0)
    assert report["test"]["mean_rel_err"] < 0.25  # 48 training samples; HAT fits 2,000
    path = tmp_path / "nlp_small_latency"
    save_predictor(path, predictor, encoder, report)

    cfg = load_preset("nlp_small", {"iterations": 1, "population": 4, "parents": 2, "mutation": 1, "crossover": 1,
                                    "latency": "predictor", "predictor": str(path), "baselines": ["attn"]})
    cost = space_cost_fn(small, latency="predictor", predictor=str(path))
    eyeriss = space_cost_fn(small)
    ev = Evolution(small, cfg, cost)
    while not ev.done:
        for arch in ev.ask():
            ev.tell(arch, {"valid_loss": 5.0 - cost(arch)["macs_M"] / 1000, **cost(arch)})
    members = [r for r in ev.records() if r["baseline"] is None]
    assert members and all(r["latency_ms"] <= 3.0 for r in members)  # the predicted latency is the constraint
    errors = []
    for r in members:
        assert r["latency_ms"] == pytest.approx(predictor.predict(r["arch"])[0])
        truth = eyeriss(r["arch"])["latency_ms"]
        errors.append(abs(r["latency_ms"] - truth) / truth)
    print(f"\npredictor: test split {report['test']['mean_rel_err']:.3f}, search members {sum(errors) / len(errors):.3f} "
          "mean relative error against the Eyeriss model")
    assert sum(errors) / len(errors) < 0.25
