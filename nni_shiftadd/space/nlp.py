"""The translation hybrid search space of a :class:`~nni_shiftadd.space.nlp_spec.TranslationSpaceSpec` as an NNI
``ModelSpace``: the :class:`~nni_shiftadd.nn.transformer.SuperTransformer` with one ``nni.choice`` per label.

It is at once

- an NNI model space: ``space.random()`` samples an architecture, ``freeze(arch)`` gives the standalone subnet
  with the weights it inherits from the supernet (front slices; a Shift candidate's power-of-two weights, an Add
  candidate's ``T(W)``), which computes what the supernet path computes;
- a single-path supernet for a training loop (the fairseq task of :mod:`nni_shiftadd.tasks.translation`):
  ``activate(arch)`` selects the path the next forward runs.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import ModelSpace
from torch import Tensor

from ..hws import MODES, Mode
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


class HybridNLPSpace(ModelSpace):
    """The SuperTransformer of ``spec`` over a vocabulary of ``vocab_size`` tokens (``padding_idx`` pads), with the
    given weight-sharing ``mode`` (``none``, ``naive`` or ``hws``) of the Conv/Shift/Add candidates."""

    def __init__(self, spec: TranslationSpaceSpec, vocab_size: int, padding_idx: int = 1, mode: Mode = "hws",
                 kl_weight: float = 1.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode: unknown value {mode!r}; expected one of {list(MODES)}")
        if not isinstance(spec, TranslationSpaceSpec):
            raise TypeError(f"spec: expected a translation space (kind: translation), got {type(spec).__name__}")
        self.spec, self.mode = spec, mode
        for label, choices in arch_space(spec).items():
            self.add_mutable(Categorical(list(choices), label=label))
        self.transformer = SuperTransformer(transformer_plan(spec, vocab_size, padding_idx), mode, kl_weight)

    def activate(self, arch: Mapping[str, Any]) -> None:
        """Select the path of ``arch`` (validated against the spec) for the following forward passes."""
        validate_arch(self.spec, arch)
        self.transformer.activate(transformer_config(self.spec, arch))

    def freeze(self, sample: Mapping[str, Any]) -> SuperTransformer:
        """The standalone subnet of ``sample`` with the weights it inherits here (``ValueError`` naming a bad
        label): a :class:`SuperTransformer` of exactly the subnet's size in ``none`` mode, its Conv/Shift/Add
        weights being what the candidate reads from the pools."""
        arch = canonical_arch(self.spec, sample)
        config = transformer_config(self.spec, arch)
        plan = subnet_plan(self.transformer.plan, config)
        subnet = SuperTransformer(plan, "none")
        weights: dict[str, Tensor] = {}
        with torch.no_grad():
            for side in SIDES:
                layers_ = getattr(self.transformer, f"{side}_layers")
                for i, layer_cfg in enumerate(getattr(config, side)):
                    op = branches(layer_cfg.op)[1]
                    weights.update(pooled_weights(layers_[i], f"{side}_layers.{i}.", [op] if op else []))
        slice_into(subnet, self.transformer, weights)
        subnet.activate(subnet.largest_config())
        return subnet.train(self.training)

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
