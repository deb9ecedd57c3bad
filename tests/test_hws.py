"""Heterogeneous weight sharing: the transform kernel T (eq. 6), the KL terms (eq. 5), pools in the three modes,
the hybrid block, its NNI mutable and the one-shot supernet module."""
from __future__ import annotations

import pytest
import torch
from nni.mutable import SampleValidationError
from nni.nas.nn.pytorch import ModelSpace
from torch import nn

from nni_shiftadd.hws import (HWSConfig, SharedConvWeight, TransformKernel, add_auxiliary_loss, gaussian_kl,
                               laplace_kl, spacing_kl)
from nni_shiftadd.nn.hybrid import HybridBlock, HybridChoice
from nni_shiftadd.nn.oneshot import HybridSuperNet, oneshot_hooks
from nni_shiftadd.ops import AdderConv2d, ShiftConv2d

torch.manual_seed(0)
MOMENTS = HWSConfig(estimator="moments")


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



@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, segments", [(1, 200), (7, 3), (1000, 200), (16384, 200), (70001, 64)])
def test_rank_segments_of_the_kernel_match_the_sort(dtype: torch.dtype, n: int, segments: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """hws_cpu.cpp's radix sort against the comparison sort of the fallback: the same run for every element (the
    values distinct; among equal values, runs follow the index order), signs, zeros and infinities included."""
    gen = torch.Generator().manual_seed(n)
    w = torch.randn(n, generator=gen, dtype=dtype) * torch.logspace(-30, 30, n, dtype=dtype)
    if n > 10:
        w[:4] = torch.tensor([float("inf"), -float("inf"), 0.0, -1e-300 if dtype == torch.float64 else -1e-38])
    t = TransformKernel(segments)
    _kl_backend("cpu", monkeypatch)
    fast = t.segment_index(w)
    _kl_backend("torch", monkeypatch)
    assert torch.equal(fast, t.segment_index(w))
    ties = torch.tensor([2.0, -0.0, 2.0, 1.0, 0.0, 2.0], dtype=dtype)
    monkeypatch.undo()
    assert TransformKernel(6).segment_index(ties).tolist() == [0, 5, 1, 3, 4, 2]
    with torch.device("meta"):  # the cost model builds subnets so; a CPU pool's runs are still computed on the CPU
        assert torch.equal(t.segment_index(w), fast)

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
    block = HybridBlock(8, 16, 2, ("conv", "shift", "add"), mode="hws", hws=MOMENTS).double()
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
    block = HybridBlock(16, 32, 2, ("conv", "shift", "add"), mode="hws", hws=MOMENTS)
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


# --- the estimator of the eq. (5) terms: shape-aware by default ---------------------------------------------------

def _samples(n: int, scale: str) -> dict[str, torch.Tensor]:
    """A Gaussian, a Laplacian and a uniform sample of mean 0 and equal variance (``scale="var"``) or equal mean
    absolute deviation (``"mad"``, the Laplace fit's scale)."""
    gen = torch.Generator().manual_seed(7)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    e = torch.empty(n, dtype=torch.float64).exponential_(generator=gen)
    lap = e * torch.where(torch.rand(n, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0)
    uni = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    out = {"gaussian": g, "laplace": lap, "uniform": uni}
    return {k: (v - v.mean()) / (v.std() if scale == "var" else (v - v.mean()).abs().mean()) for k, v in out.items()}


@pytest.mark.parametrize("scale", ["var", "mad"])
def test_spacing_estimator_puts_the_right_family_closest(scale: str) -> None:
    """Of samples with equal moments, the ``spacing`` estimate is smallest for the family of the reference; the
    moment-matched one cannot tell them apart (the same value to 0.03 nats, where the spacing gap is 0.05 or more)."""
    samples = _samples(8192, scale)
    b = 1.0 / 2 ** 0.5 if scale == "var" else 1.0  # the Laplace of variance 1, or of mean absolute deviation 1
    to_gaussian = {k: spacing_kl(x).item() for k, x in samples.items()}
    to_laplace = {k: spacing_kl(x, "laplace", b).item() for k, x in samples.items()}
    assert min(to_gaussian, key=to_gaussian.get) == "gaussian"
    assert min(to_laplace, key=to_laplace.get) == "laplace"
    assert to_gaussian["laplace"] - to_gaussian["gaussian"] > 0.05 and to_laplace["gaussian"] - to_laplace["laplace"] > 0.05
    assert abs(to_laplace["laplace"]) < 0.03  # ~0 on its own distribution (a Gaussian of MAD 1 has variance pi/2)
    if scale == "var":
        assert abs(to_gaussian["gaussian"]) < 0.03
    moments = {k: laplace_kl(x, b).item() for k, x in samples.items()} if scale == "mad" else \
        {k: gaussian_kl(x).item() for k, x in samples.items()}
    assert max(moments.values()) - min(moments.values()) < 0.03  # blind to the shape


def test_spacing_estimator_gradients() -> None:
    x = torch.randn(97, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spacing_kl(t, "laplace", 1.3), (x,), eps=1e-7, atol=1e-5)
    assert torch.autograd.gradcheck(lambda t: spacing_kl(t), (x,), eps=1e-7, atol=1e-5)
    with pytest.raises(ValueError, match="target: got 'cauchy'"):
        spacing_kl(x, "cauchy")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_spacing_kernel_and_fallback_agree(dtype: torch.dtype, tol: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """hws_cpu.cpp's spacing estimator against the tensor-op one: the same value and gradients for a layer's pools,
    pools above ``max_samples`` (the same random subset under the same seed), one too small to estimate."""
    from nni_shiftadd.nn.hybrid import HybridBlock

    torch.manual_seed(2)
    block = HybridBlock(16, 32, 2, ("conv", "shift", "add"), mode="hws",
                        hws=HWSConfig(max_samples=300)).to(dtype)
    with torch.no_grad():
        for p in block.pools.values():
            p.transform.alpha.uniform_(0.5, 1.5)
    pools = list(block.pools.values())
    assert max(p.pool.numel() for p in pools) > 300
    params = [t for p in pools for t in (p.pool, p.transform.alpha)]
    results = {}
    for backend in ("cpu", "torch"):
        with monkeypatch.context() as m:
            _kl_backend(backend, m)
            torch.manual_seed(3)
            kl = block.kl()
            results[backend] = (kl.detach(), torch.autograd.grad(kl, params))
    torch.testing.assert_close(results["cpu"][0], results["torch"][0], rtol=tol, atol=tol)
    for a, b in zip(results["cpu"][1], results["torch"][1]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    tiny = torch.randn(3, dtype=dtype, requires_grad=True)  # fewer than 4 elements: no estimate, no gradient
    assert spacing_kl(tiny).item() == 0 and not torch.autograd.grad(spacing_kl(tiny), tiny)[0].any()


def _kurtosis(x: torch.Tensor) -> float:
    x = x.detach().flatten().double()
    x = x - x.mean()
    return (x.pow(4).mean() / x.pow(2).mean() ** 2 - 3).item()


@pytest.mark.parametrize("estimator, low, high", [("spacing", 2.0, None), ("moments", None, 0.5)])
def test_optimising_only_t_turns_a_gaussian_pool_laplacian(estimator: str, low: float | None,
                                                          high: float | None) -> None:
    """Fig. 4(b): T's alphas alone, optimised under the Laplace term of eq. (5) for 500 Adam steps, map a Gaussian
    pool to a Laplacian (excess kurtosis 3) under the default estimator; the moment-matched one is satisfied by
    one scale factor and leaves the shape Gaussian (excess kurtosis 0)."""
    torch.manual_seed(0)
    pool = SharedConvWeight((64, 32, 3, 3), ("conv", "shift", "add"), "hws", hws=HWSConfig(estimator=estimator))
    pool.pool.requires_grad_(False)
    t = pool.transform
    optimiser = torch.optim.Adam([t.alpha], lr=0.05)
    for _ in range(500):
        optimiser.zero_grad()
        pool.kl().backward()  # the pool is frozen: only the Laplace term's alpha gradient moves anything
        optimiser.step()
    kurtosis = _kurtosis(t(pool.pool))
    assert _kurtosis(pool.pool) == pytest.approx(0.0, abs=0.15)
    if low is not None:
        assert kurtosis >= low, kurtosis
    if high is not None:
        assert kurtosis < high, kurtosis


@pytest.mark.parametrize("estimator", ["spacing", "moments", "softmax"])
def test_every_estimator_trains_a_block(estimator: str) -> None:
    torch.manual_seed(0)
    block = HybridBlock(8, 16, 2, ("conv", "shift", "add"), mode="hws",
                        hws=HWSConfig(estimator=estimator, laplace_scale=2.0, segments=50, max_samples=64))
    kl = block.kl()
    assert torch.isfinite(kl) and kl.requires_grad
    kl.backward()
    pools = list(block.pools.values())
    assert all(p.transform.alpha.grad is not None and p.transform.alpha.grad.abs().sum() > 0 for p in pools)
    if estimator != "softmax":  # the authors' estimator has the Add term only
        assert all(p.pool.grad.abs().sum() > 0 for p in pools)
    assert "estimator=" + repr(estimator) in repr(pools[0])


@pytest.mark.parametrize("bad, message", [
    ({"estimator": "histogram"}, r"field 'estimator': got 'histogram'; expected one of \['spacing', 'moments'"),
    ({"segments": 0}, "field 'segments': must be >= 1"),
    ({"binning": "median"}, "field 'binning'"),
    ({"laplace_scale": 0.0}, "field 'laplace_scale': must be > 0"),
    ({"max_samples": 3}, "field 'max_samples': must be >= 16"),
])
def test_hws_settings_are_checked(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SharedConvWeight((4, 4), ("conv", "add"), "hws", hws=HWSConfig(**bad))


def test_hws_settings_are_recipe_fields(tmp_path) -> None:
    """The ``hws`` block of a supernet recipe reaches every pool, and a bad value names the block and the field."""
    from nni_shiftadd.config import ConfigError, load_yaml
    from nni_shiftadd.space.cv import HybridCVSpace
    from nni_shiftadd.tasks.supernet import SupernetConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("space: cv_small\nhws: {estimator: moments, segments: 100, laplace_scale: 2.0}\n")
    cfg = load_yaml(SupernetConfig, recipe)
    assert cfg.hws == HWSConfig(estimator="moments", segments=100, laplace_scale=2.0)
    space = HybridCVSpace(cfg.load_spec(), cfg.mode, cfg.kl_weight, cfg.hws)
    pools = [m for m in space.modules() if isinstance(m, SharedConvWeight)]
    assert pools and all(p.hws == cfg.hws and p.transform.alpha.numel() == 100 for p in pools)
    recipe.write_text("space: cv_small\nhws: {estimator: vasicek}\n")
    with pytest.raises(ConfigError, match=r"hws.*estimator.*'vasicek'"):
        load_yaml(SupernetConfig, recipe)


@pytest.mark.parametrize("mode, setting, rescaled", [
    ("none", "own", True), ("naive", "own", False), ("hws", "own", False),
    ("naive", "always", True), ("hws", "always", True), ("none", "never", False)])
def test_adds_adaptive_learning_rate_only_where_add_owns_its_weights(mode: str, setting: str, rescaled: bool) -> None:
    """``add_adaptive_lr: own`` (default): AdderNet's rescaling of Add's weight gradient to RMS ``eta`` applies where
    Add owns its weights, not on a shared pool, where it would swamp the Conv and Shift gradients in the shared
    optimiser state (benchmarks/pool_gradients.py)."""
    torch.manual_seed(0)
    block = HybridBlock(8, 8, 1, ("conv", "shift", "add"), mode=mode, kl_weight=0.0, eta=0.2,
                        hws=HWSConfig(add_adaptive_lr=setting))
    for norms in block.norms.values():  # the last BN starts at zero: no pool would get a gradient on a first step
        nn.init.ones_(norms["expand"].weight)
    block(torch.randn(4, 8, 6, 6), "add").square().mean().backward()
    pool = block.pools["spatial"]
    w = pool.own["add"] if mode == "none" else pool.pool
    if mode == "hws":  # the adaptive rate acts on the gradient of T(W); the pool receives it times alpha = 1
        assert torch.equal(pool.transform.alpha.detach(), torch.ones_like(pool.transform.alpha))
    rms = w.grad.pow(2).mean().sqrt().item()
    assert (rms == pytest.approx(0.2, rel=1e-4)) is rescaled
    assert rms > 0


def test_add_adaptive_lr_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="field 'add_adaptive_lr': got 'sometimes'"):
        HWSConfig(add_adaptive_lr="sometimes").validate()
