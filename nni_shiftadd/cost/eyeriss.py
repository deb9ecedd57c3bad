"""An Eyeriss-like accelerator model: energy per memory level and latency of each layer under a row-stationary
(RS) mapping chosen by a search over tilings and loop orders, following SPEC ("Eyeriss cost model") and the chip
paper (Chen et al., JSSC 2017), against whose AlexNet measurements it is validated (:mod:`.silicon`).

A layer (``LayerShape``: ``n`` inputs of ``c x h x w``, ``m`` filters of ``c x r x s``, ``e x f`` outputs) is mapped
as RS does, in the chip paper's terms:

- **a PE set** of ``r`` rows (one filter row each) by ``e_s`` columns (one output row each). A set wider than the
  array is cut into strips stacked down the rows (the chip's 5 x 27 set of AlexNet CONV2 uses 135 PEs this way);
  the sets that fit the ``pe_rows x pe_cols`` array process ``m_s`` filter groups, ``c_s`` channel groups (their
  partial sums add up across sets) and ``n_s`` inputs at once (the chip's ``t``, ``r`` and spatial ``n``);
- **in each PE**, a pass convolves ``c0`` channels of an input row with ``m0`` filter rows (``c0 * s`` words in
  the ifmap spad, ``m0 * c0 * s`` in the filter spad), sliding over the ``f`` outputs of its row (the chip's
  ``q`` and ``p``);
- **three loop orders** over the remaining folds, each with its own traffic:

  ``pe``      partial sums stay in the PE's psum spad while every channel fold streams through it (physically
              only when the ``m0 x f`` sums fit the psum spad, ``psums_bounded_by_spad``: fully-connected layers);
              weights are refilled for every output row.
  ``filters`` the filters of a pass stay in the spads while every input streams past; partial sums go to the
              global buffer after each channel fold and come back for the next (the buffer must hold them for
              all outputs of a filter group); inputs come from DRAM again for every filter group unless they
              all fit the buffer.
  ``pixels``  a strip of inputs (all channels) stays in the buffer while every filter group passes; filters are
              loaded again for every strip; partial sums as in ``filters``, for one strip.

Access counts per level follow from each datum's reuse; a DRAM access moves ``dram_bus_bits`` at a time;
activations cross the off-chip link run-length compressed when ``rlc`` is on (the chip's 5-bit run / 16-bit
level pairs, three to a 64-bit word), from the zero fractions on the layer (``input_zeros``, ``output_zeros``).
Latency is the cycles of the passes, plus the off-chip link's transfer time where the link is modelled
(``link_mhz``), combined as ``link_overlap`` says. The mapping minimising ``objective`` is kept.

Every constant is physical (its source in :class:`EyerissConfig`'s field comments) or labelled *calibrated*
with the point it was calibrated on; ``benchmarks/cost.py`` (h) shows how the anchors move when a calibrated
one changes. Two presets: ``shiftaddnas`` (the default: the authors' simulator, SPEC) and ``jssc2017`` (the
fabricated chip).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import numpy as np

from ..vocabulary import OPERATORS
from .layers import LayerShape

LEVELS = ("compute", "dram", "glb", "noc", "rf")
ORDERS = ("pe", "filters", "pixels")
#: ``objective`` -> weights of (normalised energy, normalised latency) in a mapping's score
OBJECTIVES = {"energy+latency": (1, 1), "energy": (1, 0), "latency": (0, 1)}

#: Energy of one operation in pJ at 45 nm (SPEC, after Horowitz ISSCC'14): 32-bit floating point, 8-bit integer;
#: 16-bit uses Horowitz's FP16 multiply (1.1) and add (0.4), and the shift geometrically between 32 and 8 bits.
OP_ENERGY_PJ = {
    32: {"mult": 3.7, "add": 0.9, "shift": 0.13},
    16: {"mult": 1.1, "add": 0.4, "shift": 0.06},
    8: {"mult": 0.2, "add": 0.03, "shift": 0.024},
}


@dataclasses.dataclass(frozen=True)
class EyerissConfig:
    """Hardware parameters and modelling choices (defaults: the ``shiftaddnas`` preset, SPEC). Every field is
    validated by :meth:`validate`; :meth:`preset` builds a named one. Each field's comment names its source, or
    says *calibrated* and on which anchor (``benchmarks/cost.py`` (h) moves each one).

    ``placement``: ``grid`` (the authors' simulator) stacks filter and channel sets down the rows and puts inputs
    side by side across the columns, sets no wider than the array; ``free`` (the chip) places sets anywhere,
    folds a wide set into strips and stacks only the channel sets, whose partial sums must flow up a column.
    ``parallel_instances``: see :func:`layer_cost`. ``link_overlap``: how the link's transfers overlap the
    passes (:func:`_latency_cycles`); ``activations`` was chosen on the chip's AlexNet latencies, which lie
    between the ``all`` and ``none`` bounds."""

    # -- the array and its storage (SPEC; Eyeriss ISCA'16 / JSSC'17: 168 PEs, 12/224/24-word spads) -------------
    pe_rows: int = 14
    pe_cols: int = 12
    freq_mhz: float = 250.0                # SPEC: 250 MHz (the chip ran its AlexNet table at 200 MHz)
    bits: Literal[32, 16, 8] = 32
    ifmap_spad_words: int = 12
    filter_spad_words: int = 224
    psum_spad_words: int = 24
    glb_tile_words: int = 65536            # SPEC: the authors' buffer tile (< 65,536 words); the chip: 108 KB
    filters_via_glb: bool = True           # the chip streams filters from DRAM straight to the PEs (JSSC'17)
    # -- energy per access relative to one RF access (Eyeriss ISCA'16, Fig. 1; SPEC) ---------------------------
    dram_energy: float = 200.0
    glb_energy: float = 6.0
    noc_energy: float = 2.0
    rf_energy: float = 1.0
    rf_access_pj: float = 3.7              # SPEC: 1x = a 32-bit multiply at 45 nm (Horowitz ISSCC'14)
    # -- the authors' tiling limits (SPEC): m0 <= 16, c0*s < 12, m0*c0*s < 192 ---------------------------------
    max_filters_per_pass: int = 16
    max_filter_spad_use: int = 191
    max_ifmap_spad_use: int = 11
    # -- modelling choices; "calibrated" ones were fixed on the anchor named and are varied in the benchmark -----
    rf_weight_cost: float = 2.0          # SPEC: a read from the (larger) filter spad costs 2x
    rf_weight_fill_cost: float = 1.0     # calibrated (Transformer-big, paper Table 3): a filter-spad write, 1x
    pass_fill_cycles: bool = True        # calibrated (Transformer-big latency): a pass first streams its rows in
    dram_bus_bits: int = 64              # calibrated (Transformer-big DRAM energy): bits one DRAM access moves
    op_rules: Literal["authors", "physical"] = "authors"  # which layers move narrow words / skip DRAM (below)
    shift_word_bits: int | None = 10     # SPEC ("authors"): (16 + 5) // 2-bit words for lightweight shift layers
    shift_weight_bits: int = 5           # "physical": a power-of-two weight is a sign and a 4-bit exponent
    shift_cycle_factor: float = 0.5      # SPEC ("authors"): lightweight shift layers take half the cycles
    adder_on_chip: bool = True           # SPEC ("authors"): adder and lightweight-conv layers stay on chip
    placement: Literal["grid", "free"] = "grid"  # "grid": the authors'; "free": the chip's (JSSC'17)
    loop_orders: tuple[str, ...] = ("pe",)  # the authors' simulator keeps partial sums in the PE (SPEC) ...
    psums_bounded_by_spad: bool = False  # ... without bounding a row of them by the psum spad (the chip: bounded)
    parallel_instances: bool = False     # heads of a product / groups of a conv may run side by side
    rlc: bool = False                    # JSSC'17: run-length compression of activations off chip
    link_bits: int = 64                  # JSSC'17: 64-bit off-chip data bus
    link_mhz: float | None = None        # JSSC'17: 60 MHz link clock; None: the link is not modelled
    link_overlap: Literal["none", "activations", "all"] = "activations"  # calibrated (AlexNet latency)
    objective: Literal["energy+latency", "energy", "latency"] = "energy+latency"

    def validate(self) -> None:
        for name in ("pe_rows", "pe_cols", "ifmap_spad_words", "filter_spad_words", "psum_spad_words",
                     "glb_tile_words", "max_filters_per_pass", "max_filter_spad_use", "max_ifmap_spad_use",
                     "dram_bus_bits", "link_bits", "shift_weight_bits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("freq_mhz", "rf_access_pj", "shift_cycle_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("dram_energy", "glb_energy", "noc_energy", "rf_energy", "rf_weight_cost"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        bad = [o for o in self.loop_orders if o not in ORDERS]
        if bad or not self.loop_orders:
            raise ValueError(f"loop_orders: {list(self.loop_orders)} must be a non-empty subset of {list(ORDERS)}")
        if self.link_mhz is not None and not self.link_mhz > 0:
            raise ValueError(f"link_mhz: must be > 0 or None, got {self.link_mhz}")
        if self.bits not in OP_ENERGY_PJ:
            raise ValueError(f"bits: unknown bit width {self.bits}; expected one of {sorted(OP_ENERGY_PJ)}")
        if self.shift_word_bits is not None and not 1 <= self.shift_word_bits <= 64:
            raise ValueError(f"shift_word_bits: must be in [1, 64] or None, got {self.shift_word_bits}")
        for name, allowed in (("objective", tuple(OBJECTIVES)),
                              ("op_rules", ("authors", "physical")),
                              ("link_overlap", ("none", "activations", "all")),
                              ("placement", ("grid", "free"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: unknown value {getattr(self, name)!r}; expected one of {list(allowed)}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "EyerissConfig":
        """A named configuration (:data:`PRESETS`) with ``overrides`` applied; an unknown name lists the known."""
        if name not in PRESETS:
            raise ValueError(f"preset: unknown Eyeriss preset {name!r}; expected one of {sorted(PRESETS)}")
        cfg = dataclasses.replace(cls(), **{**PRESETS[name], **overrides})
        cfg.validate()
        return cfg


#: Named configurations. ``shiftaddnas``: the authors' simulator as SPEC describes it (the defaults).
#: ``jssc2017``: the fabricated Eyeriss as measured on AlexNet (Chen et al., JSSC 2017: 12 x 14 PEs at 200 MHz,
#: 16-bit, 108 KB global buffer for inputs and partial sums, filters streamed from DRAM, RLC, a 64-bit link at
#: 60 MHz). The authors' tiling limits are kept: the chip's own AlexNet mappings
#: (p = 16 filters, q*S <= 11, p*q*S <= 176) obey them.
#: ``physical``: the authors' technology point (array, clock, bit width, energies) with the mechanisms validated
#: on the chip: free placement, every loop order, psum spads that bound, the physical op rule.
PRESETS: dict[str, dict[str, Any]] = {
    "shiftaddnas": {},
    "physical": dict(placement="free", loop_orders=ORDERS, psums_bounded_by_spad=True, op_rules="physical",
                     parallel_instances=True),
    "jssc2017": dict(pe_rows=12, pe_cols=14, freq_mhz=200.0, bits=16, glb_tile_words=108 * 1024 // 2,
                     filters_via_glb=False, rf_weight_cost=1.0, placement="free", loop_orders=ORDERS,
                     psums_bounded_by_spad=True, parallel_instances=True, rlc=True, link_mhz=60.0),
}


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One RS mapping: spad tiling (m0, c0), set width ``e_s``, sets (m_s, c_s, n_s), loop order and folds."""

    m0: int
    c0: int
    e_s: int
    m_s: int
    c_s: int
    n_s: int
    passes: int
    cycles_per_pass: int
    order: str = "pe"
    active_pes: int = 0


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """Energy per level (mJ), latency (ms), cycles, PE utilisation, access counts (words) and the mapping of one
    layer. ``accesses`` has per level the activation words (``rf``, ``noc``, ``glb``, ``dram``) and the weight
    words (``rf_w``, ...); ``dram_raw`` is the DRAM traffic before compression; ``link_ms`` the link's time."""

    energy_mj: dict[str, float]
    latency_ms: float
    cycles: float
    utilization: float
    accesses: dict[str, float]
    mapping: Mapping
    compute_ms: float = 0.0
    link_ms: float = 0.0
    link_weight_ms: float = 0.0

    @property
    def total_mj(self) -> float:
        return sum(self.energy_mj.values())


@dataclasses.dataclass(frozen=True)
class OpRule:
    """What a layer's operator changes in the model: word widths, cycle factor and whether it stays on chip."""

    activation_bits: int
    weight_bits: int
    cycle_factor: float
    on_chip: bool


def op_rule(shape: LayerShape, cfg: EyerissConfig) -> OpRule:
    """The per-layer op rule of ``cfg.op_rules``.

    ``authors`` (default; SPEC, the simulator that produced the paper's numbers): a *lightweight* shift layer moves
    ``shift_word_bits`` words at every level in ``shift_cycle_factor`` of the cycles; adder layers and lightweight
    multiply (convolution) layers have no DRAM, buffer or NoC energy (``adder_on_chip``). A shift FFN or a CV shift
    convolution is costed as a multiply layer apart from its compute energy. ``physical``: a shift layer's weights
    move as ``shift_weight_bits`` words and its activations at full width, in the cycles of a multiply (one
    shift-accumulate per PE per cycle); adder layers move their data like any other layer.
    """
    bits = cfg.bits
    if cfg.op_rules == "physical":
        return OpRule(bits, min(bits, cfg.shift_weight_bits) if shape.op == "bitshift" else bits, 1.0, False)
    narrow = shape.op == "bitshift" and shape.lightweight
    word = cfg.shift_word_bits if narrow and cfg.shift_word_bits is not None else bits
    on_chip = cfg.adder_on_chip and (shape.op == "absdiff" or (shape.lightweight and shape.op == "multiply"))
    return OpRule(word, word, cfg.shift_cycle_factor if narrow else 1.0, on_chip)


def rlc_ratio(zeros: float, bits: int, run_bits: int = 5, code_word_bits: int = 64) -> float:
    """Compressed / raw size of a stream with a fraction ``zeros`` of i.i.d. zeros under the chip's run-length
    code (JSSC'17): pairs of a ``run_bits`` zero run and a ``bits`` value, packed ``(64 - 1) // (run + bits)`` to a
    64-bit word. One pair covers a run of up to ``2**run_bits - 1`` zeros and one more value, so a stream of ``N``
    values needs ``N (1 - z) / (1 - z**(2**run_bits))`` pairs. Never above 1: incompressible data goes raw."""
    if not 0.0 <= zeros < 1.0:
        raise ValueError(f"zeros: must be in [0, 1), got {zeros}")
    pairs_per_word = (code_word_bits - 1) // (run_bits + bits)
    if pairs_per_word < 1:
        return 1.0
    pairs = (1.0 - zeros) / (1.0 - zeros ** (2 ** run_bits))
    return min(1.0, pairs * code_word_bits / pairs_per_word / bits)


def fold_long_rows(shape: LayerShape, cfg: EyerissConfig) -> tuple[LayerShape, int]:
    """A 1-D filter row longer than a PE's spads take (``s > min(max_ifmap_spad_use, max_filter_spad_use)``: the
    SuperTransformer's kernels of 15 and 31) as ``k`` shorter rows of one virtual ``k x ceil(s / k)`` filter over
    ``k`` offset copies of the input row, whose partial sums add up down a PE set as a 2-D filter's rows do (how RS
    runs any filter wider than its spads). Returns the folded shape and ``k`` (1: nothing to fold)."""
    limit = min(cfg.max_ifmap_spad_use, cfg.max_filter_spad_use, cfg.filter_spad_words, cfg.ifmap_spad_words)
    if shape.s <= limit or shape.r != 1 or shape.h != 1:
        return shape, 1
    k = math.ceil(shape.s / limit)
    s = math.ceil(shape.s / k)
    return dataclasses.replace(shape, r=k, s=s, h=k, w=(shape.f - 1) * shape.stride + s, e=1), k


def _set_counts(limit: int) -> list[int]:
    """Candidate numbers of PE sets for one role: every count up to 16, then the array's natural fractions."""
    small = set(range(1, min(limit, 16) + 1))
    return sorted(small | {limit // k for k in range(1, 17) if limit // k >= 1})


def _grid(shape: LayerShape, cfg: EyerissConfig) -> dict[str, np.ndarray]:
    """Every mapping within the spad and array limits, as flat arrays (one entry per candidate)."""
    R = min(shape.r, cfg.pe_rows)
    ifmap_limit = min(cfg.max_ifmap_spad_use, cfg.ifmap_spad_words)
    filter_limit = min(cfg.max_filter_spad_use, cfg.filter_spad_words)
    m0s = np.arange(1, min(cfg.max_filters_per_pass, shape.m, cfg.psum_spad_words) + 1)
    c0s = np.arange(1, min(shape.c, ifmap_limit // max(1, shape.s)) + 1)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("m0", "c0", "e_s", "m_s", "c_s", "n_s")}
    m0g, c0g = (a.ravel() for a in np.meshgrid(m0s, c0s, indexing="ij"))
    ok = m0g * c0g * shape.s <= filter_limit
    m0g, c0g = m0g[ok], c0g[ok]
    grid = cfg.placement == "grid"
    for e_s in range(1, min(shape.e, cfg.pe_cols * (1 if grid else max(1, cfg.pe_rows // R))) + 1):
        strips = math.ceil(e_s / cfg.pe_cols)
        if R * strips > cfg.pe_rows:
            break
        if grid:  # sets stacked down the rows (filters, channels), inputs side by side across the columns
            copies = max(1, cfg.pe_rows // R)
            pairs = [(a, copies // a) for a in range(1, copies + 1)]
        else:  # partial sums only flow up a column: the c_s sets whose sums add up are stacked vertically
            down, across = cfg.pe_rows // (R * strips), cfg.pe_cols // min(e_s, cfg.pe_cols)
            pairs = [(a, b) for b in range(1, down + 1) for a in _set_counts((down // b) * across)]
        ms = np.array([p[0] for p in pairs])
        cs = np.array([p[1] for p in pairs])
        m0x, msx = np.meshgrid(m0g, ms, indexing="ij")
        c0x, csx = np.meshgrid(c0g, cs, indexing="ij")
        m0x, msx, c0x, csx = m0x.ravel(), msx.ravel(), c0x.ravel(), csx.ravel()
        if grid:
            csx = np.minimum(csx, np.ceil(shape.c / c0x))
        keep = (msx <= np.ceil(shape.m / m0x)) & (csx <= np.ceil(shape.c / c0x))
        m0x, msx, c0x, csx = m0x[keep], msx[keep], c0x[keep], csx[keep]
        cols["m0"].append(m0x)
        cols["c0"].append(c0x)
        cols["m_s"].append(msx)
        cols["c_s"].append(csx)
        cols["e_s"].append(np.full_like(m0x, e_s))
        if grid:
            cols["n_s"].append(np.full_like(m0x, min(shape.n, cfg.pe_cols // e_s)))
        else:  # the column stacks left beside the channel sets take filter groups and inputs
            cols["n_s"].append(np.minimum(shape.n, (down // csx) * across // msx))
    return {k: np.concatenate(v).astype(np.float64) if v else np.zeros(0) for k, v in cols.items()}


def _evaluate(shape: LayerShape, cfg: EyerissConfig, g: dict[str, np.ndarray], order: str,
              dram_inputs: float | None) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Access counts (words; activation and weight words apart), cycles, DRAM weight words and validity of every
    mapping in ``g`` under one loop ``order``, for one group of one repeat (see the module docstring)."""
    n, c, m, r, s, e, f, st = shape.n, shape.c, shape.m, shape.r, shape.s, shape.e, shape.f, shape.stride
    m0, c0, e_s, m_s, c_s, n_s = g["m0"], g["c0"], g["e_s"], g["m_s"], g["c_s"], g["n_s"]
    R = min(r, cfg.pe_rows)
    w_in = (f - 1) * st + s                       # the padded input row a PE streams
    folds_n, folds_e = np.ceil(n / n_s), np.ceil(e / e_s)
    folds_m = np.ceil(m / (m_s * m0))
    folds_c = np.ceil(c / (c_s * c0)) * math.ceil(r / R)
    passes = folds_n * folds_e * folds_m * folds_c
    cycles = passes * (m0 * c0 * s * f + (c0 * w_in if cfg.pass_fill_cycles else 0))
    macs = float(n * m * c * r * s * e * f)
    weights, outputs = float(m * c * r * s), float(n * m * e * f)
    inputs = float(n * c * shape.h * shape.w) if dram_inputs is None else float(dram_inputs)
    # input rows read per strip of e_s output rows (the last strip may be shorter), and the padded input
    rows_in = (e_s - 1) * st + r
    e_last = e - (folds_e - 1) * e_s
    rows_total = (folds_e - 1) * rows_in + (e_last - 1) * st + r
    padded_rows = (e - 1) * st + r

    # RF: every MAC reads an input, a weight and a partial sum and writes the partial sum; the ifmap spad is
    # written once per input a PE streams (reused by its m0 filters); NoC: each PE receives its spad fills.
    rf_in = macs * (1 + w_in / (m0 * s * f))
    rf_psum = 2 * macs + outputs
    noc_in = macs / (m0 * s) * (w_in / f)
    valid = np.ones_like(m0, dtype=bool)
    if order == "pe":
        # partial sums stay in the PE over the channel folds, so the filter spad is refilled for every output row
        if cfg.psums_bounded_by_spad:
            valid &= m0 * f <= cfg.psum_spad_words
        fills = np.full_like(m0, macs / f)
        noc_psum = outputs * c_s * R
        glb_in = noc_in / (m_s * R)
        glb_w_reads = fills / (e_s * n_s)
        glb_psum = np.full_like(m0, outputs)
        tile = m_s * m0 * c_s * c0 * r * s + np.minimum(inputs, n_s * c_s * c0 * shape.h * shape.w) + \
            n_s * m_s * m0 * e * f
        dram_in = inputs * np.where(inputs + tile <= cfg.glb_tile_words, 1.0, folds_m)
        dram_w = glb_w_reads if not cfg.filters_via_glb else np.full_like(m0, weights)
    else:
        reloads = np.ones_like(m0) if order == "filters" else folds_n * folds_e
        fills = weights * e_s * n_s * reloads     # each filter row lands in the e_s x n_s PEs that use it
        # each channel fold's sums run down the set rows and across the c_s sets to the buffer and come back
        noc_psum = outputs * folds_c * c_s * R + outputs * (folds_c - 1)
        glb_in = folds_m * n * c * w_in * rows_total
        glb_w_reads = weights * reloads
        glb_psum = 2 * folds_c * outputs
        # what the buffer holds besides the sums stays for the next filter group; the rest comes again from DRAM
        if order == "filters":
            held = n * m_s * m0 * e * f           # the sums of one filter group for every output
            kept, halo = n * c * padded_rows * w_in, 1.0
        else:
            held = n_s * m_s * m0 * e_s * f       # the sums of one strip
            kept, halo = n_s * c * rows_in * w_in, rows_total / padded_rows
        valid &= held <= cfg.glb_tile_words
        resident = np.clip((cfg.glb_tile_words - held) / kept, 0.0, 1.0)
        dram_in = inputs * halo * (1 + (folds_m - 1) * (1 - resident))
        dram_w = weights * reloads
    glb_w = glb_w_reads if cfg.filters_via_glb else np.zeros_like(m0)
    dram_out = np.full_like(m0, outputs)
    if shape.weights_are_activations:  # both operands are activations of this layer, produced on chip
        dram_in, dram_w = np.full_like(m0, inputs), np.full_like(m0, weights)
    acc = {"rf": rf_in + rf_psum, "rf_w": macs * cfg.rf_weight_cost + fills * cfg.rf_weight_fill_cost,
           "noc": noc_in + noc_psum, "noc_w": fills, "glb": glb_in + glb_psum, "glb_w": glb_w,
           "dram_in": dram_in, "dram_out": dram_out, "dram_w": dram_w}
    return acc, cycles, passes, valid


def _compress(shape: LayerShape, cfg: EyerissConfig, acc: dict[str, Any], bits: int) -> dict[str, Any]:
    """Add ``dram`` (activation words after RLC) and ``dram_raw`` (before) to ``acc``."""
    acc = dict(acc)
    raw = acc["dram_in"] + acc["dram_out"]
    if cfg.rlc:
        acc["dram"] = acc["dram_in"] * rlc_ratio(shape.input_zeros, bits) + \
            acc["dram_out"] * rlc_ratio(shape.output_zeros, bits)
    else:
        acc["dram"] = raw
    acc["dram_raw"] = raw + acc["dram_w"]
    return acc


def _energies(shape: LayerShape, cfg: EyerissConfig, acc: dict[str, Any], macs: float) -> dict[str, Any]:
    """pJ per level from access counts (words) and MACs.

    On-chip access energies scale with the word width (``bits / 32`` of the 32-bit figure); a DRAM access moves
    ``dram_bus_bits`` at a time, so a word costs ``dram_energy * bits / dram_bus_bits``.
    """
    rule, pj = op_rule(shape, cfg), cfg.rf_access_pj
    a, w = rule.activation_bits / 32, rule.weight_bits / 32
    energy = {
        "compute": macs * OP_ENERGY_PJ[cfg.bits][OPERATORS[shape.op].unit],
        "dram": (acc["dram"] * a + acc["dram_w"] * w) * cfg.dram_energy * pj * 32 / cfg.dram_bus_bits,
        "glb": (acc["glb"] * a + acc["glb_w"] * w) * cfg.glb_energy * pj,
        "noc": (acc["noc"] * a + acc["noc_w"] * w) * cfg.noc_energy * pj,
        "rf": (acc["rf"] * a + acc["rf_w"] * w) * cfg.rf_energy * pj,
    }
    if rule.on_chip:
        energy["dram"] = energy["glb"] = energy["noc"] = 0.0 * energy["rf"]
    return energy


def _link_cycles(cfg: EyerissConfig, acc: dict[str, Any], rule: OpRule) -> tuple[Any, Any]:
    """Core cycles the off-chip link needs for (activations, weights) at ``link_bits`` per link cycle."""
    if cfg.link_mhz is None or rule.on_chip:
        return 0.0, 0.0
    per_bit = cfg.freq_mhz / cfg.link_mhz / cfg.link_bits
    return acc["dram"] * rule.activation_bits * per_bit, acc["dram_w"] * rule.weight_bits * per_bit


def _latency_cycles(cfg: EyerissConfig, compute: Any, link_act: Any, link_w: Any) -> Any:
    """Compute and link cycles combined by ``link_overlap``: ``none`` (in turn), ``activations`` (activation
    transfers overlap the passes through the double-buffered global buffer; filters, streamed into the spads,
    stall them) or ``all`` (perfect overlap: the longer of the two)."""
    if cfg.link_overlap == "none":
        return compute + link_act + link_w
    if cfg.link_overlap == "activations":
        return np.maximum(compute, link_act) + link_w
    return np.maximum(compute, link_act + link_w)


@functools.lru_cache(maxsize=65536)
def layer_cost(shape: LayerShape, cfg: EyerissConfig = EyerissConfig()) -> LayerCost:
    """Energy and latency of one layer under its best RS mapping (memoised by shape and configuration).

    A layer of several independent instances (the heads of an attention product, ``repeat``; the groups of a
    grouped or depthwise convolution, ``groups``) runs them one after another on the whole array, or, with
    ``parallel_instances``, ``a x b`` of them side by side on ``pe_rows / a x pe_cols / b`` sub-arrays (each with
    its share of the buffer), whichever the objective prefers: small products and depthwise filters that leave
    most of the array idle then fill it.
    """
    instances = shape.groups * shape.repeat
    if not cfg.parallel_instances or instances == 1:
        return _best(shape, cfg, None)
    single = dataclasses.replace(shape, groups=1, repeat=1)
    options = []
    for a in _divisors(cfg.pe_rows):
        for b in _divisors(cfg.pe_cols):
            side = a * b
            if side > instances:
                continue
            sub = dataclasses.replace(cfg, pe_rows=cfg.pe_rows // a, pe_cols=cfg.pe_cols // b,
                                      glb_tile_words=cfg.glb_tile_words // side, parallel_instances=False)
            try:
                one = layer_cost(single, sub)
            except ValueError:  # the filter is taller than the sub-array or its sums overflow its buffer
                continue
            compute = one.compute_ms * math.ceil(instances / side)
            link_w, link_act = one.link_weight_ms * instances, (one.link_ms - one.link_weight_ms) * instances
            latency = float(_latency_cycles(cfg, compute, link_act, link_w))
            options.append((one.total_mj * instances, latency, compute, side, one))
    if not options:
        return _best(shape, cfg, None)
    e_min = min(o[0] for o in options) or 1.0
    l_min = min(o[1] for o in options) or 1.0
    weight_e, weight_l = OBJECTIVES[cfg.objective]
    _, latency, compute, side, one = min(options, key=lambda o: (weight_e * o[0] / e_min + weight_l * o[1] / l_min,
                                                                   o[1], o[0]))
    to_cycles = cfg.freq_mhz * 1e3
    return LayerCost(energy_mj={k: v * instances for k, v in one.energy_mj.items()}, latency_ms=latency,
                     cycles=latency * to_cycles,
                     utilization=min(1.0, shape.macs / (latency * to_cycles * cfg.pe_rows * cfg.pe_cols)),
                     accesses={k: v * instances for k, v in one.accesses.items()},
                     mapping=dataclasses.replace(one.mapping, active_pes=one.mapping.active_pes * min(side, instances)),
                     compute_ms=compute, link_ms=one.link_ms * instances, link_weight_ms=one.link_weight_ms * instances)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def mapping_cost(shape: LayerShape, mapping: Mapping, cfg: EyerissConfig = EyerissConfig()) -> LayerCost:
    """Energy and latency of one layer under a given mapping (its ``m0, c0, e_s, m_s, c_s, n_s``; the loop order
    is ``mapping.order`` if it is one of ``cfg.loop_orders``' valid ones, else the cheapest of them): how a
    published mapping, e.g. the chip's own, costs in this model."""
    return _best(shape, cfg, mapping)


def _best(shape: LayerShape, cfg: EyerissConfig, fixed: Mapping | None) -> LayerCost:
    original = shape
    shape, folds = fold_long_rows(shape, cfg)
    dram_inputs = original.n * original.c * original.h * original.w if folds > 1 else None
    if fixed is None:
        grid = _grid(shape, cfg)
        orders = cfg.loop_orders
    else:
        grid = {k: np.array([float(getattr(fixed, k))]) for k in ("m0", "c0", "e_s", "m_s", "c_s", "n_s")}
        orders = (fixed.order,) if fixed.order in cfg.loop_orders else cfg.loop_orders
    rule = op_rule(original, cfg)
    macs_one = float(original.n * original.m * original.c * original.r * original.s * original.e * original.f)
    best: tuple[Any, ...] | None = None
    scored = []
    for order in orders:
        acc, cycles, passes, valid = _evaluate(shape, cfg, grid, order, dram_inputs)
        if not valid.any():
            continue
        acc = _compress(original, cfg, acc, rule.activation_bits)
        energy = sum(_energies(original, cfg, acc, macs_one).values())
        link_act, link_w = _link_cycles(cfg, acc, rule)
        total = _latency_cycles(cfg, cycles * rule.cycle_factor, link_act, link_w)
        scored.append((order, acc, cycles, passes, valid, np.where(valid, energy, np.inf),
                       np.where(valid, total, np.inf)))
    if not scored:
        raise ValueError(f"layer {shape}: no mapping fits the spads ({cfg.ifmap_spad_words}-word ifmap, "
                         f"{cfg.filter_spad_words}-word filter) and the {cfg.glb_tile_words}-word buffer")
    e_min = min(float(x[5].min()) for x in scored) or 1.0
    c_min = min(float(x[6].min()) for x in scored) or 1.0
    weight_e, weight_l = OBJECTIVES[cfg.objective]
    for order, acc, cycles, passes, valid, energy, total in scored:
        with np.errstate(invalid="ignore"):  # inf / inf for invalid mappings: they are never picked
            score = np.where(valid, weight_e * energy / e_min + weight_l * total / c_min, np.inf)
        i = int(np.lexsort((energy, total, score))[0])
        key = (float(score[i]), float(total[i]), float(energy[i]))
        if best is None or key < best[0]:
            best = (key, order, {k: float(np.asarray(v)[i]) if np.ndim(v) else float(v) for k, v in acc.items()},
                    float(cycles[i]), float(passes[i]), i)
    assert best is not None
    _, order, acc, cycles, passes, i = best
    g = {k: int(v[i]) for k, v in grid.items()}
    R = min(shape.r, cfg.pe_rows)
    mapping = Mapping(g["m0"], g["c0"], g["e_s"], g["m_s"], g["c_s"], g["n_s"], int(passes),
                      int(round(cycles / passes)), order, R * g["e_s"] * g["m_s"] * g["c_s"] * g["n_s"])
    times = shape.groups * shape.repeat
    energy = {k: v * times * 1e-9 for k, v in _energies(original, cfg, acc, macs_one).items()}  # pJ -> mJ
    link_act, link_w = _link_cycles(cfg, acc, rule)
    compute_cycles = cycles * rule.cycle_factor * times
    cycles_total = float(_latency_cycles(cfg, compute_cycles, link_act * times, link_w * times))
    to_ms = 1.0 / (cfg.freq_mhz * 1e3)
    utilization = original.macs / (cycles_total * cfg.pe_rows * cfg.pe_cols)
    return LayerCost(energy_mj=energy, latency_ms=cycles_total * to_ms, cycles=cycles_total,
                     utilization=min(1.0, utilization), accesses={k: v * times for k, v in acc.items()},
                     mapping=mapping, compute_ms=compute_cycles * to_ms, link_ms=(link_act + link_w) * times * to_ms,
                     link_weight_ms=link_w * times * to_ms)
