"""The Eyeriss model against the fabricated chip (Chen et al., JSSC 2017: AlexNet CONV1-5, batch 4, 16-bit).

Tolerances, and why:
- MACs within 0.5% and active PEs exact: the shapes and the chip's mappings are the published ones.
- Global-buffer traffic within 2%: at the chip's own mapping it is a count (inputs once per filter group, partial
  sums written and read once per channel fold), nothing in it is fitted.
- DRAM traffic within 20% per layer, 15% in total: the chip compresses activations by the zeros in them, and only
  the input zero fractions are published; a layer's output fraction before pooling (which removes zeros) is
  stood in for by the next layer's input fraction, so compressed outputs are over-estimated where a pooling layer
  follows (CONV1, CONV2, CONV5).
- Latency: the chip's overlap of link transfers with processing is not published, so each layer's measured
  latency must lie between the model's perfect-overlap and no-overlap bounds (5% slack: CONV2 sits 2% above the
  no-overlap bound), and the default (activations overlap, filters stall) within 20% per layer and 10% in total.
"""
from __future__ import annotations

import dataclasses

import pytest

from nni_shiftadd.cost import EyerissConfig, LayerShape, layer_cost
from nni_shiftadd.cost.eyeriss import rlc_ratio
from nni_shiftadd.cost.silicon import ALEXNET_JSSC2017, alexnet_conv_layers, compare


@pytest.fixture(scope="module")
def rows():
    return compare()


def test_alexnet_shapes_are_the_chips(rows) -> None:
    for row in rows:
        assert row["model"]["mmacs"] == pytest.approx(row["chip"]["mmacs"], rel=0.005), row["layer"]


def test_chip_mapping_gives_its_active_pes_and_buffer_traffic(rows) -> None:
    for row in rows:
        assert row["model"]["active_pes"] == row["chip"]["active_pes"], row["layer"]
        assert abs(row["error"]["glb_mb"]) < 0.02, (row["layer"], row["model"]["glb_mb"], row["chip"]["glb_mb"])


def test_dram_traffic_with_run_length_compression(rows) -> None:
    for row in rows:
        assert abs(row["error"]["dram_mb"]) < 0.20, (row["layer"], row["model"]["dram_mb"], row["chip"]["dram_mb"])
        assert row["model"]["dram_raw_mb"] > row["model"]["dram_mb"]  # compression saves on every layer
    total = sum(r["model"]["dram_mb"] for r in rows)
    assert total == pytest.approx(sum(r.dram_mb for r in ALEXNET_JSSC2017), rel=0.15)
    # CONV1's input is a dense image: sent raw, the code would only grow it
    assert rlc_ratio(ALEXNET_JSSC2017[0].input_zeros, 16) == 1.0


def test_latency_lies_between_the_link_overlap_bounds(rows) -> None:
    overlapped, serial = compare(link_overlap="all"), compare(link_overlap="none")
    for row, lo, hi in zip(rows, overlapped, serial):
        # 5% slack: CONV2 measures 2% above its no-overlap bound (41.9 against 41.2 ms)
        assert 0.95 * lo["model"]["latency_ms"] <= row["chip"]["latency_ms"] <= 1.05 * hi["model"]["latency_ms"], \
            row["layer"]
        assert abs(row["error"]["latency_ms"]) < 0.20, (row["layer"], row["model"]["latency_ms"])
    total = sum(r["model"]["latency_ms"] for r in rows)
    assert total == pytest.approx(sum(r.latency_ms for r in ALEXNET_JSSC2017), rel=0.10)


