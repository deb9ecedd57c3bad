"""Attention blocks against SPEC ("Attn / Conv blocks"): the CV Attn block (depthwise-conv position encoding,
MHSA, 2-layer MLP, residuals), the NLP lightweight convolution and its Shift/Add forms, and the NLP multi-branch
blocks (attention on one half of the embedding, Conv/Shift/Add on the other).
"""
from __future__ import annotations

import pytest
import torch

from nni_shiftadd.cost import trace_layers
from nni_shiftadd.nn.attention import AttnBlock, LightweightConv1d, MultiBranchBlock, attention_mask
from nni_shiftadd.ops import AdderConv1d, ShiftConv2d

BRANCHES = [None, "conv", "shift", "add"]


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
# Lightweight convolution (NLP Conv / Shift / Add op)
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["conv", "shift", "add"])
@pytest.mark.parametrize("k", [3, 7, 31, 4])
def test_lightweight_conv_same_length(op: str, k: int) -> None:
    conv = LightweightConv1d(16, k, op)
    for t in (1, 5, 40):
        x = torch.randn(2, t, 16)
        assert conv(x).shape == (2, t, 16)
        assert conv(x, causal=True).shape == (2, t, 16)


def test_lightweight_conv_ops() -> None:
    conv = LightweightConv1d(16, 7, "conv", heads=4)
    assert conv.conv.weight.shape == (4, 1, 7)
    # softmax-normalised kernel: a constant input stays constant away from the borders
    y = conv(torch.ones(1, 20, 16))
    torch.testing.assert_close(y[:, 3:-3], torch.ones(1, 14, 16))
    # channel c shares the kernel of head c % heads
    x = torch.zeros(1, 9, 16)
    x[0, 4] = 1.0
    y = conv(x)
    torch.testing.assert_close(y[0, :, 0], y[0, :, 4])
    torch.testing.assert_close(y[0, :, 1], y[0, :, 13])

    add = LightweightConv1d(16, 7, "add")
    assert isinstance(add.conv, AdderConv1d) and add.conv.groups == 16 and add.conv.weight.shape == (16, 1, 7)

    shift = LightweightConv1d(16, 7, "shift")
    assert isinstance(shift.conv, ShiftConv2d) and shift.conv.groups == 16
    q = shift.conv.quantized_weight()
    nz = q[q != 0]
    assert nz.numel() > 0
    e = torch.log2(nz.abs())
    assert torch.equal(e, e.round()) and e.max() <= 0
    with pytest.raises(ValueError):
        LightweightConv1d(16, 3, "mult")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LightweightConv1d(16, 3, "conv", heads=3)


