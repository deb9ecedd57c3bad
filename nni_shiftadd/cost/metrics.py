"""The metric vocabulary of the cost model and of the searches that constrain it: each metric's name, unit and
which way is better (one place; the presets' ``constraints``, the supernet's ``sample_constraints``, the trials'
reports and the plots read it), the :class:`Bound` a constraint puts on one, and :func:`space_cost_fn`, the cost
of an architecture of a search space in those metrics.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..space.spec import SpaceSpec

__all__ = ["CONSTRAINT_METRICS", "METRICS", "Bound", "Metric", "check_eyeriss_preset", "space_cost_fn"]

Arch = dict[str, Any]
CostFn = Callable[[Arch], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Metric:
    """A reported number: its unit and whether smaller or larger is better."""

    unit: str
    goal: Literal["min", "max"]
    what: str


#: Every metric a search reports or constrains, by its name (the name carries the unit's scale: ``_mJ``, ``_G``).
METRICS: dict[str, Metric] = {
    "energy_mJ": Metric("mJ", "min", "energy per input on the Eyeriss model"),
    "latency_ms": Metric("ms", "min", "latency per input on the Eyeriss model (or the latency predictor)"),
    "macs_M": Metric("M", "min", "multiply-accumulates"),
    "flops_G": Metric("G", "min", "effective FLOPs, 2 x MACs x (bits / 32)^2 (paper Sec. 4.2)"),
    "params_M": Metric("M", "min", "parameters"),
    "mult_G": Metric("G", "min", "multiplications"),
    "add_G": Metric("G", "min", "additions"),
    "shift_G": Metric("G", "min", "shifts"),
    "accuracy": Metric("", "max", "top-1 accuracy (image spaces)"),
    "valid_loss": Metric("nats/token", "min", "validation loss (translation spaces; HAT's objective)"),
    "bleu": Metric("BLEU", "max", "corpus BLEU of beam search (sacrebleu)"),
}
#: The cost metrics a search or a supernet's sampling may constrain.
CONSTRAINT_METRICS: tuple[str, ...] = ("energy_mJ", "latency_ms", "macs_M", "flops_G", "params_M", "mult_G", "add_G",
                                       "shift_G")


@dataclasses.dataclass
class Bound:
    """A closed range; ``None`` leaves that side open."""

    min: float | None = None
    max: float | None = None

    def validate(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is larger than max {self.max}")

    def violation(self, value: float) -> float:
        """0 inside the range, else the relative distance to it."""
        if self.min is not None and value < self.min:
            return (self.min - value) / max(abs(self.min), 1e-12)
        if self.max is not None and value > self.max:
            return (value - self.max) / max(abs(self.max), 1e-12)
        return 0.0


def check_eyeriss_preset(name: str) -> None:
    """Raise ``ValueError`` naming the field ``eyeriss`` when ``name`` is not an Eyeriss preset."""
    from .eyeriss import PRESETS

    if name not in PRESETS:
        raise ValueError(f"field 'eyeriss': unknown Eyeriss preset {name!r}; expected one of {sorted(PRESETS)}")


def space_cost_fn(spec: SpaceSpec, bits: int = 32, latency: Literal["eyeriss", "predictor"] = "eyeriss",
                  predictor: str | None = None, eyeriss: str = "shiftaddnas") -> CostFn:
    """``arch -> {energy_mJ, latency_ms, macs_M, flops_G, params_M, mult_G, add_G, shift_G}`` from the Eyeriss model
    on the layer-wise fast path (latency from a trained latency predictor if asked). ``flops_G`` is the effective
    FLOPs, ``2 x MACs x (bits / 32)^2`` (paper Sec. 4.2, after Zhou et al.), of what the cost model counts: for a
    translation subnet a 30-token sentence without the embeddings and the vocabulary projection (the paper's 10.6G
    for Transformer-big includes that projection, about 2 GFLOPs with a 32K vocabulary). ``eyeriss`` names the
    Eyeriss model's preset (``shiftaddnas``: the authors' simulator; ``physical``; ``jssc2017``). The models load
    on the first call (torch and NNI's NAS take seconds to import)."""
    state: dict[str, Any] = {}

    def cost(arch: Arch) -> dict[str, float]:
        if not state:
            from .layerwise import space_profiler

            state["profiler"] = space_profiler(spec, bits=bits, preset=eyeriss)
            if latency == "predictor":
                from .predictor import load_predictor

                state["predictor"] = load_predictor(predictor)[0]
        totals = state["profiler"].report(arch).totals
        lat = float(state["predictor"].predict(arch)[0]) if "predictor" in state else totals["latency_ms"]
        return {"energy_mJ": totals["energy_mJ"], "latency_ms": lat, "macs_M": totals["macs"] / 1e6,
                "flops_G": 2 * totals["effective_macs"] / 1e9, "params_M": totals["params"] / 1e6,
                "mult_G": totals["mult"] / 1e9, "add_G": totals["add"] / 1e9, "shift_G": totals["shift"] / 1e9}
    return cost
