"""The translation hybrid search space of a :class:`~nni_shiftadd.space.nlp_spec.TranslationSpaceSpec` as an NNI
``ModelSpace``: the :class:`~nni_shiftadd.nn.transformer.SuperTransformer` with one ``nni.choice`` per label.

It is at once

- an NNI model space: ``space.random()`` samples an architecture, ``freeze(arch)`` gives the standalone subnet
  with the weights it inherits from the supernet (front slices; a Shift candidate's power-of-two weights, an Add
  candidate's ``T(W)``), which computes what the supernet path computes;
- a single-path supernet for a training loop (the fairseq task of :mod:`nni_shiftadd.tasks.translation`):
  ``activate(arch)`` selects the path the next forward runs;
- a space NNI's path-sampling one-shot strategies train (``RandomOneShot``, ``ENAS``): NNI's traversal hands mutation
  hooks the space's children, never the space, so the hook of
  :func:`~nni_shiftadd.space.nlp_oneshot.translation_hooks` (also in :func:`~nni_shiftadd.nn.oneshot_hooks`, and
  asked for by NNI itself through :meth:`HybridNLPSpace.extra_oneshot_hooks`) turns the
  :class:`~nni_shiftadd.space.nlp_transformer.SpaceTransformer` child, which knows the spec, into its one-shot twin.
  The twin's module loads only then: NNI's one-shot package is slow to import, and evaluating a subnet needs none of it.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from nni.mutable import Categorical
from nni.nas.nn.pytorch import ModelSpace
from torch import Tensor

from ..hws import MODES, HWSConfig, Mode
from ..nn.transformer import EncoderOut, SuperTransformer
from .nlp_spec import TranslationSpaceSpec, arch_space, validate_arch
from .nlp_transformer import MutationHook, SpaceTransformer, freeze_transformer, transformer_config


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
        """The hooks NNI's ``OneShotStrategy.mutate_model`` asks a space for:
        :func:`~nni_shiftadd.space.nlp_oneshot.translation_hooks` for the
        path-sampling strategies (``RandomOneShot``, ``ENAS``), so that the space's labels never go unsampled; the
        differentiable ones (DARTS and its kin) have no twin here, which is a ``TypeError``."""
        from nni.nas.strategy import RandomOneShot

        from .nlp_oneshot import translation_hooks  # on demand: NNI's one-shot package is slow to import

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
