"""The Eyeriss model against the fabricated chip: AlexNet's five convolutions as Chen et al. measured them.

Reference: Y.-H. Chen, T. Krishna, J. Emer, V. Sze, "Eyeriss: An Energy-Efficient Reconfigurable Accelerator for
Deep Convolutional Neural Networks", IEEE JSSC 52(1), 2017: the per-layer performance breakdown of AlexNet's
CONV1-CONV5 at batch 4, 16-bit, 1 V, core clock 200 MHz and link clock 60 MHz. Its columns: power, processing
latency, MACs, active PEs, zeros in the input feature maps, global-buffer accesses and DRAM accesses (MB; DRAM
traffic as it crossed the link, run-length compressed).

:func:`compare` runs :func:`~nni_shiftadd.cost.eyeriss.layer_cost` with the ``jssc2017`` preset on the same
shapes and sparsities and returns model and chip side by side, per layer and level. The zero fraction of a
layer's *output* is not in the table; the next layer's input fraction stands in for it (exact where no pooling
sits between, CONV3 -> CONV4 -> CONV5), and CONV5's own input fraction for CONV5's output.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from .eyeriss import EyerissConfig, Mapping, layer_cost, mapping_cost
from .layers import LayerShape

__all__ = ["ALEXNET_JSSC2017", "CHIP_MAPPINGS", "ChipLayer", "chip_mapping", "alexnet_conv_layers", "compare"]

MB = 1e6  # the chip paper's MB: 10^6 bytes (its DRAM/MAC figure, 0.0029 access/MAC, checks out with it)


@dataclasses.dataclass(frozen=True)
class ChipLayer:
    """One row of the chip's table: what was measured for one AlexNet convolution at batch 4."""

    name: str
    power_mw: float
    latency_ms: float
    mmacs: float
    active_pes: int
    input_zeros: float
    glb_mb: float
    dram_mb: float


ALEXNET_JSSC2017: tuple[ChipLayer, ...] = (
    ChipLayer("CONV1", 332, 20.9, 422, 154, 0.0001, 18.5, 5.0),
    ChipLayer("CONV2", 288, 41.9, 896, 135, 0.387, 77.6, 4.0),
    ChipLayer("CONV3", 266, 23.6, 598, 156, 0.725, 50.2, 3.0),
    ChipLayer("CONV4", 235, 18.4, 449, 156, 0.793, 37.4, 2.1),
    ChipLayer("CONV5", 236, 10.5, 299, 156, 0.776, 24.9, 1.3),
)

#: The chip's own mapping of each layer (the JSSC paper's mapping-parameter table, in its letters): p filters and
#: q channels per PE, sets e output rows wide, t sets of different filters, r of different channels, n images per
#: processing pass. n = 1 (CONV1, CONV2) reloads the filters for every image (our ``pixels`` loop order); n = 4
#: loads them once for the batch (``filters``).
CHIP_MAPPINGS: tuple[dict[str, int], ...] = (
    dict(n=1, p=16, q=1, e=7, r=1, t=2), dict(n=1, p=16, q=2, e=27, r=1, t=1), dict(n=4, p=16, q=3, e=13, r=2, t=2),
    dict(n=4, p=16, q=3, e=13, r=2, t=2), dict(n=4, p=16, q=3, e=13, r=2, t=2),
)


def chip_mapping(i: int, batch: int = 4) -> Mapping:
    """Layer ``i``'s chip mapping as a :class:`Mapping`."""
    p = CHIP_MAPPINGS[i]
    return Mapping(m0=p["p"], c0=p["q"], e_s=p["e"], m_s=p["t"], c_s=p["r"], n_s=1, passes=0, cycles_per_pass=0,
                   order="pixels" if p["n"] < batch else "filters")


