"""Translation search spaces as data (paper Table 1, Sec. 3.1 "Supernet for NLP tasks"): a frozen-dataclass schema
loaded from YAML (``kind: translation``), the flat architecture dicts that sample it, and the operations on them.

Reading of the paper and HAT (the SuperTransformer it builds on):

* The encoder has a fixed number of layers; each picks a block type out of ``attn``, the multi-branch
  ``attn+conv`` / ``attn+shift`` / ``attn+add`` (attention on one half of the channels, the lightweight 1-D
  convolution on the other) and ``conv`` / ``shift`` / ``add`` alone. Each block is followed by its own two-layer
  FFN. The decoder has a searchable number of layers, each an ``attn`` or ``attn+X`` block, then
  encoder-decoder attention over the outputs of the last ``attend`` encoder layers, then its FFN.
* Elastic dimensions as HAT: the encoder and the decoder each choose an embedding dimension; every layer chooses
  its number of heads and its FFN dimension (``elastic: layer``), or the whole model does once (``elastic:
  model``). A subnet uses the front slice of the largest weight. Attention projects to a fixed ``qkv_dim``
  (HAT: 512 for every size), split into ``heads`` heads.
* Counted with per-layer heads and FFN dimensions, ``nlp_wmt14`` has 2.8 x 10^25 subnets; with them chosen once per
  stack (``elastic: model``) 5.0 x 10^14, the order of the paper's "about 10^14", which therefore appears to count
  them per model. :func:`count_subnets` counts exactly, whichever the YAML says.

Architecture dicts are flat ``{label: value}`` mappings, as an NNI sample: ``encoder.embed_dim``,
``decoder.embed_dim``, ``decoder.depth``; ``encoder.layer{i}.op``, ``decoder.layer{j}.op`` and ``decoder.layer{j}.attend``;
``{encoder,decoder}.layer{i}.heads`` / ``.ffn_dim`` (``elastic: layer``) or ``{encoder,decoder}.heads`` /
``.ffn_dim`` (``elastic: model``). Decoder layers ``j >= decoder.depth`` are inactive.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Literal

from ..vocabulary import ATTENTION, DECODER_BLOCKS, ENCODER_BLOCKS, branches
from .kinds import bad_field, register_space_kind
from .labels import check_labels


_bad = bad_field


def _choices(path: str, values: tuple[Any, ...], allowed: tuple[Any, ...] | None = None) -> None:
    if not values:
        raise _bad(path, list(values), "a non-empty list")
    if len(set(values)) != len(values):
        raise _bad(path, list(values), "distinct values")
    for k, v in enumerate(values):
        if allowed is not None and v not in allowed:
            raise _bad(f"{path}[{k}]", v, f"one of {list(allowed)}")
        if allowed is None and (not isinstance(v, int) or v < 1):
            raise _bad(f"{path}[{k}]", v, "an int >= 1")


@dataclass(frozen=True)
class StackSpec:
    """One side of the SuperTransformer (encoder or decoder).

    Attributes:
        depths: the searchable numbers of layers (the encoder: one value, e.g. ``[6]``).
        blocks: the block types a layer may take (the first is the canonical value of inactive layers).
        embed_dims: the elastic embedding dimensions (the largest sizes the weights).
        heads: the elastic numbers of attention heads (each must divide ``qkv_dim``, and half of it in a
            multi-branch block).
        ffn_dims: the elastic hidden dimensions of the two-layer FFN after each block.
        kernel_sizes: the lightweight convolution's kernel size of each layer position (as many as the largest
            depth; paper: 3, 7, 15, 31, 31, 31).
        attend: the decoder only: how many of the last encoder layers each decoder layer attends to (HAT's
            arbitrary encoder-decoder attention); ``[1]`` is the usual Transformer.
    """

    depths: tuple[int, ...]
    blocks: tuple[str, ...]
    embed_dims: tuple[int, ...]
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    attend: tuple[int, ...] = (1,)

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def max_embed(self) -> int:
        return max(self.embed_dims)


@dataclass(frozen=True)
class TranslationSpaceSpec:
    """A translation search space (paper Table 1): an encoder and a decoder :class:`StackSpec` and the fixed parts.

    Attributes:
        name: short name of the space.
        kind: ``translation`` (what makes ``load_space`` read this schema).
        encoder, decoder: the two stacks.
        qkv_dim: the width attention projects queries, keys and values to (HAT: 512 at every size); a
            multi-branch block's attention runs on half the channels with half this width.
        elastic: ``layer``: every layer chooses its heads and FFN dimension (HAT); ``model``: one choice each per
            stack.
        cost_tokens: the sentence length the cost model profiles (paper: 30 tokens).
        max_positions: the longest sequence the (sinusoidal) positions cover.
        share_embeddings: one embedding table for source, target and output projection (a joined dictionary).
        dropout, attention_dropout, activation_dropout: as fairseq's Transformer.
        description: free text.
    """

    name: str
    encoder: StackSpec
    decoder: StackSpec
    kind: Literal["translation"] = "translation"
    qkv_dim: int = 512
    elastic: Literal["layer", "model"] = "layer"
    cost_tokens: int = 30
    max_positions: int = 256
    share_embeddings: bool = True
    dropout: float = 0.3
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    description: str = ""

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field path, the bad value and what is allowed."""
        if not self.name:
            raise _bad("name", self.name, "a non-empty name")
        for side, stack, allowed in (("encoder", self.encoder, ENCODER_BLOCKS), ("decoder", self.decoder,
                                                                              DECODER_BLOCKS)):
            _choices(f"{side}.depths", stack.depths)
            _choices(f"{side}.blocks", stack.blocks, allowed)
            for name in ("embed_dims", "heads", "ffn_dims", "attend"):
                _choices(f"{side}.{name}", getattr(stack, name))
            if len(stack.kernel_sizes) < stack.max_depth:
                raise _bad(f"{side}.kernel_sizes", list(stack.kernel_sizes),
                           f"one odd kernel size per layer position ({stack.max_depth})")
            for k, size in enumerate(stack.kernel_sizes):
                if not isinstance(size, int) or size < 1 or size % 2 == 0:
                    raise _bad(f"{side}.kernel_sizes[{k}]", size, "an odd int >= 1")
            multi = any(None not in branches(b) for b in stack.blocks)  # a multi-branch block: channel halves
            for k, e in enumerate(stack.embed_dims):
                if multi and e % 2:
                    raise _bad(f"{side}.embed_dims[{k}]", e, "an even width (multi-branch blocks split it in halves)")
            for k, h in enumerate(stack.heads):
                width = self.qkv_dim // 2 if multi else self.qkv_dim
                if self.qkv_dim % h or (multi and width % h):
                    raise _bad(f"{side}.heads[{k}]", h, f"a divisor of qkv_dim {self.qkv_dim}"
                               + (f" and of its half {width} (multi-branch blocks)" if multi else ""))
        if len(self.encoder.depths) != 1:
            raise _bad("encoder.depths", list(self.encoder.depths), "one value (the encoder depth is fixed)")
        if max(self.decoder.attend) > self.encoder.max_depth:
            raise _bad("decoder.attend", list(self.decoder.attend),
                       f"values <= the encoder's {self.encoder.max_depth} layers")
        for name in ("qkv_dim", "cost_tokens", "max_positions"):
            if getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "an int >= 1")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise _bad(name, getattr(self, name), "a float in [0, 1)")
        if self.cost_tokens > self.max_positions:
            raise _bad("cost_tokens", self.cost_tokens, f"at most max_positions ({self.max_positions})")
        if self.share_embeddings and self.encoder.max_embed != self.decoder.max_embed:
            raise _bad("decoder.embed_dims", list(self.decoder.embed_dims),
                       f"the same largest width as the encoder's ({self.encoder.max_embed}) with share_embeddings")

    # the SearchSpaceSpec protocol (nni_shiftadd.space.kinds), implemented by this module's functions
    def arch_space(self) -> dict[str, list[Any]]:
        return arch_space(self)

    def arch_gates(self) -> dict[str, tuple[str, int]]:
        return arch_gates(self)

    def validate_arch(self, arch: Mapping[str, Any]) -> None:
        validate_arch(self, arch)

    def canonical_arch(self, arch: Mapping[str, Any]) -> dict[str, Any]:
        return canonical_arch(self, arch)

    def structurally_valid(self, arch: Mapping[str, Any]) -> bool:
        return structurally_valid(self, arch)

    def random_arch(self, rng: random.Random | int | None = None) -> dict[str, Any]:
        return random_arch(self, rng)

    def baseline_arch(self, op: str, **options: Any) -> dict[str, Any]:
        return baseline_arch(self, op, **options)

    def named_baselines(self, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
        return named_baselines(self, ops)

    def restrict_blocks(self, blocks: Sequence[str]) -> TranslationSpaceSpec:
        return restrict_blocks(self, blocks)

    def count_subnets(self) -> int:
        return count_subnets(self)


register_space_kind("translation", TranslationSpaceSpec)

SIDES = ("encoder", "decoder")


def layer_label(side: str, layer: int, what: str) -> str:
    """``encoder.layer3.op`` and the like."""
    return f"{side}.layer{layer}.{what}"


def _elastic_label(spec: TranslationSpaceSpec, side: str, layer: int, what: str) -> str:
    return layer_label(side, layer, what) if spec.elastic == "layer" else f"{side}.{what}"


def arch_space(spec: TranslationSpaceSpec) -> dict[str, list[Any]]:
    """Every label of ``spec`` with its choices, in a fixed order (global choices first, then layer by layer)."""
    space: dict[str, list[Any]] = {"encoder.embed_dim": list(spec.encoder.embed_dims),
                                   "decoder.embed_dim": list(spec.decoder.embed_dims),
                                   "decoder.depth": list(spec.decoder.depths)}
    for side in SIDES:
        stack: StackSpec = getattr(spec, side)
        if spec.elastic == "model":
            space[f"{side}.heads"] = list(stack.heads)
            space[f"{side}.ffn_dim"] = list(stack.ffn_dims)
        for i in range(stack.max_depth):
            space[layer_label(side, i, "op")] = list(stack.blocks)
            if spec.elastic == "layer":
                space[layer_label(side, i, "heads")] = list(stack.heads)
                space[layer_label(side, i, "ffn_dim")] = list(stack.ffn_dims)
            if side == "decoder":
                space[layer_label(side, i, "attend")] = list(stack.attend)
    return space


def arch_gates(spec: TranslationSpaceSpec) -> dict[str, tuple[str, int]]:
    """``{decoder layer label: ("decoder.depth", layer index)}``: the layer is active when the depth exceeds the
    index (the ``gates`` argument of the latency predictor's ``ArchEncoder``)."""
    return {label: ("decoder.depth", i) for i in range(spec.decoder.max_depth)
            for label in (layer_label("decoder", i, w) for w in ("op", "heads", "ffn_dim", "attend"))
            if spec.elastic == "layer" or not label.endswith(("heads", "ffn_dim"))}


def stack_labels(spec: TranslationSpaceSpec, side: str, what: str) -> list[str]:
    """The label of ``what`` (op, heads, ffn_dim, attend) of every layer position of ``side``, in order (one
    shared label repeated where ``elastic: model`` chooses it once per stack)."""
    stack: StackSpec = getattr(spec, side)
    per_model = spec.elastic == "model" and what in ("heads", "ffn_dim")
    return [_elastic_label(spec, side, i, what) if per_model else layer_label(side, i, what)
            for i in range(stack.max_depth)]


@dataclass(frozen=True)
class LayerArch:
    """The choices of one active layer: its block type, heads, FFN dimension, kernel size, encoder layers
    attended (decoder)."""

    side: str
    index: int
    op: str
    heads: int
    ffn_dim: int
    kernel_size: int
    attend: int | None = None


def layers(spec: TranslationSpaceSpec, arch: Mapping[str, Any]) -> list[LayerArch]:
    """The active layers of ``arch``, encoder first."""
    out = []
    for side in SIDES:
        stack: StackSpec = getattr(spec, side)
        depth = stack.depths[0] if side == "encoder" else int(arch["decoder.depth"])
        for i in range(depth):
            out.append(LayerArch(side, i, str(arch[layer_label(side, i, "op")]),
                                 int(arch[_elastic_label(spec, side, i, "heads")]),
                                 int(arch[_elastic_label(spec, side, i, "ffn_dim")]), stack.kernel_sizes[i],
                                 int(arch[layer_label(side, i, "attend")]) if side == "decoder" else None))
    return out


def validate_arch(spec: TranslationSpaceSpec, arch: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a missing or unknown label or a value outside its choices, naming the label, the
    value and what is allowed."""
    check_labels(arch_space(spec), arch, spec.name)


def canonical_arch(spec: TranslationSpaceSpec, arch: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``arch`` in label order, inactive decoder layers set to their first choices, so that
    architectures building the same network compare equal."""
    validate_arch(spec, arch)
    space = arch_space(spec)
    depth = int(arch["decoder.depth"])
    out: dict[str, Any] = {}
    for key, choices in space.items():
        inactive = key.startswith("decoder.layer") and int(key.split(".")[1][len("layer"):]) >= depth
        out[key] = choices[0] if inactive else arch[key]
    return out


def random_arch(spec: TranslationSpaceSpec, rng: random.Random | int | None = None) -> dict[str, Any]:
    """A uniformly random architecture holding every label (inactive layers get random values too)."""
    if rng is None or isinstance(rng, Integral):
        rng = random.Random(rng)
    return {key: rng.choice(choices) for key, choices in arch_space(spec).items()}


def baseline_arch(spec: TranslationSpaceSpec, op: str = ATTENTION, *, size: Literal["largest", "smallest"] = "largest",
                  decoder_depth: int | None = None) -> dict[str, Any]:
    """A homogeneous architecture: every encoder layer ``op`` (decoder layers ``op`` where allowed, else
    ``attn``), at the ``largest`` or ``smallest`` elastic dimensions, attending to the last encoder layer, with
    the deepest decoder (or ``decoder_depth``)."""
    if op not in spec.encoder.blocks:
        raise ValueError(f"op: got {op!r}; the encoder of {spec.name!r} allows {list(spec.encoder.blocks)}")
    pick = max if size == "largest" else min
    arch: dict[str, Any] = {}
    for key, choices in arch_space(spec).items():
        what = key.rsplit(".", 1)[1]
        if what == "op":
            arch[key] = op if op in choices else ATTENTION
        elif what == "attend":
            arch[key] = min(choices)
        elif key == "decoder.depth":
            arch[key] = decoder_depth if decoder_depth is not None else max(choices)
        else:
            arch[key] = pick(choices)
    return canonical_arch(spec, arch)


def structurally_valid(spec: TranslationSpaceSpec, arch: Mapping[str, Any]) -> bool:
    """Every combination of choices of a translation space is a network (the decoder depth only gates layers)."""
    return True


def named_baselines(spec: TranslationSpaceSpec, ops: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{"all_<op>": arch}``: the homogeneous encoders (attention decoder) at the largest dimensions."""
    return {f"all_{op}": baseline_arch(spec, op) for op in ops}


def restrict_blocks(spec: TranslationSpaceSpec, blocks: Sequence[str]) -> TranslationSpaceSpec:
    """The same space with every layer's block types limited to ``blocks`` (e.g. ``["attn"]``: HAT's Attn-only
    space inside ShiftAddNAS's); the encoder and the decoder must each keep at least one. Architectures of the
    result are architectures of ``spec``."""
    stacks = {}
    for side in SIDES:
        stack: StackSpec = getattr(spec, side)
        kept = tuple(b for b in stack.blocks if b in blocks)
        if not kept:
            raise ValueError(f"blocks {list(blocks)} leave the {side} of {spec.name!r} no block type; it offers "
                             f"{list(stack.blocks)}")
        stacks[side] = dataclasses.replace(stack, blocks=kept)
    restricted = dataclasses.replace(spec, **stacks)
    restricted.validate()
    return restricted


def count_subnets(spec: TranslationSpaceSpec) -> int:
    """The number of distinct networks: embedding choices x the encoder's layer choices x the sum over decoder
    depths of the decoder's layer choices (with ``elastic: model``, heads and FFN once per stack)."""
    enc, dec = spec.encoder, spec.decoder
    if spec.elastic == "layer":
        enc_layer = len(enc.blocks) * len(enc.heads) * len(enc.ffn_dims)
        dec_layer = len(dec.blocks) * len(dec.heads) * len(dec.ffn_dims) * len(dec.attend)
        per_model = 1
    else:
        enc_layer, dec_layer = len(enc.blocks), len(dec.blocks) * len(dec.attend)
        per_model = len(enc.heads) * len(enc.ffn_dims) * len(dec.heads) * len(dec.ffn_dims)
    return (len(enc.embed_dims) * len(dec.embed_dims) * per_model * enc_layer ** enc.depths[0]
            * sum(dec_layer ** d for d in dec.depths))
