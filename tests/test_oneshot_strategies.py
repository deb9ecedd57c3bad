"""Hybrid layers under every NNI one-shot strategy: DARTS, GumbelDARTS and Proxyless learn architecture weights over
the hybrid candidates (which keep sharing one pool), ENAS's controller (through our mended ENAS) learns the better
candidate and, with a sample penalty, the cheaper one; the energy penalty is differentiable and moves DARTS to
cheaper candidates, users add their own candidates, and BatchNorm recalibration makes subnets frozen from a
RandomOneShot supernet score well above chance.

The toy task is sklearn's digits (1,797 8x8 images, 10 classes); each search takes a few seconds."""
from __future__ import annotations

import nni
import pytest
import pytorch_lightning as pl
import torch
from conftest import NNI_EXPERIMENTS
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.experiment import NasExperiment
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.profiler import SampleProfilerPenalty
from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot
from sklearn.datasets import load_digits
from torch import nn

from nni_shiftadd.cost import CostExpressionProfiler, DifferentiableCostPenalty, EyerissProfiler
from nni_shiftadd.hws import SharedConvWeight
from nni_shiftadd.nn import (BatchNormRecalibration, HybridBlock, HybridCandidate, HybridChoice, HybridSuperNet,
                             oneshot_hooks, recalibrate_batchnorm)
from nni_shiftadd.strategy.enas import ENAS, ModeBatch

pytestmark = NNI_EXPERIMENTS

STRATEGIES = {"darts": DARTS, "gumbel": GumbelDARTS, "proxyless": Proxyless}


class Blind(nn.Module):
    """A user candidate that is clearly worse: it throws its input away."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.zeros_like(x))


class PoolReader(nn.Module):
    """A user candidate in the shared pool: the 3x3 of the pool (Conv view) as a plain convolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, pools: nn.ModuleDict) -> None:
        super().__init__()
        self.pools, self.stride = pools, stride
        self.proj = nn.Conv2d(in_channels, out_channels, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        w = self.pools["spatial"].weight("conv")
        return y + torch.nn.functional.conv2d(torch.relu(y[:, :w.shape[1]]), w, padding=1).repeat(
            1, y.shape[1] // w.shape[0], 1, 1)


class Toy(ModelSpace):
    def __init__(self, candidates: tuple[str, ...] = ("conv",), extra: dict | None = None, layers: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(*[HybridChoice(16, 16, candidates=candidates, extra_candidates=extra,
                                                   label=f"block{i}") for i in range(layers)])
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _digits() -> torch.utils.data.TensorDataset:
    digits = load_digits()
    return nni.trace(torch.utils.data.TensorDataset)(
        torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(digits.target))


def _search(space: ModelSpace, strategy, epochs: int = 3) -> dict:
    data = _digits()
    evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=64, shuffle=True),
                               val_dataloaders=DataLoader(data, batch_size=64, shuffle=True), max_epochs=epochs,
                               num_classes=10, learning_rate=0.01, enable_progress_bar=False,
                               enable_model_summary=False, logger=False,
                               enable_checkpointing=False)
    NasExperiment(space, evaluator, strategy).run()
    return strategy.oneshot_module.export_probs()


@pytest.fixture(autouse=True)
def _nni_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # NNI writes its experiment folders under ~/nni-experiments
    monkeypatch.setenv("NNI_CONFIG_DIR", str(tmp_path / "nni"))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_differentiable_strategies_learn_to_pick_the_better_candidate(name: str) -> None:
    torch.manual_seed(0)
    space = Toy(("conv",), {"blind": Blind})
    strategy = STRATEGIES[name](mutation_hooks=oneshot_hooks("hws"), arc_learning_rate=0.01)
    probs = _search(space, strategy)
    assert probs["block0"]["conv"] > 0.7  # measured 0.84-0.89; starts at 0.5
    assert strategy.list_models()  # a model comes out
    exported = next(strategy.list_models()).sample
    assert exported == {"block0": "conv"}


def test_differentiable_hooks_give_architecture_weights_and_keep_one_pool() -> None:
    space = Toy(("conv", "shift", "add", "attn"), layers=2)
    block = space.blocks[0].block
    strategy = DARTS(mutation_hooks=oneshot_hooks("hws"))
    strategy.mutate_model(space)
    mixed = space.blocks[0]
    assert type(mixed).__name__ == "DifferentiableMixedLayer" and mixed.names == ["conv", "shift", "add", "attn"]
    views = [mixed[op] for op in mixed.names]
    assert all(isinstance(v, HybridCandidate) and v.block is block for v in views)
    alphas = list(mixed.arch_parameters())
    assert len(alphas) == 1 and alphas[0].shape == (4,)
    # one pool per position, read by Conv, Shift and Add alike: one mixed forward puts all three gradients on it
    pool = block.pools["spatial"]
    out = mixed(torch.randn(2, 16, 8, 8))
    out.square().mean().backward()
    assert pool.pool.grad is not None and alphas[0].grad is not None and alphas[0].grad.abs().sum() > 0
    assert sum(isinstance(m, SharedConvWeight) for m in space.modules()) == 2 * 3  # reduce/spatial/expand, 2 layers
    # freezing the supernet exports the chosen candidate alone
    frozen = space.freeze({"block0": "add", "block1": "conv"})
    assert type(frozen.blocks[0]).__name__ == "Bottleneck" and not isinstance(frozen.blocks[0], HybridCandidate)


def test_sampling_strategies_keep_the_uniform_twin_and_honour_a_controller_sample() -> None:
    space = Toy(("conv", "shift", "add"))
    RandomOneShot(mutation_hooks=oneshot_hooks("hws")).mutate_model(space)
    twin = space.blocks[0]
    assert isinstance(twin, HybridSuperNet)
    # ENAS's controller writes its sample into the memo of resample(); the twin runs that candidate
    assert twin.resample({"block0": "add"}) == {"block0": "add"} and twin.sampled() == "add"
    assert twin.export({"block0": "add"}) == {}


def test_enas_controller_learns_to_pick_the_better_candidate_and_exports_it() -> None:
    torch.manual_seed(0)
    space = Toy(("conv",), {"blind": Blind})
    strategy = ENAS(mutation_hooks=oneshot_hooks("hws"), reward_metric_name="val_acc")
    probs = _search(space, strategy)
    assert probs["block0"]["conv"] > 0.6  # measured 0.66-0.73 over seeds 0-4 after 3 epochs; starts at 0.5
    # the exported model is the trained controller's most likely choice, however many times it is asked
    assert [next(strategy.list_models()).sample for _ in range(3)] == [{"block0": "conv"}] * 3
    assert strategy.oneshot_module.export_probs() == probs  # list_models kept the trained controller


def test_enas_loader_tags_each_batch_with_the_loader_it_came_from() -> None:
    train = DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=2)
    val = DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)), batch_size=2)
    loader = ENAS().train_dataloader(lambda: train, lambda: val)
    loader.limits = None  # Lightning's fit loop sets them before it iterates
    items = list(loader)
    assert [(type(b).__name__, b.mode, i, d) for b, i, d in items] == [
        ("ModeBatch", "train", 0, 0), ("ModeBatch", "train", 1, 0), ("ModeBatch", "val", 0, 1)]
    assert isinstance(items[0][0], ModeBatch) and items[2][0].batch[0].sum() == 2  # the val batch, untouched


