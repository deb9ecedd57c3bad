"""The evolution search as an NNI 3.0 strategy (``ShiftAddEvolutionStrategy``), run by real ``NasExperiment``s in-process
(sequential execution engine, no NNI manager) on a tiny hybrid space, with a fake evaluator: no training."""
from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nni
import pytest
from conftest import NNI_EXPERIMENTS
from nni.nas.evaluator import FunctionalEvaluator
from nni.nas.execution import ExecutionEngine, SequentialExecutionEngine
from nni.nas.execution.event import FinalMetricEvent, TrainingEndEvent
from nni.nas.experiment import NasExperiment, NasExperimentConfig
from nni.nas.experiment.config import SequentialEngineConfig
from nni.mutable import Categorical
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.space import ModelStatus, RawFormatModelSpace, SimplifiedModelSpace

from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.spec import SpaceSpec, load_space, random_arch
from nni_shiftadd.strategy import Evolution, arch_key, load_preset, space_cost_fn
from nni_shiftadd.strategy.nas import ShiftAddEvolutionStrategy, space_spec_of

pytestmark = NNI_EXPERIMENTS

TINY = """
name: tiny
input: {channels: 1, size: 8}
num_classes: 2
stem: {channels: 4, kernel: 3, stride: 1, pool: false}
stages:
  - {width: 4, resolution: 8, depths: [1, 2], blocks: [conv, shift, add, attn], bottleneck: 2, mlp_ratio: 1.0,
     heads: 1}
  - {width: 8, resolution: 4, depths: [1, 2], blocks: [conv, shift, add, attn], bottleneck: 2, mlp_ratio: 1.0,
     heads: 1}
"""
SMALL = dict(iterations=2, population=4, parents=2, mutation=2, crossover=2, mutation_prob=0.5, seed=3)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> SpaceSpec:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(TINY)
    return load_space(path)


@pytest.fixture(scope="module")
def cost(spec: SpaceSpec) -> Callable[[dict], dict[str, float]]:
    return space_cost_fn(spec)


