"""The one-shot forms of :class:`~nni_shiftadd.nn.hybrid.HybridChoice` for NNI's one-shot strategies, kept apart from
the mutable as NNI keeps its supermodules apart (imports run oneshot -> hybrid, never back).

- Sampling strategies (``RandomOneShot``, ``ENAS``) get :class:`HybridSuperNet`: one candidate per step, drawn
  uniformly or from the sample the ENAS controller puts in the memo.
- Differentiable strategies (``DARTS``, ``GumbelDARTS``, ``Proxyless``) get an NNI ``LayerChoice`` of
  :class:`HybridCandidate` views of the one block, which NNI's own hooks then turn into their mixed layer with
  architecture parameters (``DifferentiableMixedLayer``, ``ProxylessMixedLayer``). Every view runs the same
  :class:`~nni_shiftadd.nn.hybrid.HybridBlock`, so the Conv, Shift and Add candidates keep sharing one pool.

:func:`oneshot_hooks` returns the hooks for any of them.
"""
from __future__ import annotations

import logging
from typing import Any

from nni.mutable import Categorical
from nni.nas.nn.pytorch import LayerChoice, MutableModule
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch import Tensor, nn

from ..hws import MODES, Mode
from .hybrid import HybridBlock, HybridChoice
from .transformer import SuperTransformer


class UniformSuperNet(BaseSuperNetModule):
    """One-shot module over one categorical choice, sampled uniformly (NNI's ``resample``/``export`` protocol)."""

    def __init__(self, choice: Categorical) -> None:
        super().__init__()
        self.choice = choice
        self.add_mutable(choice)
        self._sampled: Any = None

    @property
    def label(self) -> str:
        return self.choice.label

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        self._sampled = memo[self.label] if self.label in memo else self.choice.random()
        return {self.label: self._sampled}

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        return {} if self.label in memo else {self.label: self.choice.random()}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        if self.label in memo:
            return {}
        return {self.label: {c: 1.0 / len(self.choice.values) for c in self.choice.values}}

    def sampled(self) -> Any:
        if self._sampled is None:
            raise RuntimeError(f"{self.label}: nothing sampled yet; call resample() first")
        return self._sampled


class HybridSuperNet(UniformSuperNet):
    """One-shot form of :class:`HybridChoice`: uniform single-path sampling over the candidates, the candidates'
    weights shared as the block's mode says."""

    def __init__(self, block: HybridBlock, choice: Categorical) -> None:
        super().__init__(choice)
        self.block = block

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self.block.export(self.choice.freeze(sample))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, self.sampled())

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if isinstance(module, HybridChoice):
            return cls(module.block, module.choice)
        return None



class HybridCandidate(MutableModule):
    """Candidate ``op`` of a :class:`~nni_shiftadd.nn.hybrid.HybridBlock` as a module of its own, for a
    ``LayerChoice`` that a differentiable strategy mixes: its forward runs the shared block with ``op``, and
    freezing it exports that candidate alone (:meth:`~nni_shiftadd.nn.hybrid.HybridBlock.export`)."""

    def __init__(self, block: HybridBlock, op: str) -> None:
        super().__init__()
        if op not in block.candidates:
            raise ValueError(f"op: {op!r} is not a candidate of the block; candidates are {list(block.candidates)}")
        self.block, self.op = block, op

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return self.block.export(self.op)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x, self.op)


class _ConvertedFilter(logging.Filter):
    """Drops NNI's warning that a hook returned no supermodule, for the layers :func:`oneshot_hooks` hands on as a
    ``LayerChoice`` on purpose (NNI's next hook makes it one); other modules keep the warning."""

    names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg.startswith("Mutation hook on %s didn't return a BaseSuperNetModule")
                    and record.args and record.args[0] in self.names)


_NNI_STRATEGY_LOG = logging.getLogger("nni.nas.oneshot.pytorch.strategy")
if not any(isinstance(f, _ConvertedFilter) for f in _NNI_STRATEGY_LOG.filters):
    _NNI_STRATEGY_LOG.addFilter(_ConvertedFilter())


def as_layer_choice(module: HybridChoice) -> LayerChoice:
    """``module`` as an NNI ``LayerChoice`` (same label, same candidates, in order) of views of its one block."""
    return LayerChoice({op: HybridCandidate(module.block, op) for op in module.block.candidates}, label=module.label)


def differentiable(mutate_kwargs: dict[str, Any]) -> bool:
    """Whether the strategy running the hooks mixes candidates (DARTS and its kin pass their softmax and the
    differentiable mixed-op policy to every hook; sampling strategies pass the path-sampling policy)."""
    from nni.nas.oneshot.pytorch.supermodule.differentiable import MixedOpDifferentiablePolicy

    policy = mutate_kwargs.get("mixed_op_sampling")
    return "softmax" in mutate_kwargs or (isinstance(policy, type) and issubclass(policy,
                                                                                  MixedOpDifferentiablePolicy))


def oneshot_hooks(mode: Mode = "hws") -> list[Any]:
    """Mutation hooks for NNI's one-shot strategies: ``RandomOneShot(mutation_hooks=oneshot_hooks(...))``, and
    likewise ``DARTS``, ``GumbelDARTS``, ``Proxyless`` and ``ENAS`` (:class:`nni_shiftadd.strategy.enas.ENAS`: NNI's,
    mended for current Lightning).

    A :class:`~nni_shiftadd.nn.hybrid.HybridChoice` becomes a :class:`HybridSuperNet` under a sampling strategy
    and, under a differentiable one, a ``LayerChoice`` of :class:`HybridCandidate` that NNI's hooks then give
    architecture parameters; ``export`` then returns the candidate with the largest one. The hybrid layers (and the
    translation space's SuperTransformer) keep the weight-sharing mode they were built with; ``mode`` is checked
    against it so that a space built for one mode is not trained silently in another. The spaces of
    :mod:`nni_shiftadd.space` add the hooks of their own mutables (a stage's depth, the SuperTransformer) through
    NNI's ``extra_oneshot_hooks``, so this layer never imports them.
    """
    if mode not in MODES:
        raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")

    def hybrid_hook(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if isinstance(module, SuperTransformer) and module.mode != mode:
            raise ValueError(f"{name}: the SuperTransformer was built with mode={module.mode!r} but the hooks ask for "
                             f"mode={mode!r}; build the space with the mode you train")
        if isinstance(module, HybridChoice):
            if module.block.mode != mode:
                raise ValueError(f"{name}: the layer was built with mode={module.block.mode!r} but the hooks ask "
                                 f"for mode={mode!r}; build the space with the mode you train")
            if differentiable(mutate_kwargs):
                _ConvertedFilter.names.add(name)
                return as_layer_choice(module), False  # NNI's next hooks build the mixed layer
            return HybridSuperNet.mutate(module, name, memo, mutate_kwargs)
        return None

    return [hybrid_hook]
