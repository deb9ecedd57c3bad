"""Fake quantisation (nni_shiftadd.quant): accuracy at 8 bits, straight-through gradients, values on the grid,
the adder's shared grid, Shift weights left as powers of two, state_dict round trip, argument errors."""
from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn

from nni_shiftadd.ops import AdderConv2d, ShiftConv2d
from nni_shiftadd.quant import InputQuantizer, fake_quantize, float_state_to_quantized, quantized_layers


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        AdderConv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
        ShiftConv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def _calibrated(model: nn.Module, x: Tensor, steps: int = 20) -> nn.Module:
    """``model`` after ``steps`` training-mode forwards (BN and input ranges settle), in eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    return model.eval()


def _codes(values: Tensor, max_abs: Tensor, bits: int) -> Tensor:
    """``values`` in units of the grid step, checked to be whole numbers inside the symmetric code range."""
    qmax = 2 ** (bits - 1) - 1
    codes = values.detach() / (max_abs / qmax)
    assert torch.allclose(codes, codes.round(), atol=1e-3), "values off the grid"
    assert codes.abs().max() <= qmax + 1e-3
    return codes.round()


def test_eight_bits_stay_close_to_float_and_four_bits_do_not() -> None:
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    errors = {}
    with torch.no_grad():
        ref = _calibrated(_model(), x)(x)
        for bits in (8, 4):
            out = _calibrated(fake_quantize(_model(), bits), x)(x)
            errors[bits] = float((out - ref).norm() / ref.norm())
    assert errors[8] < 0.05, errors
    assert errors[4] > 3 * errors[8], errors  # the grid is really coarser


def test_every_conv_and_linear_gets_quantisers() -> None:
    model = fake_quantize(_model(), 8)
    assert sorted(quantized_layers(model)) == ["0", "3", "5", "8"]
    for name in ("0", "3", "8"):
        assert hasattr(model[int(name)], "parametrizations")
    assert not hasattr(model[5], "parametrizations")  # Shift weights are powers of two already


def test_straight_through_gradients() -> None:
    torch.manual_seed(1)
    layer = fake_quantize(nn.Linear(6, 4, bias=False), 8)
    x = torch.randn(5, 6, requires_grad=True)
    layer(x)  # training mode: sets the input range
    x = (x.detach() * 1.5).requires_grad_()  # some inputs now fall outside the running range
    g = torch.randn(5, 4)
    captured: dict[str, Tensor] = {}
    layer.register_forward_hook(lambda m, args, out: captured.update(xq=args[0]))
    layer.eval()
    (layer(x) * g).sum().backward()
    w, wq, xq = layer.parametrizations.weight.original, layer.weight.detach(), captured["xq"].detach()
    # weight: identity through the quantiser (its range is its own max-abs, so nothing is clipped)
    assert torch.allclose(w.grad, g.t() @ xq, atol=1e-5)
    # input: identity inside the clipping range, zero outside
    inside = x.detach().abs() <= layer.input_quant.running_max
    assert 0 < int(inside.sum()) < inside.numel()
    assert torch.allclose(x.grad, (g @ wq) * inside, atol=1e-5)


def test_weights_and_inputs_lie_on_the_grid() -> None:
    model = fake_quantize(_model(), 8)
    inputs: dict[int, Tensor] = {}
    for i in (0, 3, 5, 8):
        model[i].register_forward_hook(lambda m, args, out, i=i: inputs.__setitem__(i, args[0]))
    x = torch.randn(16, 3, 8, 8)
    _calibrated(model, x, steps=3)(x)
    conv, linear = model[0], model[8]
    for layer in (conv, linear):
        codes = _codes(layer.weight, layer.parametrizations.weight.original.abs().max(), 8)
        assert codes.abs().max() == 127  # the max-abs weight is the end of the grid
        _codes(inputs[[0, 8][layer is linear]], layer.input_quant.running_max, 8)
    _codes(inputs[5], model[5].input_quant.running_max, 8)


def test_adder_input_and_weight_share_one_grid() -> None:
    model = fake_quantize(_model(), 8)
    adder = model[3]
    seen: list[Tensor] = []
    adder.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    x = torch.randn(16, 3, 8, 8)
    _calibrated(model, x, steps=3)(x)
    common = torch.maximum(adder.parametrizations.weight.original.abs().max(), adder.input_quant.running_max)
    _codes(adder.weight, common, 8)
    _codes(seen[-1], common, 8)


def test_shift_weights_remain_powers_of_two() -> None:
    model = fake_quantize(_model(), 8)
    w = model[5].quantized_weight().detach()
    nonzero = w[w != 0].abs()
    assert torch.equal(torch.log2(nonzero), torch.log2(nonzero).round())


def test_running_range_is_an_ema_in_training_and_frozen_in_eval() -> None:
    layer = fake_quantize(nn.Linear(3, 2), 8)
    layer(torch.full((1, 3), 2.0))
    layer(torch.full((1, 3), 4.0))
    assert float(layer.input_quant.running_max) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)
    layer.eval()
    layer(torch.full((1, 3), 100.0))
    assert float(layer.input_quant.running_max) == pytest.approx(2.2)


def test_state_dict_round_trip() -> None:
    x = torch.randn(16, 3, 8, 8)
    trained = _calibrated(fake_quantize(_model(), 8), x, steps=3)
    state = trained.state_dict()
    assert "0.input_quant.running_max" in state and "0.parametrizations.weight.original" in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = fake_quantize(_model(), 8)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # nothing of the fresh model's own values may survive the load
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    fresh.eval()
    assert torch.equal(fresh(x), trained(x))


def test_exclude_keeps_layers_in_float() -> None:
    model = fake_quantize(_model(), 8, exclude=["0", "8"])
    assert sorted(quantized_layers(model)) == ["3", "5"]
    assert type(model[0]) is nn.Conv2d and type(model[8]) is nn.Linear


@pytest.mark.parametrize("bits", [1, 17, 0, 8.0])
def test_bad_bits_name_the_value(bits: object) -> None:
    with pytest.raises(ValueError, match=rf"bits: got {bits!r}; expected an int in \[2, 16\]"):
        fake_quantize(nn.Linear(2, 2), bits)  # type: ignore[arg-type]


def test_preparing_twice_is_an_error() -> None:
    model = fake_quantize(nn.Sequential(nn.Linear(2, 2)), 8)
    with pytest.raises(ValueError, match="layer '0': already fake-quantised"):
        fake_quantize(model, 8)
    with pytest.raises(ValueError, match="momentum"):
        InputQuantizer(8, momentum=0.0)


# --- functional call sites: the translation subnet (the lightweight branch's pooled weights, the tied embedding) ---

def _translation_subnet(block: str) -> nn.Module:
    from nni_shiftadd.space import load_space
    from nni_shiftadd.space.nlp import HybridNLPSpace

    spec = load_space("nlp_tiny")
    torch.manual_seed(0)
    return HybridNLPSpace(spec, 64, 1, "none").freeze(spec.canonical_arch(spec.baseline_arch(block)))


def _calibrated_twin(block: str, bits: int) -> tuple[nn.Module, nn.Module, tuple[Tensor, Tensor]]:
    """A float translation subnet, its ``bits``-bit twin holding the same weights (calibrated on a batch), and
    the batch."""
    net = _translation_subnet(block).eval()
    twin = fake_quantize(_translation_subnet(block), bits)
    twin.load_state_dict(float_state_to_quantized(twin, net.state_dict()))  # strict: every name accounted for
    batch = (torch.randint(2, 64, (4, 9), generator=torch.Generator().manual_seed(1)),
             torch.randint(2, 64, (4, 7), generator=torch.Generator().manual_seed(2)))
    twin.train()
    with torch.no_grad():
        for _ in range(3):
            twin(*batch)
    return net, twin.eval(), batch


def test_every_product_of_a_translation_subnet_is_quantised() -> None:
    model = fake_quantize(_translation_subnet("attn+add"), 8)
    sites = [name for name in quantized_layers(model) if ".operand_quant." in name]
    branches = [n for n, m in model.named_modules() if type(m).__name__ == "LightweightBranch"]
    assert len(branches) == 5  # three encoder and two decoder layers
    attentions = [n for n, m in model.named_modules() if type(m).__name__ == "ElasticAttention"]
    assert len(attentions) == 3 + 2 * 2  # self-attention everywhere, cross-attention in the decoder
    assert sorted(sites) == sorted(["embed.operand_quant.project"]
                                   + [f"{b}.operand_quant.{site}" for b in branches
                                      for site in ("proj_in", "depthwise", "proj_out")]
                                   + [f"{a}.operand_quant.{site}" for a in attentions for site in ("scores", "mix")])
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears and set(linears) <= set(quantized_layers(model))  # attention, FFN
    assert torch.nn.utils.parametrize.is_parametrized(model.embed, "weight") and "embed" in quantized_layers(model)


@pytest.mark.parametrize("block", ["attn+conv", "attn+shift", "attn+add"])
def test_translation_subnet_at_8_bits_stays_close_to_float_and_at_3_does_not(block: str) -> None:
    errors = {}
    for bits in (8, 3):
        net, twin, batch = _calibrated_twin(block, bits)
        with torch.no_grad():
            ref, out = net(*batch), twin(*batch)
        errors[bits] = float((out - ref).norm() / ref.norm())
    # freshly initialised weights: Add's -sum|x - w| outputs lie far from zero and need the widest grids
    assert errors[8] < (0.3 if block == "attn+add" else 0.05), errors
    assert errors[3] > 2 * errors[8], errors


def test_operands_of_a_call_site_lie_on_their_grids() -> None:
    from nni_shiftadd.quant import quantize_operands

    _, twin, batch = _calibrated_twin("attn+add", 8)
    branch = twin.encoder_layers[0].branch
    site = branch.operand_quant["depthwise"]
    x = torch.randn(2, 64, 11) * 5 - 80  # an adder's input: far from zero, all of one sign
    w = branch.pools["depthwise"].weight("add")[:64]
    xq, wq = quantize_operands(branch, "depthwise", x, w, "absdiff")
    step = torch.maximum(site.running_max - site.running_min, w.max() - w.min()) / 255
    for q in (xq, wq):  # one step for both (integer hardware subtracts their codes), each with its own offset
        gaps = (q.flatten().unique().diff() / step).detach()
        assert torch.allclose(gaps, gaps.round(), atol=1e-2) and gaps.min() > 0.5
    assert len((xq - xq.min()).div(step).round().unique()) <= 256
    shift_w = torch.tensor([0.5, -0.25, 2.0 ** -9])
    assert torch.equal(quantize_operands(branch, "proj_in", x[..., :3], shift_w, "bitshift")[1], shift_w)
    float_branch = _translation_subnet("attn+add").encoder_layers[0].branch
    assert quantize_operands(float_branch, "depthwise", x, w, "absdiff") == (x, w)  # not prepared: as they are


def test_the_depthwise_grid_spans_the_input_not_its_padding() -> None:
    _, twin, _ = _calibrated_twin("attn+add", 8)
    for layer in twin.encoder_layers:
        site = layer.branch.operand_quant["depthwise"]
        # the Add input projection's outputs, -sum |x - w|, all negative: zero (the padding) lies outside the grid
        assert float(site.running_max) < 0 and float(site.running_min) < float(site.running_max)


def test_the_output_projection_reads_the_embedding_table_on_its_one_grid() -> None:
    _, twin, _ = _calibrated_twin("attn", 8)
    x = torch.randn(2, 3, 64)
    xq, _ = twin.embed.operand_quant["project"](x)
    expected = torch.nn.functional.linear(xq, twin.embed.weight[:, :64])  # the parametrised (8-bit) table as it is
    assert torch.equal(twin.embed.project(x), expected)


def test_quantised_attention_computes_what_the_fused_kernel_does() -> None:
    from nni_shiftadd.nn.transformer import ElasticAttention

    torch.manual_seed(0)
    plain = ElasticAttention(32, 32, 32).eval()
    wide = fake_quantize(ElasticAttention(32, 32, 32), 16)
    wide.load_state_dict(float_state_to_quantized(wide, plain.state_dict()))
    x, pad = torch.randn(3, 6, 32), torch.zeros(3, 6, dtype=torch.bool)
    pad[0, 4:] = True
    wide.train()
    wide(x, x, 4, pad, causal=True)
    wide.eval()
    for causal in (False, True):
        ref, out = plain(x, x, 4, pad, causal=causal), wide(x, x, 4, pad, causal=causal)
        assert torch.allclose(out, ref, atol=2e-3), (out - ref).abs().max()


def test_float_state_renames_a_top_level_weight_and_keeps_a_quantised_states_gaps() -> None:
    plain, twin = nn.Linear(4, 3), fake_quantize(nn.Linear(4, 3), 8)
    twin.load_state_dict(float_state_to_quantized(twin, plain.state_dict()))  # "weight" -> the parametrised name
    assert torch.equal(twin.parametrizations.weight.original, plain.weight)
    quantised = dict(twin.state_dict())
    del quantised["input_quant.running_max"]
    with pytest.raises(RuntimeError, match="input_quant.running_max"):  # not silently reset to "never observed"
        twin.load_state_dict(float_state_to_quantized(twin, quantised))


def test_a_collapsed_range_does_not_wrap_the_zero_point_round() -> None:
    from nni_shiftadd.quant import fake_quantize_range

    out = fake_quantize_range(torch.tensor([-5.0, -5.0]), torch.tensor(-5.0), torch.tensor(0.0), 8)
    assert bool((out <= 0).all())  # int32 wrap-around would flip it positive
