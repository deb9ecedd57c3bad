"""The one-shot twin of the translation space's SuperTransformer for NNI's path-sampling strategies
(``RandomOneShot``, ``ENAS``), and the mutation hook that makes it (:func:`translation_hooks`). Imports run twin ->
space's transformer, never back."""
from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from nni.mutable import Categorical
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch import nn

from ..hws import Mode
from ..nn.transformer import SuperTransformer
from .nlp_spec import TranslationSpaceSpec, arch_space, validate_arch
from .nlp_transformer import MutationHook, SpaceTransformer, freeze_transformer, transformer_config


class TranslationSuperNet(BaseSuperNetModule, SuperTransformer):
    """One-shot twin of a :class:`SpaceTransformer` for NNI's path-sampling strategies: ``resample(memo)`` activates
    a uniformly random architecture (labels in ``memo`` keep their values), and the forward runs its path.

    It adopts the transformer's submodules (shared, not copied), so the weights and ``state_dict`` keys stay the
    space's, and ``HybridNLPSpace.activate`` / ``freeze`` keep working on the mutated space. It registers one
    ``Categorical`` per label, equal to the space's (NNI's ``simplify`` merges them by label).
    """

    def __init__(self, transformer: SuperTransformer, spec: TranslationSpaceSpec) -> None:
        nn.Module.__init__(self)  # not SuperTransformer.__init__: that would build new layers
        # _modules, not named_children(): the latter hides ``decoder_embed`` when it is ``embed`` (shared embeddings)
        for name, child in transformer._modules.items():
            self.add_module(name, child)
        self.plan, self.mode, self.config, self.training = (transformer.plan, transformer.mode, transformer.config,
                                                            transformer.training)
        self.spec = spec
        for label, choices in arch_space(spec).items():
            self.add_mutable(Categorical(list(choices), label=label))

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        """Activate an architecture: the labels in ``memo`` keep their values (validated), the others are drawn
        uniformly. Returns the whole architecture (every label of the spec)."""
        arch: dict[str, Any] = {}
        for mutable in self.mutables:  # Python's random, as NNI's PathSamplingLayer (seeded by seed_everything)
            arch[mutable.label] = memo[mutable.label] if mutable.label in memo else random.choice(list(mutable.values))
        validate_arch(self.spec, arch)
        self.activate(transformer_config(self.spec, arch))
        return arch

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """A uniformly random value of every label not in ``memo`` (random sampling has no preferred architecture,
        as NNI's ``PathSamplingLayer.export``)."""
        return {m.label: random.choice(list(m.values)) for m in self.mutables if m.label not in memo}

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The uniform distribution of every label not in ``memo``."""
        return {m.label: {v: 1.0 / len(m.values) for v in m.values} for m in self.mutables if m.label not in memo}

    def freeze(self, sample: Mapping[str, Any]) -> SuperTransformer:
        """The standalone subnet of ``sample`` (:func:`freeze_transformer`)."""
        return freeze_transformer(self.spec, self, sample)

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any],
               mutate_kwargs: dict[str, Any]) -> TranslationSuperNet | None:
        """NNI's mutation hook: the twin of a :class:`SpaceTransformer`, nothing for any other module."""
        if isinstance(module, SpaceTransformer):
            return cls(module, module.spec)
        return None


def translation_hooks(mode: Mode | None = None) -> list[MutationHook]:
    """The mutation hook of :class:`SpaceTransformer` (appended by :func:`~nni_shiftadd.nn.oneshot_hooks`); with
    ``mode``, a transformer built in another weight-sharing mode is an error."""
    def hook(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> Any:
        if isinstance(module, SpaceTransformer) and mode is not None and module.mode != mode:
            raise ValueError(f"{name}: the SuperTransformer was built with mode={module.mode!r} but the hooks ask for "
                             f"mode={mode!r}; build the space with the mode you train")
        return TranslationSuperNet.mutate(module, name, memo, mutate_kwargs)
    return [hook]
