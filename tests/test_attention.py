"""Attention blocks against SPEC ("Attn / Conv blocks"): the CV Attn block (depthwise-conv position encoding,
MHSA, 2-layer MLP, residuals) and the masks of its self-attention. The translation blocks are the
SuperTransformer's (tests/test_space_nlp.py)."""
from __future__ import annotations

import pytest
import torch

from nni_shiftadd.cost import trace_layers
from nni_shiftadd.nn.attention import AttnBlock, MultiHeadSelfAttention, attention_mask


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------------------
# CV Attn block
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cin,cout,stride,hw,out_hw", [
    (32, 32, 1, (7, 7), (7, 7)),
    (32, 64, 1, (7, 7), (7, 7)),
    (32, 64, 2, (14, 14), (7, 7)),
    (32, 32, 2, (7, 7), (4, 4)),
    (32, 32, 1, (1, 1), (1, 1)),
    (32, 64, 2, (1, 1), (1, 1)),
    (32, 32, 2, (5, 3), (3, 2)),
    (16, 32, 1, (3, 5), (3, 5)),
])
def test_attn_block_shapes(cin: int, cout: int, stride: int, hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    block = AttnBlock(cin, cout, stride)
    assert block(torch.randn(3, cin, *hw)).shape == (3, cout, *out_hw)
    block.eval()  # a training-mode BatchNorm refuses one value per channel (batch 1 at 1x1)
    assert block(torch.randn(1, cin, *hw)).shape == (1, cout, *out_hw)


def test_attn_block_heads_and_dtype() -> None:
    assert AttnBlock(64, 64).heads == 2
    assert AttnBlock(16, 16).heads == 1
    assert AttnBlock(64, 64, heads=4).heads == 4
    with pytest.raises(ValueError):
        AttnBlock(64, 64, heads=3)
    with pytest.raises(ValueError):
        AttnBlock(64, 64, stride=3)
    block = AttnBlock(16, 32, 2, drop_path=0.1).double()
    y = block(torch.randn(2, 16, 6, 6, dtype=torch.float64))
    assert y.dtype == torch.float64 and y.shape == (2, 32, 3, 3) and torch.isfinite(y).all()


@pytest.mark.parametrize("cin,cout,stride", [(32, 32, 1), (16, 32, 2)])
def test_attn_block_gradients_reach_every_parameter(cin: int, cout: int, stride: int) -> None:
    block = AttnBlock(cin, cout, stride, head_dim=8)
    x = torch.randn(2, cin, 5, 5, requires_grad=True)
    block(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _permute_pixels(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.flatten(2)[:, :, perm].view(n, c, h, w)


@pytest.mark.parametrize("cin", [32, 16])
def test_attn_block_position_awareness_comes_from_the_pos_encoding(cin: int) -> None:
    block = AttnBlock(cin, 32, 1, head_dim=8).eval()  # eval: BN of the projection is per pixel
    x = torch.randn(2, cin, 5, 5)
    perm = torch.randperm(25)
    with torch.no_grad():
        y, y_perm = block(x), block(_permute_pixels(x, perm))
        assert not torch.allclose(y_perm, _permute_pixels(y, perm), atol=1e-3)
        block.pos.weight.zero_()
        block.pos.bias.zero_()
        y, y_perm = block(x), block(_permute_pixels(x, perm))
        torch.testing.assert_close(y_perm, _permute_pixels(y, perm), atol=1e-5, rtol=1e-5)


def test_attn_block_trace_records_attention_matmuls() -> None:
    tr = trace_layers(AttnBlock(32, 64, 2), torch.randn(1, 32, 14, 14))
    by_name = {r.name: r for r in tr}
    qk, av = by_name["attn.sdpa#0.qk"], by_name["attn.sdpa#0.av"]
    tokens, heads = 49, 2
    assert (qk.shape.n, qk.shape.c, qk.shape.m, qk.shape.repeat) == (tokens, 32, tokens, heads)
    assert (av.shape.n, av.shape.c, av.shape.m, av.shape.repeat) == (tokens, tokens, 32, heads)
    assert {"downsample.1", "pos", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"} <= set(by_name)
    assert by_name["pos"].shape.groups == 64


# --------------------------------------------------------------------------------------------------------------
# Self-attention masks
# --------------------------------------------------------------------------------------------------------------

def test_self_attention_masks() -> None:
    attn = MultiHeadSelfAttention(32, 4).eval()
    x = torch.randn(2, 8, 32)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, 5:] = True
    x2 = x.clone()
    x2[1, 5:] = torch.randn(3, 32)
    with torch.no_grad():
        # padded keys do not reach the other tokens
        torch.testing.assert_close(attn(x, key_padding_mask=pad)[:, :5], attn(x2, key_padding_mask=pad)[:, :5])
        # a token sees no later one under causal=True
        later = x.clone()
        later[:, 6:] = torch.randn(2, 2, 32)
        torch.testing.assert_close(attn(x, causal=True)[:, :6], attn(later, causal=True)[:, :6])
        # a boolean causal attn_mask plus causal=True agree with causal=True alone
        tri = torch.ones(8, 8, dtype=torch.bool).triu(1)
        torch.testing.assert_close(attn(x, causal=True, attn_mask=tri), attn(x, causal=True))
        # a float mask of zeros changes nothing
        torch.testing.assert_close(attn(x, attn_mask=torch.zeros(8, 8)), attn(x))
    m = attention_mask(2, 3, causal=True, key_padding_mask=torch.tensor([[0, 0, 1], [0, 0, 0]], dtype=torch.bool))
    assert m.shape == (2, 1, 3, 3) and m.dtype == torch.bool
    assert not m[0, 0, 2, 2] and m[1, 0, 2, 2] and not m[1, 0, 0, 1]


def test_blocks_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    block = AttnBlock(32, 64, 2).cuda()
    assert block(torch.randn(2, 32, 7, 7, device="cuda")).shape == (2, 64, 4, 4)
    attn = MultiHeadSelfAttention(32, 4).cuda()
    x = torch.randn(2, 9, 32, device="cuda", requires_grad=True)
    y = attn(x, causal=True)
    y.sum().backward()
    assert y.shape == x.shape and torch.isfinite(x.grad).all()