def test_enas_sample_penalty_moves_the_controller_to_the_cheaper_candidate() -> None:
    picks = {}
    for scale in (0.0, -20.0):  # ENAS adds the penalty to its reward: a negative scale rewards cheap samples
        torch.manual_seed(0)
        space = Toy(("conv", "shift"))
        profiler = CostExpressionProfiler(space, torch.zeros(1, 1, 8, 8))
        penalty = SampleProfilerPenalty(profiler, profiler.profile({"block0": "shift"}), scale) if scale else None
        strategy = ENAS(mutation_hooks=oneshot_hooks("hws"), reward_metric_name="val_acc", penalty=penalty)
        picks[scale] = _search(space, strategy)["block0"]["shift"]
    # conv costs 2.4% more energy here, so -20 takes about 0.5 off its reward; measured over seeds 0-2: shift at
    # 0.45-0.63 without the penalty, 0.67-0.73 with it (seed 0: 0.50 and 0.73)
    assert picks[-20.0] > 0.6 and picks[-20.0] > picks[0.0] + 0.1


def test_energy_penalty_is_differentiable_and_moves_darts_to_the_cheaper_candidate() -> None:
    picks = {}
    for scale in (0.0, 1.0):
        torch.manual_seed(0)
        space = Toy(("conv", "shift"))
        profiler = CostExpressionProfiler(space, torch.zeros(1, 1, 8, 8))
        cheap = min(profiler.terms["block0"], key=profiler.terms["block0"].get)
        assert cheap == "shift"  # power-of-two weights: no multiplier, narrower words
        baseline = profiler.profile({"block0": "shift"})
        penalty = DifferentiableCostPenalty(profiler, baseline, scale) if scale else None
        picks[scale] = _search(space, DARTS(mutation_hooks=oneshot_hooks("hws"), arc_learning_rate=0.01,
                                            penalty=penalty))["block0"]["shift"]
    # measured: shift at 0.14 without the penalty, 0.82 with it
    assert picks[0.0] < 0.5 < picks[1.0]


