"""An Eyeriss-like accelerator model: energy per memory level and latency of each layer under a row-stationary
(RS) mapping chosen by a search over tilings, following SPEC ("Eyeriss cost model").

The array has ``pe_rows x pe_cols`` processing elements (PEs). A layer (``LayerShape``: ``n`` inputs of
``c x h x w``, ``m`` filters of ``c x r x s``, ``e x f`` outputs) is mapped as in Eyeriss's RS dataflow:

- **spatially**, a PE set of ``r`` rows (one filter row each) by ``e_s`` columns (one output row each); copies of
  the set fill the array, ``m_s x c_s`` of them down the rows (different filters / channels) and ``n_s`` across
  the columns (different inputs);
- **in each PE**, a pass convolves ``c0`` channels of an input row with ``m0`` filter rows (``c0 * s`` words in
  the ifmap spad, ``m0 * c0 * s`` in the filter spad, ``m0`` partial sums), sliding over the ``f`` outputs of
  its row;
- the remaining factors are **folded** in time; the global buffer holds one tile of weights, inputs and
  outputs, and DRAM is read once per tile.

For every choice of ``(m0, c0, e_s, m_s, c_s, n_s)`` within the spad and array limits, access counts per level
follow from the reuse of each datum, and latency is the number of passes times the cycles of a pass; the
mapping that minimises normalised energy + normalised latency is kept. Energies are counted per access in units
of the energy of one RF access, anchored to a 32-bit multiply (SPEC: DRAM 200x, global buffer 6x, NoC 2x, RF 1x;
3.7 pJ). The authors' modelling choices are named options of :class:`EyerissConfig`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

from .layers import LayerShape

LEVELS = ("compute", "dram", "glb", "noc", "rf")

#: Energy of one operation in pJ at 45 nm (SPEC, after Horowitz ISSCC'14): 32-bit floating point, 8-bit integer;
#: 16-bit uses Horowitz's FP16 multiply (1.1) and add (0.4), and the shift geometrically between 32 and 8 bits.
OP_ENERGY_PJ = {
    32: {"mult": 3.7, "add": 0.9, "shift": 0.13},
    16: {"mult": 1.1, "add": 0.4, "shift": 0.06},
    8: {"mult": 0.2, "add": 0.03, "shift": 0.024},
}


@dataclasses.dataclass(frozen=True)
class EyerissConfig:
    """Hardware parameters and modelling choices. Every field is validated by :meth:`validate`."""

    pe_rows: int = 14
    pe_cols: int = 12
    freq_mhz: float = 250.0
    bits: Literal[32, 16, 8] = 32
    ifmap_spad_words: int = 12
    filter_spad_words: int = 224
    psum_spad_words: int = 24
    glb_tile_words: int = 65536
    # energy per access, relative to one RF access (= one 32-bit multiply at the anchor)
    dram_energy: float = 200.0
    glb_energy: float = 6.0
    noc_energy: float = 2.0
    rf_energy: float = 1.0
    rf_access_pj: float = 3.7
    # tiling limits of the authors' simulator (SPEC): m0 <= 16, c0*s < 12, m0*c0*s < 192
    max_filters_per_pass: int = 16
    max_filter_spad_use: int = 191
    max_ifmap_spad_use: int = 11
    # the authors' per-op rules (SPEC), each switchable
    rf_weight_cost: float = 2.0          # a weight read from the (larger) filter spad costs 2x
    rf_weight_fill_cost: float = 1.0     # writing a weight into the filter spad (calibrated: see docs)
    pass_fill_cycles: bool = True        # a pass first streams its c0 input rows in (calibrated: see docs)
    shift_word_bits: int | None = 10      # shift layers move (16 + 5) // 2-bit words at every level
    shift_cycle_factor: float = 0.5       # shift layers take half the cycles of a multiply layer
    adder_on_chip: bool = True            # adder (and lightweight-conv) layers: no DRAM, buffer or NoC energy
    dram_bus_bits: int = 64               # one DRAM access moves this many bits (several narrow words)
    latency_bandwidth_bound: bool = False  # Timeloop-style: latency >= DRAM words / (bus words per cycle)
    objective: Literal["energy+latency", "energy", "latency"] = "energy+latency"

    def validate(self) -> None:
        for name in ("pe_rows", "pe_cols", "ifmap_spad_words", "filter_spad_words", "psum_spad_words",
                     "glb_tile_words", "max_filters_per_pass", "max_filter_spad_use", "max_ifmap_spad_use",
                     "dram_bus_bits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("freq_mhz", "rf_access_pj", "shift_cycle_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("dram_energy", "glb_energy", "noc_energy", "rf_energy", "rf_weight_cost"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.bits not in OP_ENERGY_PJ:
            raise ValueError(f"bits: unknown bit width {self.bits}; expected one of {sorted(OP_ENERGY_PJ)}")
        if self.shift_word_bits is not None and not 1 <= self.shift_word_bits <= 64:
            raise ValueError(f"shift_word_bits: must be in [1, 64] or None, got {self.shift_word_bits}")
        if self.objective not in ("energy+latency", "energy", "latency"):
            raise ValueError(f"objective: unknown value {self.objective!r}; expected 'energy+latency', 'energy' "
                             "or 'latency'")


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One RS mapping: spad tiling (m0, c0), spatial factors (e_s, m_s, c_s, n_s) and folds."""

    m0: int
    c0: int
    e_s: int
    m_s: int
    c_s: int
    n_s: int
    passes: int
    cycles_per_pass: int


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Energy per level (mJ), latency (ms), cycles, PE utilisation, access counts and the mapping of one layer."""

    energy_mj: dict[str, float]
    latency_ms: float
    cycles: float
    utilization: float
    accesses: dict[str, float]
    mapping: Mapping

    @property
    def total_mj(self) -> float:
        return sum(self.energy_mj.values())


def _divisor_like(limit: int) -> list[int]:
    """Candidate factors 1..limit (all of them: the bounds here are small)."""
    return list(range(1, max(1, limit) + 1))


def word_bits(shape: LayerShape, cfg: EyerissConfig) -> int:
    """Bits of one data word the layer moves through memory (shift layers: ``shift_word_bits``)."""
    if shape.op == "shift" and cfg.shift_word_bits is not None:
        return cfg.shift_word_bits
    return cfg.bits


def _evaluate(shape: LayerShape, cfg: EyerissConfig, m0: int, c0: int, e_s: int, m_s: int, c_s: int,
              n_s: int, dram_inputs: int | None = None) -> tuple[dict[str, float], float, Mapping]:
    """Access counts (words) per level and cycles of one candidate mapping of one group of one repeat;
    ``dram_inputs`` replaces the input words fetched from DRAM (a folded row is one row in memory)."""
    n, c, m, r, s, e, f = shape.n, shape.c, shape.m, shape.r, shape.s, shape.e, shape.f
    w_in = (f - 1) * shape.stride + s  # width of the input row a PE streams
    folds_n, folds_e = math.ceil(n / n_s), math.ceil(e / e_s)
    folds_m, folds_c = math.ceil(m / (m_s * m0)), math.ceil(c / (c_s * c0))
    passes = folds_n * folds_e * folds_m * folds_c
    cycles_per_pass = m0 * c0 * s * f + (c0 * w_in if cfg.pass_fill_cycles else 0)
    macs = n * m * c * r * s * e * f
    weights, outputs = m * c * r * s, n * m * e * f
    inputs = n * c * shape.h * shape.w if dram_inputs is None else dram_inputs

    # Loop order: the channel folds are innermost, so each PE keeps its m0 partial sums in the psum spad while
    # the ifmap and filter spads are refilled for every fold; partial sums leave a PE once, fully reduced over
    # its channels (and the c_s copies down a column add theirs as they pass).
    # RF: every MAC reads an input, a weight and a partial sum and writes the partial sum; spads are written
    # once per pass (inputs reused by m0 filters, weights over the f outputs of the row).
    rf_in = macs * (1 + 1 / (m0 * s) * (w_in / f))
    rf_w = macs * (cfg.rf_weight_cost + 1 / f * cfg.rf_weight_fill_cost)
    rf_psum = macs * 2 + outputs
    # NoC: each PE receives its own spad fills; partial sums move down the r rows of a PE set and out.
    noc_in = macs / (m0 * s) * (w_in / f)
    noc_w = macs / f
    noc_psum = outputs * c_s * (r if r > 1 else 1)
    # Global buffer: one read per multicast group; a weight row is shared by the e_s x n_s columns, an input
    # row by the m_s copies down the array (and diagonally by the r rows of a set); outputs written once.
    glb_in = noc_in / (m_s * r)
    glb_w = noc_w / (e_s * n_s)
    glb_psum = outputs
    # DRAM: weights once per layer if a weight tile and all its inputs fit the buffer, inputs once per
    # weight tile otherwise; outputs written once.
    tile_words = (m_s * m0) * (c_s * c0) * r * s + min(inputs, n_s * c_s * c0 * shape.h * shape.w) + \
        n_s * m_s * m0 * e * f
    input_refetch = 1 if inputs + tile_words <= cfg.glb_tile_words else folds_m
    dram = weights + inputs * input_refetch + outputs
    if shape.weights_are_activations:
        dram = weights + inputs + outputs  # both operands are on-chip activations of the same layer
    accesses = {"rf": rf_in + rf_psum, "rf_w": rf_w, "noc": noc_in + noc_w + noc_psum,
                "glb": glb_in + glb_w + glb_psum, "dram": dram}
    cycles = passes * cycles_per_pass
    return accesses, cycles, Mapping(m0, c0, e_s, m_s, c_s, n_s, passes, cycles_per_pass)


def _energies(shape: LayerShape, cfg: EyerissConfig, acc: dict[str, float], macs: float) -> dict[str, float]:
    """mJ per level from access counts (words) and MACs.

    On-chip access energies scale with the word width (``bits / 32`` of the 32-bit figure); a DRAM access moves
    ``dram_bus_bits`` at a time, so a word costs ``dram_energy * bits / dram_bus_bits``.
    """
    pj, bits = cfg.rf_access_pj, word_bits(shape, cfg)
    on_chip = pj * bits / 32
    energy = {
        "compute": macs * OP_ENERGY_PJ[cfg.bits][shape.op],
        "dram": acc["dram"] * cfg.dram_energy * pj * bits / cfg.dram_bus_bits,
        "glb": acc["glb"] * cfg.glb_energy * on_chip,
        "noc": acc["noc"] * cfg.noc_energy * on_chip,
        "rf": (acc["rf"] + acc["rf_w"]) * cfg.rf_energy * on_chip,
    }
    if shape.op == "add" and cfg.adder_on_chip:
        energy["dram"] = energy["glb"] = energy["noc"] = 0.0
    return {k: v * 1e-9 for k, v in energy.items()}  # pJ -> mJ


def fold_long_rows(shape: LayerShape, cfg: EyerissConfig) -> tuple[LayerShape, int]:
    """A 1-D filter row longer than a PE's spads take (``s > min(max_ifmap_spad_use, max_filter_spad_use)``: the
    SuperTransformer's kernels of 15 and 31) as ``k`` shorter rows of one virtual ``k x ceil(s / k)`` filter over
    ``k`` offset copies of the input row, whose partial sums add up down a PE set as a 2-D filter's rows do (how RS
    runs any filter wider than its spads). Returns the folded shape and ``k`` (1: nothing to fold)."""
    limit = min(cfg.max_ifmap_spad_use, cfg.max_filter_spad_use, cfg.filter_spad_words)
    if shape.s <= limit or shape.r != 1 or shape.h != 1:
        return shape, 1
    k = math.ceil(shape.s / limit)
    s = math.ceil(shape.s / k)
    return dataclasses.replace(shape, r=k, s=s, h=k, w=(shape.f - 1) * shape.stride + s, e=1), k


@functools.lru_cache(maxsize=65536)
def layer_cost(shape: LayerShape, cfg: EyerissConfig = EyerissConfig()) -> LayerCost:
    """Energy and latency of one layer under its best RS mapping (memoised by shape and configuration)."""
    original = shape
    shape, folds = fold_long_rows(shape, cfg)
    dram_inputs = original.n * original.c * original.h * original.w if folds > 1 else None
    rows_per_set = min(shape.r, cfg.pe_rows)
    copies = max(1, cfg.pe_rows // rows_per_set)
    candidates = []
    for m0 in range(1, min(cfg.max_filters_per_pass, shape.m, cfg.psum_spad_words) + 1):
        for c0 in range(1, min(shape.c, cfg.max_ifmap_spad_use // max(1, shape.s)) + 1):
            if m0 * c0 * shape.s > min(cfg.max_filter_spad_use, cfg.filter_spad_words):
                break
            for e_s in _divisor_like(min(shape.e, cfg.pe_cols)):
                n_s_max = min(shape.n, cfg.pe_cols // e_s)
                for m_s in _divisor_like(min(copies, math.ceil(shape.m / m0))):
                    c_s = min(copies // m_s, math.ceil(shape.c / c0))
                    for n_s in (n_s_max,):
                        acc, cycles, mapping = _evaluate(shape, cfg, m0, c0, e_s, m_s, max(1, c_s), n_s,
                                                         dram_inputs)
                        candidates.append((acc, cycles, mapping))
    if not candidates:
        raise ValueError(f"layer {shape}: no mapping fits the spads ({cfg.ifmap_spad_words}-word ifmap, "
                         f"{cfg.filter_spad_words}-word filter)")
    macs_one = original.n * original.m * original.c * original.r * original.s * original.e * original.f
    scored = []
    for acc, cycles, mapping in candidates:
        e = sum(_energies(shape, cfg, acc, macs_one).values())
        scored.append((e, cycles, acc, mapping))
    e_min = min(x[0] for x in scored) or 1.0
    c_min = min(x[1] for x in scored) or 1.0
    weight_e, weight_l = {"energy+latency": (1, 1), "energy": (1, 0), "latency": (0, 1)}[cfg.objective]
    best = min(scored, key=lambda x: (weight_e * x[0] / e_min + weight_l * x[1] / c_min, x[1], x[0]))
    _, cycles, acc, mapping = best
    times = shape.groups * shape.repeat
    energy = {k: v * times for k, v in _energies(shape, cfg, acc, macs_one).items()}
    cycles_total = cycles * times * (cfg.shift_cycle_factor if shape.op == "shift" else 1.0)
    if cfg.latency_bandwidth_bound:
        bus_words = cfg.dram_bus_bits / cfg.bits
        cycles_total = max(cycles_total, acc["dram"] * times / bus_words)
    utilization = original.macs / (cycles * times * cfg.pe_rows * cfg.pe_cols)
    return LayerCost(energy_mj=energy, latency_ms=cycles_total / (cfg.freq_mhz * 1e3), cycles=cycles_total,
                     utilization=utilization, accesses={k: v * times for k, v in acc.items()}, mapping=mapping)
