"""Attention blocks of the ShiftAddNAS search spaces (SPEC, "Attn / Conv blocks").

- :class:`AttnBlock`: the CV Attn block on feature maps ``[N, C, H, W]``: an optional downsampling/projection,
  a depthwise-convolution position encoding (conditional positional encoding), pre-norm multi-head
  self-attention over the ``H * W`` tokens and a pre-norm 2-layer MLP, each with a residual.

The translation space's blocks (Attn, Attn+Conv/Shift/Add and the lightweight branches) are the SuperTransformer's,
elastic and weight-shared, in :mod:`nni_shiftadd.nn.transformer`.

Every product goes through a layer or function that :func:`nni_shiftadd.cost.trace_layers` models:
``nn.Linear``/``nn.Conv*d`` modules and ``F.scaled_dot_product_attention`` (recorded as the two matmuls ``Q K^T`` and ``A V``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn


__all__ = ["AttnBlock", "MultiHeadSelfAttention", "attention_mask"]


def _check_heads(dim: int, heads: int, what: str) -> None:
    if heads < 1 or dim % heads:
        raise ValueError(f"{what}: {heads} heads must be >= 1 and divide the dimension {dim}")


def attention_mask(batch: int, length: int, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                   attn_mask: Tensor | None = None, dtype: torch.dtype = torch.float32,
                   device: torch.device | None = None) -> Tensor | None:
    """One mask for :func:`F.scaled_dot_product_attention` (``[B, 1, T, T]`` or ``[T, T]``), or ``None``.

    Conventions of :class:`torch.nn.MultiheadAttention`: ``key_padding_mask`` ``[B, T]`` is True at padding;
    a boolean ``attn_mask`` ``[T, T]`` is True where attending is *not* allowed, a float one is added to
    the scores. ``causal`` forbids attending to later positions.
    """
    blocked: Tensor | None = None
    if causal:
        blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        blocked = attn_mask if blocked is None else blocked | attn_mask
        attn_mask = None
    if key_padding_mask is not None:
        kpm = key_padding_mask.to(torch.bool).view(batch, 1, 1, length)
        blocked = kpm if blocked is None else blocked | kpm
    if attn_mask is None:
        return None if blocked is None else ~blocked  # SDPA's boolean masks are True where attending is allowed
    mask = attn_mask.to(dtype)
    return mask if blocked is None else mask.masked_fill(blocked, float("-inf"))


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention on ``[B, T, dim]`` through ``F.scaled_dot_product_attention``.

    ``proj=False`` leaves out the output projection (the NLP multi-branch block projects the concatenation
    of its two branches instead).
    """

    def __init__(self, dim: int, heads: int, *, proj: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        _check_heads(dim, heads, "heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim) if proj else nn.Identity()

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if key_padding_mask is not None or attn_mask is not None:
            mask = attention_mask(b, t, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                  dtype=x.dtype, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class AttnBlock(nn.Module):
    """CV Attn block: ``[N, C_in, H, W] -> [N, C_out, ceil(H / stride), ceil(W / stride)]``.

    Steps: (1) if ``stride == 2`` or ``in_channels != out_channels``, a projection ``AvgPool2d(stride)`` (ceil
    mode, averaging only the valid pixels of a partial window) -> 1x1 conv -> BatchNorm; averaging before the
    1x1 conv keeps every pixel's information, where a strided 1x1 conv would drop three quarters of them, and
    the output size ``ceil(H / 2)`` matches a 3x3/stride-2/pad-1 conv of the other blocks. (2) ``x + pos(x)``
    with ``pos`` a 3x3 depthwise conv (conditional positional encoding, the only source of position
    information). (3) ``x + attn(LN(x))`` over the ``H * W`` tokens. (4) ``x + mlp(LN(x))``. Without
    step (2) the block is permutation-equivariant over the pixels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, heads: int | None = None,
                 head_dim: int = 32, mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride: expected 1 or 2, got {stride}")
        heads = max(1, out_channels // head_dim) if heads is None else heads
        _check_heads(out_channels, heads, "heads")
        self.in_channels, self.out_channels, self.stride, self.heads = in_channels, out_channels, stride, heads
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            pool = (nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1
                    else nn.Identity())
            self.downsample = nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                            nn.BatchNorm2d(out_channels))
        self.pos = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.norm1 = nn.LayerNorm(out_channels)
        self.attn = MultiHeadSelfAttention(out_channels, heads)
        self.norm2 = nn.LayerNorm(out_channels)
        self.mlp = Mlp(out_channels, int(out_channels * mlp_ratio), act_layer=nn.GELU)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        x = x + self.pos(x)
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [N, H*W, C]
        t = t + self.drop_path(self.attn(self.norm1(t)))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(n, c, h, w)