def test_the_mapper_keeps_the_chips_constraints() -> None:
    """Searching on its own, the mapper stays within the array and stacks the sets whose sums add up in columns."""
    cfg = EyerissConfig.preset("jssc2017")
    for row in compare(mapping="search"):
        mp = row["mapping"]
        assert mp["active_pes"] <= cfg.pe_rows * cfg.pe_cols
    for shape in alexnet_conv_layers():
        mp = layer_cost(shape, cfg).mapping
        strips = -(-mp.e_s // cfg.pe_cols)
        assert mp.c_s * shape.r * strips <= cfg.pe_rows
        assert mp.m0 <= cfg.max_filters_per_pass and mp.m0 * mp.c0 * shape.s <= cfg.max_filter_spad_use


def test_rlc_ratio() -> None:
    assert rlc_ratio(0.0, 16) == 1.0
    # half zeros: about one pair per two values, three 21-bit pairs to a 64-bit word
    assert rlc_ratio(0.5, 16) == pytest.approx(0.5 * 64 / 3 / 16, rel=1e-6)
    assert rlc_ratio(0.9, 16) < rlc_ratio(0.7, 16) < rlc_ratio(0.5, 16)
    with pytest.raises(ValueError, match=r"zeros: must be in \[0, 1\), got 1.5"):
        rlc_ratio(1.5, 16)


def test_sparsity_only_matters_with_rlc() -> None:
    shape = alexnet_conv_layers()[2]
    dense = dataclasses.replace(shape, input_zeros=0.0, output_zeros=0.0)
    cfg = EyerissConfig.preset("jssc2017")
    assert layer_cost(shape, cfg).accesses["dram"] < layer_cost(dense, cfg).accesses["dram"]
    no_rlc = dataclasses.replace(cfg, rlc=False)
    assert layer_cost(shape, no_rlc).accesses["dram"] == layer_cost(dense, no_rlc).accesses["dram"]


def test_presets_and_their_errors() -> None:
    assert EyerissConfig.preset("shiftaddnas") == EyerissConfig()
    chip = EyerissConfig.preset("jssc2017", freq_mhz=100.0)
    assert (chip.pe_rows, chip.pe_cols, chip.bits, chip.freq_mhz) == (12, 14, 16, 100.0)
    with pytest.raises(ValueError, match=r"preset: unknown Eyeriss preset 'eyeriss3'; expected one of"):
        EyerissConfig.preset("eyeriss3")
    with pytest.raises(ValueError, match=r"loop_orders: \['diagonal'\] must be a non-empty subset"):
        EyerissConfig(loop_orders=("diagonal",)).validate()


def test_parallel_instances_fill_the_array() -> None:
    """Sixteen 30x32x30 attention products, or the 1024 channels of a depthwise convolution, leave most of the
    array idle one at a time; side by side on sub-arrays they fill it."""
    physical = EyerissConfig.preset("physical")
    sequential = dataclasses.replace(physical, parallel_instances=False)
    heads = LayerShape("matmul", "multiply", n=30, c=32, m=30, repeat=16, weights_are_activations=True)
    assert layer_cost(heads, physical).latency_ms < layer_cost(heads, sequential).latency_ms
    depthwise = LayerShape("conv", "multiply", n=1, c=1, m=1, h=1, w=30, r=1, s=7, e=1, f=30, groups=1024)
    apart, together = layer_cost(depthwise, sequential), layer_cost(depthwise, physical)
    assert apart.utilization < 0.05 < 0.5 < together.utilization
    assert together.latency_ms < apart.latency_ms / 50
    assert together.mapping.active_pes <= physical.pe_rows * physical.pe_cols


def test_searches_and_trials_choose_the_eyeriss_preset() -> None:
    """A strategy preset's ``eyeriss`` field (and the trial's ``--eyeriss``) pick the model the costs come from;
    the op counts do not depend on it."""
    from nni_shiftadd.space import baseline_arch, load_space
    from nni_shiftadd.cost.metrics import space_cost_fn
    from nni_shiftadd.tasks.trial import TrialConfig

    spec = load_space("cv_small")
    arch = baseline_arch(spec, "shift")
    authors, physical = space_cost_fn(spec)(arch), space_cost_fn(spec, eyeriss="physical")(arch)
    assert authors["macs_M"] == physical["macs_M"] and authors["energy_mJ"] != physical["energy_mJ"]
    with pytest.raises(ValueError, match=r"field 'eyeriss': unknown Eyeriss preset 'fast'"):
        TrialConfig(eyeriss="fast").validate()
