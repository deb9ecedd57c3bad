"""Cost as an NNI expression over the choices of a space, for the profiler penalties of one-shot strategies.

:class:`CostExpressionProfiler` is an ``nni.nas.profiler.ExpressionProfiler``: its ``expression`` is the cost of
the space's default sample plus, for every categorical choice, a ``switch_case`` of what each value adds to it,
each term measured by the Eyeriss model (energy, latency) or the op counter (MACs, #Mult, ...) on the frozen
model. NNI's ``SampleProfilerPenalty`` evaluates it on one sample and ``ExpectationProfilerPenalty`` takes its
expectation under the strategy's architecture distribution, which is linear in the probabilities.

The expression is exact when the cost of a sample is the sum of what its choices add one by one, which holds when
no choice changes which layers another choice's layers see (a ``HybridChoice`` keeps its output shape, so a space of
hybrid choices over fixed positions is additive; a depth choice that drops the layers of other choices is not).
The profiler checks this on random samples when it is built and refuses a space where it fails.

:class:`DifferentiableCostPenalty` is the ``ExpectationProfilerPenalty`` to use with NNI 3.0's DARTS,
GumbelDARTS and Proxyless: they hand the penalty ``export_probs()``, whose mixed layers return the probabilities as
Python floats (``.tolist()``), so NNI's own penalty is a constant with no gradient on the architecture weights. This
one reads the probabilities from the live mixed layers of the space (``softmax`` of their ``_arch_alpha``), so the
expected cost enters the architecture step's loss with its gradient.
"""
from __future__ import annotations

import random
from typing import Any, Literal

import torch
from nni.mutable import Categorical, MutableExpression, Sample
from nni.mutable.annotation import Constraint
from nni.nas.oneshot.pytorch.profiler import ExpectationProfilerPenalty
from nni.nas.oneshot.pytorch.supermodule._expression_utils import expression_expectation
from nni.nas.profiler import ExpressionProfiler
from nni.nas.space import BaseModelSpace

from .profilers import COUNT_METRICS, ENERGY_METRICS, CostProfiler, EyerissProfiler, OpCountProfiler

__all__ = ["CostExpressionProfiler", "DifferentiableCostPenalty", "live_probabilities", "mixed_layers"]


class CostExpressionProfiler(ExpressionProfiler):
    """``metric`` of a space (one of :data:`ENERGY_METRICS` or :data:`COUNT_METRICS`) as an NNI expression over
    its categorical choices (see the module docstring). Built with ``1 + sum(len(values) - 1)`` traced samples,
    then checked against ``check_samples`` random ones (relative tolerance ``rtol``).

    The other arguments are those of :class:`~nni_shiftadd.cost.profilers.EyerissProfiler` (energy, latency) or
    :class:`~nni_shiftadd.cost.profilers.OpCountProfiler` (counts), which measure each term.
    """

    def __init__(self, model_space: BaseModelSpace, *example_inputs: Any, metric: str = "energy_mJ",
                 bits: int = 32, check_samples: int = 4, rtol: float = 1e-6, seed: int = 0, **options: Any) -> None:
        if metric in ENERGY_METRICS:
            measure: CostProfiler = EyerissProfiler(model_space, *example_inputs, metric=metric, bits=bits, **options)
        elif metric in COUNT_METRICS:
            measure = OpCountProfiler(model_space, *example_inputs, metric=metric, bits=bits, **options)
        else:
            raise ValueError(f"metric: unknown value {metric!r}; allowed: {list(ENERGY_METRICS + COUNT_METRICS)}")
        if check_samples < 0:
            raise ValueError(f"check_samples: must be >= 0, got {check_samples}")
        self.model_space, self.metric, self.measure = model_space, metric, measure
        choices: dict[str, Categorical] = {}
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, Constraint):
                raise ValueError(f"{label!r}: a space with constraints has no cost expression; use "
                                 f"{type(measure).__name__} with NNI's SampleProfilerPenalty")
            if not isinstance(mutable, Categorical):
                raise ValueError(f"{label!r}: {type(mutable).__name__} is not a categorical choice; the cost "
                                 "expression covers categorical choices only")
            choices[label] = mutable
        default = {label: mutable.values[0] for label, mutable in choices.items()}
        base = measure.profile(default)
        expression: Any = base
        #: what each value of each choice adds to the default sample's cost
        self.terms: dict[str, dict[Any, float]] = {}
        for label, mutable in choices.items():
            self.terms[label] = {v: measure.profile({**default, label: v}) - base for v in mutable.values}
            expression = expression + MutableExpression.switch_case(mutable, self.terms[label])
        self.expression = expression
        rng = random.Random(seed)
        for _ in range(check_samples):
            sample = {label: rng.choice(list(m.values)) for label, m in choices.items()}
            exact, summed = measure.profile(sample), float(self.profile(sample))
            if abs(exact - summed) > rtol * max(1.0, abs(exact)):
                raise ValueError(f"{metric} of this space is not additive over its choices (sample {sample}: "
                                 f"{exact:.6g} traced, {summed:.6g} from the terms); use "
                                 f"{type(measure).__name__} with NNI's SampleProfilerPenalty")

    def profile(self, sample: Sample) -> float:
        self.measure.validate(sample)
        return float(self.expression.evaluate(sample)) if isinstance(self.expression, MutableExpression) \
            else float(self.expression)


