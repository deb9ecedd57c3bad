"""The translation space's SuperTransformer: its plan from a spec (:func:`transformer_plan`), the active path of an
architecture (:func:`transformer_config`), the standalone subnet with inherited weights (:func:`freeze_transformer`),
and the :class:`SpaceTransformer` a :class:`~nni_shiftadd.space.nlp.HybridNLPSpace` holds."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..hws import HWSConfig, Mode
from ..vocabulary import branches
from ..nn.transformer import (LayerChoices, LayerConfig, SuperTransformer, TransformerConfig, TransformerPlan,
                              pooled_weights, slice_into)
from .nlp_spec import SIDES, StackSpec, TranslationSpaceSpec, canonical_arch, layers


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
