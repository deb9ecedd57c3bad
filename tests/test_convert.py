"""``convert_model``: turning the Conv/Linear layers of a model (timm or plain torch) into Add or Shift layers.

The stem and the classifier stay multiplicative by default (timm's ``pretrained_cfg`` ``first_conv`` and
``classifier``, else the first convolution and the last linear layer).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nni_shiftadd.ops import (AdderConv1d, AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear, convert_model,
                              default_exclusions, round_power_of_two)

timm = pytest.importorskip("timm")

ADD = {nn.Conv2d: AdderConv2d, nn.Linear: AdderLinear, nn.Conv1d: AdderConv1d}
SHIFT = {nn.Conv2d: ShiftConv2d, nn.Linear: ShiftLinear, nn.Conv1d: nn.Conv1d}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=10, in_chans=1, pretrained=False)


def _layers(model):
    """name -> module for every (original or converted) conv/linear layer."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))}


def _check_types(original, converted, mapping, kept):
    """Every layer of ``original`` is of the mapped type in ``converted``, except ``kept`` names (unchanged)."""
    before, after = _layers(original), _layers(converted)
    assert before.keys() == after.keys()
    changed = []
    for name, module in before.items():
        if name in kept:
            assert type(after[name]) is type(module), name
        else:
            assert type(after[name]) is mapping[type(module)], (name, type(after[name]))
            if mapping[type(module)] is not type(module):
                changed.append(name)
    assert converted.nni_shiftadd_converted == changed
    return changed


def test_default_exclusions_timm(resnet):
    assert default_exclusions(resnet) == ["conv1", "fc"]


def test_add_resnet18(resnet):
    m = convert_model(resnet, "add")
    changed = _check_types(resnet, m, ADD, kept={"conv1", "fc"})
    assert len(changed) == 19 and "layer2.0.downsample.0" in changed
    conv = m.get_submodule("layer3.0.conv1")
    ref = resnet.get_submodule("layer3.0.conv1")
    assert (conv.stride, conv.padding, conv.kernel_size, conv.bias) == (ref.stride, ref.padding, ref.kernel_size, None)
    m.eval()
    with torch.no_grad():
        y = m(torch.randn(2, 1, 28, 28))
    assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_shift_ps_resnet18(resnet):
    m = convert_model(resnet, "shift", variant="PS")
    _check_types(resnet, m, SHIFT, kept={"conv1", "fc"})
    shifted = [mod for mod in m.modules() if isinstance(mod, (ShiftConv2d, ShiftLinear))]
    assert len(shifted) == 19 and all(mod.variant == "PS" for mod in shifted)
    # PS derives sign and exponent from the copied float weights: the nearest power of two
    layer = m.get_submodule("layer1.0.conv1")
    w = resnet.get_submodule("layer1.0.conv1").weight.detach()
    torch.testing.assert_close(layer.quantized_weight().detach(), round_power_of_two(w))
    y = m(torch.randn(2, 1, 28, 28))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    y.sum().backward()
    assert layer.shift.grad is not None and layer.sign.grad is not None


def test_explicit_exclude_glob(resnet):
    m = convert_model(resnet, "add", exclude=("layer1*",))
    kept = {n for n in _layers(resnet) if n.startswith("layer1.")}
    assert len(kept) == 4
    _check_types(resnet, m, ADD, kept=kept)
    # explicit exclusions replace the automatic ones: stem and classifier are converted too
    assert isinstance(m.conv1, AdderConv2d) and isinstance(m.fc, AdderLinear)


def test_exclude_name_keeps_children(resnet):
    m = convert_model(resnet, "add", exclude=["layer2.0", "fc"])
    kept = {n for n in _layers(resnet) if n.startswith("layer2.0.")} | {"fc"}
    assert len(kept) == 4
    _check_types(resnet, m, ADD, kept=kept)


@pytest.mark.parametrize("exclude", [("layer9.conv1",), "nonexistent", ("fc", "layer1.0.conv3")])
def test_exclude_unknown_name_raises(resnet, exclude):
    bad = exclude if isinstance(exclude, str) else exclude[-1]
    with pytest.raises(ValueError, match=rf"exclude: '{bad}' names no module"):
        convert_model(resnet, "add", exclude=exclude)


