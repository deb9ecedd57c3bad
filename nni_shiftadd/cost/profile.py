"""``profile(model, *inputs)``: op counts, energy and latency of a model, per layer and in total."""
from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from torch import nn

from ..config import coerce
from .counts import OpCounts, count_layer, effective_macs
from .eyeriss import LEVELS, EyerissConfig, layer_cost
from .layers import LayerRecord, LayerShape
from .trace import trace_layers

HARDWARE = ("eyeriss", "none")


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of a :class:`CostReport`."""

    name: str
    type: str
    op: str
    kind: str
    params: int
    macs: int
    mult: int
    add: int
    shift: int
    energy_mJ: float
    latency_ms: float
    utilization: float
    energy_breakdown_mJ: dict[str, float]


@dataclasses.dataclass(frozen=True)
class CostReport:
    """Totals (``energy_mJ``, ``latency_ms``, ``params``, ``macs``, ``mult``, ``add``, ``shift``), the energy per
    memory level, and the per-layer rows. ``unmodelled`` lists ``(path, type)`` of layers without a cost model
    (only when asked for with ``unmodelled="report"``)."""

    totals: dict[str, float]
    breakdown_mJ: dict[str, float]
    rows: list[LayerRow]
    unmodelled: list[tuple[str, str]]
    hardware: str
    bits: int

    def __getitem__(self, key: str) -> float:
        return self.totals[key]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self, max_rows: int | None = None) -> str:
        """A fixed-width per-layer table followed by the totals and the energy breakdown."""
        head = f"{'layer':44s} {'type':16s} {'op':8s} {'MACs':>10s} {'energy mJ':>10s} {'lat ms':>8s} {'util':>5s}"
        lines = [head, "-" * len(head)]
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        for r in rows:
            lines.append(f"{r.name[-44:]:44s} {r.type[:16]:16s} {r.op:8s} {_si(r.macs):>10s} {r.energy_mJ:10.4f} "
                         f"{r.latency_ms:8.4f} {r.utilization:5.2f}")
        if max_rows is not None and len(self.rows) > max_rows:
            lines.append(f"... {len(self.rows) - max_rows} more layers")
        for path, kind in self.unmodelled:
            lines.append(f"{path[-44:]:44s} {kind[:16]:16s} UNMODELLED (not counted)")
        t = self.totals
        lines += ["-" * len(head),
                  f"params {_si(t['params'])}  MACs {_si(t['macs'])}  #Mult {_si(t['mult'])}  #Add {_si(t['add'])}  "
                  f"#Shift {_si(t['shift'])}  effective MACs@{self.bits}b {_si(t['effective_macs'])}"]
        if self.hardware != "none":
            lines.append(f"energy {t['energy_mJ']:.3f} mJ  latency {t['latency_ms']:.3f} ms  ({self.hardware}, "
                         f"{self.bits}-bit)  breakdown mJ: " +
                         ", ".join(f"{k} {v:.2f}" for k, v in self.breakdown_mJ.items()))
        return "\n".join(lines)


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f}{unit}"
    return f"{x:.0f}"


def eyeriss_config(bits: int = 32, preset: str = "shiftaddnas", **options: Any) -> EyerissConfig:
    """An :class:`EyerissConfig` from a named ``preset`` (:data:`~nni_shiftadd.cost.eyeriss.PRESETS`), the bit
    width and keyword options on top; an unknown option is an error naming it."""
    fields = {f.name for f in dataclasses.fields(EyerissConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"option {unknown[0]!r}: unknown; the Eyeriss model's options are "
                         f"{sorted(fields - {'bits'}) + ['preset']}")
    hints = typing.get_type_hints(EyerissConfig)
    typed = {k: coerce(v, hints[k], f"option {k!r}") for k, v in options.items()}  # 'maybe' is no bool
    return EyerissConfig.preset(preset, bits=bits, **typed)


def report_from_records(records: Sequence[LayerRecord], *, hardware: Literal["eyeriss", "none"] = "eyeriss",
                        bits: int = 32, unmodelled: Iterable[tuple[str, str]] = (), **options: Any) -> CostReport:
    """Cost a list of layer records (from :func:`~nni_shiftadd.cost.trace.trace_layers` or a search space's
    analytic shapes) without running a model."""
    if hardware not in HARDWARE:
        raise ValueError(f"hardware: unknown value {hardware!r}; expected one of {list(HARDWARE)}")
    cfg = eyeriss_config(bits, **options)
    rows, total, breakdown = [], OpCounts(), dict.fromkeys(LEVELS, 0.0)
    latency = 0.0
    for rec in records:
        counts = count_layer(rec)
        total = total + counts
        energy, lat, util, parts = 0.0, 0.0, 0.0, {}
        if hardware == "eyeriss":
            cost = layer_cost(rec.shape, cfg)
            parts = dict(cost.energy_mj)
            energy, lat, util = cost.total_mj, cost.latency_ms, cost.utilization
            for k, v in parts.items():
                breakdown[k] += v
            latency += lat
        rows.append(LayerRow(rec.name, rec.type, rec.shape.op, rec.shape.kind, counts.params, counts.macs,
                             counts.mult, counts.add, counts.shift, energy, lat, util, parts))
    totals = {"energy_mJ": sum(breakdown.values()), "latency_ms": latency, "params": total.params,
              "macs": total.macs, "mult": total.mult, "add": total.add, "shift": total.shift,
              "effective_macs": effective_macs(total.macs, bits)}
    return CostReport(totals, breakdown, rows, list(unmodelled), hardware, bits)


def profile(model: nn.Module, *example_inputs: Any, hardware: Literal["eyeriss", "none"] = "eyeriss",
            bits: int = 32, unmodelled: Literal["error", "report"] = "error", **options: Any) -> CostReport:
    """Trace one forward pass of ``model`` on ``example_inputs`` and cost every compute layer.

    Args:
        hardware: ``"eyeriss"`` (energy and latency, :mod:`.eyeriss`) or ``"none"`` (op counts only).
        bits: 32, 16 or 8: the accelerator's word width, and the effective MACs (``MACs x (bits/32)^2``).
        unmodelled: a parametrised layer of unknown type is an ``"error"`` (default), or ``"report"``-ed in
            ``CostReport.unmodelled`` and left out of the totals. Never silently zero.
        options: fields of :class:`~nni_shiftadd.cost.eyeriss.EyerissConfig` (e.g. ``adder_on_chip=False``).
    """
    trace = trace_layers(model, *example_inputs, unmodelled=unmodelled)
    return report_from_records(trace.layers, hardware=hardware, bits=bits, unmodelled=trace.unmodelled, **options)


__all__ = ["CostReport", "LayerRow", "LayerShape", "eyeriss_config", "profile", "report_from_records"]
