"""Layer records of a hybrid CV space's subnets composed from memoised per-layer traces.

A layer's cost depends only on its place in the network (:class:`~nni_shiftadd.space.spec.LayerPlan`: block type,
widths, resolutions, stride), never on the other layers, so each distinct layer is traced once (on the meta
device) and every later architecture made of known layers is costed without building a model. This is the
``records_fn`` fast path of :class:`~nni_shiftadd.cost.profilers.CostProfiler` that evolution search relies on:
thousands of constraint checks per search.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from ..hws import Mode
from ..space.cv import HybridCVSpace
from ..space.spec import LayerPlan, SpaceSpec, layer_plan
from .layers import LayerRecord
from .profilers import CostProfiler, EyerissProfiler, OpCountProfiler, trace_model


class LayerwiseRecords:
    """``sample -> list[LayerRecord]`` for the subnets of ``spec``, tracing only layers it has not seen."""

    def __init__(self, spec: SpaceSpec, mode: Mode = "hws") -> None:
        self.spec = spec
        with torch.device("meta"):
            self.space = HybridCVSpace(spec, mode)
        self._layers: dict[LayerPlan, list[LayerRecord]] = {}
        self._stem: list[LayerRecord] = []
        self._head: list[LayerRecord] = []
        self.traces = 0

    def __call__(self, sample: Mapping[str, Any]) -> list[LayerRecord]:
        plan = layer_plan(self.spec, sample)
        if self.traces == 0 or any(p not in self._layers for p in plan):
            self._trace(sample, plan)
        return [*self._stem, *(r for p in plan for r in self._layers[p]), *self._head]

    def _trace(self, sample: Mapping[str, Any], plan: list[LayerPlan]) -> None:
        size = self.spec.input.size
        trace, _ = trace_model(lambda: self.space.freeze(dict(sample)),
                               torch.zeros(1, self.spec.input.channels, size, size))
        self.traces += 1
        where = {f"stages.{p.stage}.{p.index}.": p for p in plan}
        per_layer: dict[LayerPlan, list[LayerRecord]] = {p: [] for p in plan}
        stem, head = [], []
        for record in trace.layers:
            prefix = ".".join(record.name.split(".")[:3]) + "."
            if prefix in where:
                per_layer[where[prefix]].append(record)
            elif record.name.startswith("stages."):
                raise RuntimeError(f"layer record {record.name!r} of {dict(sample)} belongs to no active layer")
            elif not per_layer or all(not v for v in per_layer.values()):
                stem.append(record)
            else:
                head.append(record)
        self._stem, self._head = stem, head
        self._layers.update(per_layer)


def space_profiler(spec: SpaceSpec, metric: str = "energy_mJ", *, bits: int = 32,
                   hardware: Literal["eyeriss", "none"] = "eyeriss", **options: Any) -> CostProfiler:
    """An NNI profiler of ``spec``'s subnets (Eyeriss energy/latency, or op counts with ``hardware="none"``) on
    the :class:`LayerwiseRecords` fast path."""
    records = LayerwiseRecords(spec)
    cls = EyerissProfiler if hardware == "eyeriss" else OpCountProfiler
    return cls(records.space, metric=metric, bits=bits, records_fn=records, **options)
