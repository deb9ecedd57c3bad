"""The translation hybrid search space of a :class:`~nni_shiftadd.space.nlp_spec.TranslationSpaceSpec` as an NNI
``ModelSpace``: the :class:`~nni_shiftadd.nn.transformer.SuperTransformer` with one ``nni.choice`` per label.

It is at once

- an NNI model space: ``space.random()`` samples an architecture, ``freeze(arch)`` gives the standalone subnet
  with the weights it inherits from the supernet (front slices; a Shift candidate's power-of-two weights, an Add
  candidate's ``T(W)``), which computes what the supernet path computes;
- a single-path supernet for a training loop (the fairseq task of :mod:`nni_shiftadd.tasks.translation`):
  ``activate(arch)`` selects the path the next forward runs;
- a space NNI's path-sampling one-shot strategies train (``RandomOneShot``, ``ENAS``): NNI's traversal hands mutation
  hooks the space's children, never the space, so the hook of :func:`translation_hooks` (also in
  :func:`~nni_shiftadd.nn.oneshot_hooks`, and asked for by NNI itself through
  :meth:`HybridNLPSpace.extra_oneshot_hooks`) turns the :class:`SpaceTransformer` child, which knows the spec, into
  its one-shot twin :class:`TranslationSuperNet`.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from torch import Tensor, nn

from ..hws import MODES, HWSConfig, Mode
from ..vocabulary import branches
from ..nn.transformer import (EncoderOut, LayerChoices, LayerConfig, SuperTransformer, TransformerConfig,
                              TransformerPlan, pooled_weights, slice_into)
from .nlp_spec import SIDES, StackSpec, TranslationSpaceSpec, arch_space, canonical_arch, layers, validate_arch


def transformer_plan(spec: TranslationSpaceSpec, vocab_size: int, padding_idx: int) -> TransformerPlan:
    """Every layer's choices of ``spec`` for a vocabulary of ``vocab_size`` tokens."""
    def stack(s: StackSpec, side: str) -> tuple[LayerChoices, ...]:
        return tuple(LayerChoices(tuple(s.blocks), tuple(s.heads), tuple(s.ffn_dims), s.kernel_sizes[i],
                                  tuple(s.attend) if side == "decoder" else (1,)) for i in range(s.max_depth))
    return TransformerPlan(tuple(spec.encoder.embed_dims), tuple(spec.decoder.embed_dims),
                           stack(spec.encoder, "encoder"), stack(spec.decoder, "decoder"), tuple(spec.decoder.depths),
                           spec.qkv_dim, vocab_size, padding_idx, spec.share_embeddings, spec.dropout,
                           spec.attention_dropout, spec.activation_dropout)


def transformer_config(spec: TranslationSpaceSpec, arch: Mapping[str, Any]) -> TransformerConfig:
    """The :class:`TransformerConfig` of a (validated) architecture."""
    active = layers(spec, arch)
    return TransformerConfig(int(arch["encoder.embed_dim"]), int(arch["decoder.embed_dim"]),
                             tuple(LayerConfig(a.op, a.heads, a.ffn_dim) for a in active if a.side == "encoder"),
                             tuple(LayerConfig(a.op, a.heads, a.ffn_dim, a.attend) for a in active
                                   if a.side == "decoder"))


def subnet_plan(plan: TransformerPlan, config: TransformerConfig) -> TransformerPlan:
    """The plan of exactly one subnet: every choice a single value, the decoder cut to its depth."""
    def only(choices: tuple[LayerChoices, ...], layers_: tuple[LayerConfig, ...]) -> tuple[LayerChoices, ...]:
        return tuple(LayerChoices((c.op,), (c.heads,), (c.ffn_dim,), p.kernel_size, (c.attend,))
                     for p, c in zip(choices, layers_))
    return dataclasses.replace(plan, encoder_embed_dims=(config.encoder_embed_dim,),
                               decoder_embed_dims=(config.decoder_embed_dim,),
                               encoder=only(plan.encoder, config.encoder), decoder=only(plan.decoder, config.decoder),
                               decoder_depths=(len(config.decoder),))


MutationHook = Callable[[nn.Module, str, dict[str, Any], dict[str, Any]], Any]
"""NNI's mutation hook: ``(module, name, memo, mutate_kwargs) -> supermodule | None``."""