def test_cost_expression_equals_the_traced_cost_of_every_sample() -> None:
    space = Toy(("attn", "conv", "shift", "add"), layers=2)
    x = torch.zeros(1, 1, 8, 8)
    for metric in ("energy_mJ", "latency_ms", "mult"):
        expression = CostExpressionProfiler(space, x, metric=metric)
        traced = EyerissProfiler(space, x, metric=metric) if metric != "mult" else expression.measure
        samples = [{"block0": a, "block1": b} for a in ("attn", "conv", "shift", "add")
                   for b in ("attn", "conv", "shift", "add")]
        for sample in samples:
            assert expression.profile(sample) == pytest.approx(traced.profile(sample), rel=1e-9)
        # NNI's penalties take it: the sample one evaluates it, the expectation one averages it
        sample_penalty = SampleProfilerPenalty(expression, baseline=1.0)
        assert sample_penalty.profile(samples[5]) == pytest.approx(traced.profile(samples[5]))
        uniform = {label: {op: 0.25 for op in ("attn", "conv", "shift", "add")} for label in ("block0", "block1")}
        mean = sum(traced.profile(s) for s in samples) / len(samples)
        penalty = DifferentiableCostPenalty(expression, baseline=1.0)
        assert float(penalty.profile(uniform)) == pytest.approx(mean, rel=1e-9)
    with pytest.raises(ValueError, match="sample: unknown key 'nope'"):
        expression.profile({"block0": "conv", "block1": "conv", "nope": 1})


def test_cost_expression_refuses_a_space_whose_cost_is_not_additive() -> None:
    from nni_shiftadd.space import load_space
    from nni_shiftadd.space.cv import HybridCVSpace

    spec = load_space("cv_small")
    space = HybridCVSpace(spec, "none")
    with pytest.raises(ValueError, match="not additive over its choices"):
        CostExpressionProfiler(space, torch.zeros(1, spec.input.channels, spec.input.size, spec.input.size),
                               check_samples=8)


def test_user_candidates_join_the_choice_and_may_read_the_shared_pool() -> None:
    space = Toy(("conv", "add"), {"blind": Blind, "reader": PoolReader})
    layer = space.blocks[0]
    assert list(layer.choice.values) == ["conv", "add", "blind", "reader"]
    block = layer.block
    assert block.extra["reader"].pools is block.pools  # the same pool objects, not copies
    x = torch.randn(2, 16, 8, 8)
    block(x, "reader").sum().backward()
    assert block.pools["spatial"].pool.grad is not None and block.pools["spatial"].pool.grad.abs().sum() > 0
    frozen = layer.freeze({"block0": "blind"})
    assert isinstance(frozen, Blind) and frozen is not block.extra["blind"]
    assert frozen(x).shape == (2, 16, 8, 8)