# (filters, channels per group, input size, kernel, stride, padding, groups) of AlexNet as the chip ran it
_ALEXNET = ((96, 3, 227, 11, 4, 0, 1), (256, 48, 27, 5, 1, 2, 2), (384, 256, 13, 3, 1, 1, 1),
            (384, 192, 13, 3, 1, 1, 2), (256, 192, 13, 3, 1, 1, 2))


def alexnet_conv_layers(batch: int = 4, sparsity: bool = True) -> list[LayerShape]:
    """AlexNet's CONV1-CONV5 (the original, two-group model: 96/256/384/384/256 filters on 227x227 inputs) as
    :class:`LayerShape` s, with the chip's measured input zero fractions when ``sparsity``."""
    zeros = [row.input_zeros if sparsity else 0.0 for row in ALEXNET_JSSC2017]
    out_zeros = zeros[1:] + zeros[-1:]
    shapes = []
    for (m, c, size, k, stride, pad, groups), z_in, z_out in zip(_ALEXNET, zeros, out_zeros):
        e = (size + 2 * pad - k) // stride + 1
        shapes.append(LayerShape("conv", "multiply", n=batch, c=c, m=m // groups, h=size, w=size, r=k, s=k, e=e, f=e,
                                 stride=stride, groups=groups, input_zeros=z_in, output_zeros=z_out))
    return shapes


def compare(cfg: EyerissConfig | None = None, mapping: str = "chip", **overrides: Any) -> list[dict[str, Any]]:
    """Model against chip for each AlexNet layer: latency (ms), active PEs, global-buffer and DRAM traffic (MB;
    DRAM with and without run-length compression), the mapping and each quantity's relative error; also the
    on-chip energy beside the chip's power x latency (``onchip_mj``: not a validation, the chip's figure includes
    clock and leakage power and the savings of skipping zeros, at 65 nm, which the model does not hold).

    ``mapping="chip"`` costs the chip's own mapping of each layer (:data:`CHIP_MAPPINGS`): this validates the
    access counts and timing; ``"search"`` lets the model's mapper choose (how far its choice is from the chip's).
    """
    if mapping not in ("chip", "search"):
        raise ValueError(f"mapping: unknown value {mapping!r}; expected 'chip' or 'search'")
    cfg = cfg or EyerissConfig.preset("jssc2017", **overrides)
    rows = []
    for i, (chip, shape) in enumerate(zip(ALEXNET_JSSC2017, alexnet_conv_layers())):
        cost = mapping_cost(shape, chip_mapping(i), cfg) if mapping == "chip" else layer_cost(shape, cfg)
        bytes_per_word = cfg.bits / 8
        acc = cost.accesses
        model = {
            "latency_ms": cost.latency_ms,
            "compute_ms": cost.compute_ms,
            "link_ms": cost.link_ms,
            "active_pes": cost.mapping.active_pes,
            "glb_mb": (acc["glb"] + acc["glb_w"]) * bytes_per_word / MB,
            "dram_mb": (acc["dram"] + acc["dram_w"]) * bytes_per_word / MB,
            "dram_raw_mb": acc["dram_raw"] * bytes_per_word / MB,
            "mmacs": shape.macs / 1e6,
            "onchip_mj": sum(v for k, v in cost.energy_mj.items() if k != "dram"),
        }
        measured = {"latency_ms": chip.latency_ms, "active_pes": chip.active_pes, "glb_mb": chip.glb_mb,
                    "dram_mb": chip.dram_mb, "mmacs": chip.mmacs}
        error = {k: model[k] / v - 1 for k, v in measured.items()}
        # informational, not validated: the chip's power x latency holds clock, leakage and zero gating at 65 nm
        measured_onchip = chip.power_mw * chip.latency_ms / 1e3
        error["onchip_mj"] = model["onchip_mj"] / measured_onchip - 1
        measured = {**measured, "onchip_mj": measured_onchip}
        rows.append({"layer": chip.name, "model": model, "chip": measured, "error": error,
                     "mapping": dataclasses.asdict(cost.mapping)})
    return rows