@pytest.mark.parametrize("op", ["conv", "shift", "add"])
def test_lightweight_conv_gradients_and_padding_mask(op: str) -> None:
    conv = LightweightConv1d(8, 3, op, heads=2 if op == "conv" else None)
    x = torch.randn(2, 6, 8, requires_grad=True)
    conv(x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in conv.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[:, 4:] = True
    with torch.no_grad():
        x2 = x.detach().clone()
        x2[:, 4:] = 100.0  # padded tokens must not reach their neighbours
        torch.testing.assert_close(conv(x.detach(), key_padding_mask=pad)[:, :4],
                                   conv(x2, key_padding_mask=pad)[:, :4])


# --------------------------------------------------------------------------------------------------------------
# NLP multi-branch blocks
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("branch", BRANCHES)
def test_multi_branch_shapes_and_gradients(branch: str | None) -> None:
    block = MultiBranchBlock(32, 4, branch, kernel_size=7, ffn_dim=48)
    for b, t in ((1, 1), (3, 9)):
        assert block(torch.randn(b, t, 32)).shape == (b, t, 32)
    x = torch.randn(2, 9, 32, requires_grad=True)
    block(x).square().mean().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if branch is None:
        assert block.conv is None and block.attn.heads == 4
    else:
        assert block.attn.heads == 2 and block.conv.channels == 16 and block.conv.op == branch
        assert block.conv.heads == (4 if branch == "conv" else 16)
    assert MultiBranchBlock(32, 1, branch).attn.heads == 1


@pytest.mark.parametrize("branch", BRANCHES)
def test_multi_branch_causal(branch: str | None) -> None:
    block = MultiBranchBlock(32, 4, branch, kernel_size=5).eval()
    x = torch.randn(2, 12, 32)
    t0 = 6
    x2 = x.clone()
    x2[:, t0] += torch.randn(2, 32)
    with torch.no_grad():
        y, y2 = block(x, causal=True), block(x2, causal=True)
        torch.testing.assert_close(y[:, :t0], y2[:, :t0], atol=0, rtol=0)
        assert (y[:, t0:] - y2[:, t0:]).abs().amax(-1).min() > 0
        # not causal: earlier tokens see the change
        assert not torch.allclose(block(x)[:, :t0], block(x2)[:, :t0])


def test_multi_branch_masks() -> None:
    block = MultiBranchBlock(32, 4, "conv").eval()
    x = torch.randn(2, 8, 32)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, 5:] = True
    x2 = x.clone()
    x2[1, 5:] = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(block(x, key_padding_mask=pad)[:, :5], block(x2, key_padding_mask=pad)[:, :5])
        # a boolean causal attn_mask plus causal=True agree with causal=True alone
        tri = torch.ones(8, 8, dtype=torch.bool).triu(1)
        torch.testing.assert_close(block(x, causal=True, attn_mask=tri), block(x, causal=True))
        # a float mask of zeros changes nothing
        torch.testing.assert_close(block(x, attn_mask=torch.zeros(8, 8)), block(x))
    m = attention_mask(2, 3, causal=True, key_padding_mask=torch.tensor([[0, 0, 1], [0, 0, 0]], dtype=torch.bool))
    assert m.shape == (2, 1, 3, 3) and m.dtype == torch.bool
    assert not m[0, 0, 2, 2] and m[1, 0, 2, 2] and not m[1, 0, 0, 1]


@pytest.mark.parametrize("branch,op,layer", [(None, None, None), ("conv", "multiply", "_SoftmaxConv1d"),
                                             ("shift", "bitshift", "ShiftConv2d"), ("add", "absdiff", "AdderConv1d")])
def test_multi_branch_trace(branch: str | None, op: str | None, layer: str | None) -> None:
    e, t, heads, k = 64, 10, 4, 7
    tr = trace_layers(MultiBranchBlock(e, heads, branch, kernel_size=k), torch.randn(1, t, e))
    by_name = {r.name: r for r in tr}
    qk, av = by_name["attn.sdpa#0.qk"], by_name["attn.sdpa#0.av"]
    attn_heads, attn_dim = (heads, e) if branch is None else (heads // 2, e // 2)
    assert qk.shape.repeat == attn_heads and (qk.shape.n, qk.shape.c, qk.shape.m) == (t, attn_dim // attn_heads, t)
    assert av.shape.repeat == attn_heads and (av.shape.n, av.shape.c, av.shape.m) == (t, t, attn_dim // attn_heads)
    if branch is None:
        assert "conv.conv" not in by_name
        return
    conv = by_name["conv.conv"]
    assert conv.type == layer and conv.shape.op == op and conv.shape.kind == "conv"
    assert conv.shape.macs == t * (e // 2) * k
    assert {"attn.qkv", "proj", "ffn.fc1", "ffn.fc2"} <= set(by_name)


def test_blocks_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    block = AttnBlock(32, 64, 2).cuda()
    assert block(torch.randn(2, 32, 7, 7, device="cuda")).shape == (2, 64, 4, 4)
    for branch in BRANCHES:
        m = MultiBranchBlock(32, 4, branch, kernel_size=7).cuda()
        x = torch.randn(2, 9, 32, device="cuda", requires_grad=True)
        y = m(x, causal=True)
        y.sum().backward()
        assert y.shape == x.shape and torch.isfinite(x.grad).all()
