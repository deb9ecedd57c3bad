"""The Pareto search (``goal: pareto``, NSGA-II): the sorting and crowding it selects by, the front it returns
against brute force on a space small enough to enumerate, against a series of constrained searches on cv_small
with the same number of evaluations, and through the NNI strategy and the results it writes."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from nni_shiftadd.config import ConfigError
from nni_shiftadd.cost.metrics import space_cost_fn
from nni_shiftadd.space import load_space
from nni_shiftadd.space.spec import arch_space, canonical_arch, layer_plan, structurally_valid
from nni_shiftadd.strategy import Evolution, arch_key, load_preset
from nni_shiftadd.strategy.pareto import (crowding_distance, dominates, hypervolume, non_dominated_fronts,
                                          survivor_order)


def test_sorting_and_crowding_by_hand() -> None:
    points = [(3, 1), (2, 2), (1, 3), (1, 1), (2, 1), (0, 0)]  # larger is better
    assert dominates((2, 2), (2, 1)) and not dominates((2, 2), (2, 2)) and not dominates((3, 1), (1, 3))
    assert non_dominated_fronts(points) == [[0, 1, 2], [4], [3], [5]]  # (2, 1) dominates (1, 1)
    distance = crowding_distance(points, [0, 1, 2])
    assert distance[0] == distance[2] == math.inf and distance[1] == pytest.approx(2.0)  # (3-1)/2 + (3-1)/2
    assert survivor_order(points)[:3] == [0, 2, 1]  # the extremes first, then the crowded middle
    assert hypervolume([(3, 1), (2, 2), (1, 3)], (0, 0)) == pytest.approx(3 + 2 + 1)


def _accuracy(spec, arch) -> float:
    """A made-up accuracy that rewards depth and multiplications (so that it trades off against energy)."""
    weight = {"attn": 0.06, "conv": 0.05, "shift": 0.035, "add": 0.03}
    return 0.3 + sum(weight[layer.op] for layer in layer_plan(spec, arch))


def _evaluate(search: Evolution, spec, cost) -> int:
    evaluations = 0
    while not search.done:
        for arch in search.ask():
            search.tell(arch, {"accuracy": _accuracy(spec, arch), **cost(arch)})
            evaluations += 1
    return evaluations


@pytest.fixture(scope="module")
def tiny_space(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(
        "name: tiny_cv\ninput: {channels: 1, size: 28}\nnum_classes: 10\n"
        "stem: {channels: 8, kernel: 3, stride: 1, pool: false}\n"
        "stages:\n"
        "  - {width: 8, resolution: 28, depths: [1, 2], blocks: [conv, shift, add], bottleneck: 2, mlp_ratio: 2.0, "
        "heads: 1}\n"
        "  - {width: 16, resolution: 14, depths: [1, 2], blocks: [conv, shift, add], bottleneck: 2, mlp_ratio: 2.0, "
        "heads: 1}\n"
        "classifier: {pool: avg, dropout: 0.0}\ntotal_depth: null\n")
    return load_space(str(path))


def test_the_front_matches_brute_force_on_an_enumerable_space(tiny_space) -> None:
    spec = tiny_space
    cost = space_cost_fn(spec)
    space = arch_space(spec)
    every = {}
    for values in itertools.product(*space.values()):
        arch = canonical_arch(spec, dict(zip(space, values)))
        if structurally_valid(spec, arch):
            every[arch_key(arch)] = arch
    assert len(every) == 144  # (3 + 9) x (3 + 9)
    points = {k: (_accuracy(spec, a), -cost(a)["energy_mJ"]) for k, a in every.items()}
    keys = list(points)
    truth = {keys[i] for i in non_dominated_fronts([points[k] for k in keys])[0]}
    preset = load_preset("cv_small_pareto", {"iterations": 10, "population": 24, "parents": 12, "mutation": 12,
                                             "crossover": 12, "baselines": ["conv", "shift", "add"]})
    search = Evolution(spec, preset, cost)
    _evaluate(search, spec, cost)
    found = {arch_key(r["arch"]) for r in search.front()}
    assert found <= truth, "a point the search calls non-dominated is dominated"
    reference = (min(p[0] for p in points.values()) - 1e-9, min(p[1] for p in points.values()) - 1e-9)
    covered = hypervolume([points[k] for k in found], reference) / hypervolume([points[k] for k in truth], reference)
    assert covered >= 0.97 and len(found) >= 0.7 * len(truth), (covered, len(found), len(truth))
    records = search.records()
    assert sum(r["pareto_front"] for r in records) == len(found) and search.best() == search.front()[0]


def test_one_pareto_search_covers_more_than_a_series_of_constrained_ones() -> None:
    spec = load_space("cv_small")
    cost = space_cost_fn(spec)
    pareto = Evolution(spec, load_preset("cv_small_pareto", {"iterations": 4}), cost)
    budget = _evaluate(pareto, spec, cost)
    # the classic way: one constrained search per energy budget, the same evaluations shared between them
    picks = []
    for energy in (0.15, 0.3, 0.6):
        search = Evolution(spec, load_preset("cv_small", {"constraints": {"energy_mJ": {"max": energy}},
                                                          "iterations": 2, "population": budget // 6,
                                                          "parents": 4, "mutation": 4, "crossover": 4}), cost)
        _evaluate(search, spec, cost)
        picks.append(search.best())
    def vector(record):
        return record["accuracy"], -record["energy_mJ"]
    reference = (0.0, -5.0)
    series = hypervolume([vector(r) for r in picks], reference)
    front = hypervolume([vector(r) for r in pareto.front()], reference)
    assert front > series and len(pareto.front()) > len(picks), (front, series)


@pytest.mark.parametrize("overrides, message", [
    ({"objectives": {"accuracy": "max"}}, r"field 'objectives': goal 'pareto' trades off two or more metrics"),
    ({"objectives": {"energy_mJ": "min", "latency_ms": "min"}}, r"including the objective 'accuracy'"),
    ({"objectives": {"accuracy": "max", "watts": "min"}}, r"unknown metric 'watts'"),
    ({"objectives": {"accuracy": "up", "energy_mJ": "min"}}, r"accuracy"),
    ({"goal": "max"}, r"field 'objectives': only with goal 'pareto'"),
])
def test_bad_pareto_presets_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_preset("cv_small_pareto", overrides)


def test_results_mark_the_front(tmp_path: Path) -> None:
    from nni_shiftadd.strategy.results import write_results

    spec = load_space("cv_small")
    cost = space_cost_fn(spec)
    search = Evolution(spec, load_preset("cv_small_pareto", {"iterations": 1, "population": 8, "parents": 4,
                                                             "mutation": 2, "crossover": 2}), cost)
    _evaluate(search, spec, cost)
    paths = write_results(search, tmp_path, plots=False)
    saved = json.loads(paths["json"].read_text())
    front = [r["arch"] for r in saved["front"]]
    assert front and all(r["pareto_front"] == (r["arch"] in front) for r in saved["records"])
    assert [r["arch"] for r in saved["front"]] == [r["arch"] for r in search.front()]
