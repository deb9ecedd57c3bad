"""The CV supernet built from a search-space file: single-path activation, inherited-weight subnets, the three
weight-sharing modes, and NNI's one-shot hooks."""
from __future__ import annotations

import random

import pytest
import torch

from nni_shiftadd.nn import HybridChoice, oneshot_hooks
from nni_shiftadd.space import baseline_arch, count_subnets, load_space, random_arch
from nni_shiftadd.space.cv import HybridCVSpace, supernet_parameters
from nni_shiftadd.space.stage import HybridStage
from nni_shiftadd.space.stage_oneshot import HybridStageSuperNet, stage_hooks
from nni_shiftadd.ops import AdderConv2d, ShiftConv2d


@pytest.fixture(scope="module")
def small():
    return load_space("cv_small")


def test_activate_forward_backward_and_freeze_with_inherited_weights(small) -> None:
    torch.manual_seed(0)
    space = HybridCVSpace(small)
    x = torch.randn(4, 1, 28, 28)
    for seed in range(4):
        arch = random_arch(small, seed)
        space.activate(arch)
        out = space(x)
        assert out.shape == (4, 10)
        out.sum().backward()
    space.eval()
    for op in ("conv", "shift", "add", "attn"):
        arch = baseline_arch(small, op)
        space.activate(arch)
        subnet = space.freeze(arch).eval()
        torch.testing.assert_close(subnet(x), space(x), rtol=1e-4, atol=1e-4)
        kinds = {type(m) for m in subnet.modules()}
        assert not any(issubclass(k, HybridChoice) for k in kinds)
        assert (AdderConv2d in kinds) == (op == "add") and (ShiftConv2d in kinds) == (op == "shift")


def test_activate_rejects_a_bad_arch(small) -> None:
    space = HybridCVSpace(small)
    arch = random_arch(small, 0)
    with pytest.raises(ValueError, match="stage0.depth"):
        space.activate({**arch, "stage0.depth": 7})
    with pytest.raises(ValueError, match="stage9"):
        space.activate({**arch, "stage9.depth": 1})


def test_supernet_parameters_per_mode(small) -> None:
    counts = {mode: supernet_parameters(small, mode) for mode in ("none", "naive", "hws")}
    imagenet = {mode: supernet_parameters(load_space("cv_imagenet"), mode) for mode in ("none", "naive", "hws")}
    print("cv_small", counts, "cv_imagenet", imagenet)
    for c in (counts, imagenet):
        assert c["naive"] < c["hws"] < c["none"]  # hws adds only the T kernels (200 alphas per pool)
    assert counts["none"] == sum(p.numel() for p in HybridCVSpace(small, "none").parameters())


def test_nni_random_and_oneshot_hooks(small) -> None:
    space = HybridCVSpace(small)
    sample: dict = {}
    model = space.random(memo=sample)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert set(sample) >= {"stage0.depth", "stage0.layer0.op"}
    # the layer hook comes from nn (which imports no space); the space adds its stages' through NNI's protocol
    from nni.nas.strategy import RandomOneShot

    assert len(oneshot_hooks("hws")) == 1
    assert [h.__qualname__ for h in space.extra_oneshot_hooks(RandomOneShot())] == \
        [h.__qualname__ for h in stage_hooks()]
    stage_super = stage_hooks()[0](space.stages[2], "stages.2", {}, {})
    assert isinstance(stage_super, HybridStageSuperNet)
    layer_super = oneshot_hooks("hws")[0](space.stages[2].layers[0], "stages.2.layers.0", {}, {})
    layer_super.resample({"stage2.layer0.op": "add"})
    assert layer_super(torch.randn(2, 32, 14, 14)).shape == (2, 64, 7, 7)
    assert isinstance(space.stages[0], HybridStage)


def test_total_depth_is_an_nni_constraint() -> None:
    """cv_imagenet's 16 layer positions constrain the stage depths; NNI sees that as a constraint."""
    spec = load_space("cv_imagenet")
    with torch.device("meta"):
        space = HybridCVSpace(spec)
    simplified = space.simplify()
    assert "total_depth" in simplified
    rng = random.Random(0)
    seen = set()
    for _ in range(40):
        sample = {label: rng.choice(list(m.values)) for label, m in simplified.items() if hasattr(m, "values")}
        ok = sum(sample[f"stage{i}.depth"] for i in range(4)) == spec.total_depth
        seen.add(ok)
        assert (space.check_contains(sample) is None) == ok
    assert seen == {True, False}


def test_cli_prints_the_subnet_count_and_supernet_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    from nni_shiftadd.cli import main

    assert main(["search-space", "cv_imagenet", "--info"]) == 0
    out = capsys.readouterr().out
    assert f"{count_subnets(load_space('cv_imagenet')):,}" in out and "66 depth pattern(s), total depth 16" in out
    sizes = {m: supernet_parameters(load_space("cv_imagenet"), m) / 1e6 for m in ("none", "naive", "hws")}
    assert ", ".join(f"{m} {n:.2f}M" for m, n in sizes.items()) in out
    assert "stage 3         7^2 x 1024: depths [4, 5, 6, 7, 8, 9]" in out