def mixed_layers(model_space: Any) -> list[Any]:
    """The mixed layers of a one-shot supernet that hold architecture logits (``_arch_alpha``: NNI's DARTS,
    GumbelDARTS and Proxyless layers), one per label."""
    layers, labels = [], set()
    for module in model_space.modules():
        alpha, label = getattr(module, "_arch_alpha", None), getattr(module, "label", None)
        if isinstance(alpha, torch.Tensor) and getattr(module, "names", None) is not None and label is not None \
                and label not in labels:
            labels.add(label)
            layers.append(module)
    return layers


def live_probabilities(layers: list[Any]) -> dict[str, dict[Any, torch.Tensor]]:
    """``{label: {value: probability}}`` of mixed layers (:func:`mixed_layers`), as tensors that keep their
    gradient."""
    return {m.label: dict(zip(m.names, torch.softmax(m._arch_alpha, -1))) for m in layers}


class DifferentiableCostPenalty(ExpectationProfilerPenalty):
    """NNI's ``ExpectationProfilerPenalty`` (same ``baseline``, ``scale``, ``nonlinear`` and ``aggregate``) over a
    :class:`CostExpressionProfiler`, with the probabilities of the space's live mixed layers in place of the
    detached ones NNI's strategies pass, so that ``DARTS(penalty=DifferentiableCostPenalty(profiler, baseline))``
    pushes the architecture weights towards cheaper candidates."""

    def __init__(self, profiler: CostExpressionProfiler, baseline: float, scale: float = 1.0, *,
                 nonlinear: Literal["linear", "positive", "negative", "absolute"] = "linear",
                 aggregate: Literal["add", "mul"] = "add") -> None:
        if not isinstance(profiler, CostExpressionProfiler):
            raise TypeError(f"profiler: expected a CostExpressionProfiler, got {type(profiler).__name__}")
        if baseline <= 0:
            raise ValueError(f"baseline: the cost the penalty is measured against must be > 0, got {baseline}")
        super().__init__(profiler, baseline, scale, nonlinear=nonlinear, aggregate=aggregate)
        self._layers: list[Any] = []  # the space's mixed layers, found on the first step after mutation

    def profile(self, sample: Sample) -> Any:
        if not self._layers:  # none until the strategy has mutated the space; it does so once, before training
            self._layers = mixed_layers(self.profiler.model_space)
        live = live_probabilities(self._layers)
        return expression_expectation(self.profiler.expression, {k: live.get(k, v) for k, v in sample.items()})
