"""The evolution search as an NNI 3.0 multi-trial strategy, for Python users running ``NasExperiment`` on a space
built from our mutables (:class:`~nni_shiftadd.space.cv.HybridCVSpace`,
:class:`~nni_shiftadd.space.nlp.HybridNLPSpace`, or any model space whose labels are the architecture keys of
:func:`~nni_shiftadd.space.spec.arch_space`)::

    from nni.nas.evaluator import FunctionalEvaluator
    from nni.nas.experiment import NasExperiment, NasExperimentConfig
    from nni_shiftadd.space import load_space
    from nni_shiftadd.space.cv import HybridCVSpace
    from nni_shiftadd.strategy.nas import ShiftAddEvolutionStrategy

    strategy = ShiftAddEvolutionStrategy("cv_small", output="runs/search")
    exp = NasExperiment(HybridCVSpace(load_space("cv_small"), "none"), FunctionalEvaluator(evaluate), strategy,
                        NasExperimentConfig("sequential", "simplified"))
    exp.run()
    print(strategy.best())

The evaluator reports ``nni.report_final_result({"default": accuracy, "energy_mJ": ..., ...})`` (or a bare
number); every key is kept in the search's records. The same ask/tell core as the ``nnictl`` tuner
(:mod:`.tuner`) drives the search, so both front ends search alike and leave the same files.

Import it from :mod:`nni_shiftadd.strategy.nas`: the package :mod:`nni_shiftadd.strategy` does not re-export it,
because this module imports NNI's NAS (and torch) and the tuner must import fast.

Resume: with ``output`` set, the evolution state is ``output/state.json`` (plain JSON, rewritten after every
result) and a new strategy with the same ``output`` goes on from it without evaluating any finished
architecture again. NNI's own checkpoint (``NasExperiment.resume``) cannot load on torch >= 2.6 (its
``TorchSerializer.load`` calls ``torch.load`` without ``weights_only``), so resume goes through
``output/state.json``; :meth:`ShiftAddEvolutionStrategy.state_dict` is the same JSON for code that saves it itself.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nni.mutable import MutableAnnotation
from nni.nas.execution import ExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, ModelEventType, TrainingEndEvent
from nni.nas.space import ExecutableModelSpace, ModelStatus
from nni.nas.strategy.base import Strategy

from ..config import from_dict
from ..space.kinds import SearchSpaceSpec
from ..space.nlp_spec import TranslationSpaceSpec
from ..space.spec import SpaceSpec, arch_space, load_space
from .domain import ModelSpaceDomain, model_space_cost_fn
from ..cost.metrics import space_cost_fn
from .evolution import ConstraintError, Evolution, EvolutionConfig, arch_key, load_preset, result_metrics
from .results import write_results

_logger = logging.getLogger(__name__)


SPECS = SearchSpaceSpec  # any kind of spec (the protocol of nni_shiftadd.space.kinds)


def space_spec_of(model_space: Any) -> SpaceSpec | TranslationSpaceSpec | None:
    """The spec a model space was built from: ``.spec`` of a ``HybridCVSpace`` or a ``HybridNLPSpace``, also seen
    through NNI's raw (``.model_space``) and simplified (a trace copy in ``.model``) executable formats; ``None`` if
    none."""
    for obj in (model_space, getattr(model_space, "model_space", None), getattr(model_space, "model", None)):
        if obj is None:
            continue
        spec = getattr(obj, "spec", None)
        if isinstance(spec, SPECS):
            return spec
        kwargs, args = getattr(obj, "trace_kwargs", None), getattr(obj, "trace_args", None)
        if isinstance(kwargs, Mapping) and isinstance(kwargs.get("spec"), SPECS):
            return kwargs["spec"]
        if args and isinstance(args[0], SPECS):
            return args[0]
    return None


class ShiftAddEvolutionStrategy(Strategy):
    """HAT-style evolution under hardware constraints (:class:`~nni_shiftadd.strategy.evolution.Evolution`) as an
    NNI strategy: every architecture of a generation is frozen from the model space and submitted to the engine;
    its final metric is told to the core when its training ends (no metric: a failed evaluation, ranked last).

    Args:
        preset: strategy preset name or YAML path (``strategies/*.yaml``), or an :class:`EvolutionConfig`.
        space: the search space (:class:`SpaceSpec`, shipped name or YAML path); ``None`` takes it from the model
            space (a ``HybridCVSpace``) when the strategy is initialised.
        output: folder of ``state.json`` (resumed from if present), ``results.json``/``.csv`` and the Pareto plots,
            rewritten after every result; ``None`` writes nothing (state only through :meth:`state_dict`).
        overrides: preset fields to override, e.g. ``{"iterations": 5}``.
        example_inputs: for a model space that is not one of ours (any NNI ``ModelSpace``): its input (batch 1),
            on which each frozen sample is traced once for the constraints' costs. The genes are then the space's
            categorical choices, and the preset's ``baselines`` ``all_<value>`` samples (the value wherever a choice
            offers it, the choice's first value elsewhere).
    """

    def __init__(self, preset: str | EvolutionConfig = "cv_small", *, space: SpaceSpec | str | None = None,
                 output: str | None = None, overrides: dict[str, Any] | None = None,
                 example_inputs: tuple[Any, ...] | None = None) -> None:
        super().__init__()
        if isinstance(preset, EvolutionConfig):
            self.cfg = from_dict(EvolutionConfig, {**dataclasses.asdict(preset), **(overrides or {})},
                                 f"preset {preset.name!r}")
        else:
            self.cfg = load_preset(preset, overrides)
        self.spec: SpaceSpec | None = load_space(space) if isinstance(space, str) else space
        self.example_inputs = tuple(example_inputs) if example_inputs is not None else None
        self.output = Path(output) if output is not None else None
        self.evolution: Evolution | None = None
        self.error: str | None = None
        self._pending_state: dict[str, Any] | None = None  # load_state_dict before the space is known
        self._running: dict[int, tuple[ExecutableModelSpace, str]] = {}  # id(model) -> (model, arch key)
        self._final: dict[int, Any] = {}  # id(model) -> raw final metric (NNI keeps only "default" in model.metric)
        self._models: dict[str, ExecutableModelSpace] = {}  # arch key -> the model evaluated for it
        self._changed = threading.Condition(threading.RLock())  # engines may call back from another thread
        if self.spec is not None:
            self._build(self.spec)

    def extra_repr(self) -> str:
        space = self.evolution.domain.name if self.evolution is not None else None
        return f"preset={self.cfg.name!r}, space={space!r}, output={str(self.output) if self.output else None!r}"

    # -- NNI strategy interface ------------------------------------------------------------------------------------
    def _initialize(self, model_space: ExecutableModelSpace, engine: ExecutionEngine) -> ExecutableModelSpace:
        if self.spec is None and self.evolution is None:
            spec = space_spec_of(model_space)
            if spec is not None:
                self.spec = spec
                self._build(spec)
            elif self.example_inputs is None and self.cfg.constraints:
                raise ValueError(f"space: the model space {type(model_space).__name__} is not one of ours; pass "
                                 "ShiftAddEvolutionStrategy(example_inputs=(x,)) with its input (batch 1) to cost its samples "
                                 "by tracing, or space=... naming the spec whose labels it uses")
            else:
                self._build(ModelSpaceDomain(model_space))
        if self.spec is not None:
            self._check_labels(model_space)
        engine.register_model_event_callback(ModelEventType.FinalMetric, self._final_metric_callback)
        engine.register_model_event_callback(ModelEventType.TrainingEnd, self._training_end_callback)
        return model_space

    def _cleanup(self) -> None:
        self.engine.unregister_model_event_callback(ModelEventType.FinalMetric, self._final_metric_callback)
        self.engine.unregister_model_event_callback(ModelEventType.TrainingEnd, self._training_end_callback)

    def _run(self) -> None:
        evolution = self._core()
        try:
            self._explore(evolution)
        finally:
            if self._running:
                self.engine.wait_models(*[model for model, _ in list(self._running.values())])
            self._save()
        if self.error is not None:
            _logger.error("the search stopped: %s", self.error)
        elif evolution.done:
            _logger.info("the search is finished: %d architectures evaluated; best %s", len(evolution.results),
                         evolution.best())

    def _explore(self, evolution: Evolution) -> None:
        """Submit the current generation's architectures as resources free up, until the core is done."""
        while True:
            with self._changed:
                if evolution.done or self.error is not None:
                    return
                try:
                    todo = evolution.ask()
                except ConstraintError as err:
                    self._fail(err)
                    return
                busy = {key for _, key in self._running.values()}
                todo = [arch for arch in todo if arch_key(arch) not in busy]
                if not todo:  # the rest of the generation is running: wait for a result
                    self._changed.wait(timeout=1.0)
                    continue
            for arch in todo:
                if not self.wait_for_resource():
                    _logger.warning("the engine's budget is spent before the search is done (generation %d of %d);"
                                    " a new strategy with the same output resumes it", evolution.generation,
                                    self.cfg.iterations)
                    return
                key = arch_key(arch)
                with self._changed:
                    if self.error is not None:
                        return
                    if key in evolution.results:  # told meanwhile (another engine thread, a duplicate)
                        continue
                    model = self.model_space.freeze(arch)
                    self._running[id(model)] = (model, key)
                _logger.info("[generation %d] evaluating %s", evolution.generation, arch)
                self.engine.submit_models(model)

    def list_models(self, sort: bool = True, limit: int | None = None) -> Iterator[ExecutableModelSpace]:
        """The evaluated models: with ``sort``, those that met the constraints and have a metric, best first (as
        :meth:`best`); else all of them in evaluation order. Architectures evaluated before a resume, which this
        engine never ran, come back frozen from the model space with their recorded metric and status."""
        evolution = self._core()
        records = evolution.records()
        if sort:
            records = [r for r in records if r["status"] == "ok" and r["feasible"]
                       and r.get(self.cfg.objective) is not None]
            records.sort(key=lambda r: float(r[self.cfg.objective]), reverse=self.cfg.objective_goal == "max")
        for record in records[:limit]:
            yield self._model_of(record)

    def state_dict(self) -> dict[str, Any]:
        """The core's JSON state (:meth:`Evolution.state_dict`); running models are not part of it and are
        evaluated again on resume."""
        if self.evolution is None:
            return dict(self._pending_state or {})
        with self._changed:
            return self.evolution.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (kept until the space is known if the strategy is not initialised)."""
        if not state_dict:
            return
        if self.evolution is None:
            self._pending_state = dict(state_dict)
            return
        with self._changed:
            self.error = None
            self.evolution.load_state_dict(state_dict)
            self._draw()

    # -- results ---------------------------------------------------------------------------------------------------
    def best(self) -> dict[str, Any] | None:
        """The best evaluated architecture that meets the constraints (:meth:`Evolution.best`)."""
        return self._core().best()

    def front(self) -> list[dict[str, Any]]:
        """Under a preset's ``goal: pareto``, the Pareto front of the evaluated architectures that meet the
        constraints (:meth:`Evolution.front`); otherwise the best alone."""
        return self._core().front()

    def records(self) -> list[dict[str, Any]]:
        """Every evaluated architecture with its metrics (:meth:`Evolution.records`)."""
        return self._core().records()

    # -- internals -------------------------------------------------------------------------------------------------
    def _build(self, space: SpaceSpec | TranslationSpaceSpec | ModelSpaceDomain) -> None:
        cost = None
        if self.cfg.constraints and isinstance(space, ModelSpaceDomain):
            if self.cfg.latency == "predictor":
                raise ValueError("field 'latency': a predictor is built for one of our spaces; a model space of "
                                 "your own is costed on the Eyeriss model ('eyeriss')")
            cost = model_space_cost_fn(space.model_space, *(self.example_inputs or ()), bits=self.cfg.bits,
                                       preset=self.cfg.eyeriss)
        elif self.cfg.constraints:
            cost = space_cost_fn(space, self.cfg.bits, self.cfg.latency, self.cfg.predictor, self.cfg.eyeriss)
        self.evolution = Evolution(space, self.cfg, cost)
        if self.output is not None and self.evolution.load(self.output / "state.json"):
            _logger.info("resumed the search from %s: generation %d, %d architectures already evaluated",
                         self.output / "state.json", self.evolution.generation, len(self.evolution.results))
        if self._pending_state is not None:
            self.evolution.load_state_dict(self._pending_state)
            self._pending_state = None
        self._draw()

    def _draw(self) -> None:
        """Draw the current generation now, so that an impossible constraint stops the search before anything
        runs (and before NNI's checkpoint calls :meth:`state_dict`, which would draw it too)."""
        try:
            self._core().ask()
        except ConstraintError as err:
            self._fail(err)

    def _core(self) -> Evolution:
        if self.evolution is None:
            raise RuntimeError("ShiftAddEvolutionStrategy: the search space is not known yet; pass space= or initialise the "
                               "strategy with a model space")
        return self.evolution

    def _check_labels(self, model_space: ExecutableModelSpace) -> None:
        """Fail early when the model space's labels are not the architecture keys of the spec."""
        assert self.spec is not None
        expected = set(arch_space(self.spec))
        labels = {k for k, m in model_space.simplify().items() if not isinstance(m, MutableAnnotation)}
        if labels != expected:
            raise ValueError(f"space: the model space's labels differ from those of space {self.spec.name!r}: "
                             f"missing {sorted(expected - labels)}, unknown {sorted(labels - expected)}")

    def _final_metric_callback(self, event: FinalMetricEvent) -> None:
        """Keep the raw final metric: NNI stores only its ``default`` in ``model.metric``."""
        if id(event.model) in self._running:
            self._final[id(event.model)] = event.metric

    def _training_end_callback(self, event: TrainingEndEvent) -> None:
        """Tell the core the model's result; one without a metric (failed, interrupted, or its evaluator reported
        nothing) counts as a failed evaluation and ranks last, as a failed trial does in the tuner."""
        with self._changed:
            entry = self._running.pop(id(event.model), None)
            raw = self._final.pop(id(event.model), None)
            if entry is None:
                _logger.warning("%s was not submitted by this strategy; ignored", event.model)
                return
            model, key = entry
            self._models[key] = model
            if raw is None:
                raw = model.metric
            if raw is None:
                _logger.warning("%s ended (%s) without a metric; it ranks last", model.sample, event.status.value)
            self._tell(key, result_metrics(raw, self.cfg.objective))
            self._changed.notify_all()

    def _tell(self, key: str, metrics: dict[str, Any] | None) -> None:
        try:
            self._core().tell(json.loads(key), metrics)
        except ConstraintError as err:
            self._fail(err)
        self._save()

    def _fail(self, err: ConstraintError) -> None:
        self.error = str(err)
        _logger.error("%s", err)

    def _save(self) -> None:
        if self.output is None:
            return
        evolution = self._core()
        evolution.save(self.output / "state.json")
        write_results(evolution, self.output, error=self.error)

    def _model_of(self, record: Mapping[str, Any]) -> ExecutableModelSpace:
        key = arch_key(record["arch"])
        if key in self._models:
            return self._models[key]
        model = self.model_space.freeze(dict(record["arch"]))
        value = record.get(self.cfg.objective)
        if value is not None:
            model.metrics.final = float(value)
        model.status = ModelStatus.Trained if record["status"] == "ok" else ModelStatus.Failed
        return model
