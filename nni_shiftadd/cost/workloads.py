"""Reference workloads for the cost models, written as plain PyTorch so that tracing sees every product.

:func:`transformer_big` is the NLP anchor of SPEC ("Eyeriss cost model"): Transformer-big profiled as a
30-token sentence, every Linear and the two attention matmuls per head counted, with HAT's fixed q/k/v
projection width of 512 (1024->512 Q/K/V, 512->1024 output projection); about 4.17 G MACs for 6+6 layers.
Embeddings and the vocabulary projection are not part of the workload.

:func:`resnet50_v1` is the vision anchor of Table 4: the original ResNet-50 (about 3.86 G MACs at 224x224).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["TransformerBig", "resnet50_v1", "transformer_big"]


class _Attention(nn.Module):
    """Multi-head attention with explicit Q/K/V/out Linears and ``torch.matmul`` for ``Q K^T`` and ``A V``."""

    def __init__(self, embed_dim: int, qkv_dim: int, heads: int) -> None:
        super().__init__()
        if qkv_dim % heads:
            raise ValueError(f"heads: {heads} must divide qkv_dim={qkv_dim}")
        self.heads, self.head_dim = heads, qkv_dim // heads
        self.q, self.k, self.v = (nn.Linear(embed_dim, qkv_dim) for _ in range(3))
        self.out = nn.Linear(qkv_dim, embed_dim)

    def forward(self, x: Tensor, memory: Tensor | None = None, causal: bool = False) -> Tensor:
        kv = x if memory is None else memory
        (b, t, _), s = x.shape, kv.shape[1]
        q = self.q(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(kv).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(kv).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.head_dim ** -0.5
        if causal:
            scores = scores.masked_fill(torch.ones(t, s, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
        y = torch.matmul(scores.softmax(dim=-1), v)
        return self.out(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class _FFN(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(embed_dim, ffn_dim), nn.Linear(ffn_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class _EncoderLayer(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int, heads: int, qkv_dim: int) -> None:
        super().__init__()
        self.self_attn, self.norm1 = _Attention(embed_dim, qkv_dim, heads), nn.LayerNorm(embed_dim)
        self.ffn, self.norm2 = _FFN(embed_dim, ffn_dim), nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.ffn(x))


class _DecoderLayer(nn.Module):
    def __init__(self, embed_dim: int, ffn_dim: int, heads: int, qkv_dim: int) -> None:
        super().__init__()
        self.self_attn, self.norm1 = _Attention(embed_dim, qkv_dim, heads), nn.LayerNorm(embed_dim)
        self.cross_attn, self.norm2 = _Attention(embed_dim, qkv_dim, heads), nn.LayerNorm(embed_dim)
        self.ffn, self.norm3 = _FFN(embed_dim, ffn_dim), nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        x = self.norm1(x + self.self_attn(x, causal=True))
        x = self.norm2(x + self.cross_attn(x, memory))
        return self.norm3(x + self.ffn(x))


class TransformerBig(nn.Module):
    """Encoder-decoder Transformer on embedded inputs: ``forward(src [B, S, E], tgt [B, T, E]) -> [B, T, E]``."""

    def __init__(self, encoder_layers: int = 6, decoder_layers: int = 6, embed_dim: int = 1024,
                 ffn_dim: int = 4096, heads: int = 16, qkv_dim: int = 512) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(_EncoderLayer(embed_dim, ffn_dim, heads, qkv_dim)
                                     for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(_DecoderLayer(embed_dim, ffn_dim, heads, qkv_dim)
                                     for _ in range(decoder_layers))

    def forward(self, src: Tensor, tgt: Tensor) -> Tensor:
        for layer in self.encoder:
            src = layer(src)
        for layer in self.decoder:
            tgt = layer(tgt, src)
        return tgt


def transformer_big(tokens: int = 30, *, encoder_layers: int = 6, decoder_layers: int = 6, embed_dim: int = 1024,
                    ffn_dim: int = 4096, heads: int = 16, qkv_dim: int = 512,
                    ) -> tuple[TransformerBig, tuple[Tensor, Tensor]]:
    """Transformer-big as the paper's hardware numbers profile it (SPEC, "Eyeriss cost model").

    Returns the model and example inputs ``(src, tgt)``: batch 1, ``tokens`` source and target tokens,
    already embedded. The defaults (6+6 layers, embed 1024, FFN 4096, 16 heads, q/k/v width 512, 30 tokens)
    give about 4.17 G MACs; the weights are randomly initialised, only the shapes matter.
    """
    model = TransformerBig(encoder_layers, decoder_layers, embed_dim, ffn_dim, heads, qkv_dim).eval()
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(1, tokens, embed_dim, generator=gen)
    tgt = torch.randn(1, tokens, embed_dim, generator=gen)
    return model, (src, tgt)


def resnet50_v1(**kwargs: Any) -> nn.Module:
    """Original ResNet-50 (v1): downsampling bottlenecks stride in the first 1x1 conv, not in the 3x3 (v1.5).

    Built from torchvision's ``resnet50`` (which is v1.5, about 4.09 G MACs) by moving the stride; ``kwargs`` go
    to ``torchvision.models.resnet50`` (e.g. ``num_classes``). Randomly initialised.
    """
    import torchvision

    model = torchvision.models.resnet50(weights=None, **kwargs)
    for layer in (model.layer2, model.layer3, model.layer4):
        block = layer[0]
        block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
    return model
