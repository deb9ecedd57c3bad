"""The ranking study of paper Table 5: how faithfully a supernet's inherited-weight accuracies rank architectures
that are trained stand-alone, for each weight-sharing mode (``none``, ``naive``, ``hws``).

``nni-shiftadd ranking --config examples/fashion_mnist/ranking_cv_small.yaml`` (or ``benchmarks/ranking.py``):

1. **Architectures**: ``archs`` of the space, seeded and spread over block-type mix and depth (farthest-point
   sampling over the share of each block type and the depth, among many random ones and the homogeneous baselines).
2. **Seed ceiling**: the first ``ceiling_archs`` trained stand-alone with two seeds; Kendall tau between the two
   runs is the best any supernet can do at this budget. Below ``min_ceiling`` the study stops: raise the budget
   (``-1`` accepts any ceiling: ``--quick`` and tests).
3. **Stand-alone accuracy** of every architecture (``retrain`` recipe, test split).
4. **Supernets**: one per mode and seed (``train-supernet`` recipe, the same budget for every mode).
5. **Inherited accuracy** of every architecture in every supernet, after BatchNorm recalibration.
6. **Search**: the evolution (the demo's preset and energy constraint) on each mode's first supernet; its pick is
   trained stand-alone too.
7. **Report**: Kendall tau, Pearson r, Spearman rho and top-k precision per mode (mean over seeds, their spread,
   bootstrap 95% intervals over architectures), supernet parameters, the search picks, how Laplacian each
   supernet's Add weights are; ``results.json``, ``scatter.png``.

Every trained network and every evaluation is cached under ``output`` (a stand-alone run in
``standalone/<arch>-s<seed>/``, a supernet in ``supernets/<mode>_seed<seed>/``, inherited accuracies in
``inherited/``, searches in ``search/``): a killed study started again goes on where it stopped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_yaml
from ..lock import check_output_dir, output_lock

#: The weight-sharing modes a study may compare (:mod:`nni_shiftadd.hws`).
STUDY_MODES: tuple[str, ...] = ("none", "naive", "hws")


@dataclasses.dataclass
class RankingConfig:
    """Schema of a ranking-study recipe (``examples/fashion_mnist/ranking_cv_small.yaml``)."""

    space: str = "cv_small"
    archs: int = 30
    arch_seed: int = 0
    ceiling_archs: int = 10
    standalone_seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    min_ceiling: float = 0.6
    retrain_recipe: str = "examples/fashion_mnist/retrain_cv_small.yaml"
    retrain_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    modes: list[str] = dataclasses.field(default_factory=lambda: list(STUDY_MODES))
    supernet_seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    eval_batches: int = 8
    calibration_batches: int = 8
    eval_batch_size: int = 256
    top_k: int = 5
    bootstrap: int = 2000
    search_preset: str | None = "cv_small"
    search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: str = "runs/ranking_cv_small"

    def validate(self) -> None:
        for name in ("archs", "ceiling_archs", "eval_batches", "calibration_batches", "eval_batch_size", "top_k",
                     "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.archs < 4:
            raise ValueError(f"field 'archs': a rank correlation needs at least 4 architectures, got {self.archs}")
        if not 2 <= self.ceiling_archs <= self.archs:
            raise ValueError(f"field 'ceiling_archs': must be between 2 and archs ({self.archs}), got "
                             f"{self.ceiling_archs}")
        if self.top_k > self.archs:
            raise ValueError(f"field 'top_k': must be <= archs ({self.archs}), got {self.top_k}")
        if len(self.standalone_seeds) != 2 or len(set(self.standalone_seeds)) != 2:
            raise ValueError(f"field 'standalone_seeds': two different seeds (the first trains every architecture, "
                             f"the second the ceiling's), got {self.standalone_seeds}")
        bad = [m for m in self.modes if m not in STUDY_MODES]
        if bad or not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"field 'modes': got {self.modes}; expected distinct values from {list(STUDY_MODES)}")
        if not self.supernet_seeds or len(set(self.supernet_seeds)) != len(self.supernet_seeds):
            raise ValueError(f"field 'supernet_seeds': at least one, all different, got {self.supernet_seeds}")
        if not -1 <= self.min_ceiling <= 1:
            raise ValueError(f"field 'min_ceiling': a Kendall tau in [-1, 1], got {self.min_ceiling}")
        for name in ("retrain_recipe", "supernet_recipe"):
            if not Path(getattr(self, name)).is_file():
                raise ValueError(f"field {name!r}: no such file {getattr(self, name)!r}")
        for name, reserved in (("retrain_overrides", ("arch", "seed", "output", "space", "supernet")),
                               ("supernet_overrides", ("mode", "seed", "output", "space"))):
            clash = sorted(set(getattr(self, name)) & set(reserved))
            if clash:
                raise ValueError(f"field {name!r}: {clash} are set by the study per network; remove them")
        check_output_dir(self.output, "field 'output'")

    def quick(self) -> RankingConfig:
        """The ``--quick`` version: 6 architectures, 4 for the ceiling, one supernet seed, tiny budgets (minutes)."""
        return dataclasses.replace(
            self, archs=6, ceiling_archs=4, supernet_seeds=self.supernet_seeds[:1], eval_batches=2,
            calibration_batches=2, top_k=min(self.top_k, 3), bootstrap=200, min_ceiling=-1.0,
            retrain_overrides={**self.retrain_overrides, "epochs": 1, "warmup_epochs": 0, "limit_train_batches": 8,
                               "limit_eval_batches": 4},
            supernet_overrides={**self.supernet_overrides, "epochs": 1, "warmup_epochs": 0,
                                "limit_train_batches": 8, "eval_archs": 0},
            search_overrides={**self.search_overrides, "iterations": 1, "population": 4, "parents": 2,
                              "mutation": 1, "crossover": 1},
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> RankingConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(RankingConfig, path, overrides)


# --- architectures ----------------------------------------------------------------------------------------------------

def arch_id(arch: Mapping[str, Any]) -> str:
    """A short stable name of an architecture (the cache key of its stand-alone runs)."""
    from ..strategy.evolution import arch_key

    return hashlib.sha1(arch_key(arch).encode()).hexdigest()[:10]


def arch_features(spec: Any, arch: Mapping[str, Any]) -> np.ndarray:
    """What the selection spreads over: the share of each block type among the layers, and the depth relative to
    the space's deepest network."""
    from ..space.spec import layer_plan

    plan = layer_plan(spec, arch)
    blocks = sorted({b for stage in spec.stages for b in stage.blocks})
    max_depth = sum(max(stage.depths) for stage in spec.stages)
    share = [sum(layer.op == b for layer in plan) / len(plan) for b in blocks]
    return np.array([*share, len(plan) / max_depth])


