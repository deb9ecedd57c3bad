"""The Eyeriss model: calibration on Transformer-big (paper Table 3), per-op rules, bit widths, bad input."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nni_shiftadd.cost import EyerissConfig, LayerShape, layer_cost, profile
from nni_shiftadd.cost.workloads import transformer_big
from nni_shiftadd.ops import AdderConv2d, ShiftConv2d

# Table 3 of the paper and SPEC: Transformer-big on WMT'14 En-De as the authors profiled it.
PAPER_ENERGY_MJ, PAPER_LATENCY_MS = 214.0, 130.0
PAPER_BREAKDOWN_MJ = {"compute": 15.4, "dram": 58.8, "glb": 11.3, "noc": 36.3, "rf": 92.6}


@pytest.fixture(scope="module")
def transformer_big_report():
    model, inputs = transformer_big()
    return profile(model, *inputs)


def test_transformer_big_matches_table3(transformer_big_report) -> None:
    r = transformer_big_report
    assert r["macs"] == pytest.approx(4.17e9, rel=0.01)
    assert r["energy_mJ"] == pytest.approx(PAPER_ENERGY_MJ, rel=0.05)
    assert r["latency_ms"] == pytest.approx(PAPER_LATENCY_MS, rel=0.05)


def test_transformer_big_breakdown_close_to_authors(transformer_big_report) -> None:
    """Compute within 1% (it is MACs x 3.7 pJ); RF and DRAM within 10%; NoC and global buffer within 25%
    (their split depends on multicast details the paper does not give)."""
    got = transformer_big_report.breakdown_mJ
    tolerance = {"compute": 0.01, "rf": 0.10, "dram": 0.10, "noc": 0.25, "glb": 0.25}
    for level, paper in PAPER_BREAKDOWN_MJ.items():
        assert got[level] == pytest.approx(paper, rel=tolerance[level]), (level, got)
    # the ranking of the levels is the authors': RF > DRAM > NoC > compute, global buffer
    assert got["rf"] > got["dram"] > got["noc"] > max(got["compute"], got["glb"])


def test_rows_sum_to_totals(transformer_big_report) -> None:
    r = transformer_big_report
    assert sum(row.energy_mJ for row in r.rows) == pytest.approx(r["energy_mJ"])
    assert sum(row.latency_ms for row in r.rows) == pytest.approx(r["latency_ms"])
    assert sum(row.macs for row in r.rows) == r["macs"]
    assert all(0 < row.utilization <= 1 for row in r.rows)


def test_eight_bit_is_cheaper_and_effective_macs_scale() -> None:
    shape = LayerShape("fc", "multiply", n=30, c=1024, m=4096)
    e32, e8 = layer_cost(shape, EyerissConfig(bits=32)), layer_cost(shape, EyerissConfig(bits=8))
    assert e8.total_mj < e32.total_mj / 3
    assert e8.energy_mj["compute"] == pytest.approx(e32.energy_mj["compute"] * 0.2 / 3.7)


def _conv_net(cls: type, **kwargs) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), cls(32, 32, 3, padding=1, **kwargs), nn.ReLU())


def test_per_op_rules() -> None:
    x = torch.randn(1, 3, 16, 16)
    conv = profile(_conv_net(nn.Conv2d), x).rows[1]
    add = profile(_conv_net(AdderConv2d), x).rows[1]
    shift = profile(_conv_net(ShiftConv2d), x).rows[1]
    assert add.op == "absdiff" and shift.op == "bitshift" and conv.op == "multiply"
    # adder layers are fully on-chip (SPEC): no DRAM, buffer or NoC energy
    assert add.energy_breakdown_mJ["dram"] == add.energy_breakdown_mJ["glb"] == add.energy_breakdown_mJ["noc"] == 0
    assert add.energy_breakdown_mJ["compute"] == pytest.approx(conv.energy_breakdown_mJ["compute"] * 0.9 / 3.7)
    # the authors' shift rules are for lightweight layers only: a CV shift convolution moves data like a conv
    assert shift.latency_ms == pytest.approx(conv.latency_ms)
    assert shift.energy_breakdown_mJ["dram"] == pytest.approx(conv.energy_breakdown_mJ["dram"])
    assert shift.energy_breakdown_mJ["compute"] == pytest.approx(conv.energy_breakdown_mJ["compute"] * 0.13 / 3.7)
    # each rule is an option: switched off, an adder layer pays for data movement like a conv
    add_off = profile(_conv_net(AdderConv2d), x, adder_on_chip=False).rows[1]
    assert add_off.energy_breakdown_mJ["dram"] == pytest.approx(conv.energy_breakdown_mJ["dram"])


@pytest.mark.parametrize("op", ["bitshift", "absdiff", "multiply"])
def test_lightweight_layers_follow_the_authors_rules(op: str) -> None:
    """SPEC's rules are per layer: lightweight shift layers move 10-bit words in half the cycles, lightweight conv
    and every adder layer stay on chip; the same shape outside a lightweight branch is costed as a multiply."""
    dense = LayerShape("conv", op, n=1, c=64, m=64, h=30, w=30, r=1, s=3, e=1, f=28)
    light = dataclasses.replace(dense, lightweight=True)
    mult = layer_cost(dataclasses.replace(dense, op="multiply"))
    got = layer_cost(light)
    if op == "bitshift":
        assert got.latency_ms == pytest.approx(mult.latency_ms / 2)
        assert got.energy_mj["dram"] == pytest.approx(mult.energy_mj["dram"] * 10 / 32)
        assert layer_cost(dense).latency_ms == pytest.approx(mult.latency_ms)
    else:  # a lightweight conv (mult) and an adder layer: on chip
        assert got.energy_mj["dram"] == got.energy_mj["glb"] == got.energy_mj["noc"] == 0


def test_physical_rule_moves_narrow_shift_weights_in_full_cycles() -> None:
    """The ``physical`` rule: a shift layer's power-of-two weights travel as 5-bit words at every level, its
    activations at full width, in a multiply's cycles; adder layers pay for their data like any layer."""
    shape = LayerShape("fc", "bitshift", n=30, c=512, m=2048, lightweight=True)
    mult = layer_cost(dataclasses.replace(shape, op="multiply"), EyerissConfig(op_rules="physical"))
    shift = layer_cost(shape, EyerissConfig(op_rules="physical"))
    add = layer_cost(dataclasses.replace(shape, op="absdiff"), EyerissConfig(op_rules="physical"))
    assert shift.latency_ms == pytest.approx(mult.latency_ms)
    assert shift.accesses == mult.accesses and shift.mapping == mult.mapping
    acc = mult.accesses
    weight_share = acc["dram_w"] / (acc["dram"] + acc["dram_w"])
    ratio = shift.energy_mj["dram"] / mult.energy_mj["dram"]
    assert ratio == pytest.approx(1 - weight_share * (1 - 5 / 32))
    assert add.energy_mj["dram"] == pytest.approx(mult.energy_mj["dram"])
    with pytest.raises(ValueError, match="op_rules: unknown value 'mine'"):
        EyerissConfig(op_rules="mine").validate()  # type: ignore[arg-type]


