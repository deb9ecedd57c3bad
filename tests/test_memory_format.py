"""Channels-last (NHWC) training (:mod:`nni_shiftadd.nn.memory_format`): a network computes in it what it computes in
NCHW, for every block type of the image space and for the supernet in each sharing mode, forward and backward."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nni_shiftadd.nn import channels_last, channels_last_batch
from nni_shiftadd.space import baseline_arch, load_space, random_arch
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.tasks.retrain import build_subnet

SPEC = load_space("cv_small")


def _loss_and_grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    net.zero_grad(set_to_none=True)
    logits = net(x)
    F.cross_entropy(logits, y).backward()
    return logits.detach(), {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def _same(a: tuple[torch.Tensor, dict], b: tuple[torch.Tensor, dict]) -> None:
    torch.testing.assert_close(b[0], a[0], rtol=1e-4, atol=1e-4)
    assert b[1].keys() == a[1].keys() and a[1]
    for name in a[1]:
        torch.testing.assert_close(b[1][name], a[1][name], rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("arch", ["conv", "shift", "add", "attn", "mixed"])
def test_a_subnet_computes_the_same_in_channels_last(arch: str) -> None:
    sample = random_arch(SPEC, 3) if arch == "mixed" else baseline_arch(SPEC, arch)
    torch.manual_seed(0)
    net = build_subnet(SPEC, sample).train()
    twin = copy.deepcopy(net)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    reference = _loss_and_grads(net, x, y)
    channels_last(twin)
    convs = [p for p in twin.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    _same(reference, _loss_and_grads(twin, channels_last_batch(x), y))


@pytest.mark.parametrize("mode", ["none", "naive", "hws"])
def test_the_supernet_computes_the_same_in_channels_last(mode: str) -> None:
    torch.manual_seed(0)
    net = HybridCVSpace(SPEC, mode).train()
    twin = channels_last(copy.deepcopy(net))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for seed in range(3):
        sample = random_arch(SPEC, seed)
        net.activate(sample), twin.activate(sample)
        _same(_loss_and_grads(net, x, y), _loss_and_grads(twin, channels_last_batch(x), y))


def test_a_batch_of_colour_images_is_copied_once_and_other_tensors_pass() -> None:
    rgb = torch.randn(2, 3, 4, 4)
    out = channels_last_batch(rgb)
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, rgb)
    assert channels_last_batch(out) is out
    tokens = torch.randn(2, 5, 8)
    assert channels_last_batch(tokens) is tokens
