"""Layer records of a hybrid space's subnets (CV or translation) composed from memoised per-layer traces.

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
from torch import Tensor, nn

from ..space.cv import HybridCVSpace
from ..space.nlp import HybridNLPSpace
from ..space.nlp_spec import TranslationSpaceSpec, canonical_arch, layers
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


class TranslationWorkload(nn.Module):
    """SPEC's translation workload of a frozen subnet: encoder and decoder over one sentence, the vocabulary
    projection left out (the embeddings are lookups, which cost nothing)."""

    def __init__(self, subnet: nn.Module) -> None:
        super().__init__()
        self.subnet = subnet

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.subnet.decode(prev_output_tokens, self.subnet.encode(src_tokens), features_only=True)


class TranslationRecords:
    """``sample -> list[LayerRecord]`` for the subnets of a translation space, as SPEC profiles them: a sentence of
    ``tokens`` tokens (30, the paper's) on both sides, batch 1, every Linear, the two attention matmuls and the
    lightweight branch's products (as mults, adds or shifts); embeddings and the vocabulary projection not counted.
    A layer's records depend only on its own choices and the embedding dimensions, so each distinct layer is traced
    once (on the meta device) and later architectures made of known layers are costed without building a model."""

    def __init__(self, spec: TranslationSpaceSpec, mode: Mode = "hws", tokens: int = 30) -> None:
        if tokens < 1:
            raise ValueError(f"tokens: bad value {tokens}; expected a positive integer")
        self.spec, self.tokens = spec, tokens
        with torch.device("meta"):  # the vocabulary is not part of the workload: any small one will do
            self.space = HybridNLPSpace(spec, vocab_size=8, padding_idx=1, mode=mode)
        self._layers: dict[tuple, list[LayerRecord]] = {}
        self.traces = 0

    def _keys(self, arch: Mapping[str, Any]) -> list[tuple]:
        """What a layer's records depend on: its choices, its stack's width and (decoder) the encoder's width."""
        enc, dec = int(arch["encoder.embed_dim"]), int(arch["decoder.embed_dim"])
        return [(a.side, a.index, a.op, a.heads, a.ffn_dim, a.attend, enc, dec if a.side == "decoder" else None)
                for a in layers(self.spec, arch)]

    def __call__(self, sample: Mapping[str, Any]) -> list[LayerRecord]:
        arch = canonical_arch(self.spec, sample)
        keys = self._keys(arch)
        if any(k not in self._layers for k in keys):
            self._trace(arch, keys)
        return [r for k in keys for r in self._layers[k]]

    def _trace(self, arch: dict[str, Any], keys: list[tuple]) -> None:
        tokens = torch.full((1, self.tokens), 4, dtype=torch.long)  # any non-padding token
        trace, _ = trace_model(lambda: TranslationWorkload(self.space.freeze(arch)), tokens, tokens)
        self.traces += 1
        where = {f"subnet.{side}_layers.{index}.": k for k in keys for side, index in [k[:2]]}
        per_layer: dict[tuple, list[LayerRecord]] = {k: [] for k in keys}
        for record in trace.layers:
            prefix = ".".join(record.name.split(".")[:3]) + "."
            if prefix not in where:
                raise RuntimeError(f"layer record {record.name!r} of {arch} belongs to no active layer")
            per_layer[where[prefix]].append(record)
        self._layers.update(per_layer)


#: The layer-records function of each kind of search space.
RECORDS: dict[str, type] = {"image_classification": LayerwiseRecords, "translation": TranslationRecords}


def space_records(spec: SpaceSpec | TranslationSpaceSpec, mode: Mode = "hws") -> LayerwiseRecords | TranslationRecords:
    """The layer-records function of ``spec``'s subnets (:data:`RECORDS` of its kind)."""
    return RECORDS[spec.kind](spec, mode)


def space_profiler(spec: SpaceSpec | TranslationSpaceSpec, metric: str = "energy_mJ", *, bits: int = 32,
                   hardware: Literal["eyeriss", "none"] = "eyeriss", **options: Any) -> CostProfiler:
    """An NNI profiler of ``spec``'s subnets (Eyeriss energy/latency, or op counts with ``hardware="none"``) on
    the per-layer fast path (:class:`LayerwiseRecords`, :class:`TranslationRecords`)."""
    records = space_records(spec)
    cls = EyerissProfiler if hardware == "eyeriss" else OpCountProfiler
    return cls(records.space, metric=metric, bits=bits, records_fn=records, **options)
