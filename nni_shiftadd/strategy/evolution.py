"""HAT-style evolution search under hardware constraints, as an ask/tell core shared by the NNI front ends.

A generation is a list of architectures. The first holds ``population`` random architectures that meet the
constraints; every later one holds the ``parents`` best of the previous generation, ``mutation`` children of a
random parent with every gene resampled with probability ``mutation_prob``, and ``crossover`` children taking
each gene from one of two random parents (uniform crossover). Children that break a constraint (energy, latency,
MACs, params, op counts from the cost model) are rejected and redrawn; after ``max_rejects`` rejections in a row
the search stops with a :class:`ConstraintError` naming the closest architecture found.

The core never evaluates anything: :meth:`Evolution.ask` hands out the architectures of the current generation
that have no result yet, :meth:`Evolution.tell` takes a result. A generation advances once all its members have
results, so the search is deterministic for a seed and a given evaluator, whatever order results arrive in, and an
architecture evaluated once is never evaluated again (a child identical to an earlier architecture reuses its
result). The whole state is JSON (:meth:`state_dict`); :meth:`save` writes it atomically after every result.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_write_json
from ..config import ConfigError, load_yaml, parse_yaml
from ..cost.metrics import CONSTRAINT_METRICS, METRICS, Arch, Bound, CostFn, check_eyeriss_preset
from .pareto import non_dominated_fronts, survivor_order
from ..resources import list_resources, resource
from ..space.spec import SpaceSpec
from .domain import SearchDomain, as_domain
from ..vocabulary import ATTENTION, BLOCKS, CONV_FAMILY, ENCODER_BLOCKS



class ConstraintError(RuntimeError):
    """No architecture met the constraints within the allowed number of samples."""

    def __init__(self, message: str, closest: Arch | None, metrics: dict[str, float] | None) -> None:
        super().__init__(message)
        self.closest, self.metrics = closest, metrics


@dataclasses.dataclass
class EvolutionConfig:
    """Schema of a strategy preset (``strategies/*.yaml``)."""

    name: str = "custom"
    description: str = ""
    iterations: int = 20
    population: int = 50
    parents: int = 10
    mutation: int = 25
    crossover: int = 25
    mutation_prob: float = 0.2
    seed: int = 0
    objective: str = "accuracy"
    # larger is better (accuracy, BLEU), smaller (a validation loss), or the Pareto front of ``objectives``
    goal: Literal["max", "min", "pareto"] = "max"
    objectives: dict[str, Literal["max", "min"]] = dataclasses.field(default_factory=dict)  # goal pareto: metric -> way
    constraints: dict[str, Bound] = dataclasses.field(default_factory=dict)
    bits: int = 32
    max_rejects: int = 2000
    baselines: list[str] = dataclasses.field(default_factory=lambda: [*CONV_FAMILY, ATTENTION])
    latency: Literal["eyeriss", "predictor"] = "eyeriss"
    predictor: str | None = None
    eyeriss: str = "shiftaddnas"  # the Eyeriss model's preset (nni_shiftadd.cost.eyeriss.PRESETS)
    blocks: list[str] | None = None  # search only these block types (e.g. [attn]: HAT's Attn-only search)

    def validate(self) -> None:
        for name in ("iterations", "population", "parents", "max_rejects"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        for name in ("mutation", "crossover", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"field {name!r}: must be >= 0, got {getattr(self, name)}")
        if self.parents > self.population:
            raise ValueError(f"field 'parents': {self.parents} is more than the population ({self.population})")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise ValueError(f"field 'mutation_prob': must be in [0, 1], got {self.mutation_prob}")
        for key, bound in self.constraints.items():
            if key not in CONSTRAINT_METRICS:
                raise ValueError(f"field 'constraints': unknown metric {key!r}; allowed {list(CONSTRAINT_METRICS)}")
            try:
                bound.validate()
            except ValueError as err:
                raise ValueError(f"field 'constraints.{key}': {err}") from None
        for op in self.baselines:
            if op not in BLOCKS:
                raise ValueError(f"field 'baselines': unknown block type {op!r}; allowed {list(BLOCKS)}")
        if self.bits not in (8, 16, 32):
            raise ValueError(f"field 'bits': got {self.bits}; expected 8, 16 or 32")
        if self.goal not in ("max", "min", "pareto"):
            raise ValueError(f"field 'goal': got {self.goal!r}; expected 'max' (larger objective is better), 'min' or "
                             "'pareto' (the front of 'objectives')")
        if self.goal == "pareto":
            if len(self.objectives) < 2 or self.objective not in self.objectives:
                raise ValueError(f"field 'objectives': goal 'pareto' trades off two or more metrics including the "
                                 f"objective {self.objective!r}, e.g. {{{self.objective}: max, energy_mJ: min}}; got "
                                 f"{self.objectives}")
            for metric, way in self.objectives.items():
                if metric != self.objective and metric not in METRICS:
                    raise ValueError(f"field 'objectives': unknown metric {metric!r}; allowed {sorted(METRICS)} or "
                                     f"the objective {self.objective!r}")
                if way not in ("max", "min"):
                    raise ValueError(f"field 'objectives': {metric}: got {way!r}; expected 'max' or 'min'")
        elif self.objectives:
            raise ValueError(f"field 'objectives': only with goal 'pareto' (got goal {self.goal!r})")
        if self.blocks is not None:
            if not self.blocks:
                raise ValueError("field 'blocks': empty; null searches every block type of the space, or name some "
                                 f"of {list(ENCODER_BLOCKS)}")
            for block in self.blocks:
                if block not in ENCODER_BLOCKS:
                    raise ValueError(f"field 'blocks': unknown block type {block!r}; allowed {list(ENCODER_BLOCKS)}")
            outside = [op for op in self.baselines if op not in self.blocks]
            if outside:
                raise ValueError(f"field 'baselines': {outside} are not among the searched blocks {self.blocks}; "
                                 "list only those (e.g. baselines: [attn] with blocks: [attn])")
        check_eyeriss_preset(self.eyeriss)
        if self.latency == "predictor" and not self.predictor:
            raise ValueError("field 'predictor': latency 'predictor' needs the path of a trained latency predictor")

    @property
    def objective_goal(self) -> str:
        """Which way the objective is better: ``goal``, or under ``pareto`` the objective's entry of
        ``objectives`` (what NNI's web UI and the plots rank by)."""
        return self.objectives[self.objective] if self.goal == "pareto" else self.goal

    @property
    def generation_size(self) -> int:
        """Members of every generation after the first."""
        return self.parents + self.mutation + self.crossover


def load_preset(name_or_path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> EvolutionConfig:
    """A shipped preset by name (``"cv"``, ``"nlp"``, ``"cv_small"``; see ``strategies/``) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return load_yaml(EvolutionConfig, path, overrides)
    name = str(name_or_path)
    file = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    try:
        text = resource("strategies", file).read_text()
    except FileNotFoundError:
        presets = [p.rsplit(".", 1)[0] for p in list_resources("strategies") if not p.startswith("meta")]
        raise ConfigError(f"strategy preset {name!r}: no such file and no shipped preset of that name; shipped "
                          f"presets are {presets}") from None
    return parse_yaml(EvolutionConfig, text, f"strategies/{file}", overrides)


def arch_key(arch: Mapping[str, Any]) -> str:
    """A canonical architecture as a stable string (JSON, keys in label order)."""
    return json.dumps(arch, separators=(",", ":"))


def result_metrics(value: Any, objective: str) -> dict[str, Any] | None:
    """The metrics to :meth:`Evolution.tell` for one evaluation's final result, as NNI delivers it to either front
    end: a dict of metrics with ``default`` (extra keys such as ``energy_mJ`` are kept), a bare number, or ``None``
    for no result (a failed evaluation). ``default`` doubles as ``objective`` unless that key is reported too."""
    if value is None:
        return None
    metrics = dict(value) if isinstance(value, Mapping) else {"default": value}
    metrics.setdefault(objective, metrics.get("default"))
    return metrics


class Evolution:
    """The ask/tell evolution core (see the module docstring).

    Args:
        spec: the search space: a spec of ours (``SpaceSpec``, translation spec), any NNI ``ModelSpace``, or a
            :class:`~nni_shiftadd.strategy.domain.SearchDomain`; restricted to ``cfg.blocks`` when the preset names
            some. ``self.domain`` is what is searched, ``self.spec`` the spec (the domain for a model space).
        cfg: the strategy settings.
        cost: ``arch -> {metric: value}`` for the constrained metrics (:func:`space_cost_fn` for our spaces,
            :func:`~nni_shiftadd.strategy.domain.model_space_cost_fn` for any model space); may be ``None``
            without constraints.
    """

    def __init__(self, spec: SpaceSpec | SearchDomain | Any, cfg: EvolutionConfig, cost: CostFn | None = None) -> None:
        if cfg.constraints and cost is None:
            raise ValueError("cost: constraints need a cost function")
        domain = as_domain(spec)
        if cfg.blocks is not None:
            try:
                domain = domain.restrict(cfg.blocks)
            except ValueError as err:
                raise ValueError(f"field 'blocks': {err}") from None
        self.domain, self.cfg, self.cost = domain, cfg, cost
        self.spec = getattr(domain, "spec", domain)
        self.space = domain.choices
        self.rng = random.Random(cfg.seed)
        self.generation = 0
        self.members: list[str] = []  # keys of the current generation, in order
        self.results: dict[str, dict[str, Any]] = {}  # every evaluated arch: key -> record
        self.history: list[dict[str, Any]] = []
        self.baselines: dict[str, str] = {}  # name -> key (references, never parents)
        self.rejected = 0
        self._cost_memo: dict[str, dict[str, float]] = {}
        self._started = False

    # -- ask / tell ------------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.generation >= self.cfg.iterations

    def ask(self) -> list[Arch]:
        """The architectures still waiting for a result: the baselines, then the current generation's members."""
        self._start()
        if self.done:
            return []
        keys = [*self.baselines.values(), *self.members]
        seen: set[str] = set()
        todo = []
        for k in keys:
            if k not in self.results and k not in seen:
                seen.add(k)
                todo.append(json.loads(k))
        return todo

    def tell(self, arch: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> None:
        """Record the result of ``arch`` (``metrics`` holds the objective; ``None`` for a failed evaluation, which
        ranks last). Advances the generation when it is complete."""
        self._start()
        key = arch_key(self.domain.canonical(arch))
        if metrics is not None and self.cfg.objective not in metrics:
            raise ValueError(f"metrics: no {self.cfg.objective!r} (the objective) in {sorted(metrics)}")
        record: dict[str, Any] = {"arch": json.loads(key), "generation": self.generation,
                                  "status": "ok" if metrics is not None else "failed"}
        record.update({k: v for k, v in (metrics or {}).items()})
        if metrics is None:
            record[self.cfg.objective] = None
        self.results[key] = record
        while not self.done and not self.ask():
            self._advance()

    def score(self, key: str) -> float:
        """The objective of ``key`` oriented so that larger is better (``goal: min`` negates it; under ``pareto``
        the objective's own way); a failed evaluation scores ``-inf``."""
        value = self.results[key].get(self.cfg.objective)
        if value is None:
            return -math.inf
        way = self.cfg.objectives.get(self.cfg.objective, self.cfg.goal)
        return float(value) if way == "max" else -float(value)

    def vector(self, key: str) -> tuple[float, ...]:
        """``goal: pareto``: the objectives of ``key``, each oriented so that larger is better; a cost metric the
        result does not report comes from the cost function. A failed evaluation is ``-inf`` everywhere."""
        record = self.results[key]
        if record["status"] != "ok":
            return tuple(-math.inf for _ in self.cfg.objectives)
        out = []
        for metric, way in self.cfg.objectives.items():
            value = record.get(metric)
            if value is None:
                value = self._costs(key)[metric]
            out.append(float(value) if way == "max" else -float(value))
        return tuple(out)

    def best(self) -> dict[str, Any] | None:
        """The best evaluated architecture that meets the constraints (baselines included if they do); under
        ``goal: pareto``, the front's best in the objective."""
        ok = [k for k, r in self.results.items() if r["status"] == "ok" and self._feasible(k)]
        return self.results[max(ok, key=self.score)] if ok else None

    def front(self) -> list[dict[str, Any]]:
        """``goal: pareto``: the evaluated architectures that meet the constraints and that no other dominates in
        the objectives (baselines included), best objective first; otherwise :meth:`best` alone."""
        ok = [k for k, r in self.results.items() if r["status"] == "ok" and self._feasible(k)]
        if self.cfg.goal != "pareto":
            return [self.results[max(ok, key=self.score)]] if ok else []
        fronts = non_dominated_fronts([self.vector(k) for k in ok])
        keys = [ok[i] for i in fronts[0]] if fronts else []
        return [self.results[k] for k in sorted(keys, key=self.score, reverse=True)]

    # -- generations -----------------------------------------------------------------------------------------------
    def _start(self) -> None:
        if self._started:
            return
        if not self.members and self.generation == 0:
            members = self._unique(self.cfg.population, self._random)  # may raise ConstraintError: not started
            self.baselines = {name: arch_key(arch) for name, arch in
                              self.domain.baselines(self.cfg.baselines).items()}
            self.members = members
        self._started = True

    def _advance(self) -> None:
        members = list(dict.fromkeys(self.members))
        if self.cfg.goal == "pareto":  # NSGA-II: by front, the least crowded first
            ranked = [members[i] for i in survivor_order([self.vector(k) for k in members])]
        else:
            ranked = sorted(members, key=self.score, reverse=True)
        parents = ranked[:self.cfg.parents]
        best = max(members, key=self.score) if members else None
        entry = {"generation": self.generation, "evaluated": len(self.members),
                 "best": self.results[best].get(self.cfg.objective) if best else None,
                 "best_arch": json.loads(best) if best else None}
        if self.cfg.goal == "pareto":
            entry["front_size"] = len(self.front())
        self.history.append(entry)
        self.generation += 1
        if self.done:
            self.members = parents
            return
        parent_archs = [json.loads(k) for k in parents]
        mutated = [self._sample(lambda: self._mutate(self.rng.choice(parent_archs))) for _ in range(self.cfg.mutation)]
        crossed = [self._sample(lambda: self._crossover(parent_archs)) for _ in range(self.cfg.crossover)]
        self.members = parents + mutated + crossed

    def _unique(self, count: int, draw: Callable[[], Arch]) -> list[str]:
        keys: list[str] = []
        seen: set[str] = set()
        for _ in range(count):
            key = self._sample(draw, avoid=seen)
            seen.add(key)
            keys.append(key)
        return keys

    def _random(self) -> Arch:
        return self.domain.random(self.rng)

    def _mutate(self, parent: Arch) -> Arch:
        child = dict(parent)
        for label, choices in self.space.items():
            if self.rng.random() < self.cfg.mutation_prob:
                child[label] = self.rng.choice(choices)
        return child

    def _crossover(self, parents: list[Arch]) -> Arch:
        a, b = (self.rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0]))
        return {label: (a if self.rng.random() < 0.5 else b)[label] for label in self.space}

    def _sample(self, draw: Callable[[], Arch], avoid: set[str] | None = None) -> str:
        """Draw until an architecture meets the depth rule and the constraints (and is not in ``avoid``)."""
        closest: tuple[float, str] | None = None
        for _ in range(self.cfg.max_rejects):
            arch = draw()
            if not self.domain.valid(arch):
                continue
            key = arch_key(self.domain.canonical(arch))
            if avoid is not None and key in avoid:
                continue
            violation = self._violation(key)
            if violation == 0.0:
                return key
            self.rejected += 1
            if closest is None or violation < closest[0]:
                closest = (violation, key)
        arch = json.loads(closest[1]) if closest else None
        metrics = self._costs(closest[1]) if closest else None
        wanted = {k: dataclasses.asdict(b) for k, b in self.cfg.constraints.items()}
        raise ConstraintError(
            f"no architecture met the constraints {wanted} in {self.cfg.max_rejects} samples (generation "
            f"{self.generation}); the closest was {arch} with {metrics}. Widen the constraints or raise "
            "'max_rejects'; the results so far are kept", arch, metrics)

    def _costs(self, key: str) -> dict[str, float]:
        if key not in self._cost_memo:
            self._cost_memo[key] = dict(self.cost(json.loads(key))) if self.cost is not None else {}
        return self._cost_memo[key]

    def _violation(self, key: str) -> float:
        if not self.cfg.constraints:
            return 0.0
        costs = self._costs(key)
        return sum(b.violation(costs[m]) for m, b in self.cfg.constraints.items())

    def _feasible(self, key: str) -> bool:
        return self._violation(key) == 0.0

    # -- state -----------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (JSON-serialisable)."""
        version, internal, gauss = self.rng.getstate()
        return {"format": 1, "space": self.domain.name, "config": dataclasses.asdict(self.cfg),
                "generation": self.generation, "done": self.done, "members": self.members,
                "baselines": self.baselines, "results": list(self.results.values()), "history": self.history,
                "rejected": self.rejected, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict`; the space and the settings must be the ones it was made with."""
        if state.get("format") != 1:
            raise ValueError(f"evolution state: unknown format {state.get('format')!r}")
        if state["space"] != self.domain.name:
            raise ValueError(f"evolution state: made for space {state['space']!r}, not {self.domain.name!r}")
        mine = dataclasses.asdict(self.cfg)
        changed = sorted(k for k in mine if k not in ("iterations", "max_rejects") and mine[k] != state["config"].get(k))
        if changed:
            raise ValueError(f"evolution state: the strategy settings {changed} differ from the saved ones "
                             f"({ {k: state['config'].get(k) for k in changed} }); resume with the same preset")
        self.generation, self.members = int(state["generation"]), list(state["members"])
        self.baselines = dict(state["baselines"])
        self.results = {arch_key(r["arch"]): dict(r) for r in state["results"]}
        self.history, self.rejected = list(state["history"]), int(state["rejected"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self._started = bool(self.members) or self.generation > 0  # else the first generation is still to draw
        while not self.done and not self.ask():  # iterations raised on resume: go on from the last generation
            self._advance()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (a kill never leaves half a file)."""
        atomic_write_json(path, self.state_dict())

    def load(self, path: str | os.PathLike[str]) -> bool:
        """Resume from ``path`` if it exists; returns whether it did."""
        path = Path(path)
        if not path.is_file():
            return False
        self.load_state_dict(json.loads(path.read_text()))
        return True

    def records(self) -> list[dict[str, Any]]:
        """Every evaluated architecture with its metrics and, where it is one, its baseline name."""
        names = {k: n for n, k in self.baselines.items()}
        front = {arch_key(r["arch"]) for r in self.front()} if self.cfg.goal == "pareto" else set()
        out = []
        for key, record in self.results.items():
            row = dict(record)
            row["baseline"] = names.get(key)
            row["feasible"] = self._feasible(key)
            if self.cfg.goal == "pareto":
                row["pareto_front"] = key in front
            out.append(row)
        return out
