"""Attention blocks of the ShiftAddNAS search spaces (SPEC, "Attn / Conv blocks").

- :class:`AttnBlock`: the CV Attn block on feature maps ``[N, C, H, W]``: an optional downsampling/projection,
  a depthwise-convolution position encoding (conditional positional encoding), pre-norm multi-head
  self-attention over the ``H * W`` tokens and a pre-norm 2-layer MLP, each with a residual.
- :class:`LightweightConv1d`: the NLP "Conv" op (Wu et al.'s lightweight convolution: depthwise, weights
  shared within a head, softmax-normalised over the kernel) and its Shift and Add counterparts.
- :class:`MultiBranchBlock`: the NLP blocks Attn, Attn+Conv, Attn+Shift and Attn+Add on ``[B, T, E]``.

Every product goes through a layer or function that :func:`nni_shiftadd.cost.trace_layers` models:
``nn.Linear``/``nn.Conv*d`` modules, the Adder/Shift layers (recorded with op ``"add"``/``"shift"``) and
``F.scaled_dot_product_attention`` (recorded as the two matmuls ``Q K^T`` and ``A V``).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from ..ops.factory import create_layer
from ..vocabulary import CONV_FAMILY, REFERENCE_BLOCK, block_type

__all__ = ["AttnBlock", "LightweightConv1d", "MultiBranchBlock", "MultiHeadSelfAttention", "attention_mask"]

Branch = str  # a convolution-family block type
BRANCHES: tuple[str, ...] = CONV_FAMILY


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


class _SoftmaxConv1d(nn.Conv1d):
    """A conv1d whose kernel is softmax-normalised over its taps (Wu et al.'s lightweight convolution).

    A ``nn.Conv1d`` subclass so that the cost tracer records it as a conv layer with parameters.
    """

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight.softmax(-1), self.bias)


#: The lightweight convolution of each operator kind over ``[B * C / heads, heads, T]``: its layer (block type,
#: heads, kernel size -> module), and whether that layer takes the tokens as a ``1 x T`` image (DeepShift's layer
#: is 2-D). A multiply is Wu et al.'s softmax-normalised kernel; the others are the block type's own layer.
_LIGHTWEIGHT: dict[str, tuple[Callable[[str, int, int], nn.Module], bool]] = {
    "multiply": (lambda op, h, k: _SoftmaxConv1d(h, h, k, groups=h, bias=False), False),
    "bitshift": (lambda op, h, k: create_layer(op, "conv2d", h, h, (1, k), groups=h, bias=False), True),
    "absdiff": (lambda op, h, k: create_layer(op, "conv1d", h, h, k, groups=h, bias=False), False),
}


class LightweightConv1d(nn.Module):
    """Depthwise 1-D convolution over the tokens, ``[B, T, C] -> [B, T, C]`` ('same' or causal padding).

    ``op="conv"``: lightweight convolution (Wu et al. 2019): weights shared by the channels of a head and
    softmax-normalised over the kernel. ``op="shift"``: power-of-two weights (:class:`ShiftConv2d`, DeepShift-Q
    with STE, on ``[., ., 1, T]``). ``op="add"``: :class:`AdderConv1d` (``-sum |x - w|``), followed by a
    LayerNorm over the channels because the adder output is ``-K * E|x - w|``-sized and all negative (the CV
    blocks use a BatchNorm after every adder layer; a per-token norm is what suits padded sequences).

    ``heads`` channels groups share one kernel; ``None`` gives every channel its own kernel (plain depthwise).
    Channel ``c`` belongs to head ``c % heads`` (fairseq's layout: the input is viewed as
    ``[B * C / heads, heads, T]`` and convolved with ``heads`` groups, so the shared weight is applied
    without being copied per channel).
    """

    def __init__(self, channels: int, kernel_size: int, op: Branch = REFERENCE_BLOCK, heads: int | None = None) -> None:
        super().__init__()
        if op not in BRANCHES:
            raise ValueError(f"op: unknown value {op!r}; expected one of {list(BRANCHES)}")
        if kernel_size < 1:
            raise ValueError(f"kernel_size: must be >= 1, got {kernel_size}")
        heads = channels if heads is None else heads
        _check_heads(channels, heads, "heads")
        self.channels, self.kernel_size, self.op, self.heads = channels, kernel_size, op, heads
        build, self._as_image = _LIGHTWEIGHT[block_type(op).operator]
        self.conv: nn.Module = build(op, heads, kernel_size)
        self.norm: nn.Module = nn.LayerNorm(channels) if block_type(op).needs_output_norm else nn.Identity()

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None) -> Tensor:
        """``causal`` pads ``K - 1`` zeros on the left only; ``key_padding_mask`` ``[B, T]`` (True at padding)
        zeroes the padded tokens first, so that they do not leak into their neighbours."""
        b, t, c = x.shape
        if c != self.channels:
            raise ValueError(f"input: expected {self.channels} channels in the last dim, got shape {tuple(x.shape)}")
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask.to(torch.bool).unsqueeze(-1), 0.0)
        k = self.kernel_size
        pad = (k - 1, 0) if causal else ((k - 1) // 2, k // 2)  # 'same': as torch's padding='same'
        h = F.pad(x.transpose(1, 2).reshape(b * c // self.heads, self.heads, t), pad)
        y = self.conv(h.unsqueeze(2)).squeeze(2) if self._as_image else self.conv(h)
        return self.norm(y.reshape(b, c, t).transpose(1, 2))

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, op={self.op!r}, heads={self.heads}"


class MultiBranchBlock(nn.Module):
    """NLP block on ``[B, T, E]``: Attn (``branch=None``) or Attn+Conv / Attn+Shift / Attn+Add, pre-norm.

    ``branch=None``: ``x + attn(LN(x))`` with ``heads`` heads, then ``x + ffn(LN(x))``.
    Otherwise ``LN(x)`` is split into two halves of ``E / 2`` channels: the first goes through multi-head
    self-attention with ``max(1, heads // 2)`` heads (no output projection of its own), the second through
    :class:`LightweightConv1d` (``op=branch``, ``kernel_size``); the two are concatenated along the channels
    and one ``Linear(E, E)`` projects the result (it is the attention's output projection and also mixes the
    branches), then ``x + dropout(.)`` and ``x + ffn(LN(x))``. The conv branch shares its kernel within
    ``conv_heads`` heads; the default is ``heads`` for ``"conv"`` (Wu et al. tie them to the attention heads)
    and one kernel per channel for ``"shift"``/``"add"``. The FFN is ``Linear(E, ffn_dim)``, ReLU,
    ``Linear(ffn_dim, E)`` with ``ffn_dim = 4 * E`` by default.
    """

    def __init__(self, embed_dim: int, heads: int, branch: Branch | None = None, kernel_size: int = 3,
                 ffn_dim: int | None = None, *, conv_heads: int | None = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0) -> None:
        super().__init__()
        if branch is not None and branch not in BRANCHES:
            raise ValueError(f"branch: unknown value {branch!r}; expected None or one of {list(BRANCHES)}")
        self.embed_dim, self.heads, self.branch, self.kernel_size = embed_dim, heads, branch, kernel_size
        self.norm1 = nn.LayerNorm(embed_dim)
        self.conv: LightweightConv1d | None = None
        if branch is None:
            self.attn = MultiHeadSelfAttention(embed_dim, heads, dropout=attn_dropout)
        else:
            if embed_dim % 2:
                raise ValueError(f"embed_dim: must be even to split into two branches, got {embed_dim}")
            half = embed_dim // 2
            self.attn = MultiHeadSelfAttention(half, max(1, heads // 2), proj=False, dropout=attn_dropout)
            if conv_heads is None and block_type(branch).operator == "multiply":  # Wu et al. tie them
                conv_heads = heads
            self.conv = LightweightConv1d(half, kernel_size, branch, conv_heads)
            self.proj = nn.Linear(embed_dim, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(embed_dim)
        ffn_dim = 4 * embed_dim if ffn_dim is None else ffn_dim
        self.ffn = Mlp(embed_dim, ffn_dim, act_layer=nn.ReLU, drop=dropout)

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        """``causal`` (decoder self-attention) also makes the conv branch causal. Masks follow
        :class:`torch.nn.MultiheadAttention` (True = padding / not allowed); ``attn_mask`` is for the attention
        only."""
        h = self.norm1(x)
        masks = dict(causal=causal, key_padding_mask=key_padding_mask)
        if self.conv is None:
            h = self.attn(h, attn_mask=attn_mask, **masks)
        else:
            a, c = h.chunk(2, dim=-1)
            h = self.proj(torch.cat([self.attn(a, attn_mask=attn_mask, **masks), self.conv(c, **masks)], dim=-1))
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.norm2(x)))
