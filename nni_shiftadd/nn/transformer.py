"""The hybrid SuperTransformer of ShiftAddNAS (paper Sec. 3.1, Table 1) in plain PyTorch: encoder and decoder layers
whose block is one of attention, a lightweight 1-D convolution of the Conv/Shift/Add family, or both on the two
halves of the channels, each block followed by its own two-layer FFN; elastic embedding, heads and FFN dimensions
(HAT's front-slice sharing, :mod:`nni_shiftadd.nn.elastic`); an elastic decoder depth; and encoder-decoder
attention over the concatenated outputs of the last ``attend`` encoder layers.

The Conv, Shift and Add candidates of one layer position share one set of weight pools
(:class:`~nni_shiftadd.hws.SharedConvWeight`: input projection, depthwise kernel, output projection) in the
``naive`` and ``hws`` modes, the multi-branch blocks reading the front half of them; in ``hws`` mode the eq. (5) terms
join the loss through the backward pass. Every other weight belongs to one candidate.

:class:`SuperTransformer` is built from a :class:`TransformerPlan` (every layer's choices) and runs the
:class:`TransformerConfig` set by :meth:`SuperTransformer.activate`; a plan whose choices are single values builds a
standalone network of exactly the subnet's size (how :meth:`nni_shiftadd.space.nlp.HybridNLPSpace.freeze` exports
one). Tensors are batch-first: tokens ``(B, T)``, activations ``(B, T, C)``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hws import HWSConfig, Mode, SharedConvWeight, add_auxiliary_loss, position_kl, ranks_memoised
from ..ops.factory import block_function
from ..quant import operands_quantized, quantize_operands
from ..vocabulary import CONV_FAMILY, block_type, branches
from .elastic import ElasticEmbedding, ElasticLayerNorm, ElasticLinear, sinusoidal_positions

@dataclasses.dataclass(frozen=True)
class LayerChoices:
    """What one layer position may be: block types, heads, FFN dimensions, its lightweight kernel size and
    (decoder) how many of the last encoder layers it may attend to."""

    blocks: tuple[str, ...]
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    kernel_size: int
    attend: tuple[int, ...] = (1,)


@dataclasses.dataclass(frozen=True)
class TransformerPlan:
    """Everything a :class:`SuperTransformer` may run: the elastic embedding dimensions, the layer positions, the
    decoder depths, and the fixed settings."""

    encoder_embed_dims: tuple[int, ...]
    decoder_embed_dims: tuple[int, ...]
    encoder: tuple[LayerChoices, ...]
    decoder: tuple[LayerChoices, ...]
    decoder_depths: tuple[int, ...]
    qkv_dim: int
    vocab_size: int
    padding_idx: int
    share_embeddings: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0


class LayerConfig(NamedTuple):
    """The active choices of one layer."""

    op: str
    heads: int
    ffn_dim: int
    attend: int = 1


class TransformerConfig(NamedTuple):
    """The active subnet: embedding dimensions and the active layers (the decoder's length is its depth)."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder: tuple[LayerConfig, ...]
    decoder: tuple[LayerConfig, ...]


class EncoderOut(NamedTuple):
    """Every encoder layer's output ``(B, S, C)`` (the decoder attends to the last few) and the padding mask
    ``(B, S)``, True at padding."""

    layers: list[Tensor]
    padding_mask: Tensor


class ElasticAttention(nn.Module):
    """Multi-head attention with elastic input widths and head count: queries, keys and values are projected to
    ``qkv_dim`` (fixed, HAT) and split into ``heads`` heads; the output projection returns the query's width. Its
    two products of activations, ``Q K^T`` and ``A V``, are call sites :func:`~nni_shiftadd.quant.fake_quantize`
    quantises (``quant_sites``); quantised, they run unfused."""

    quant_sites = ("scores", "mix")

    def __init__(self, embed_dim: int, kv_dim: int, qkv_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.q = ElasticLinear(embed_dim, qkv_dim)
        self.k = ElasticLinear(kv_dim, qkv_dim)
        self.v = ElasticLinear(kv_dim, qkv_dim)
        self.out = ElasticLinear(qkv_dim, embed_dim)
        self.qkv_dim, self.dropout = qkv_dim, dropout

    def forward(self, x: Tensor, kv: Tensor, heads: int, key_padding_mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        b, t, width = x.shape
        s = kv.shape[1]

        def split(y: Tensor, n: int) -> Tensor:
            return y.view(b, n, heads, self.qkv_dim // heads).transpose(1, 2)

        q, k, v = split(self.q(x), t), split(self.k(kv), s), split(self.v(kv), s)
        mask = None
        if key_padding_mask is not None:
            mask = ~key_padding_mask.view(b, 1, 1, s)
        if causal:
            allowed = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            mask = allowed if mask is None else mask & allowed
        dropout = self.dropout if self.training else 0.0
        if operands_quantized(self):
            y = self._quantized_attention(q, k, v, mask, dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y.transpose(1, 2).reshape(b, t, self.qkv_dim), width)

    def _quantized_attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
        """``softmax(Q K^T / sqrt(d)) V`` with both products on quantised operands (what the fused kernel computes)."""
        q, k = quantize_operands(self, "scores", q, k)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        attn, v = quantize_operands(self, "mix", F.dropout(scores.softmax(-1), dropout, self.training), v)
        return attn @ v


class LightweightBranch(nn.Module):
    """The Conv/Shift/Add branch of one layer position: input projection, depthwise 1-D convolution of
    ``kernel_size`` (``same`` padding, or left padding when ``causal``), output projection, each of the candidate's
    operator, then a LayerNorm of that candidate (Add's outputs, ``-sum |x - w|``, live on another scale). The three
    weights are :class:`~nni_shiftadd.hws.SharedConvWeight` pools of the candidates ``ops``. Its layers are
    costed as lightweight ones (``cost_role``: the authors' Eyeriss op rules single them out). Its three products
    are the call sites :func:`~nni_shiftadd.quant.fake_quantize` quantises (``quant_sites``)."""

    cost_role = "lightweight"
    quant_sites = ("proj_in", "depthwise", "proj_out")

    def __init__(self, channels: int, kernel_size: int, ops: Sequence[str], mode: Mode, causal: bool = False,
                 kl_weight: float = 1.0, eta: float = 0.2, hws: HWSConfig | None = None) -> None:
        super().__init__()
        self.ops, self.kernel_size, self.causal = tuple(ops), kernel_size, causal
        self.mode, self.kl_weight, self.eta = mode, kl_weight, eta
        shapes = {"proj_in": (channels, channels), "depthwise": (channels, 1, kernel_size),
                  "proj_out": (channels, channels)}
        self.pools = nn.ModuleDict({k: SharedConvWeight(s, self.ops, mode, hws=hws) for k, s in shapes.items()})
        self.norms = nn.ModuleDict({op: ElasticLayerNorm(channels) for op in self.ops})

    def forward(self, x: Tensor, op: str, padding_mask: Tensor | None = None) -> Tensor:
        if op not in self.ops:
            raise ValueError(f"op: {op!r} is not a candidate here; candidates are {list(self.ops)}")
        with ranks_memoised(list(self.pools.values())):
            return self._forward(x, op, padding_mask)

    def _forward(self, x: Tensor, op: str, padding_mask: Tensor | None) -> Tensor:
        c = x.shape[-1]
        eta = self.pools["proj_in"].add_eta(self.eta)  # the branch's pools share one mode and HWSConfig
        linear, conv = block_function(op, "linear", eta), block_function(op, "conv1d", eta)
        operator = block_type(op).operator
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        y = linear(*quantize_operands(self, "proj_in", x, self.pools["proj_in"].weight(op)[:c, :c], operator))
        y, w = quantize_operands(self, "depthwise", y.transpose(1, 2), self.pools["depthwise"].weight(op)[:c],
                                 operator)
        k = self.kernel_size  # padded after quantising: the padding is a constant zero, not a code of the input
        y = conv(F.pad(y, (k - 1, 0) if self.causal else (k // 2, k // 2)), w, groups=c).transpose(1, 2)
        y = linear(*quantize_operands(self, "proj_out", y, self.pools["proj_out"].weight(op)[:c, :c], operator))
        y = self.norms[op](y)
        if self.mode == "hws" and self.training and self.kl_weight != 0 and torch.is_grad_enabled():
            y = add_auxiliary_loss(y, self.kl(), self.kl_weight)
        return y

    def kl(self) -> Tensor:
        """The eq. (5) terms of this position's pools (0 outside ``hws`` mode)."""
        return position_kl(list(self.pools.values()))


class Candidate(nn.Module):
    """One block type of a layer position with its own weights: the attention (full width, or the first half of the
    channels in a multi-branch block), the residual norms and the two-layer FFN. The lightweight branch is the
    position's, shared, and passed in; a decoder candidate also gets the layer's encoder-decoder attention."""

    def __init__(self, block: str, embed_dim: int, qkv_dim: int, ffn_dim: int, plan: TransformerPlan,
                 cross: bool) -> None:
        super().__init__()
        self.attn_branch, self.conv_branch = branches(block)
        multi = self.attn_branch is not None and self.conv_branch is not None
        width, qkv = (embed_dim // 2, qkv_dim // 2) if multi else (embed_dim, qkv_dim)
        self.attn = ElasticAttention(width, width, qkv, plan.attention_dropout) if self.attn_branch else None
        self.norm_mix = ElasticLayerNorm(embed_dim)
        self.norm_cross = ElasticLayerNorm(embed_dim) if cross else None
        self.fc1 = ElasticLinear(embed_dim, ffn_dim)
        self.fc2 = ElasticLinear(ffn_dim, embed_dim)
        self.norm_ffn = ElasticLayerNorm(embed_dim)
        self.dropout, self.activation_dropout = plan.dropout, plan.activation_dropout

    def _drop(self, x: Tensor, p: float) -> Tensor:
        return F.dropout(x, p, self.training)

    def mix(self, x: Tensor, heads: int, branch: LightweightBranch | None, padding_mask: Tensor | None,
            causal: bool) -> Tensor:
        """The block's token mixing: attention, the lightweight branch, or both on the channel halves."""
        if self.attn is not None and self.conv_branch is not None:
            half = x.shape[-1] // 2
            a, c = x[..., :half], x[..., half:]
            return torch.cat([self.attn(a, a, heads, padding_mask, causal),
                              branch(c, self.conv_branch, padding_mask)], dim=-1)
        if self.attn is not None:
            return self.attn(x, x, heads, padding_mask, causal)
        return branch(x, self.conv_branch, padding_mask)

    def forward(self, x: Tensor, layer: LayerConfig, branch: LightweightBranch | None, padding_mask: Tensor | None,
                causal: bool = False, cross: ElasticAttention | None = None,
                memory: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.norm_mix(x + self._drop(self.mix(x, layer.heads, branch, padding_mask, causal), self.dropout))
        if cross is not None and memory is not None:
            kv, kv_mask = memory
            x = self.norm_cross(x + self._drop(cross(x, kv, layer.heads, kv_mask), self.dropout))
        h = self._drop(F.relu(self.fc1(x, layer.ffn_dim)), self.activation_dropout)
        return self.norm_ffn(x + self._drop(self.fc2(h, x.shape[-1]), self.dropout))


class HybridLayer(nn.Module):
    """One layer position: a :class:`Candidate` per block type, the lightweight branch their Conv/Shift/Add members
    share, and (decoder) the encoder-decoder attention."""

    def __init__(self, choices: LayerChoices, embed_dim: int, encoder_dim: int | None, plan: TransformerPlan,
                 mode: Mode, kl_weight: float, causal: bool, hws: HWSConfig | None = None) -> None:
        super().__init__()
        self.choices, self.causal = choices, causal
        cross = encoder_dim is not None
        ffn = max(choices.ffn_dims)
        self.candidates = nn.ModuleDict({b: Candidate(b, embed_dim, plan.qkv_dim, ffn, plan, cross)
                                         for b in choices.blocks})
        ops = tuple(op for op in CONV_FAMILY if any(branches(b)[1] == op for b in choices.blocks))
        self.branch = LightweightBranch(embed_dim, choices.kernel_size, ops, mode, causal, kl_weight, hws=hws) \
            if ops else None
        self.cross = ElasticAttention(embed_dim, encoder_dim, plan.qkv_dim, plan.attention_dropout) if cross else None

    def forward(self, x: Tensor, layer: LayerConfig, padding_mask: Tensor | None,
                memory: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if layer.op not in self.candidates:
            raise ValueError(f"op: {layer.op!r} is not a candidate here; candidates are {list(self.candidates)}")
        return self.candidates[layer.op](x, layer, self.branch, padding_mask, self.causal, self.cross, memory)


class SuperTransformer(nn.Module):
    """The encoder-decoder of a :class:`TransformerPlan`; :meth:`activate` picks the subnet the next forward
    passes run (see the module docstring)."""

    def __init__(self, plan: TransformerPlan, mode: Mode = "hws", kl_weight: float = 1.0,
                 hws: HWSConfig | None = None) -> None:
        super().__init__()
        self.plan, self.mode = plan, mode
        enc_dim, dec_dim = max(plan.encoder_embed_dims), max(plan.decoder_embed_dims)
        table = max(enc_dim, dec_dim) if plan.share_embeddings else enc_dim
        self.embed = ElasticEmbedding(plan.vocab_size, table, plan.padding_idx)
        self.decoder_embed = self.embed if plan.share_embeddings else ElasticEmbedding(plan.vocab_size, dec_dim,
                                                                                       plan.padding_idx)
        self.encoder_layers = nn.ModuleList([HybridLayer(c, enc_dim, None, plan, mode, kl_weight, False, hws)
                                             for c in plan.encoder])
        self.decoder_layers = nn.ModuleList([HybridLayer(c, dec_dim, enc_dim, plan, mode, kl_weight, True, hws)
                                             for c in plan.decoder])
        self.config = self.largest_config()

    def largest_config(self) -> TransformerConfig:
        """The subnet with every first block type and the largest dimensions (the dry-run default)."""
        def layer(c: LayerChoices) -> LayerConfig:
            return LayerConfig(c.blocks[0], max(c.heads), max(c.ffn_dims), min(c.attend))
        return TransformerConfig(max(self.plan.encoder_embed_dims), max(self.plan.decoder_embed_dims),
                                 tuple(layer(c) for c in self.plan.encoder),
                                 tuple(layer(c) for c in self.plan.decoder[:max(self.plan.decoder_depths)]))

    def activate(self, config: TransformerConfig) -> None:
        """Run ``config`` from the next forward pass on."""
        self.config = config

    def encode(self, src_tokens: Tensor) -> EncoderOut:
        """Every encoder layer's output for ``src_tokens`` ``(B, S)``."""
        cfg, pad = self.config, self.plan.padding_idx
        mask = src_tokens.eq(pad)
        x = self.embed(src_tokens, cfg.encoder_embed_dim)
        x = F.dropout(x + sinusoidal_positions(src_tokens, cfg.encoder_embed_dim, pad), self.plan.dropout,
                      self.training)
        outs = []
        for layer, layer_cfg in zip(self.encoder_layers, cfg.encoder):
            x = layer(x, layer_cfg, mask)
            outs.append(x)
        return EncoderOut(outs, mask)

    def decode(self, prev_output_tokens: Tensor, encoder_out: EncoderOut, features_only: bool = False) -> Tensor:
        """Logits ``(B, T, V)`` of the next tokens after ``prev_output_tokens`` ``(B, T)`` (teacher forcing), or
        with ``features_only`` the last decoder layer's output ``(B, T, C)`` (fairseq's name)."""
        cfg, pad = self.config, self.plan.padding_idx
        x = self.decoder_embed(prev_output_tokens, cfg.decoder_embed_dim)
        x = F.dropout(x + sinusoidal_positions(prev_output_tokens, cfg.decoder_embed_dim, pad), self.plan.dropout,
                      self.training)
        for layer, layer_cfg in zip(self.decoder_layers, cfg.decoder):
            attended = encoder_out.layers[-layer_cfg.attend:]
            memory = (torch.cat(attended, dim=1), encoder_out.padding_mask.repeat(1, len(attended)))
            x = layer(x, layer_cfg, None, memory)
        return x if features_only else self.decoder_embed.project(x)

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.decode(prev_output_tokens, self.encode(src_tokens))

    def kl(self) -> Tensor:
        """The eq. (5) terms of every layer position."""
        terms = [layer.branch.kl() for layer in (*self.encoder_layers, *self.decoder_layers)
                 if layer.branch is not None]
        return torch.stack(terms).sum() if terms else torch.zeros(())


def slice_into(target: nn.Module, source: nn.Module, weights: dict[str, Tensor] | None = None) -> None:
    """Copy into every parameter and buffer of ``target`` the front slice of ``source``'s tensor of the same name
    (HAT's sharing: a subnet's weights are the first rows/columns of the largest), or of ``weights[name]`` where
    given. A name ``target`` has and ``source`` lacks is an error."""
    state = dict(source.state_dict(keep_vars=False))
    state.update(weights or {})
    with torch.no_grad():
        for name, tensor in target.state_dict(keep_vars=True).items():
            if name not in state:
                raise KeyError(f"{name}: not in the supernet")
            full = state[name]
            tensor.copy_(full[tuple(slice(0, n) for n in tensor.shape)])


def pooled_weights(layer: HybridLayer, prefix: str, ops: Any) -> dict[str, Tensor]:
    """The tensors each of ``ops`` reads from ``layer``'s pools, under the names a ``none``-mode layer stores them
    (``<prefix>branch.pools.<key>.own.<op>``): the pool (Conv), the pool scaled for rounding (Shift: a ``none``-mode
    Shift rounds its own tensor), ``T(pool)`` (Add, ``hws``)."""
    out: dict[str, Tensor] = {}
    if layer.branch is None:
        return out
    for key, pool in layer.branch.pools.items():
        for op in ops:
            out[f"{prefix}branch.pools.{key}.own.{op}"] = pool.stored(op).detach()
    return out
