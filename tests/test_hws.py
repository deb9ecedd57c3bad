"""Heterogeneous weight sharing: the transform kernel T (eq. 6), the KL terms (eq. 5), pools in the three modes,
the hybrid block, its NNI mutable and the one-shot supernet module."""
from __future__ import annotations

import pytest
import torch
from nni.mutable import SampleValidationError
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from nni_shiftadd.hws import SharedConvWeight, TransformKernel, add_auxiliary_loss, gaussian_kl, laplace_kl
from nni_shiftadd.nn.hybrid import HybridBlock, HybridChoice, HybridSuperNet, oneshot_hooks
from nni_shiftadd.ops import AdderConv2d, ShiftConv2d

torch.manual_seed(0)


def test_transform_kernel_is_identity_at_init_and_scales_rank_segments() -> None:
    t = TransformKernel(segments=4)
    w = torch.randn(2, 3, 2, 2)  # 24 elements: 4 runs of 6
    assert torch.equal(t(w), w)
    with torch.no_grad():
        t.alpha.copy_(torch.tensor([10.0, 20.0, 30.0, 40.0]))
    out = t(w).detach().flatten()
    order = torch.argsort(w.flatten(), descending=True)
    for rank, idx in enumerate(order.tolist()):
        assert out[idx].item() == pytest.approx(w.flatten()[idx].item() * [10, 20, 30, 40][rank // 6])


def test_transform_kernel_gradients_reach_weights_and_alphas() -> None:
    t = TransformKernel(segments=200)
    w = torch.randn(64, 32, 3, 3, requires_grad=True)
    t(w).pow(2).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert t.alpha.grad is not None and (t.alpha.grad != 0).all()


def test_value_binning_variant() -> None:
    t = TransformKernel(segments=100, binning="value")
    w = torch.randn(1000)
    index = t.segment_index(w)
    assert index.min() == 0 and index.max() == 99
    assert index[w.argmax()] == 0 and index[w.argmin()] == 99  # descending, like the sort


@pytest.mark.parametrize("bad, message", [({"segments": 0}, "segments"), ({"binning": "median"}, "binning")])
def test_transform_kernel_bad_arguments(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransformKernel(**bad)


def test_kl_estimators_vanish_on_their_reference_and_are_differentiable() -> None:
    g = torch.randn(200_000)
    lap = torch.distributions.Laplace(0.0, 1.0).sample((200_000,))
    assert gaussian_kl(g).item() == pytest.approx(0.0, abs=1e-3)
    assert laplace_kl(lap).item() == pytest.approx(0.0, abs=1e-3)
    assert gaussian_kl(3 * g + 1).item() > 1.0
    assert laplace_kl(0.2 * lap).item() > 0.5
    w = torch.randn(1000, requires_grad=True)
    (gaussian_kl(2 * w) + laplace_kl(w)).backward()
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_auxiliary_loss_adds_its_gradient_once() -> None:
    w = torch.randn(10, requires_grad=True)
    x = torch.randn(10)
    y = add_auxiliary_loss(x * w, gaussian_kl(w), weight=2.5)
    y.sum().backward()
    w2 = w.detach().clone().requires_grad_()
    ((x * w2).sum() + 2.5 * gaussian_kl(w2)).backward()  # the same loss, written out
    assert torch.allclose(w.grad, w2.grad)


@pytest.mark.parametrize("mode", ["none", "naive", "hws"])
def test_pool_modes(mode: str) -> None:
    pool = SharedConvWeight((8, 4, 3, 3), ("conv", "shift", "add"), mode)
    conv, shift, add = (pool.weight(op) for op in ("conv", "shift", "add"))
    exps = torch.log2(shift.abs()[shift != 0])
    assert torch.equal(exps, exps.round())  # powers of two
    n_params = sum(p.numel() for p in pool.parameters())
    if mode == "none":
        assert n_params == 3 * 8 * 4 * 9 and pool.kl() is None
    elif mode == "naive":
        assert n_params == 8 * 4 * 9 and torch.equal(add, conv) and pool.kl() is None
    else:
        assert n_params == 8 * 4 * 9 + 200 and pool.kl().requires_grad
        with torch.no_grad():
            pool.transform.alpha.mul_(torch.linspace(0.5, 2.0, 200))
        assert not torch.equal(pool.weight("add"), conv)


def test_hws_reduces_supernet_size() -> None:
    sizes = {mode: sum(p.numel() for p in HybridBlock(64, 128, 2, mode=mode).parameters()) for mode in
             ("none", "naive", "hws")}
    assert sizes["naive"] < sizes["none"] and sizes["hws"] - sizes["naive"] == 200 * 4  # one T per pool


@pytest.mark.parametrize("op", ["attn", "conv", "shift", "add"])
@pytest.mark.parametrize("stride, cin, cout", [(1, 16, 16), (2, 16, 32)])
def test_block_runs_and_exports_with_inherited_weights(op: str, stride: int, cin: int, cout: int) -> None:
    block = HybridBlock(cin, cout, stride, attn_kwargs={"head_dim": 8})
    x = torch.randn(2, cin, 8, 8)
    block.train()
    for _ in range(2):  # move the BatchNorm statistics away from their defaults
        block(x, op).sum().backward()
    block.eval()
    y = block(x, op)
    assert y.shape == (2, cout, 8 // stride, 8 // stride)
    exported = block.export(op).eval()
    torch.testing.assert_close(exported(x), y, rtol=1e-4, atol=1e-4)
    types = {type(m) for m in exported.modules()}
    if op == "shift":
        assert ShiftConv2d in types
    if op == "add":
        assert AdderConv2d in types


def test_block_bad_arguments() -> None:
    with pytest.raises(ValueError, match="candidates: unknown block type 'mul'"):
        HybridBlock(8, 8, candidates=("conv", "mul"))
    with pytest.raises(ValueError, match="mode: unknown value 'shared'"):
        HybridBlock(8, 8, mode="shared")
    with pytest.raises(ValueError, match="stride: expected 1"):
        HybridBlock(8, 8, stride=3)
    with pytest.raises(ValueError, match="op: 'attn' is not a candidate"):
        HybridBlock(8, 8, candidates=("conv", "add"))(torch.randn(1, 8, 4, 4), "attn")


class TinySpace(ModelSpace):
    def __init__(self, mode: str = "hws") -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.layer1 = HybridChoice(16, 16, candidates=("conv", "shift", "add"), label="layer1", mode=mode)
        self.layer2 = HybridChoice(16, 32, 2, label="layer2", mode=mode, attn_kwargs={"head_dim": 8})
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_hybrid_choice_in_a_model_space() -> None:
    space = TinySpace()
    sample: dict = {}
    random_model = space.random(memo=sample)  # NNI fills memo with the sample it froze
    assert set(sample) == {"layer1", "layer2"} and sample["layer1"] in ("conv", "shift", "add")
    assert random_model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    model = space.freeze({"layer1": "add", "layer2": "shift"})
    assert not isinstance(model.layer1, HybridChoice)
    assert any(isinstance(m, AdderConv2d) for m in model.layer1.modules())
    assert any(isinstance(m, ShiftConv2d) for m in model.layer2.modules())
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(SampleValidationError):
        space.freeze({"layer1": "attn", "layer2": "conv"})  # attn is not a candidate of layer1


def test_oneshot_hooks_share_weights_and_train() -> None:
    space = TinySpace()
    hook = oneshot_hooks("hws")[0]
    supernet = hook(space.layer2, "layer2", {}, {})
    assert isinstance(supernet, HybridSuperNet) and supernet.block is space.layer2.block
    x = torch.randn(2, 16, 8, 8)
    for op in ("conv", "shift", "add"):
        supernet.resample({"layer2": op})
        supernet(x).sum().backward()
    pool = space.layer2.block.pools["spatial"].pool
    assert pool.grad is not None  # every bottleneck candidate trained the same pool
    assert supernet.resample({})["layer2"] in ("attn", "conv", "shift", "add")
    assert hook(nn.Conv2d(1, 1, 1), "x", {}, {}) is None
    with pytest.raises(ValueError, match="mode='hws' but the hooks ask for mode='naive'"):
        oneshot_hooks("naive")[0](space.layer1, "layer1", {}, {})


@pytest.mark.parametrize("shape, shift, segments", [((8, 4, 3, 3), 0.0, 20), ((16, 32, 1, 1), 0.3, 200),
                                                    ((5, 7), -2.0, 3)])
def test_fused_pool_kl_matches_the_autograd_composition(shape: tuple[int, ...], shift: float, segments: int) -> None:
    from nni_shiftadd.hws import pool_kl

    gen = torch.Generator().manual_seed(len(shape))
    w = (torch.randn(shape, dtype=torch.float64, generator=gen) * 0.7 + shift).requires_grad_()
    t = TransformKernel(segments).double()
    with torch.no_grad():
        t.alpha.copy_(torch.rand(segments, dtype=torch.float64, generator=gen) + 0.5)
    reference = gaussian_kl(w) + laplace_kl(t(w), 1.3)
    fused = pool_kl(w, t, 1.3)
    assert fused.item() == pytest.approx(reference.item(), abs=1e-12)
    for a, b in zip(torch.autograd.grad(reference, (w, t.alpha)), torch.autograd.grad(fused, (w, t.alpha))):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    plain = pool_kl(w)  # no T: the Gaussian term alone
    torch.testing.assert_close(torch.autograd.grad(plain, w)[0], torch.autograd.grad(gaussian_kl(w), w)[0],
                               rtol=0, atol=1e-12)


def _kl_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``cpu``: the C++ kernel (hws_cpu.cpp), which must build here; ``torch``: the tensor-op fallback."""
    from nni_shiftadd.kernels import cpu as cpu_kernels

    if backend == "torch":
        monkeypatch.setattr(cpu_kernels, "load", lambda name="adder": None)
    else:
        assert cpu_kernels.load("hws") is not None


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_a_layers_fused_kl_is_the_sum_of_its_pools_terms(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nni_shiftadd.nn.hybrid import HybridBlock

    _kl_backend(backend, monkeypatch)
    torch.manual_seed(0)
    block = HybridBlock(8, 16, 2, ("conv", "shift", "add"), mode="hws").double()
    pools = list(block.pools.values())
    assert len(pools) == 4  # reduce, spatial, expand and the strided shortcut
    with torch.no_grad():
        for p in pools:
            p.transform.alpha.uniform_(0.5, 1.5)
    fused = block.kl()
    reference = sum(gaussian_kl(p.pool) + laplace_kl(p.transform(p.pool), p.laplace_scale) for p in pools)
    assert fused.item() == pytest.approx(reference.item(), rel=1e-12)
    params = [t for p in pools for t in (p.pool, p.transform.alpha)]
    for a, b in zip(torch.autograd.grad(reference, params), torch.autograd.grad(fused, params)):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-12)


def test_kl_kernel_and_fallback_agree_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    from nni_shiftadd.nn.hybrid import HybridBlock

    torch.manual_seed(1)
    block = HybridBlock(16, 32, 2, ("conv", "shift", "add"), mode="hws")
    with torch.no_grad():
        for p in block.pools.values():
            p.transform.alpha.uniform_(0.5, 1.5)
            p.pool.add_(0.3)
    params = [t for p in block.pools.values() for t in (p.pool, p.transform.alpha)]
    results = {}
    for backend in ("cpu", "torch"):
        with monkeypatch.context() as m:
            _kl_backend(backend, m)
            kl = block.kl()
            results[backend] = (kl.detach(), torch.autograd.grad(kl, params))
    torch.testing.assert_close(results["cpu"][0], results["torch"][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(results["cpu"][1], results["torch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
