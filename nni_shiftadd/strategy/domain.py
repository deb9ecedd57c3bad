"""What the evolution searches: the architectures of a space, behind one interface for our YAML spaces and any NNI
model space.

:class:`SpecDomain` wraps a :class:`~nni_shiftadd.space.spec.SpaceSpec` (or a translation spec): labels in network
order, the depth rule, canonical forms that make equal networks compare equal, the homogeneous baselines.
:class:`ModelSpaceDomain` wraps any NNI ``ModelSpace`` (raw or executable): its categorical choices from
``simplify()``, its own constraints through ``check_contains``, and ``all_<value>`` baselines (the value wherever a
choice offers it). :func:`model_space_cost_fn` costs a sample of a model space by freezing it through NNI and tracing the frozen
model once (memoised per sample), so the evolution's energy, latency, MACs and params constraints work on any space.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..space.kinds import SearchSpaceSpec
from ..space.spec import arch_space, canonical_arch, named_baselines, random_arch, restrict_blocks, structurally_valid

Arch = dict[str, Any]


class SearchDomain(Protocol):
    """The operations the evolution needs of a space."""

    name: str
    choices: dict[str, list[Any]]

    def random(self, rng: random.Random) -> Arch: ...
    def valid(self, arch: Mapping[str, Any]) -> bool: ...
    def canonical(self, arch: Mapping[str, Any]) -> Arch: ...
    def baselines(self, names: Sequence[str]) -> dict[str, Arch]: ...
    def restrict(self, blocks: Sequence[str]) -> SearchDomain: ...


class SpecDomain:
    """A search space of ours (:class:`~nni_shiftadd.space.spec.SpaceSpec` or a translation spec)."""

    def __init__(self, spec: Any) -> None:
        self.spec, self.name, self.choices = spec, spec.name, arch_space(spec)

    def random(self, rng: random.Random) -> Arch:
        return random_arch(self.spec, rng)

    def valid(self, arch: Mapping[str, Any]) -> bool:
        return structurally_valid(self.spec, arch)

    def canonical(self, arch: Mapping[str, Any]) -> Arch:
        return canonical_arch(self.spec, arch)

    def baselines(self, names: Sequence[str]) -> dict[str, Arch]:
        return named_baselines(self.spec, names)

    def restrict(self, blocks: Sequence[str]) -> SpecDomain:
        return SpecDomain(restrict_blocks(self.spec, blocks))


class ModelSpaceDomain:
    """Any NNI model space: a raw ``ModelSpace`` (``MySpace()``) or the ``ExecutableModelSpace`` a strategy gets.
    Its categorical choices are the genes; a sample is valid when the space's ``check_contains`` accepts it (its
    constraints, if it has any). ``ValueError`` names a label whose mutable is not categorical."""

    def __init__(self, model_space: Any, name: str | None = None) -> None:
        from nni.mutable import Categorical
        from nni.mutable.annotation import Constraint

        self.model_space = model_space
        self.name = name or type(getattr(model_space, "model_space", model_space)).__name__
        self.choices: dict[str, list[Any]] = {}
        for label, mutable in model_space.simplify().items():
            if isinstance(mutable, Constraint):
                continue
            if not isinstance(mutable, Categorical):
                raise ValueError(f"{label!r}: the evolution searches categorical choices; {type(mutable).__name__} "
                                 "is not one")
            self.choices[label] = list(mutable.values)
        if not self.choices:
            raise ValueError(f"model space {self.name}: no categorical choice to search")

    def random(self, rng: random.Random) -> Arch:
        return {label: rng.choice(values) for label, values in self.choices.items()}

    def valid(self, arch: Mapping[str, Any]) -> bool:
        try:
            return self.model_space.check_contains(dict(arch)) is None
        except (KeyError, ValueError, TypeError):
            return False

    def canonical(self, arch: Mapping[str, Any]) -> Arch:
        unknown = sorted(str(k) for k in arch if k not in self.choices)
        if unknown:
            raise ValueError(f"arch: unknown key {unknown[0]!r}; the space's keys are {list(self.choices)}")
        out = {}
        for label, values in self.choices.items():
            if label not in arch:
                raise ValueError(f"arch: missing key {label!r} (allowed values {values})")
            if arch[label] not in values:
                raise ValueError(f"arch[{label!r}]: {arch[label]!r} is not allowed; allowed values {values}")
            out[label] = arch[label]
        return out

    def baselines(self, names: Sequence[str]) -> dict[str, Arch]:
        """``all_<value>``: ``value`` wherever a choice offers it, the choice's first value elsewhere (as our spaces
        fall back to Conv where a stage lacks a block type); names no choice offers are left out."""
        return {f"all_{v}": {label: v if v in values else values[0] for label, values in self.choices.items()}
                for v in names if any(v in values for values in self.choices.values())}

    def restrict(self, blocks: Sequence[str]) -> ModelSpaceDomain:
        restricted = copy.copy(self)
        restricted.choices = {label: [v for v in values if v in blocks] or values
                              for label, values in self.choices.items()}
        return restricted


def as_domain(space: Any) -> SpecDomain | ModelSpaceDomain:
    """The domain of a spec, an existing domain, or an NNI model space."""
    if isinstance(space, (SpecDomain, ModelSpaceDomain)):
        return space
    if isinstance(space, SearchSpaceSpec):
        return SpecDomain(space)
    return ModelSpaceDomain(space)


class _FrozenModules:
    """An executable model space seen as a raw one: ``freeze`` gives the ``nn.Module`` NNI would run."""

    def __init__(self, executable: Any) -> None:
        self.executable = executable

    def simplify(self) -> dict[str, Any]:
        return self.executable.simplify()

    def check_contains(self, sample: dict[str, Any]) -> Any:
        return self.executable.check_contains(sample)

    def freeze(self, sample: dict[str, Any]) -> Any:
        return self.executable.freeze(sample).executable_model()


def model_space_cost_fn(model_space: Any, *example_inputs: Any, bits: int = 32, **eyeriss_options: Any):
    """``arch -> {energy_mJ, latency_ms, macs_M, flops_G, params_M, mult_G, add_G, shift_G}`` (the keys of
    :func:`~nni_shiftadd.cost.metrics.space_cost_fn`) for any NNI model space: NNI freezes the sample, the
    frozen model is traced once on ``example_inputs`` (batch 1) and costed on the Eyeriss model; memoised."""
    from ..cost.profilers import EyerissProfiler

    if not example_inputs:
        raise ValueError("example_inputs: a model space is costed by tracing a frozen model; pass its input "
                         "(batch 1), e.g. torch.zeros(1, 3, 224, 224)")
    from nni.nas.space import ExecutableModelSpace

    raw = _FrozenModules(model_space) if isinstance(model_space, ExecutableModelSpace) else model_space
    profiler = EyerissProfiler(raw, *example_inputs, bits=bits, **eyeriss_options)

    def cost(arch: Arch) -> dict[str, float]:
        totals = profiler.report(dict(arch)).totals
        return {"energy_mJ": totals["energy_mJ"], "latency_ms": totals["latency_ms"], "macs_M": totals["macs"] / 1e6,
                "flops_G": 2 * totals["effective_macs"] / 1e9, "params_M": totals["params"] / 1e6,
                "mult_G": totals["mult"] / 1e9, "add_G": totals["add"] / 1e9, "shift_G": totals["shift"] / 1e9}

    cost.profiler = profiler  # type: ignore[attr-defined]
    return cost
