"""NNI profilers over the cost models: energy/latency on the Eyeriss model, and #MACs/#Mult/#Add/#Shift counts.

``EyerissProfiler(space, *example_inputs, metric="energy_mJ")`` and ``OpCountProfiler(space, *example_inputs,
metric="mult")`` are :class:`nni.nas.profiler.Profiler`s: ``profile(sample) -> float``. They plug into NNI wherever
a profiler goes, e.g. ``RandomOneShot(filter={"profiler": p, "max": 2.0})`` (a ``RangeProfilerFilter``) or a
``Filter(lambda m: p.profile(m.sample) <= 2.0)`` middleware of a multi-trial strategy.

For a sample (a dict of label -> choice) the profiler

1. validates it against the space (every label present, no unknown label, every value one of its choices);
2. gets the layer records: either from ``records_fn(sample)`` (fast path, for spaces that know their layer shapes)
   or by freezing the space with the sample and tracing one forward pass. The frozen model is built on PyTorch's
   meta device when that works (no memory, no arithmetic) and the trace is redone on the real device otherwise;
3. costs the records with :func:`~nni_shiftadd.cost.profile.report_from_records` (layer costs are memoised by
   shape in :func:`~nni_shiftadd.cost.eyeriss.layer_cost`), and memoises the whole report per sample (LRU).

A meta-device trace gives the same records as a real one: shapes come from tensor shapes, and :mod:`.trace` tells
parameters (and views of them) from activations by identity, which meta tensors keep.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Literal

import torch
from nni.mutable import Sample
from nni.mutable.annotation import Constraint
from nni.nas.profiler import Profiler
from nni.nas.space import BaseModelSpace, model_context
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from .layers import LayerRecord
from .profile import CostReport, eyeriss_config, report_from_records
from .trace import Trace, trace_layers

__all__ = ["COUNT_METRICS", "ENERGY_METRICS", "CostProfiler", "EyerissProfiler", "OpCountProfiler", "ProfilerStats",
           "canonical_sample", "trace_model"]

_logger = logging.getLogger(__name__)

ENERGY_METRICS = ("energy_mJ", "latency_ms")
COUNT_METRICS = ("macs", "mult", "add", "shift", "params", "effective_macs")

RecordsFn = Callable[[Sample], Sequence[LayerRecord]]

def _hashable(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_hashable(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def canonical_sample(sample: Mapping[str, Any]) -> tuple:
    """A hashable, order-independent form of a sample dict (nested lists/dicts become tuples)."""
    return tuple(sorted((str(k), _hashable(v)) for k, v in sample.items()))


def _tensors(module: nn.Module) -> list[Tensor]:
    return [*module.parameters(), *module.buffers()]


def _all_meta(module: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in _tensors(module))


def _to_meta(x: Any) -> Any:
    return tree_map(lambda t: t.to("meta") if isinstance(t, Tensor) else t, x)


@dataclasses.dataclass
class ProfilerStats:
    """Counters of one profiler: memo ``hits``/``misses``, traces by device, ``records_fn`` calls."""

    hits: int = 0
    misses: int = 0
    meta_traces: int = 0
    real_traces: int = 0
    records_fn_calls: int = 0


class CostProfiler(Profiler):
    """Common machinery of :class:`EyerissProfiler` and :class:`OpCountProfiler` (see the module docstring).

    Args:
        model_space: an NNI model space (``nni.nas.nn.pytorch.ModelSpace``); samples are validated against it.
        example_inputs: the forward inputs of a frozen model (batch 1 at the deployment size); not needed with
            ``records_fn``.
        metric: what :meth:`profile` returns, a key of :attr:`CostReport.totals`.
        bits: word width (32, 16, 8); also scales ``effective_macs``.
        records_fn: ``sample -> list[LayerRecord]``; replaces freezing and tracing.
        cache_size: how many per-sample reports to keep (LRU); 0 disables the memo.
        meta: try building the frozen model on the meta device first.
        unmodelled: ``"error"`` or ``"report"``, as in :func:`~nni_shiftadd.cost.trace.trace_layers`.
        forward_kwargs: keyword arguments of the frozen model's forward.
    """

    hardware: Literal["eyeriss", "none"] = "none"
    metrics: tuple[str, ...] = COUNT_METRICS

    def __init__(self, model_space: BaseModelSpace, *example_inputs: Any, metric: str, bits: int = 32,
                 records_fn: RecordsFn | None = None, cache_size: int = 4096, meta: bool = True,
                 unmodelled: Literal["error", "report"] = "error", forward_kwargs: dict[str, Any] | None = None,
                 **options: Any) -> None:
        super().__init__(model_space)
        if metric not in self.metrics:
            raise ValueError(f"metric: unknown value {metric!r}; {type(self).__name__} allows {list(self.metrics)}")
        if unmodelled not in ("error", "report"):
            raise ValueError(f"unmodelled: unknown value {unmodelled!r}; expected 'error' or 'report'")
        if cache_size < 0:
            raise ValueError(f"cache_size: must be >= 0, got {cache_size}")
        if records_fn is None and not example_inputs:
            raise ValueError("example_inputs: needed to trace frozen models (or pass records_fn)")
        eyeriss_config(bits, **options)  # fail now on a bad option or bit width
        self.model_space = model_space
        self.example_inputs = example_inputs
        self.metric, self.bits, self.options = metric, bits, options
        self.records_fn, self.cache_size, self.unmodelled = records_fn, cache_size, unmodelled
        self.forward_kwargs = dict(forward_kwargs or {})
        self.stats = ProfilerStats()
        self._meta = meta
        self._cache: collections.OrderedDict[tuple, CostReport] = collections.OrderedDict()
        simplified = model_space.simplify()
        self._choices = {label: m for label, m in simplified.items() if not isinstance(m, Constraint)}
        self._has_constraints = len(self._choices) != len(simplified)

    # -- public -----------------------------------------------------------------------------------------------
    def profile(self, sample: Sample) -> float:
        """The chosen ``metric`` of the frozen model ``sample`` picks."""
        return float(self.report(sample).totals[self.metric])

    def report(self, sample: Sample) -> CostReport:
        """The full :class:`CostReport` of the sample (memoised)."""
        key = canonical_sample(sample)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        self.validate(sample)
        if self.records_fn is not None:
            self.stats.records_fn_calls += 1
            records, unmodelled = list(self.records_fn(sample)), []
        else:
            trace = self.trace(sample)
            records, unmodelled = trace.layers, trace.unmodelled
        report = report_from_records(records, hardware=self.hardware, bits=self.bits, unmodelled=unmodelled,
                                     **self.options)
        if self.cache_size:
            self._cache[key] = report
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return report

    def validate(self, sample: Sample) -> None:
        """Raise ``ValueError`` naming the key for a missing or unknown key or a value outside its choices."""
        if not isinstance(sample, Mapping):
            raise ValueError(f"sample: expected a dict of label -> choice, got {type(sample).__name__}")
        for label, mutable in self._choices.items():
            if label not in sample:
                raise ValueError(f"sample: missing key {label!r} (allowed values {_allowed(mutable)}); the space's "
                                 f"keys are {sorted(self._choices)}")
            try:
                error = mutable.check_contains({label: sample[label]})
            except ValueError as err:  # some mutables raise instead of returning the error
                error = err
            if error is not None:
                raise ValueError(f"sample[{label!r}]: {sample[label]!r} is not allowed; allowed values "
                                 f"{_allowed(mutable)}")
        unknown = sorted(str(k) for k in sample if k not in self._choices)
        if unknown:
            raise ValueError(f"sample: unknown key {unknown[0]!r}; the space's keys are {sorted(self._choices)}")
        if self._has_constraints:
            error = self.model_space.check_contains(sample)
            if error is not None:
                raise ValueError(f"sample: violates a constraint of the space: {error}")

    def trace(self, sample: Sample, device: Literal["auto", "meta", "real"] = "auto") -> Trace:
        """Freeze the space with ``sample`` and trace one forward pass (no validation, no memo).

        ``"auto"`` tries the meta device and falls back to the real one; ``"meta"`` insists (``RuntimeError`` if
        the meta trace is impossible); ``"real"`` uses the example inputs' device.
        """
        if device not in ("auto", "meta", "real"):
            raise ValueError(f"device: unknown value {device!r}; expected 'auto', 'meta' or 'real'")
        build = lambda: self._build(sample)  # noqa: E731
        if device == "meta" or (device == "auto" and self._meta):
            trace, why = _meta_trace(build, self.example_inputs, self.forward_kwargs, self.unmodelled)
            if trace is not None:
                self.stats.meta_traces += 1
                return trace
            if device == "meta":
                raise RuntimeError(f"sample {dict(sample)}: no exact meta-device trace: {why}")
            _logger.debug("meta trace of %s not used (%s); tracing on the real device", sample, why)
        self.stats.real_traces += 1
        return trace_layers(build(), *self.example_inputs, unmodelled=self.unmodelled, **self.forward_kwargs)

    def cache_clear(self) -> None:
        """Forget the memoised reports."""
        self._cache.clear()

    # -- internals --------------------------------------------------------------------------------------------
    def _build(self, sample: Sample) -> nn.Module:
        """The frozen model; under a meta default device, one whose tensors are all on meta."""
        try:
            model = self.model_space.freeze(sample)
        except NotImplementedError:  # a space with add_mutable() and no freeze(): re-run __init__ under the sample
            return self._rebuild(sample)
        if torch.get_default_device().type == "meta" and not _all_meta(model):
            model = self._rebuild(sample)  # freeze() handed back the space's own (real) modules
        return model

    def _rebuild(self, sample: Sample) -> nn.Module:
        if not hasattr(self.model_space, "trace_copy"):
            raise TypeError(f"{type(self.model_space).__name__} cannot be re-instantiated under a sample")
        with model_context(sample):
            return self.model_space.trace_copy().get(traceable=False)  # type: ignore[attr-defined]


def _meta_trace(build: Callable[[], nn.Module], inputs: Sequence[Any], forward_kwargs: dict[str, Any],
                unmodelled: Literal["error", "report"]) -> tuple[Trace | None, str]:
    """``(trace, "")`` for a meta-device trace, else ``(None, why)``."""
    try:
        with torch.device("meta"):
            model = build()
        if not _all_meta(model):
            return None, "the built model has tensors off the meta device"
        trace = trace_layers(model, *_to_meta(tuple(inputs)), unmodelled=unmodelled, **_to_meta(forward_kwargs))
    except Exception as err:  # noqa: BLE001 - anything meta cannot do is redone on the real device
        return None, f"{type(err).__name__}: {err}"
    return trace, ""


def trace_model(build: Callable[[], nn.Module], *example_inputs: Any, meta: bool = True,
                unmodelled: Literal["error", "report"] = "error", **forward_kwargs: Any) -> tuple[Trace, str]:
    """Build a model with ``build()`` and trace it, on the meta device where that is exact, else for real.

    ``build`` is called under ``torch.device("meta")`` first (so it should create its modules afresh) and, if that
    fails, again on the default device. Returns the trace and ``"meta"`` or
    ``"real"``.
    """
    if meta:
        trace, why = _meta_trace(build, example_inputs, forward_kwargs, unmodelled)
        if trace is not None:
            return trace, "meta"
        _logger.debug("meta trace not used (%s); tracing on the real device", why)
    return trace_layers(build(), *example_inputs, unmodelled=unmodelled, **forward_kwargs), "real"


def _allowed(mutable: Any) -> Any:
    values = getattr(mutable, "values", None)
    if values is not None:
        return list(values)
    return repr(mutable)


class EyerissProfiler(CostProfiler):
    """Energy (``metric="energy_mJ"``) or latency (``"latency_ms"``) of a sample on the Eyeriss model.

    ``eyeriss_options`` are fields of :class:`~nni_shiftadd.cost.eyeriss.EyerissConfig` (``adder_on_chip=False``,
    ``pe_rows=16``, ...). See :class:`CostProfiler` for the other arguments.
    """

    hardware = "eyeriss"
    metrics = ENERGY_METRICS

    def __init__(self, model_space: BaseModelSpace, *example_inputs: Any, metric: str = "energy_mJ", bits: int = 32,
                 records_fn: RecordsFn | None = None, cache_size: int = 4096, meta: bool = True,
                 unmodelled: Literal["error", "report"] = "error", forward_kwargs: dict[str, Any] | None = None,
                 **eyeriss_options: Any) -> None:
        super().__init__(model_space, *example_inputs, metric=metric, bits=bits, records_fn=records_fn,
                         cache_size=cache_size, meta=meta, unmodelled=unmodelled, forward_kwargs=forward_kwargs,
                         **eyeriss_options)


class OpCountProfiler(CostProfiler):
    """Table 4 counts of a sample: ``metric`` in ``macs``, ``mult``, ``add``, ``shift``, ``params``,
    ``effective_macs`` (MACs x (bits/32)^2). No hardware model runs."""

    hardware = "none"
    metrics = COUNT_METRICS

    def __init__(self, model_space: BaseModelSpace, *example_inputs: Any, metric: str = "macs", bits: int = 32,
                 records_fn: RecordsFn | None = None, cache_size: int = 4096, meta: bool = True,
                 unmodelled: Literal["error", "report"] = "error",
                 forward_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(model_space, *example_inputs, metric=metric, bits=bits, records_fn=records_fn,
                         cache_size=cache_size, meta=meta, unmodelled=unmodelled, forward_kwargs=forward_kwargs)