def select_archs(spec: Any, count: int, seed: int, pool: int = 2000) -> list[dict[str, Any]]:
    """``count`` distinct architectures spread over block mix and depth: farthest-point sampling, seeded, over
    ``pool`` random architectures and the homogeneous baselines; the first pick is the random
    architecture nearest the pool's centre, so the list's prefixes are spread too."""
    from ..space.spec import baseline_arch, canonical_arch, random_arch
    from ..strategy.evolution import arch_key
    from ..vocabulary import BLOCKS

    rng = random.Random(seed)
    candidates: dict[str, dict[str, Any]] = {}
    for op in BLOCKS:
        if any(op in stage.blocks for stage in spec.stages):
            arch = canonical_arch(spec, baseline_arch(spec, op, fallback="conv"))
            candidates.setdefault(arch_key(arch), arch)
    for _ in range(pool):
        arch = canonical_arch(spec, random_arch(spec, rng))
        candidates.setdefault(arch_key(arch), arch)
    archs = list(candidates.values())
    if len(archs) < count:
        raise ValueError(f"archs: the space {spec.name!r} yielded only {len(archs)} distinct architectures in "
                         f"{pool} draws; ask for fewer than {count}")
    feats = np.stack([arch_features(spec, a) for a in archs])
    first = int(np.argmin(((feats - feats.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((feats - feats[first]) ** 2).sum(1)
    while len(chosen) < count:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((feats - feats[nxt]) ** 2).sum(1))
    return [archs[i] for i in chosen]


# --- statistics -------------------------------------------------------------------------------------------------------

def rank_metrics(inherited: Sequence[float], standalone: Sequence[float], top_k: int) -> dict[str, float]:
    """Kendall tau (tau-b), Pearson r, Spearman rho and top-``k`` precision (the share of the stand-alone top
    ``k`` among the inherited top ``k``) of two accuracy lists over the same architectures."""
    from scipy import stats

    x, y = np.asarray(inherited, dtype=float), np.asarray(standalone, dtype=float)
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    top = len(set(np.argsort(-x, kind="stable")[:top_k]) & set(np.argsort(-y, kind="stable")[:top_k])) / top_k
    if constant:
        return {"kendall_tau": math.nan, "pearson_r": math.nan, "spearman_rho": math.nan, "top_k_precision": top}
    return {"kendall_tau": float(stats.kendalltau(x, y).statistic),
            "pearson_r": float(stats.pearsonr(x, y).statistic),
            "spearman_rho": float(stats.spearmanr(x, y).statistic), "top_k_precision": top}


def bootstrap_interval(per_seed: Sequence[Sequence[float]], standalone: Sequence[float], top_k: int, samples: int,
                       seed: int = 0) -> dict[str, list[float]]:
    """95% percentile intervals of the seed-mean of each :func:`rank_metrics` when the architectures are resampled
    with replacement (``samples`` times; the same resample for every seed)."""
    rng = np.random.default_rng(seed)
    inherited = np.asarray(per_seed, dtype=float)
    target = np.asarray(standalone, dtype=float)
    n = target.size
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        runs = [rank_metrics(row[idx], target[idx], min(top_k, n)) for row in inherited]
        for key in runs[0]:
            draws.setdefault(key, []).append(float(np.nanmean([r[key] for r in runs])))
    return {k: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for k, v in draws.items()}


# --- the study --------------------------------------------------------------------------------------------------------

def _atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _recipe_changes(saved: Mapping[str, Any], wanted: Mapping[str, Any], keys: set[str]) -> str:
    """``"key: saved -> wanted, ..."`` over the ``keys`` whose values differ (sorted); empty when none do."""
    return ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(keys)
                     if saved.get(k) != wanted.get(k))


class Study:
    """One ranking study: each phase reads its cache under ``cfg.output`` and trains or evaluates only what is
    missing. ``log`` receives one line per finished network or phase."""

    def __init__(self, cfg: RankingConfig, log: Callable[[str], None] | None = None) -> None:
        from ..space import load_space

        self.cfg, self.out = cfg, Path(cfg.output)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.spec = load_space(cfg.space)
        self.archs = self._archs()
        self._check_standalone_recipe()

    def _archs(self) -> list[dict[str, Any]]:
        path = self.out / "archs.json"
        saved = _read_json(path)
        if saved is not None and saved.get("space") == self.cfg.space and saved.get("seed") == self.cfg.arch_seed \
                and len(saved["archs"]) >= self.cfg.archs:
            return saved["archs"][:self.cfg.archs]
        archs = select_archs(self.spec, self.cfg.archs, self.cfg.arch_seed)
        _atomic_json(path, {"space": self.cfg.space, "seed": self.cfg.arch_seed, "archs": archs})
        return archs

    # -- stand-alone -----------------------------------------------------------------------------------------------
    def _check_standalone_recipe(self) -> None:
        """Refuse a cache of stand-alone networks trained with another recipe (``standalone/recipe.json``)."""
        from ..tasks.retrain import RetrainConfig

        recipe = dataclasses.asdict(load_yaml(RetrainConfig, self.cfg.retrain_recipe, {
            **self.cfg.retrain_overrides, "space": self.cfg.space, "supernet": None}))
        wanted = json.loads(json.dumps({k: v for k, v in recipe.items() if k not in ("arch", "seed", "output")}))
        path = self.out / "standalone" / "recipe.json"
        saved = _read_json(path)
        if saved is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_json(path, wanted)
            return
        changes = _recipe_changes(saved, wanted, set(saved) | set(wanted))
        if changes:
            raise ValueError(f"{path.parent}: these stand-alone networks were trained with another recipe ({changes}); "
                             "remove the folder or choose another 'output'")

    def standalone(self, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Test accuracy (and cost) of ``arch`` trained from scratch with the retrain recipe and ``seed``; cached."""
        from ..tasks.retrain import RetrainConfig, retrain

        folder = self.out / "standalone" / f"{arch_id(arch)}-s{seed}"
        cached = _read_json(folder / "metrics.json")
        if cached is not None:
            return cached
        overrides = {**self.cfg.retrain_overrides, "arch": dict(arch), "seed": seed, "space": self.cfg.space,
                     "output": str(folder), "supernet": None}
        result = retrain(load_yaml(RetrainConfig, self.cfg.retrain_recipe, overrides))
        self.log(f"stand-alone {arch_id(arch)} seed {seed}: test accuracy {result['test_acc']:.4f} "
                 f"({result['fit_seconds']:.0f} s)")
        return result

    def ceiling(self) -> dict[str, Any]:
        """Kendall tau between the two stand-alone seeds on the first ``ceiling_archs`` architectures."""
        a, b = self.cfg.standalone_seeds
        archs = self.archs[:self.cfg.ceiling_archs]
        first = [self.standalone(arch, a)["test_acc"] for arch in archs]
        second = [self.standalone(arch, b)["test_acc"] for arch in archs]
        metrics = rank_metrics(first, second, min(self.cfg.top_k, len(archs)))
        diffs = np.abs(np.subtract(first, second))
        return {**metrics, "archs": len(archs), "seeds": [a, b], "mean_abs_seed_difference": float(diffs.mean()),
                "accuracy_range": [float(min(first)), float(max(first))],
                "interval": bootstrap_interval([first], second, min(self.cfg.top_k, len(archs)), self.cfg.bootstrap)}

    # -- supernets -------------------------------------------------------------------------------------------------
    def supernet(self, mode: str, seed: int) -> Path:
        """The checkpoint of the ``mode`` supernet trained with ``seed``; trained (or resumed) when not finished."""
        from ..tasks.supernet import SupernetConfig, train_supernet

        from ..checkpoint import load_checkpoint

        folder = self.out / "supernets" / f"{mode}_seed{seed}"
        checkpoint = folder / "checkpoints" / "last.ckpt"
        overrides = {**self.cfg.supernet_overrides, "mode": mode, "seed": seed, "space": self.cfg.space,
                     "output": str(folder), "resume": "auto"}
        recipe = load_yaml(SupernetConfig, self.cfg.supernet_recipe, overrides)
        if not (folder / "metrics.json").is_file():
            result = train_supernet(recipe)
            self.log(f"supernet {mode} seed {seed}: {result['global_step']} steps ({result['fit_seconds']:.0f} s)")
        saved = load_checkpoint(checkpoint, mmap=True)["hyper_parameters"]["config"]
        wanted = json.loads(json.dumps(dataclasses.asdict(recipe)))
        changes = _recipe_changes(saved, wanted, set(wanted) - {"output", "resume"})
        if changes:
            raise ValueError(f"{folder}: this supernet was trained with another recipe ({changes}); remove the folder "
                             "to train it again")
        return checkpoint

    def inherited(self, mode: str, seed: int) -> dict[str, dict[str, float]]:
        """Inherited-weight validation accuracy of every architecture (and the search's pick, once known) in the
        ``mode``/``seed`` supernet after BatchNorm recalibration; cached per architecture."""
        path = self.out / "inherited" / f"{mode}_seed{seed}.json"
        done: dict[str, dict[str, float]] = _read_json(path) or {}
        todo = [a for a in self.archs if arch_id(a) not in done]
        if todo:
            evaluate = self._evaluator(self.supernet(mode, seed))
            for arch in todo:
                done[arch_id(arch)] = evaluate(arch)
                _atomic_json(path, done)
            self.log(f"inherited accuracies in the {mode} seed {seed} supernet: {len(todo)} evaluated")
        return done

    def _evaluator(self, checkpoint: Path) -> Callable[[Mapping[str, Any]], dict[str, float]]:
        import torch
        from torch.utils.data import DataLoader

        from ..data import create_dataset
        from ..tasks.supernet import evaluate_arch, load_supernet

        supernet, recipe = load_supernet(checkpoint)
        size = (self.spec.input.channels, self.spec.input.size, self.spec.input.size)
        val = create_dataset(recipe.dataset, "val", data_dir=recipe.data_dir, input_size=size)
        train = create_dataset(recipe.dataset, "train", data_dir=recipe.data_dir, input_size=size)
        bs = self.cfg.eval_batch_size
        val_loader = DataLoader(val, batch_size=bs, shuffle=False)

        def evaluate(arch: Mapping[str, Any]) -> dict[str, float]:
            # the same calibration batches for every architecture: differences come from the weights alone
            calibration = DataLoader(train, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(0))
            scores = evaluate_arch(supernet, dict(arch), val_loader, self.cfg.eval_batches, calibration,
                                   self.cfg.calibration_batches)
            return {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"])}

        return evaluate

    def add_weight_shape(self, mode: str, seed: int) -> dict[str, float]:
        """How Laplacian the Add candidates' weights are in the ``mode``/``seed`` supernet (paper Fig. 3): over its
        pools, the median excess kurtosis of Add's view (``T(W)`` in ``hws``) and the share of pools whose Add view is
        closer to its Laplace fit than to its Gaussian fit (:func:`~nni_shiftadd.plots.weights.shape_stats`)."""
        from ..plots.weights import pool_weights, shape_stats, weight_pools
        from ..tasks.supernet import load_supernet

        supernet, _ = load_supernet(self.supernet(mode, seed))
        stats = [shape_stats(pool_weights(pool)["add"]) for pool in weight_pools(supernet).values()
                 if "add" in pool.ops]
        return {"pools": len(stats), "median_excess_kurtosis": float(np.median([s["excess_kurtosis"] for s in stats])),
                "laplace_closer_share": float(np.mean([s["kl_laplace"] < s["kl_gaussian"] for s in stats]))}

    # -- search ----------------------------------------------------------------------------------------------------
    def search(self, mode: str) -> dict[str, Any] | None:
        """The evolution under the preset's constraints on ``mode``'s first supernet, inherited accuracy as the
        objective; its pick trained stand-alone (seed of the study's first). Cached in ``search/<mode>.json``."""
        if self.cfg.search_preset is None:
            return None
        from ..strategy.evolution import Evolution, load_preset, space_cost_fn

        path = self.out / "search" / f"{mode}.json"
        state = _read_json(path) or {}
        if "pick" not in state:
            preset = load_preset(self.cfg.search_preset, self.cfg.search_overrides)
            if preset.objective != "accuracy":
                raise ValueError(f"field 'search_preset': the objective must be accuracy, got {preset.objective!r}")
            evaluate = self._evaluator(self.supernet(mode, self.cfg.supernet_seeds[0]))
            cost = space_cost_fn(self.spec, preset.bits, preset.latency, eyeriss=preset.eyeriss)
            evolution = Evolution(self.spec, preset, cost)
            evaluated = state.get("evaluated", {})
            while not evolution.done:
                for arch in evolution.ask():
                    key = arch_id(arch)
                    if key not in evaluated:
                        evaluated[key] = evaluate(arch)
                        _atomic_json(path, {"evaluated": evaluated})
                    evolution.tell(arch, {**evaluated[key], **cost(arch)})
            best = evolution.best()
            if best is None:
                raise ValueError(f"search ({mode}): no architecture met the constraints of {self.cfg.search_preset!r}")
            state = {"evaluated": evaluated, "pick": best["arch"], "inherited_accuracy": best["accuracy"],
                     "constraints": {k: dataclasses.asdict(v) for k, v in preset.constraints.items()},
                     "cost": {k: best[k] for k in ("energy_mJ", "latency_ms") if k in best}}
            _atomic_json(path, state)
            self.log(f"search ({mode}): picked {arch_id(state['pick'])}, inherited accuracy "
                     f"{state['inherited_accuracy']:.4f}")
        standalone = self.standalone(state["pick"], self.cfg.standalone_seeds[0])
        return {**{k: v for k, v in state.items() if k != "evaluated"}, "evaluations": len(state["evaluated"]),
                "standalone_accuracy": standalone["test_acc"]}

    # -- report ----------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Every phase in order (each resumes from its cache); returns and writes ``results.json`` and
        ``scatter.png``."""
        from ..space.cv import supernet_parameters

        ceiling = self.ceiling()
        self.log(f"seed ceiling: Kendall tau {ceiling['kendall_tau']:.3f} over {ceiling['archs']} architectures")
        tau = ceiling["kendall_tau"]
        if tau < self.cfg.min_ceiling or (math.isnan(tau) and self.cfg.min_ceiling > -1):
            raise CeilingError(f"the stand-alone budget is too small to rank: Kendall tau between two seeds is "
                               f"{ceiling['kendall_tau']:.3f} (min_ceiling {self.cfg.min_ceiling}); raise "
                               f"retrain_overrides (epochs, limit_train_batches) and run again")
        seed0 = self.cfg.standalone_seeds[0]
        standalone = {arch_id(a): self.standalone(a, seed0)["test_acc"] for a in self.archs}
        target = [standalone[arch_id(a)] for a in self.archs]
        modes: dict[str, Any] = {}
        for mode in self.cfg.modes:
            per_seed = {}
            for seed in self.cfg.supernet_seeds:
                scores = self.inherited(mode, seed)
                per_seed[seed] = [scores[arch_id(a)]["accuracy"] for a in self.archs]
            runs = {seed: rank_metrics(acc, target, self.cfg.top_k) for seed, acc in per_seed.items()}
            summary = {key: {"mean": float(np.nanmean([r[key] for r in runs.values()])),
                             "min": float(np.nanmin([r[key] for r in runs.values()])),
                             "max": float(np.nanmax([r[key] for r in runs.values()]))} for key in next(iter(runs.values()))}
            modes[mode] = {
                "params": supernet_parameters(self.spec, mode), "per_seed": {str(s): r for s, r in runs.items()},
                "summary": summary,
                "interval": bootstrap_interval(list(per_seed.values()), target, self.cfg.top_k, self.cfg.bootstrap),
                "inherited": {str(s): acc for s, acc in per_seed.items()},
                "search": self.search(mode),
                "add_weight_shape": {str(seed): self.add_weight_shape(mode, seed) for seed in self.cfg.supernet_seeds},
            }
        results = {"space": self.cfg.space, "archs": [{"id": arch_id(a), "arch": a, "standalone": standalone[arch_id(a)]}
                                                      for a in self.archs],
                   "ceiling": ceiling, "modes": modes, "config": dataclasses.asdict(self.cfg)}
        _atomic_json(self.out / "results.json", results)
        results["plot"] = str(plot_scatter(results, self.out / "scatter.png"))
        return results


class CeilingError(RuntimeError):
    """The stand-alone budget cannot rank the architectures (seed ceiling below ``min_ceiling``)."""


def run_study(cfg: RankingConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``cfg``; ``output`` is locked while it runs."""
    with output_lock(cfg.output, "field 'output'", "ranking"):
        return Study(cfg, log).run()


def run_and_print(cfg: RankingConfig, quick: bool = False, prog: str = "nni-shiftadd ranking"
                  ) -> tuple[int, dict[str, Any] | None]:
    """What the command and the benchmark do: run (or resume) the study, ``--quick``'s version if asked, print its
    table and where it wrote; exit status 1 and one ``error:`` line when the seed ceiling is too low."""
    if quick:
        cfg = cfg.quick()
        cfg.validate()
    try:
        results = run_study(cfg)
    except CeilingError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1, None
    print(format_table(results))
    print(f"wrote {Path(cfg.output) / 'results.json'}")
    print(f"wrote {results['plot']}")
    return 0, results


def plot_scatter(results: Mapping[str, Any], path: Path) -> Path:
    """Inherited (mean over supernet seeds, bars the seed range) against stand-alone accuracy, one panel a mode."""
    from matplotlib.figure import Figure

    from ..plots import save_figure

    modes = results["modes"]
    target = np.array([a["standalone"] for a in results["archs"]])
    fig = Figure(figsize=(4.2 * len(modes), 4.0))
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, (mode, data) in zip(axes, modes.items()):
        acc = np.array(list(data["inherited"].values()))
        mean = acc.mean(0)
        ax.errorbar(target, mean, yerr=[mean - acc.min(0), acc.max(0) - mean], fmt="o", ms=4, alpha=0.8, capsize=2)
        s = data["summary"]["kendall_tau"]
        lo, hi = data["interval"]["kendall_tau"]
        ax.set_title(f"{mode}: tau {s['mean']:.2f} [{lo:.2f}, {hi:.2f}]")
        ax.set_xlabel("stand-alone test accuracy")
        ax.set_ylabel("inherited accuracy (BN recalibrated)")
        ax.grid(alpha=0.3)
    ceiling = results["ceiling"]["kendall_tau"]
    fig.suptitle(f"{results['space']}: inherited vs stand-alone ({len(target)} architectures; "
                 f"seed ceiling tau {ceiling:.2f})")
    fig.tight_layout()
    return save_figure(fig, path)


def format_table(results: Mapping[str, Any]) -> str:
    """The study's table: per mode the seed-mean metrics with their bootstrap intervals and seed range, the supernet
    size and the search pick, under the seed ceiling."""
    c = results["ceiling"]
    lines = [f"seed ceiling (stand-alone, 2 seeds, {c['archs']} archs): Kendall tau {c['kendall_tau']:.3f} "
             f"[{c['interval']['kendall_tau'][0]:.3f}, {c['interval']['kendall_tau'][1]:.3f}], "
             f"mean |seed difference| {c['mean_abs_seed_difference']:.4f}",
             f"{'mode':6s} {'params':>8s}  {'Kendall tau':>26s}  {'Pearson r':>26s}  {'Spearman rho':>26s}  "
             f"{'top-k prec.':>11s}  {'search pick (stand-alone)':>26s}  {'Add kurtosis':>12s}  {'Laplace-closer':>14s}"]
    for mode, data in results["modes"].items():
        cells = []
        for key in ("kendall_tau", "pearson_r", "spearman_rho"):
            s, (lo, hi) = data["summary"][key], data["interval"][key]
            cells.append(f"{s['mean']:6.3f} [{lo:6.3f},{hi:6.3f}] ({s['min']:.2f}..{s['max']:.2f})")
        top = data["summary"]["top_k_precision"]["mean"]
        search = data.get("search")
        pick = "-" if not search else f"{search['standalone_accuracy']:.4f} ({search['inherited_accuracy']:.3f} inh.)"
        shapes = list(data.get("add_weight_shape", {}).values())
        kurt = f"{np.mean([x['median_excess_kurtosis'] for x in shapes]):12.2f}" if shapes else f"{'-':>12s}"
        closer = f"{np.mean([x['laplace_closer_share'] for x in shapes]):14.2f}" if shapes else f"{'-':>14s}"
        lines.append(f"{mode:6s} {data['params']:8d}  {'  '.join(cells)}  {top:11.2f}  {pick:>26s}  {kurt}  {closer}")
    return "\n".join(lines)