def freeze_transformer(spec: TranslationSpaceSpec, transformer: SuperTransformer,
                       sample: Mapping[str, Any]) -> SuperTransformer:
    """The standalone subnet of ``sample`` with the weights it inherits from ``transformer`` (``ValueError`` naming a
    bad label): a :class:`SuperTransformer` of exactly the subnet's size in ``none`` mode, its Conv/Shift/Add weights
    being what the candidate reads from the pools."""
    arch = canonical_arch(spec, sample)
    config = transformer_config(spec, arch)
    subnet = SuperTransformer(subnet_plan(transformer.plan, config), "none")
    weights: dict[str, Tensor] = {}
    with torch.no_grad():
        for side in SIDES:
            layers_ = getattr(transformer, f"{side}_layers")
            for i, layer_cfg in enumerate(getattr(config, side)):
                op = branches(layer_cfg.op)[1]
                weights.update(pooled_weights(layers_[i], f"{side}_layers.{i}.", [op] if op else []))
    slice_into(subnet, transformer, weights)
    subnet.activate(subnet.largest_config())
    return subnet.train(transformer.training)


class SpaceTransformer(SuperTransformer):
    """The SuperTransformer a :class:`HybridNLPSpace` holds: the same network, remembering the ``spec`` whose labels
    select its path (what :meth:`TranslationSuperNet.mutate` needs, as NNI never gives a hook the space itself)."""

    def __init__(self, spec: TranslationSpaceSpec, vocab_size: int, padding_idx: int, mode: Mode = "hws",
                 kl_weight: float = 1.0, hws: HWSConfig | None = None) -> None:
        super().__init__(transformer_plan(spec, vocab_size, padding_idx), mode, kl_weight, hws)
        self.spec = spec


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


class HybridNLPSpace(ModelSpace):
    """The SuperTransformer of ``spec`` over a vocabulary of ``vocab_size`` tokens (``padding_idx`` pads), with the
    given weight-sharing ``mode`` (``none``, ``naive`` or ``hws``, configured by ``hws``) of the Conv/Shift/Add
    candidates."""

    def __init__(self, spec: TranslationSpaceSpec, vocab_size: int, padding_idx: int = 1, mode: Mode = "hws",
                 kl_weight: float = 1.0, hws: HWSConfig | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")
        if getattr(spec, "kind", None) != "translation":
            raise TypeError(f"spec: expected a translation space (kind: translation), got {type(spec).__name__}")
        self.spec, self.mode = spec, mode
        for label, choices in arch_space(spec).items():
            self.add_mutable(Categorical(list(choices), label=label))
        # after a one-shot strategy's mutate_model: its TranslationSuperNet twin (still a SuperTransformer)
        self.transformer: SuperTransformer = SpaceTransformer(spec, vocab_size, padding_idx, mode, kl_weight, hws)

    def activate(self, arch: Mapping[str, Any]) -> None:
        """Select the path of ``arch`` (validated against the spec) for the following forward passes."""
        validate_arch(self.spec, arch)
        self.transformer.activate(transformer_config(self.spec, arch))

    def freeze(self, sample: Mapping[str, Any]) -> SuperTransformer:
        """The standalone subnet of ``sample`` with the weights it inherits here (``ValueError`` naming a bad
        label): a :class:`SuperTransformer` of exactly the subnet's size in ``none`` mode, its Conv/Shift/Add
        weights being what the candidate reads from the pools."""
        return freeze_transformer(self.spec, self.transformer, sample).train(self.training)

    def extra_oneshot_hooks(self, strategy: Any) -> list[MutationHook]:
        """The hooks NNI's ``OneShotStrategy.mutate_model`` asks a space for: :func:`translation_hooks` for the
        path-sampling strategies (``RandomOneShot``, ``ENAS``), so that the space's labels never go unsampled; the
        differentiable ones (DARTS and its kin) have no twin here, which is a ``TypeError``."""
        from nni.nas.strategy import RandomOneShot

        if not isinstance(strategy, RandomOneShot):
            raise TypeError(f"{type(strategy).__name__}: HybridNLPSpace has a one-shot form for path sampling only "
                            "(RandomOneShot, ENAS)")
        return translation_hooks()

    def encode(self, src_tokens: Tensor) -> EncoderOut:
        return self.transformer.encode(src_tokens)

    def decode(self, prev_output_tokens: Tensor, encoder_out: EncoderOut) -> Tensor:
        return self.transformer.decode(prev_output_tokens, encoder_out)

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.transformer(src_tokens, prev_output_tokens)


def supernet_parameters(spec: TranslationSpaceSpec, mode: Mode, vocab_size: int = 32768) -> int:
    """Parameters of the supernet of ``spec`` in ``mode`` for a vocabulary of ``vocab_size`` tokens (WMT'14 En-De
    with a joined BPE: about 32K), counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        space = HybridNLPSpace(spec, vocab_size, 1, mode)
    return sum(p.numel() for p in space.parameters())