@pytest.fixture(scope="module")
def energy_max(spec: SpaceSpec, cost: Callable) -> float:
    """An energy budget that about half of the random architectures meet."""
    energies = sorted(cost(random_arch(spec, seed))["energy_mJ"] for seed in range(40))
    return energies[len(energies) // 2]


def overrides(energy_max: float, **kw: Any) -> dict[str, Any]:
    return {**SMALL, "constraints": {"energy_mJ": {"max": energy_max}}, **kw}


def fake_accuracy(arch: dict) -> float:
    """Deterministic in the architecture: Conv layers help, plus arch-seeded noise."""
    convs = sum(v == "conv" for k, v in arch.items() if k.endswith(".op"))
    return round(0.5 + 0.05 * convs + random.Random(arch_key(arch)).random() * 0.04, 6)


class Evaluator:
    """Reports ``{"default": fake accuracy, "energy_mJ": ...}`` for the sample of the model under evaluation and
    counts the calls; ``fail(arch)`` makes it raise, ``silent(arch)`` makes it report nothing."""

    def __init__(self, cost: Callable, fail: Callable[[dict], bool] = lambda a: False,
                 silent: Callable[[dict], bool] = lambda a: False) -> None:
        self.cost, self.fail, self.silent = cost, fail, silent
        self.calls: list[str] = []

    def __call__(self, model: Any) -> None:
        arch = dict(nni.get_current_parameter().sample)  # the sequential engine's parameter is the frozen model
        self.calls.append(arch_key(arch))
        if self.fail(arch):
            raise RuntimeError("training diverged")
        if not self.silent(arch):
            nni.report_final_result({"default": fake_accuracy(arch), "energy_mJ": self.cost(arch)["energy_mJ"]})


def run_experiment(spec: SpaceSpec, strategy: ShiftAddEvolutionStrategy, evaluate: Evaluator, work: Path, *,
                   max_models: int | None = None, continue_on_failure: bool = False) -> NasExperiment:
    config = NasExperimentConfig(SequentialEngineConfig(continue_on_failure=continue_on_failure,
                                                        max_model_count=max_models), "simplified")
    config.experiment_working_directory = str(work)
    exp = NasExperiment(HybridCVSpace(spec, "none"), FunctionalEvaluator(evaluate), strategy, config)
    try:
        exp.run()
    finally:
        exp.stop()
    return exp


def reference(spec: SpaceSpec, cost: Callable, energy_max: float) -> Evolution:
    """The same search driven directly through the core's ask/tell."""
    ev = Evolution(spec, load_preset("cv_small", overrides(energy_max)), cost)
    while not ev.done:
        for arch in ev.ask():
            ev.tell(arch, {"accuracy": fake_accuracy(arch), "default": fake_accuracy(arch),
                           "energy_mJ": cost(arch)["energy_mJ"]})
    return ev


def test_search_in_a_nas_experiment(spec: SpaceSpec, cost: Callable, energy_max: float, tmp_path: Path) -> None:
    evaluate = Evaluator(cost)
    strategy = ShiftAddEvolutionStrategy("cv_small", output=str(tmp_path / "out"), overrides=overrides(energy_max))
    exp = run_experiment(spec, strategy, evaluate, tmp_path / "nni")

    evolution = strategy.evolution
    assert evolution is not None and evolution.done and strategy.error is None
    assert strategy.spec == spec  # taken from the HybridCVSpace
    assert len(evaluate.calls) == len(set(evaluate.calls)), "an architecture was evaluated twice"
    records = strategy.records()
    assert sorted(arch_key(r["arch"]) for r in records) == sorted(evaluate.calls)
    # 4 baselines + a population of 4 + one generation of 2 mutated and 2 crossed children (which may repeat)
    assert len(records) <= 4 + 4 + 4
    for r in records:
        assert r["status"] == "ok"
        assert r["accuracy"] == r["default"] == fake_accuracy(r["arch"])
        assert r["energy_mJ"] == pytest.approx(cost(r["arch"])["energy_mJ"])  # the evaluator's extra key is kept
        if r["baseline"] is None:
            assert r["energy_mJ"] <= energy_max and r["feasible"], "a searched architecture breaks the constraint"
    feasible = [r for r in records if r["feasible"]]
    best = strategy.best()
    assert best is not None and best["accuracy"] == max(r["accuracy"] for r in feasible)
    assert any(not r["feasible"] for r in records), "the budget should exclude some baselines (e.g. all-attn)"

    # the strategy drives the core exactly as a direct ask/tell loop does
    ref = reference(spec, cost, energy_max)
    assert {arch_key(r["arch"]) for r in ref.records()} == set(evaluate.calls)
    assert ref.best()["arch"] == best["arch"]

    # NNI's export: best first, only feasible models; the sample is the architecture
    top = exp.export_top_models(top_k=3, formatter="dict")
    assert top[0] == best["arch"]
    assert [fake_accuracy(a) for a in top] == sorted((r["accuracy"] for r in feasible), reverse=True)[:3]
    assert [m.sample for m in strategy.list_models(sort=False)] == [r["arch"] for r in records]

    # the files: state (equal to state_dict) and results
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert state == json.loads(json.dumps(strategy.state_dict())) and state["done"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["done"] and results["evaluated"] == len(records) and results["best"]["arch"] == best["arch"]
    assert "ShiftAddEvolutionStrategy(preset='cv_small', space='tiny'" in repr(strategy)


def test_a_pareto_search_in_a_nas_experiment_returns_the_front(spec: SpaceSpec, cost: Callable,
                                                               tmp_path: Path) -> None:
    """The preset's ``goal: pareto`` through NNI: the strategy returns the front of accuracy and energy, as the core
    driven directly does, and writes it into results.json."""
    pareto = {**SMALL, "goal": "pareto", "objectives": {"accuracy": "max", "energy_mJ": "min"}}
    strategy = ShiftAddEvolutionStrategy("cv_small", output=str(tmp_path / "out"), overrides=pareto)
    run_experiment(spec, strategy, Evaluator(cost), tmp_path / "nni")
    front = strategy.front()
    ref = Evolution(spec, load_preset("cv_small", pareto), cost)
    while not ref.done:
        for arch in ref.ask():
            ref.tell(arch, {"accuracy": fake_accuracy(arch), "default": fake_accuracy(arch),
                            "energy_mJ": cost(arch)["energy_mJ"]})
    assert [r["arch"] for r in front] == [r["arch"] for r in ref.front()] and len(front) >= 2
    energy = [r["energy_mJ"] for r in front]
    assert [r["accuracy"] for r in front] == sorted((r["accuracy"] for r in front), reverse=True)
    assert energy == sorted(energy, reverse=True)  # more accurate costs more on a front
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["arch"] for r in results["front"]] == [r["arch"] for r in front]


def test_resume_from_output_evaluates_nothing_twice(spec: SpaceSpec, cost: Callable, energy_max: float,
                                                    tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = Evaluator(cost)
    stopped = ShiftAddEvolutionStrategy("cv_small", output=out, overrides=overrides(energy_max))
    run_experiment(spec, stopped, first, tmp_path / "nni1", max_models=6)  # the engine's budget ends the run
    assert len(first.calls) == 6 and not stopped.evolution.done
    assert len(json.loads((tmp_path / "out" / "state.json").read_text())["results"]) == 6

    second = Evaluator(cost)
    resumed = ShiftAddEvolutionStrategy("cv_small", output=out, overrides=overrides(energy_max))
    with pytest.raises(RuntimeError, match="not known yet"):
        resumed.records()  # the space is not known before the experiment starts ...
    run_experiment(spec, resumed, second, tmp_path / "nni2")
    assert resumed.evolution.done  # ... then state.json is loaded
    assert not set(first.calls) & set(second.calls), "a finished architecture was evaluated again"
    assert len(second.calls) == len(set(second.calls))
    ref = reference(spec, cost, energy_max)
    assert set(first.calls) | set(second.calls) == {arch_key(r["arch"]) for r in ref.records()}
    assert resumed.best() == ref.best()
    # models of the first run are re-frozen with their recorded metric for NNI's export
    assert [m.sample for m in resumed.list_models()][0] == ref.best()["arch"]


def test_state_dict_round_trip_without_output(spec: SpaceSpec, cost: Callable, energy_max: float,
                                              tmp_path: Path) -> None:
    """NNI's checkpoint path: state_dict() of one strategy, load_state_dict() into a new one before it starts."""
    first = Evaluator(cost)
    stopped = ShiftAddEvolutionStrategy("cv_small", overrides=overrides(energy_max))
    run_experiment(spec, stopped, first, tmp_path / "nni1", max_models=5)
    state = json.loads(json.dumps(stopped.state_dict()))  # plain JSON
    assert len(state["results"]) == 5 and not state["done"]

    second = Evaluator(cost)
    resumed = ShiftAddEvolutionStrategy(load_preset("cv_small", overrides(energy_max)))  # an EvolutionConfig works too
    resumed.load_state_dict(state)  # kept until the space is known
    run_experiment(spec, resumed, second, tmp_path / "nni2")
    assert resumed.evolution.done and not set(first.calls) & set(second.calls)
    assert set(first.calls) | set(second.calls) == {arch_key(r["arch"]) for r in resumed.records()}
    assert not (tmp_path / "out").exists()


def test_failed_and_silent_models_rank_last(spec: SpaceSpec, cost: Callable, energy_max: float,
                                            tmp_path: Path) -> None:
    crash = lambda a: a["stage0.layer0.op"] == "shift"  # noqa: E731
    silent = lambda a: a["stage0.layer0.op"] == "add"  # noqa: E731
    evaluate = Evaluator(cost, fail=crash, silent=silent)
    strategy = ShiftAddEvolutionStrategy("cv_small", output=str(tmp_path / "out"), overrides=overrides(energy_max))
    run_experiment(spec, strategy, evaluate, tmp_path / "nni", continue_on_failure=True)
    assert strategy.evolution.done and len(evaluate.calls) == len(set(evaluate.calls))
    records = strategy.records()
    failed = [r for r in records if crash(r["arch"]) or silent(r["arch"])]
    assert failed, "the tiny space should produce some shift/add first layers"
    assert all(r["status"] == "failed" and r["accuracy"] is None for r in failed)
    assert all(r["status"] == "ok" for r in records if r not in failed)
    assert not crash(strategy.best()["arch"]) and not silent(strategy.best()["arch"])


def test_an_impossible_constraint_stops_the_search_with_results(spec: SpaceSpec, cost: Callable,
                                                                 tmp_path: Path) -> None:
    evaluate = Evaluator(cost)
    strategy = ShiftAddEvolutionStrategy("cv_small", output=str(tmp_path / "out"),
                                 overrides={**SMALL, "constraints": {"energy_mJ": {"max": 1e-9}}, "max_rejects": 20})
    run_experiment(spec, strategy, evaluate, tmp_path / "nni")
    assert strategy.error is not None and "no architecture met the constraints" in strategy.error
    assert evaluate.calls == [] and not strategy.evolution.done
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["error"] == strategy.error and results["evaluated"] == 0


def test_the_space_must_match(spec: SpaceSpec) -> None:
    assert space_spec_of(SimplifiedModelSpace.from_model(HybridCVSpace(spec, "none"))) == spec
    assert space_spec_of(RawFormatModelSpace.from_model(HybridCVSpace(spec, "none"))) == spec
    other = load_space("cv_small")
    wrong = r"labels differ from those of space 'tiny'.*missing \[\], unknown \['stage2.depth'"
    with pytest.raises(ValueError, match=wrong):
        ShiftAddEvolutionStrategy("cv_small", space=spec).initialize(
            SimplifiedModelSpace.from_model(HybridCVSpace(other, "none")), SequentialExecutionEngine())
    with pytest.raises(ValueError, match=r"SimplifiedModelSpace is not one of ours; pass "
                       r"ShiftAddEvolutionStrategy\(example_inputs=\(x,\)\)"):
        ShiftAddEvolutionStrategy("cv_small").initialize(SimplifiedModelSpace.from_model(Plain()), SequentialExecutionEngine())


class Hybrids(ModelSpace):
    """A user's own model space: two hybrid layers and a width choice, nothing from a SpaceSpec."""

    def __init__(self) -> None:
        from nni.nas.nn.pytorch import LayerChoice
        from torch import nn

        from nni_shiftadd.nn import HybridChoice

        super().__init__()
        self.stem = LayerChoice({"w8": nn.Conv2d(1, 16, 3, padding=1), "w16": nn.Conv2d(1, 16, 5, padding=2)},
                                label="stem")
        self.block1 = HybridChoice(16, 16, label="block1")
        self.block2 = HybridChoice(16, 16, candidates=("conv", "shift", "add"), label="block2")
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))).mean((2, 3)))