@pytest.mark.parametrize("extra, message", [
    ({"add": Blind}, "'add' is a built-in block type"),
    ({"my block": Blind}, "must be a Python identifier"),
    ({"mine": 3}, "must map to a factory"),
    ({"mine": lambda i, o, s: "not a module"}, "returned str, not a torch.nn.Module"),
])
def test_user_candidate_errors_name_the_problem(extra: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HybridBlock(8, 8, candidates=("conv",), extra_candidates=extra)


def test_a_user_candidate_asking_for_pools_needs_a_conv_family_candidate() -> None:
    with pytest.raises(ValueError, match="asks for the shared pools"):
        HybridBlock(8, 8, candidates=("attn",), extra_candidates={"reader": PoolReader})


def test_recalibration_recomputes_exact_statistics_and_keeps_modes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()
    bn = model[1]
    bn.momentum = 0.3
    batches = [torch.randn(8, 3, 5, 5) * 2 + 1 for _ in range(3)]
    recalibrate_batchnorm(model, [(b, None) for b in batches], batches=2)
    features = torch.cat([model[0](b) for b in batches[:2]]).detach()
    assert torch.allclose(bn.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([model[0](b).detach().var((0, 2, 3)) for b in batches[:2]]).mean(0)
    assert torch.allclose(bn.running_var, per_batch_var, atol=1e-4)  # the mean of the batches' unbiased variances
    assert not model.training and not model[2].training and bn.momentum == 0.3
    with pytest.raises(ValueError, match="batches: at least 1"):
        recalibrate_batchnorm(model, batches, batches=0)
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_batchnorm(model, [], batches=2)


def test_recalibration_as_a_lightning_callback_runs_before_validation() -> None:
    torch.manual_seed(0)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 4, 1), nn.BatchNorm2d(4))

        def forward(self, x):
            return self.net(x)

        def validation_step(self, batch, batch_idx):
            return None

    module = Module()
    data = [torch.randn(4, 1, 3, 3) + 5 for _ in range(2)]
    trainer = pl.Trainer(callbacks=[BatchNormRecalibration(data, 2)], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    assert float(module.net[1].running_mean.abs().sum()) == 0
    trainer.validate(module, [torch.zeros(1, 1, 3, 3)], verbose=False)
    expected = torch.cat([module.net[0](b) for b in data]).detach().mean((0, 2, 3))
    assert torch.allclose(module.net[1].running_mean, expected, atol=1e-5)


def test_subnets_of_a_random_oneshot_supernet_score_well_above_chance_once_recalibrated() -> None:
    """The README's RandomOneShot example: the same space, recipe and samples."""
    torch.manual_seed(0)
    data = _digits()
    x, y = data.tensors[0][1400:], data.tensors[1][1400:]  # held out
    train_loader = DataLoader(nni.trace(torch.utils.data.TensorDataset)(*data[:1400]), batch_size=64, shuffle=True)

    class MySpace(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.block1 = HybridChoice(16, 16, label="block1")
            self.block2 = HybridChoice(16, 32, stride=2, label="block2")
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.block2(self.block1(self.stem(x))).mean((2, 3)))

    space = MySpace()
    evaluator = Classification(train_dataloaders=train_loader,
                               val_dataloaders=DataLoader(nni.trace(torch.utils.data.TensorDataset)(x, y),
                                                          batch_size=256),
                               max_epochs=10, num_classes=10, learning_rate=0.01, enable_progress_bar=False,
                               enable_model_summary=False, logger=False,
                               enable_checkpointing=False)
    NasExperiment(space, evaluator, RandomOneShot(mutation_hooks=oneshot_hooks("hws"))).run()
    before, after = [], []
    for sample in ({"block1": "conv", "block2": "add"}, {"block1": "shift", "block2": "conv"},
                   {"block1": "attn", "block2": "shift"}, {"block1": "add", "block2": "add"}):
        subnet = space.freeze(sample).eval()
        with torch.no_grad():
            before.append(float((subnet(x).argmax(1) == y).float().mean()))
            recalibrate_batchnorm(subnet, train_loader, batches=10)
            after.append(float((subnet(x).argmax(1) == y).float().mean()))
    print(f"inherited accuracy of 4 subnets: {before} as frozen, {after} after recalibration")
    assert min(after) >= 0.4, (before, after)  # chance is 0.1
    assert sum(after) > sum(before) + 0.4, (before, after)


def test_darts_on_a_yaml_space_mixes_depths_too() -> None:
    """HybridCVSpace under DARTS: every layer a mixed layer, every stage depth a softmax-weighted sum of the stage's
    outputs at each depth, both with architecture weights that learn; export and freeze give a valid subnet."""
    from nni_shiftadd.space import load_space
    from nni_shiftadd.space.cv import HybridCVSpace
    from nni_shiftadd.space.stage_oneshot import HybridStageMixed
    from nni_shiftadd.space.spec import validate_arch

    spec = load_space("cv_small")
    space = HybridCVSpace(spec, "hws")
    strategy = DARTS(mutation_hooks=oneshot_hooks("hws"))
    strategy.mutate_model(space)
    stages = list(space.stages)
    assert all(isinstance(s, HybridStageMixed) for s in stages)
    assert all(type(layer).__name__ == "DifferentiableMixedLayer" for s in stages for layer in s.layers)
    space(torch.randn(2, 1, 28, 28)).logsumexp(1).sum().backward()
    assert all(s._arch_alpha.grad is not None and s._arch_alpha.grad.abs().sum() > 0 for s in stages)
    stages[2]._arch_alpha.data = torch.tensor([0.0, 5.0, 0.0])  # depth 2 of [1, 2, 3] most likely
    exported = {}
    for module in space.modules():
        if hasattr(module, "export") and hasattr(module, "_arch_alpha"):
            exported.update(module.export({}))
    assert exported["stage2.depth"] == 2
    validate_arch(spec, exported)
    frozen = space.freeze(exported)
    assert len(frozen.stages[2]) == 2 and frozen(torch.randn(1, 1, 28, 28)).shape == (1, 10)