def test_mapping_respects_the_spads() -> None:
    cfg = EyerissConfig()
    for shape in (LayerShape("conv", "multiply", n=1, c=64, m=64, h=56, w=56, r=3, s=3, e=56, f=56),
                  LayerShape("conv", "multiply", n=1, c=3, m=64, h=224, w=224, r=7, s=7, e=112, f=112, stride=2),
                  LayerShape("fc", "multiply", n=30, c=512, m=1024)):
        mp = layer_cost(shape, cfg).mapping
        assert mp.m0 <= cfg.max_filters_per_pass
        assert mp.c0 * shape.s <= cfg.max_ifmap_spad_use
        assert mp.m0 * mp.c0 * shape.s <= cfg.max_filter_spad_use
        assert min(shape.r, cfg.pe_rows) * mp.m_s * mp.c_s <= cfg.pe_rows and mp.e_s * mp.n_s <= cfg.pe_cols


def test_layer_costs_are_memoised() -> None:
    shape = LayerShape("fc", "multiply", n=7, c=333, m=77)
    layer_cost.cache_clear()
    layer_cost(shape, EyerissConfig())
    layer_cost(shape, EyerissConfig())
    info = layer_cost.cache_info()
    assert info.hits == 1 and info.misses == 1


@pytest.mark.parametrize("field, value, message", [
    ("pe_rows", 0, "pe_rows: must be >= 1, got 0"),
    ("dram_energy", -1.0, "dram_energy: must be >= 0, got -1.0"),
    ("bits", 12, "bits: unknown bit width 12; expected one of"),
    ("freq_mhz", 0.0, "freq_mhz: must be > 0"),
])
def test_bad_hardware_parameters_name_the_field(field: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile(_conv_net(nn.Conv2d), torch.randn(1, 3, 8, 8), **{field: value})
    with pytest.raises(ValueError, match=message.split(":")[0]):
        dataclasses.replace(EyerissConfig(), **{field: value}).validate()


def test_unknown_option_is_named() -> None:
    with pytest.raises(ValueError, match="option 'dram_energie': unknown"):
        profile(_conv_net(nn.Conv2d), torch.randn(1, 3, 8, 8), dram_energie=1.0)


class Mystery(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.sum()


def test_unknown_layer_is_an_error_or_an_explicit_row() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Mystery())
    with pytest.raises(ValueError, match=r"1 \(Mystery\)"):
        profile(model, torch.randn(1, 3, 8, 8))
    report = profile(model, torch.randn(1, 3, 8, 8), unmodelled="report")
    assert report.unmodelled == [("1", "Mystery")]
    assert "UNMODELLED" in report.table()