def test_the_evolution_searches_any_model_space_with_traced_costs(tmp_path: Path) -> None:
    import torch

    from nni_shiftadd.cost import EyerissProfiler
    from nni_shiftadd.strategy.domain import ModelSpaceDomain, model_space_cost_fn

    space = Hybrids()
    x = torch.zeros(1, 1, 8, 8)
    traced = EyerissProfiler(space, x)
    energies = sorted(traced.profile({"stem": s, "block1": a, "block2": b}) for s in ("w8", "w16")
                      for a in ("attn", "conv", "shift", "add") for b in ("conv", "shift", "add"))
    limit = energies[len(energies) // 2]  # half the space meets it
    seen: list[Any] = []

    def params(model) -> None:  # a deterministic score computed from the frozen model NNI hands over
        seen.append(model)
        nni.report_final_result(float(sum(p.numel() for p in model.parameters())))

    strategy = ShiftAddEvolutionStrategy("cv_small", example_inputs=(x,), output=str(tmp_path / "search"),
                                 overrides={**SMALL, "constraints": {"energy_mJ": {"max": limit}}})
    NasExperiment(space, FunctionalEvaluator(params), strategy, NasExperimentConfig("sequential", "raw")).run()
    records = strategy.records()
    assert strategy.evolution.domain.choices == {"stem": ["w8", "w16"], "block1": ["attn", "conv", "shift", "add"],
                                                 "block2": ["conv", "shift", "add"]}
    baselines = {r["baseline"]: r["arch"] for r in records if r["baseline"]}
    assert set(baselines) == {"all_conv", "all_shift", "all_add", "all_attn"}
    assert strategy.evolution.domain.baselines(["attn", "nope"]) == {
        "all_attn": {"stem": "w8", "block1": "attn", "block2": "conv"}}  # first values where attn is not offered
    assert all(isinstance(m, torch.nn.Module) for m in seen) and len(seen) == len(records)
    searched = [r for r in records if r["baseline"] is None]
    assert len(searched) >= SMALL["population"] - len(baselines)  # a baseline may also be a searched member
    for r in searched:  # every searched architecture met the constraint, by an independent trace
        assert traced.profile(r["arch"]) <= limit * (1 + 1e-9)
    best = strategy.best()
    feasible = [r for r in records if r["feasible"]]
    assert best["default"] == max(r["default"] for r in feasible)
    assert (tmp_path / "search" / "state.json").is_file()
    cost = model_space_cost_fn(space, x)
    assert cost(best["arch"])["energy_mJ"] == pytest.approx(traced.profile(best["arch"]))
    assert ModelSpaceDomain(Plain()).choices == {"width": [4, 8]}

    class Continuous(ModelSpace):
        def __init__(self) -> None:
            super().__init__()
            self.add_mutable(nni.uniform("dropout", 0.0, 0.5))

    with pytest.raises(ValueError, match="'dropout': the evolution searches categorical choices; Numerical"):
        ModelSpaceDomain(Continuous())


class Plain(ModelSpace):
    """A model space that is not built from a SpaceSpec."""

    def __init__(self) -> None:
        super().__init__()
        self.width = self.add_mutable(Categorical([4, 8], label="width"))


class ThreadedEngine(ExecutionEngine):
    """An engine that trains every submitted model at once in its own thread and reports from there, in random
    order (as a training-service engine does from its listener thread)."""

    def __init__(self, cost: Callable) -> None:
        super().__init__()
        self.cost, self.models, self.threads = cost, [], []
        self.rng = random.Random(0)

    def submit_models(self, *models: Any) -> None:
        for model in models:
            self.models.append(model)
            model.status = ModelStatus.Training
            thread = threading.Thread(target=self._train, args=(model, self.rng.random() * 0.02))
            self.threads.append(thread)
            thread.start()

    def _train(self, model: Any, delay: float) -> None:
        time.sleep(delay)
        arch = dict(model.sample)
        self.dispatch_model_event(FinalMetricEvent(model, {"default": fake_accuracy(arch),
                                                           "energy_mJ": self.cost(arch)["energy_mJ"]}))
        self.dispatch_model_event(TrainingEndEvent(model, ModelStatus.Trained))

    def list_models(self, status: ModelStatus | None = None) -> list[Any]:
        return [m for m in self.models if status is None or m.status == status]

    def idle_worker_available(self) -> bool:
        return True

    def budget_available(self) -> bool:
        return True


def test_results_arriving_from_another_thread(spec: SpaceSpec, cost: Callable, energy_max: float) -> None:
    engine = ThreadedEngine(cost)
    strategy = ShiftAddEvolutionStrategy("cv_small", overrides=overrides(energy_max))
    strategy(SimplifiedModelSpace.from_model(HybridCVSpace(spec, "none")), engine)
    for thread in engine.threads:
        thread.join()
    keys = [arch_key(m.sample) for m in engine.models]
    assert strategy.evolution.done and len(keys) == len(set(keys)), "an architecture was submitted twice"
    ref = reference(spec, cost, energy_max)
    assert set(keys) == {arch_key(r["arch"]) for r in ref.records()}  # arrival order does not change the search
    assert strategy.best() == ref.best()


TINY_NLP = """
name: tiny_nlp
kind: translation
qkv_dim: 8
max_positions: 32
dropout: 0.0
encoder: {depths: [2], blocks: [attn, attn+add, conv, shift, add], embed_dims: [16, 8], heads: [2, 1],
          ffn_dims: [16, 8], kernel_sizes: [3, 5]}
decoder: {depths: [2, 1], blocks: [attn, attn+shift], embed_dims: [16, 8], heads: [2, 1], ffn_dims: [16, 8],
          kernel_sizes: [3, 5], attend: [1, 2]}
"""


@pytest.mark.parametrize("blocks", [None, ["attn"]], ids=["hybrid", "attn-only"])
def test_translation_search_in_a_nas_experiment(blocks: list[str] | None, tmp_path: Path) -> None:
    """The same strategy on a translation space (``HybridNLPSpace``): NNI freezes each subnet with the weights it
    inherits (raw format), the evaluator scores it, and the search is the one the core runs on its own; restricted
    to Attn blocks (HAT's space), it never proposes another block type."""
    import torch

    from nni_shiftadd.space.nlp import HybridNLPSpace

    path = tmp_path / "tiny_nlp.yaml"
    path.write_text(TINY_NLP)
    spec = load_space(path)
    cost = space_cost_fn(spec)
    torch.manual_seed(0)
    space = HybridNLPSpace(spec, vocab_size=20, padding_idx=1, mode="hws").eval()
    src, prev = torch.randint(4, 20, (3, 7)), torch.randint(4, 20, (3, 6))
    target = torch.randint(4, 20, (3, 6))

    def loss_of(model: torch.nn.Module) -> float:
        with torch.no_grad():
            logits = model(src, prev)
        return round(float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.flatten())), 5)

    calls: list[str] = []

    def evaluate(model: torch.nn.Module) -> None:
        arch = dict(nni.get_current_parameter().sample)
        calls.append(arch_key(arch))
        space.activate(arch)  # the frozen subnet computes what the supernet's path does: its inherited weights
        assert loss_of(model) == pytest.approx(loss_of(space), abs=1e-4)
        nni.report_final_result({"default": loss_of(model), **cost(arch)})

    small = {"iterations": 2, "population": 4, "parents": 2, "mutation": 2, "crossover": 2, "seed": 1,
             "constraints": {}, "blocks": blocks, "baselines": ["attn"] if blocks else ["attn", "add"]}
    strategy = ShiftAddEvolutionStrategy("nlp_tiny", output=str(tmp_path / "out"), overrides=small)
    config = NasExperimentConfig(SequentialEngineConfig(), "raw")
    config.experiment_working_directory = str(tmp_path / "nni")
    exp = NasExperiment(space, FunctionalEvaluator(evaluate), strategy, config)
    try:
        exp.run()
    finally:
        exp.stop()
    assert strategy.spec == spec and strategy.error is None and strategy.evolution.done
    assert len(calls) == len(set(calls)), "an architecture was evaluated twice"
    records = strategy.records()
    ops = {v for r in records for k, v in r["arch"].items() if k.endswith(".op")}
    assert ops == {"attn"} if blocks else len(ops) > 2, ops
    assert all(r["status"] == "ok" and r["valid_loss"] == r["default"] and r["flops_G"] > 0 for r in records)
    best = strategy.best()
    assert best["valid_loss"] == min(r["valid_loss"] for r in records)  # goal: min (HAT's objective)
    assert exp.export_top_models(top_k=1, formatter="dict")[0] == best["arch"]

    ref = Evolution(spec, load_preset("nlp_tiny", small), cost)  # the core on its own, told the same losses
    losses = {arch_key(r["arch"]): r["valid_loss"] for r in records}
    while not ref.done:
        for arch in ref.ask():
            ref.tell(arch, {"valid_loss": losses[arch_key(arch)]})
    assert {arch_key(r["arch"]) for r in ref.records()} == set(calls) and ref.best()["arch"] == best["arch"]
