"""Elastic layers with HAT's weight-sharing semantics: every layer is allocated at its largest size and a subnet uses
the front slice of it (the first ``out`` rows and the first ``in`` columns of a weight, the first ``d`` entries of a
norm's scale and shift, the first ``d`` columns of an embedding table). The input's last dimension says how many
input columns are in use; the output size is an argument.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..quant import quantize_operands


class ElasticLinear(nn.Linear):
    """``nn.Linear`` whose forward uses ``weight[:out_features, :x.shape[-1]]`` (and ``bias[:out_features]``)."""

    def forward(self, x: Tensor, out_features: int | None = None) -> Tensor:  # type: ignore[override]
        out = self.out_features if out_features is None else out_features
        bias = None if self.bias is None else self.bias[:out]
        return F.linear(x, self.weight[:out, :x.shape[-1]], bias)


class ElasticLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension of the input, with the front slice of its scale and shift."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        d = x.shape[-1]
        return F.layer_norm(x, (d,), self.weight[:d], self.bias[:d], self.eps)


class ElasticEmbedding(nn.Embedding):
    """A token embedding whose forward returns the first ``dim`` columns, scaled by ``sqrt(dim)`` (fairseq's
    Transformer); ``project`` is the tied output projection onto the vocabulary (a call site that
    :func:`~nni_shiftadd.quant.fake_quantize` quantises, ``quant_sites``)."""

    quant_sites = ("project",)

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        nn.init.normal_(self.weight, 0.0, embedding_dim ** -0.5)
        with torch.no_grad():
            self.weight[padding_idx].zero_()

    def forward(self, tokens: Tensor, dim: int | None = None) -> Tensor:  # type: ignore[override]
        dim = self.embedding_dim if dim is None else dim
        return F.embedding(tokens, self.weight[:, :dim], self.padding_idx) * math.sqrt(dim)

    def project(self, x: Tensor) -> Tensor:
        """Logits of ``x`` (last dimension ``d``) against the first ``d`` columns of the table."""
        x, _ = quantize_operands(self, "project", x)  # the table is on its grid already (one table in hardware)
        return F.linear(x, self.weight[:, :x.shape[-1]])


def sinusoidal_positions(tokens: Tensor, dim: int, padding_idx: int) -> Tensor:
    """Sinusoidal position embeddings of shape ``tokens.shape + (dim,)``; positions count non-padding tokens from
    1 (so left- and right-padded batches agree, as fairseq's ``make_positions``), padding gets zeros."""
    mask = tokens.ne(padding_idx)
    positions = torch.cumsum(mask, dim=1) * mask
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=tokens.device, dtype=torch.float32) * -scale)
    angles = positions.unsqueeze(-1).float() * freqs
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table * mask.unsqueeze(-1)