def test_inplace_false_leaves_original_untouched(resnet):
    before = copy.deepcopy(resnet.state_dict())
    types = {n: type(m) for n, m in resnet.named_modules()}
    m = convert_model(resnet, "add", copy_weights=False)
    assert m is not resnet
    assert {n: type(x) for n, x in resnet.named_modules()} == types
    assert not hasattr(resnet, "nni_shiftadd_converted")
    after = resnet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_inplace_true_modifies_model():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    out = convert_model(model, "add", exclude=(), inplace=True)
    assert out is model and isinstance(model[0], AdderConv2d) and isinstance(model[4], AdderLinear)


def test_copy_weights(resnet):
    add = convert_model(resnet, "add", copy_weights=True)
    q = convert_model(resnet, "shift", copy_weights=True)
    for name in add.nni_shiftadd_converted:
        src = resnet.get_submodule(name).weight
        assert torch.equal(add.get_submodule(name).weight, src), name
        assert torch.equal(q.get_submodule(name).weight, src), name
        assert q.get_submodule(name).variant == "Q"


def test_copy_weights_false_reinitialises(resnet):
    add = convert_model(resnet, "add", copy_weights=False)
    w = torch.cat([add.get_submodule(n).weight.detach().flatten() for n in add.nni_shiftadd_converted])
    assert w.numel() > 10_000_000
    assert abs(w.mean().item()) < 0.01 and abs(w.std().item() - 1.0) < 0.01  # SPEC: N(0, 1)
    # kept layers keep their weights
    assert torch.equal(add.conv1.weight, resnet.conv1.weight) and torch.equal(add.fc.weight, resnet.fc.weight)
    first = add.get_submodule("layer1.0.conv1").weight
    assert not torch.equal(first, resnet.get_submodule("layer1.0.conv1").weight)


def _plain_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2, bias=False),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 8), nn.ReLU(), nn.Linear(8, 3))


def test_plain_sequential_uses_first_conv_and_last_linear():
    model = _plain_model()
    assert default_exclusions(model) == ["0", "6"]
    m = convert_model(model, "add")
    _check_types(model, m, ADD, kept={"0", "6"})
    assert m.nni_shiftadd_converted == ["2", "4"]
    # biases are copied along with the weights
    assert torch.equal(m[4].bias, model[4].bias) and torch.equal(m[4].weight, model[4].weight)
    assert m[2].bias is None
    y = m(torch.randn(2, 1, 7, 7))
    assert y.shape == (2, 3)
    s = convert_model(model, "shift")
    _check_types(model, s, SHIFT, kept={"0", "6"})
    assert s(torch.randn(2, 1, 7, 7)).shape == (2, 3)


def test_conv1d_add_only_and_options_forwarded():
    model = nn.Sequential(nn.Conv1d(4, 4, 3, padding=1, groups=4), nn.Conv1d(4, 8, 1), nn.Linear(5, 5))
    add = convert_model(model, "add", exclude=(), eta=0.1, adaptive_lr=False)
    _check_types(model, add, ADD, kept=set())
    assert all(mod.eta == 0.1 and not mod.adaptive_lr for mod in add if isinstance(mod, (AdderConv1d, AdderLinear)))
    shift = convert_model(model, "shift", exclude=())
    _check_types(model, shift, SHIFT, kept=set())  # shift leaves Conv1d as it is
    assert shift.nni_shiftadd_converted == ["2"]


def test_training_mode_is_preserved():
    model = _plain_model().eval()
    m = convert_model(model, "add", exclude=())
    assert all(not mod.training for mod in m.modules())


@pytest.mark.parametrize("to", ["mul", "Add", "conv"])
def test_unknown_target_raises(resnet, to):
    with pytest.raises(ValueError, match=rf"to: unknown value '{to}'"):
        convert_model(resnet, to)


def test_padding_mode_not_zeros_raises():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match=r"padding_mode: 'reflect'"):
        convert_model(model, "add", exclude=())
