"""The ranking study of paper Table 5: how faithfully a supernet's inherited-weight accuracies rank architectures
that are trained stand-alone, for each weight-sharing mode (``none``, ``naive``, ``hws``) and each supernet training
budget.

``nni-shiftadd ranking --config examples/fashion_mnist/ranking_cv_small.yaml`` (or ``benchmarks/ranking.py``):

1. **Architectures**: ``archs`` of the space, seeded and spread over block-type mix and depth (farthest-point
   sampling over the share of each block type and the depth, among many random ones and the homogeneous baselines).
2. **Seed ceiling**: the first ``ceiling_archs`` trained stand-alone with two seeds; Kendall tau between the two
   runs is the best any supernet can do at this budget. Below ``min_ceiling`` the study stops: raise the budget
   (``-1`` accepts any ceiling: ``--quick`` and tests).
3. **Stand-alone accuracy** of every architecture (the retrain recipe, test split).
4. **Supernets**, one per budget, mode and seed (``train-supernet`` recipe; ``budgets`` in training steps, each a
   whole schedule of ``budget / limit_train_batches`` epochs; the same for every mode), smallest budget first, and
   the **inherited accuracy** of every architecture in each after BatchNorm recalibration, ranked against step 3.
5. **Ground-truth check** (with ``reference_overrides``): the ceiling architectures trained with a longer
   stand-alone recipe; when their Kendall tau against the short recipe is below ``min_reference_tau``, the short
   recipe does not rank as full training would, and the longer one becomes the ground truth (its own seed ceiling,
   every architecture trained with it, every report ranked against it). It comes after the budgets because it
   trains the study's longest networks.
6. **Techniques** (``techniques``): supernets trained with another recipe ``sampling`` (FairNAS's strict fairness,
   BigNAS's sandwich rule) for the steps that take the largest budget's time.
7. **Search**: the evolution (the demo's preset and energy constraint) on each mode's first supernet of the largest
   budget; its pick is trained stand-alone too.
8. **Report**, per budget and technique: Kendall tau, Pearson r, Spearman rho and top-k precision per mode (mean
   over seeds, their range, bootstrap 95% intervals over architectures), the paired difference ``hws - naive`` over
   seeds (and pooled over every budget and seed, with a sign test), the supernet parameters and training time, how
   Laplacian each supernet's Add weights are; the search picks; ``results.json`` (rewritten after every phase,
   ``complete`` false until the end), ``tau_budget.png`` and one ``scatter_<variant>.png`` per budget and technique.

Every trained network and every evaluation is cached under ``output`` (a stand-alone run in
``standalone/<arch>-s<seed>/`` or ``reference/<arch>-s<seed>/``, a supernet in
``supernets/<budget>/<mode>_seed<seed>/``, inherited accuracies in ``inherited/<budget>/``, searches in
``search/``): a killed study started again goes on where it stopped. The JSON files alone (without the supernet
checkpoints) are enough for every finished evaluation, so a study's ledger can be carried to another machine.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, read_json
from ..config import ConfigError, check_reserved, load_yaml
from ..lock import check_output_dir, output_lock
from .arch_selection import arch_id, select_archs
from .ledger import copy_ledger, evolve, pin_recipe, plain, recipe_changes, same_supernet, trained_supernet
from .rank_statistics import bootstrap_interval, paired_difference, pooled_sign_test, rank_metrics

#: The weight-sharing modes a study may compare (:mod:`nni_shiftadd.hws`).
STUDY_MODES: tuple[str, ...] = ("none", "naive", "hws")
#: The stand-alone recipes of a study: the retrain recipe, and the longer one of the ground-truth check.
POOLS: tuple[str, ...] = ("standalone", "reference")


@dataclasses.dataclass
class Technique:
    """A supernet training technique a study compares (``techniques`` of a recipe): its supernet-recipe overrides
    (e.g. ``sampling: fair``), its training steps (for equal time: the largest budget divided by the paths it trains
    per step, :func:`~nni_shiftadd.space.sampling.paths_per_step`) and the modes it trains (empty: the study's)."""

    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 0
    modes: list[str] = dataclasses.field(default_factory=list)


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
    reference_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    min_reference_tau: float = 0.7
    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    budgets: list[int] = dataclasses.field(default_factory=list)
    techniques: dict[str, Technique] = dataclasses.field(default_factory=dict)
    modes: list[str] = dataclasses.field(default_factory=lambda: list(STUDY_MODES))
    supernet_seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    seeds_per_mode: dict[str, int] = dataclasses.field(default_factory=dict)
    eval_batches: int = 8
    calibration_batches: int = 8
    eval_batch_size: int = 256
    top_k: int = 5
    bootstrap: int = 2000
    search_preset: str | None = "cv_small"
    search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    output: str = "runs/ranking_cv_small"

    def validate(self) -> None:
        """Check every field and every stage's recipe (stand-alone, reference, supernet, search) before anything
        trains; errors name the field, the value and what is allowed."""
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
        for mode, count in self.seeds_per_mode.items():
            if mode not in self.modes:
                raise ValueError(f"field 'seeds_per_mode': {mode!r} is not one of the study's modes {self.modes}")
            if not 1 <= count <= len(self.supernet_seeds):
                raise ValueError(f"field 'seeds_per_mode': {mode}: {count} is not between 1 and "
                                 f"{len(self.supernet_seeds)} (the supernet_seeds)")
        for name in ("min_ceiling", "min_reference_tau"):
            if not -1 <= getattr(self, name) <= 1:
                raise ValueError(f"field {name!r}: a Kendall tau in [-1, 1], got {getattr(self, name)}")
        for name in ("retrain_recipe", "supernet_recipe"):
            if not Path(getattr(self, name)).is_file():
                raise ValueError(f"field {name!r}: no such file {getattr(self, name)!r}")
        for name, reserved in (("retrain_overrides", ("arch", "seed", "output", "space", "supernet")),
                               ("reference_overrides", ("arch", "seed", "output", "space", "supernet")),
                               ("supernet_overrides", ("mode", "seed", "output", "space"))):
            check_reserved(getattr(self, name), reserved, name)
        check_output_dir(self.output, "field 'output'")
        self._validate_stages()

    def _validate_stages(self) -> None:
        """Every stage's recipe as the study will build it, so that a bad override fails now, not hours later."""
        from ..tasks.retrain import RetrainConfig
        from ..tasks.supernet import SupernetConfig

        for pool in POOLS if self.reference_overrides else POOLS[:1]:
            try:
                load_yaml(RetrainConfig, self.retrain_recipe, self.standalone_overrides(pool))
            except ConfigError as err:
                raise ValueError(f"field '{pool_field(pool)}': {err}") from None
        try:
            limit = load_yaml(SupernetConfig, self.supernet_recipe, self.supernet_base()).limit_train_batches
        except ConfigError as err:
            raise ValueError(f"field 'supernet_overrides': {err}") from None
        if self.budgets:
            if limit is None:
                raise ValueError("field 'budgets': needs 'limit_train_batches' in supernet_overrides (or the supernet "
                                 "recipe): the steps of one epoch, which each budget must be a multiple of")
            bad = [b for b in self.budgets if b < limit or b % limit]
            if bad or len(set(self.budgets)) != len(self.budgets):
                raise ValueError(f"field 'budgets': {self.budgets} must be distinct multiples of limit_train_batches "
                                 f"({limit}); {bad} are not")
        for name, technique in self.techniques.items():
            where = f"field 'techniques': {name}"
            if not re.fullmatch(r"[a-z0-9_]+", name):
                raise ValueError(f"{where}: a name of lower-case letters, digits and _ (it names cache folders)")
            clash = sorted(set(technique.overrides) & {"mode", "seed", "output", "space", "epochs"})
            if clash:
                raise ValueError(f"{where}: overrides {clash} are set by the study; give 'steps' for the budget")
            try:
                recipe = load_yaml(SupernetConfig, self.supernet_recipe,
                                   {**self.supernet_base(), **technique.overrides})
            except ConfigError as err:
                raise ValueError(f"{where}: {err}") from None
            steps_per_epoch = recipe.limit_train_batches
            if steps_per_epoch is None or technique.steps < steps_per_epoch or technique.steps % steps_per_epoch:
                raise ValueError(f"{where}: steps {technique.steps} must be a multiple of limit_train_batches "
                                 f"({steps_per_epoch}; overrides may set another)")
            bad_modes = [m for m in technique.modes if m not in self.modes]
            if bad_modes:
                raise ValueError(f"{where}: modes {bad_modes} are not among the study's modes {self.modes}")
        if self.search_preset is not None:
            from ..strategy.evolution import load_preset

            try:
                preset = load_preset(self.search_preset, self.search_overrides)
            except ConfigError as err:
                raise ValueError(f"fields 'search_preset', 'search_overrides': {err}") from None
            if preset.objective != "accuracy":
                raise ValueError(f"field 'search_preset': the objective must be accuracy, got {preset.objective!r}")

    def standalone_overrides(self, pool: str) -> dict[str, Any]:
        """The retrain recipe's overrides of a stand-alone pool (``standalone`` or the longer ``reference``)."""
        extra = self.reference_overrides if pool == "reference" else {}
        return {**self.retrain_overrides, **extra, "space": self.space, "supernet": None}

    def supernet_base(self) -> dict[str, Any]:
        """The supernet recipe's overrides shared by every supernet of the study."""
        return {**self.supernet_overrides, "space": self.space, "mode": self.modes[0], "seed": 0,
                "output": str(Path(self.output) / "supernets" / "check")}

    def variants(self) -> list[Variant]:
        """The supernet budgets, smallest first (one ``recipe`` variant when ``budgets`` is empty), then the
        techniques."""
        if not self.budgets:
            budgets = [Variant("recipe", None, {})]
        else:
            limit = self._recipe_limit({})
            budgets = [Variant(f"steps{b}", b, {"epochs": b // limit}) for b in sorted(self.budgets)]
        techniques = [Variant(f"steps{t.steps}-{name}", t.steps,
                              {**t.overrides, "epochs": t.steps // self._recipe_limit(t.overrides)}, name,
                              tuple(t.modes or self.modes)) for name, t in self.techniques.items()]
        return budgets + techniques

    def _recipe_limit(self, overrides: dict[str, Any]) -> int:
        from ..tasks.supernet import SupernetConfig

        recipe = load_yaml(SupernetConfig, self.supernet_recipe, {**self.supernet_base(), **overrides})
        return int(recipe.limit_train_batches)

    def seeds(self, mode: str) -> list[int]:
        """The supernet seeds ``mode`` trains (the first ``seeds_per_mode[mode]``, else all)."""
        return self.supernet_seeds[:self.seeds_per_mode.get(mode, len(self.supernet_seeds))]

    def quick(self) -> RankingConfig:
        """The ``--quick`` version: 6 architectures, 4 for the ceiling, one supernet seed, tiny budgets (minutes)."""
        tiny = {"epochs": 1, "warmup_epochs": 0, "limit_train_batches": 8, "limit_eval_batches": 4}
        return dataclasses.replace(
            self, archs=6, ceiling_archs=4, supernet_seeds=self.supernet_seeds[:1], seeds_per_mode={}, eval_batches=2,
            calibration_batches=2, top_k=min(self.top_k, 3), bootstrap=200, min_ceiling=-1.0,
            retrain_overrides={**self.retrain_overrides, **tiny},
            reference_overrides={"limit_train_batches": 16} if self.reference_overrides else {},
            supernet_overrides={**self.supernet_overrides, "epochs": 1, "warmup_epochs": 0,
                                "limit_train_batches": 8, "eval_archs": 0},
            budgets=[8, 16] if self.budgets else [],
            techniques={name: dataclasses.replace(t, steps=8, overrides={
                **t.overrides, **({"limit_train_batches": 8} if "limit_train_batches" in t.overrides else {})})
                for name, t in self.techniques.items()},
            search_overrides={**self.search_overrides, "iterations": 1, "population": 4, "parents": 2,
                              "mutation": 1, "crossover": 1},
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kind of supernet of a study: its cache folder name, its training steps, its supernet-recipe overrides."""

    name: str
    steps: int | None
    overrides: dict[str, Any]
    technique: str | None = None
    modes: tuple[str, ...] | None = None  # None: the study's


def pool_field(pool: str) -> str:
    """The recipe field that defines a stand-alone pool."""
    return "reference_overrides" if pool == "reference" else "retrain_overrides"


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> RankingConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(RankingConfig, path, overrides)


# --- the study --------------------------------------------------------------------------------------------------------

class Study:
    """One ranking study: each phase reads its cache under ``cfg.output`` and trains or evaluates only what is
    missing. ``log`` receives one line per finished network or phase."""

    def __init__(self, cfg: RankingConfig, log: Callable[[str], None] | None = None) -> None:
        from ..space import load_space

        self.cfg, self.out = cfg, Path(cfg.output)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.spec = load_space(cfg.space)
        self.archs = self._archs()
        self._ledgers: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._reports: dict[tuple[str, str], dict[str, Any]] = {}  # (ground truth, variant) -> its report
        for pool in POOLS if cfg.reference_overrides else POOLS[:1]:
            self._check_standalone_recipe(pool)

    def _archs(self) -> list[dict[str, Any]]:
        path = self.out / "archs.json"
        saved = read_json(path)
        if saved is not None and saved.get("space") == self.cfg.space and saved.get("seed") == self.cfg.arch_seed \
                and len(saved["archs"]) >= self.cfg.archs:
            return saved["archs"][:self.cfg.archs]
        archs = select_archs(self.spec, self.cfg.archs, self.cfg.arch_seed)
        atomic_write_json(path, {"space": self.cfg.space, "seed": self.cfg.arch_seed, "archs": archs})
        return archs

    # -- stand-alone -----------------------------------------------------------------------------------------------
    def _check_standalone_recipe(self, pool: str) -> None:
        """Refuse a cache of stand-alone networks trained with another recipe (``<pool>/recipe.json``)."""
        from ..tasks.retrain import RUN_FIELDS, RetrainConfig

        recipe = dataclasses.asdict(load_yaml(RetrainConfig, self.cfg.retrain_recipe,
                                              self.cfg.standalone_overrides(pool)))
        pin_recipe(self.out / pool / "recipe.json", {k: v for k, v in recipe.items() if k not in RUN_FIELDS},
                   "these stand-alone networks were",
                   f"remove the folder or choose another 'output' (field '{pool_field(pool)}')")

    def standalone(self, arch: Mapping[str, Any], seed: int, pool: str = "standalone") -> dict[str, Any]:
        """Test accuracy (and cost) of ``arch`` trained from scratch with ``pool``'s recipe and ``seed``; cached."""
        from ..tasks.retrain import RetrainConfig, retrain

        folder = self.out / pool / f"{arch_id(arch)}-s{seed}"
        cached = read_json(folder / "metrics.json")
        if cached is not None:
            return cached
        overrides = {**self.cfg.standalone_overrides(pool), "arch": dict(arch), "seed": seed, "output": str(folder)}
        result = retrain(load_yaml(RetrainConfig, self.cfg.retrain_recipe, overrides))
        self.log(f"stand-alone ({pool}) {arch_id(arch)} seed {seed}: test accuracy {result['test_acc']:.4f} "
                 f"({result['fit_seconds']:.0f} s)")
        return result

    def ceiling(self, pool: str = "standalone") -> dict[str, Any]:
        """Kendall tau between the two stand-alone seeds of ``pool`` on the first ``ceiling_archs`` architectures."""
        a, b = self.cfg.standalone_seeds
        archs = self.archs[:self.cfg.ceiling_archs]
        first = [self.standalone(arch, a, pool)["test_acc"] for arch in archs]
        second = [self.standalone(arch, b, pool)["test_acc"] for arch in archs]
        metrics = rank_metrics(first, second, min(self.cfg.top_k, len(archs)))
        diffs = np.abs(np.subtract(first, second))
        return {**metrics, "pool": pool, "archs": len(archs), "seeds": [a, b],
                "mean_abs_seed_difference": float(diffs.mean()),
                "accuracy_range": [float(min(first)), float(max(first))],
                "interval": bootstrap_interval([first], second, min(self.cfg.top_k, len(archs)), self.cfg.bootstrap)}

    def reference_check(self) -> dict[str, Any] | None:
        """Kendall tau between the stand-alone recipe and the longer reference recipe on the ceiling architectures
        (first seed); ``None`` without ``reference_overrides``."""
        if not self.cfg.reference_overrides:
            return None
        seed = self.cfg.standalone_seeds[0]
        archs = self.archs[:self.cfg.ceiling_archs]
        short = [self.standalone(arch, seed)["test_acc"] for arch in archs]
        long = [self.standalone(arch, seed, "reference")["test_acc"] for arch in archs]
        k = min(self.cfg.top_k, len(archs))
        return {**rank_metrics(short, long, k), "archs": len(archs), "standalone": short, "reference": long,
                "interval": bootstrap_interval([short], long, k, self.cfg.bootstrap),
                "min_reference_tau": self.cfg.min_reference_tau}

    # -- supernets -------------------------------------------------------------------------------------------------
    def _supernet_recipe(self, variant: Variant, mode: str, seed: int) -> Any:
        from ..tasks.supernet import SupernetConfig

        folder = self.out / "supernets" / variant.name / f"{mode}_seed{seed}"
        overrides = {**self.cfg.supernet_overrides, **variant.overrides, "mode": mode, "seed": seed,
                     "space": self.cfg.space, "output": str(folder), "resume": "auto"}
        return load_yaml(SupernetConfig, self.cfg.supernet_recipe, overrides)

    def supernet(self, variant: Variant, mode: str, seed: int) -> Path:
        """The checkpoint of the ``mode`` supernet of ``variant`` trained with ``seed``; trained (or resumed) when
        not finished."""
        return trained_supernet(self._supernet_recipe(variant, mode, seed), self.log,
                                f"supernet {variant.name} {mode} seed {seed}")

    def inherited(self, variant: Variant, mode: str, seed: int) -> dict[str, dict[str, float]]:
        """Inherited-weight validation accuracy of every architecture (and the search's pick, once known) in the
        ``mode``/``seed`` supernet of ``variant`` after BatchNorm recalibration; cached per architecture in a ledger
        that also records the supernet's recipe and training time (it needs no checkpoint once complete)."""
        path = self.out / "inherited" / variant.name / f"{mode}_seed{seed}.json"
        wanted = plain(dataclasses.asdict(self._supernet_recipe(variant, mode, seed)))
        wanted.pop("output"), wanted.pop("resume")
        ledger = read_json(path) or {"recipe": wanted, "scores": {}}
        changes = recipe_changes(ledger["recipe"], wanted, set(wanted) | set(ledger["recipe"]))
        if changes:
            raise ValueError(f"{path}: these accuracies are of a supernet trained with another recipe ({changes}); "
                             "remove it and the supernet's folder to train it again")
        todo = [a for a in self.archs if arch_id(a) not in ledger["scores"]]
        if todo:
            checkpoint = self.supernet(variant, mode, seed)
            ledger = same_supernet(ledger, "scores", checkpoint, self.log, str(path))
            todo = [a for a in self.archs if arch_id(a) not in ledger["scores"]]
            metrics = read_json(checkpoint.parent.parent / "metrics.json") or {}
            ledger["fit_seconds"] = metrics.get("fit_seconds")
            ledger["global_step"] = metrics.get("global_step")
            evaluate = self._evaluator(checkpoint)
            for arch in todo:
                ledger["scores"][arch_id(arch)] = evaluate(arch)
                atomic_write_json(path, ledger)
            self.log(f"inherited accuracies in the {variant.name} {mode} seed {seed} supernet: {len(todo)} evaluated")
            self.add_weight_shape(variant, mode, seed)  # while the checkpoint is here: the ledger carries no weights
        self._ledgers[(variant.name, mode, seed)] = ledger
        return ledger["scores"]

    def _evaluator(self, checkpoint: Path) -> Callable[[Mapping[str, Any]], dict[str, float]]:
        from ..tasks.inherited import inherited_scorer

        return inherited_scorer(checkpoint, self.cfg.eval_batch_size, self.cfg.eval_batches,
                                self.cfg.calibration_batches)

    def add_weight_shape(self, variant: Variant, mode: str, seed: int) -> dict[str, float] | None:
        """How Laplacian the Add candidates' weights are in the ``mode``/``seed`` supernet of ``variant`` (paper
        Fig. 3): over its pools, the median excess kurtosis of Add's view (``T(W)`` in ``hws``) and the share of
        pools whose Add view is closer to its Laplace fit than to its Gaussian fit
        (:func:`~nni_shiftadd.plots.weights.shape_stats`). Cached in ``shapes/<variant>/``; ``None`` when neither
        that cache nor the finished supernet is here (a carried ledger made before the shapes were cached with the
        scores): a supernet is not trained again for its weights' shape alone."""
        from ..plots.weights import pool_weights, shape_stats, weight_pools
        from ..vocabulary import block_type
        from ..tasks.supernet import load_supernet

        path = self.out / "shapes" / variant.name / f"{mode}_seed{seed}.json"
        cached = read_json(path)
        if cached is not None:
            return cached
        if not (Path(self._supernet_recipe(variant, mode, seed).output) / "metrics.json").is_file():
            return None
        supernet, _ = load_supernet(self.supernet(variant, mode, seed))
        stats = [shape_stats(pool_weights(pool)[op]) for pool in weight_pools(supernet).values() for op in pool.ops
                 if block_type(op).pool_view == "transform"]  # the candidate reading T(W): Add
        shape = {"pools": len(stats),
                 "median_excess_kurtosis": float(np.median([s["excess_kurtosis"] for s in stats])),
                 "laplace_closer_share": float(np.mean([s["kl_laplace"] < s["kl_gaussian"] for s in stats]))}
        atomic_write_json(path, shape)
        return shape

    # -- search ----------------------------------------------------------------------------------------------------
    def search(self, variant: Variant, mode: str, truth: str) -> dict[str, Any] | None:
        """The evolution under the preset's constraints on ``mode``'s first supernet of ``variant``, inherited
        accuracy as the objective; its pick trained stand-alone with the ground-truth recipe ``truth`` (seed of the
        study's first). Cached in ``search/<variant>/<mode>.json``."""
        if self.cfg.search_preset is None:
            return None
        from ..strategy.evolution import load_preset

        path = self.out / "search" / variant.name / f"{mode}.json"
        state = read_json(path) or {}
        if "pick" not in state:
            preset = load_preset(self.cfg.search_preset, self.cfg.search_overrides)
            checkpoint = self.supernet(variant, mode, self.cfg.seeds(mode)[0])
            state = same_supernet(state, "evaluated", checkpoint, self.log, str(path))
            evolution, evaluated = evolve(self.spec, preset, self._evaluator(checkpoint), path, state.get("evaluated"),
                                          state["supernet"])
            best = evolution.best()
            if best is None:
                raise ValueError(f"search ({mode}): no architecture met the constraints of {self.cfg.search_preset!r}")
            state = {"evaluated": evaluated, "supernet": state["supernet"], "pick": best["arch"],
                     "inherited_accuracy": best["accuracy"],
                     "constraints": {k: dataclasses.asdict(v) for k, v in preset.constraints.items()},
                     "cost": {k: best[k] for k in ("energy_mJ", "latency_ms") if k in best}}
            atomic_write_json(path, state)
            self.log(f"search ({variant.name}, {mode}): picked {arch_id(state['pick'])}, inherited accuracy "
                     f"{state['inherited_accuracy']:.4f}")
        standalone = self.standalone(state["pick"], self.cfg.standalone_seeds[0], truth)
        return {**{k: v for k, v in state.items() if k != "evaluated"}, "evaluations": len(state["evaluated"]),
                "standalone_accuracy": standalone["test_acc"]}

    # -- report ----------------------------------------------------------------------------------------------------
    def ground_truth(self) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """The stand-alone pool that ranks as full training would (``standalone``, or ``reference`` when the check
        fails), its seed ceiling, and the check."""
        ceiling = self.ceiling()
        check = self.reference_check()
        truth = "standalone"
        if check is not None:
            self.log(f"ground-truth check: Kendall tau {check['kendall_tau']:.3f} between the stand-alone and the "
                     f"reference recipe (min_reference_tau {self.cfg.min_reference_tau})")
            if not check["kendall_tau"] >= self.cfg.min_reference_tau:
                truth = "reference"
                ceiling = self.ceiling(truth)
                self.log(f"the reference recipe is the ground truth; its seed ceiling: Kendall tau "
                         f"{ceiling['kendall_tau']:.3f}")
                self._gate(ceiling, truth)
        return truth, ceiling, check

    def _gate(self, ceiling: dict[str, Any], pool: str) -> None:
        """Stop the study when ``pool``'s seed ceiling is too low to rank anything (:class:`CeilingError`)."""
        tau = ceiling["kendall_tau"]
        if tau < self.cfg.min_ceiling or (math.isnan(tau) and self.cfg.min_ceiling > -1):
            raise CeilingError(f"the stand-alone budget is too small to rank: Kendall tau between two seeds is "
                               f"{tau:.3f} (min_ceiling {self.cfg.min_ceiling}); raise {pool_field(pool)} "
                               "(epochs, limit_train_batches) and run again")

    def variant_report(self, variant: Variant, target: list[float]) -> dict[str, Any]:
        """Every mode's supernets of ``variant`` against the ground truth ``target``: the rank metrics per seed,
        their mean and range, bootstrap intervals, parameters, training time, Add weight shape, and the paired
        ``hws - naive`` difference over their common seeds; the paths a step trains (steps x paths: its time)."""
        from ..space.cv import supernet_parameters
        from ..space.sampling import paths_per_step

        modes: dict[str, Any] = {}
        for mode in variant.modes or self.cfg.modes:
            per_seed = {}
            for seed in self.cfg.seeds(mode):
                scores = self.inherited(variant, mode, seed)
                per_seed[seed] = [scores[arch_id(a)]["accuracy"] for a in self.archs]
            runs = {seed: rank_metrics(acc, target, self.cfg.top_k) for seed, acc in per_seed.items()}
            summary = {key: {"mean": float(np.nanmean([r[key] for r in runs.values()])),
                             "min": float(np.nanmin([r[key] for r in runs.values()])),
                             "max": float(np.nanmax([r[key] for r in runs.values()]))}
                       for key in next(iter(runs.values()))}
            modes[mode] = {
                "params": supernet_parameters(self.spec, mode), "per_seed": {str(s): r for s, r in runs.items()},
                "summary": summary,
                "interval": bootstrap_interval(list(per_seed.values()), target, self.cfg.top_k, self.cfg.bootstrap),
                "inherited": {str(s): acc for s, acc in per_seed.items()},
                "fit_seconds": {str(s): self._ledgers[(variant.name, mode, s)].get("fit_seconds") for s in per_seed},
                "add_weight_shape": {str(s): self.add_weight_shape(variant, mode, s) for s in per_seed},
            }
        first = next(iter(modes))
        recipe = self._supernet_recipe(variant, first, self.cfg.seeds(first)[0])
        report: dict[str, Any] = {"steps": variant.steps, "overrides": variant.overrides,
                                  "technique": variant.technique,
                                  "paths_per_step": paths_per_step(self.spec, recipe.sampling, recipe.sandwich_random),
                                  "modes": modes}
        if "hws" in modes and "naive" in modes:
            common = [s for s in modes["hws"]["inherited"] if s in modes["naive"]["inherited"]]
            diff = paired_difference([modes["hws"]["inherited"][s] for s in common],
                                     [modes["naive"]["inherited"][s] for s in common], target, self.cfg.top_k,
                                     self.cfg.bootstrap)
            report["paired"] = {"hws - naive": {**diff, "seeds": [int(s) for s in common]}}
        return report

    def run(self) -> dict[str, Any]:
        """Every phase (each resumes from its cache): the seed ceiling and every architecture stand-alone; the budgets,
        smallest first, ranked against the stand-alone recipe while the ground-truth check is pending (it trains the
        longest networks, so it waits until the budget curve exists); the check, after which every report is
        ranked against the chosen ground truth; the techniques; the searches. ``results.json`` and the plots are
        rewritten after every phase (``complete`` false until the end) and returned at the end."""
        ceiling = self.ceiling()
        self.log(f"seed ceiling: Kendall tau {ceiling['kendall_tau']:.3f} over {ceiling['archs']} architectures")
        self._gate(ceiling, "standalone")
        variants = self.cfg.variants()
        budgets = [v for v in variants if v.technique is None]
        for k in range(1, len(budgets) + 1):
            self._write(self.report("standalone", ceiling, None, budgets[:k], pending=bool(self.cfg.reference_overrides)))
        truth, ceiling, check = self.ground_truth()
        techniques = [v for v in variants if v.technique is not None]
        for k in range(len(techniques) + 1):
            results = self.report(truth, ceiling, check, budgets + techniques[:k])
            self._write(results)
        largest = budgets[-1]
        results["search"] = {"variant": largest.name,
                             **{mode: self.search(largest, mode, truth) for mode in self.cfg.modes}}
        results["complete"] = True
        return self._write(results)

    def report(self, truth: str, ceiling: dict[str, Any], check: dict[str, Any] | None, variants: list[Variant],
               pending: bool = False) -> dict[str, Any]:
        """The study's results for ``variants`` against the ground truth ``truth`` (every architecture trained
        stand-alone with that pool's recipe); ``pending``: the ground-truth check is still to come."""
        seed0 = self.cfg.standalone_seeds[0]
        standalone = {arch_id(a): self.standalone(a, seed0, truth)["test_acc"] for a in self.archs}
        target = [standalone[arch_id(a)] for a in self.archs]
        reports = {}
        for variant in variants:
            key = (truth, variant.name)
            if key not in self._reports:
                self._reports[key] = self.variant_report(variant, target)
            reports[variant.name] = self._reports[key]
        pooled = [d for v in variants if v.technique is None
                  for d in reports[v.name].get("paired", {}).get("hws - naive", {}).get("per_seed", [])]
        return {"space": self.cfg.space, "complete": False,
                "ground_truth": f"{truth} (reference check pending)" if pending else truth,
                "reference_check": check,
                "paired_over_budgets": {"hws - naive": pooled_sign_test(pooled)} if pooled else {},
                "archs": [{"id": arch_id(a), "arch": a, "standalone": standalone[arch_id(a)]} for a in self.archs],
                "ceiling": ceiling, "variants": reports, "config": dataclasses.asdict(self.cfg)}

    def _write(self, results: dict[str, Any]) -> dict[str, Any]:
        from ..plots.ranking import plot_rank_scatter, plot_tau_against_budget

        atomic_write_json(self.out / "results.json", results)
        plots = {name: str(plot_rank_scatter(results, name, self.out / f"scatter_{name}.png"))
                 for name in results["variants"]}
        plots["budget"] = str(plot_tau_against_budget(results, self.out / "tau_budget.png"))
        return {**results, "plots": plots}


class CeilingError(RuntimeError):
    """The stand-alone budget cannot rank the architectures (seed ceiling below ``min_ceiling``)."""


def run_study(cfg: RankingConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``cfg``; ``output`` is locked while it runs."""
    with output_lock(cfg.output, "field 'output'", "ranking"):
        return Study(cfg, log).run()


#: The files of a study's ledger: every result it caches, none of the checkpoints or logs.
LEDGER_FILES: tuple[str, ...] = ("archs.json", "results.json", "*/recipe.json", "*/*/metrics.json", "inherited/*/*.json",
                                 "shapes/*/*.json", "search/*/*.json", "*.png")


def export_ledger(output: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the study's ledger (:data:`LEDGER_FILES`) from ``output`` to ``dest`` (:func:`.ledger.copy_ledger`)."""
    return copy_ledger(output, dest, LEDGER_FILES, "archs.json")


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
    for path in results["plots"].values():
        print(f"wrote {path}")
    return 0, results


def format_table(results: Mapping[str, Any]) -> str:
    """The study's table: the seed ceiling and the ground-truth check, then per budget and mode the seed-mean
    metrics with their bootstrap intervals and seed range, the supernet size, the paired ``hws - naive``
    difference, and the search picks."""
    c = results["ceiling"]
    lines = [f"seed ceiling ({c.get('pool', 'standalone')}, 2 seeds, {c['archs']} archs): Kendall tau "
             f"{c['kendall_tau']:.3f} [{c['interval']['kendall_tau'][0]:.3f}, {c['interval']['kendall_tau'][1]:.3f}], "
             f"mean |seed difference| {c['mean_abs_seed_difference']:.4f}"]
    check = results.get("reference_check")
    if check:
        lo, hi = check["interval"]["kendall_tau"]
        lines.append(f"ground-truth check (stand-alone vs reference recipe, {check['archs']} archs): Kendall tau "
                     f"{check['kendall_tau']:.3f} [{lo:.3f}, {hi:.3f}] -> ground truth: {results['ground_truth']}")
    header = (f"{'budget':>12s} {'mode':6s} {'params':>8s}  {'Kendall tau':>26s}  {'Pearson r':>26s}  "
              f"{'Spearman rho':>26s}  {'top-k prec.':>11s}  {'train s':>8s}  {'Add kurtosis':>12s}  "
              f"{'Laplace-closer':>14s}")
    lines.append(header)
    for name, variant in results["variants"].items():
        for mode, data in variant["modes"].items():
            cells = []
            for key in ("kendall_tau", "pearson_r", "spearman_rho"):
                s, (lo, hi) = data["summary"][key], data["interval"][key]
                cells.append(f"{s['mean']:6.3f} [{lo:6.3f},{hi:6.3f}] ({s['min']:.2f}..{s['max']:.2f})")
            top = data["summary"]["top_k_precision"]["mean"]
            seconds = [s for s in data.get("fit_seconds", {}).values() if s is not None]
            train = f"{np.mean(seconds):8.0f}" if seconds else f"{'-':>8s}"
            shapes = [x for x in data.get("add_weight_shape", {}).values() if x is not None]
            kurt = f"{np.mean([x['median_excess_kurtosis'] for x in shapes]):12.2f}" if shapes else f"{'-':>12s}"
            closer = f"{np.mean([x['laplace_closer_share'] for x in shapes]):14.2f}" if shapes else f"{'-':>14s}"
            lines.append(f"{name:>12s} {mode:6s} {data['params']:8d}  {'  '.join(cells)}  {top:11.2f}  {train}  "
                         f"{kurt}  {closer}")
        for pair, diff in variant.get("paired", {}).items():
            lo, hi = diff["interval"]
            lines.append(f"{name:>12s} paired {pair}: Kendall tau {diff['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
                         f"(seeds {diff['range'][0]:+.2f}..{diff['range'][1]:+.2f}); beyond seed noise: "
                         f"{'yes' if diff['beyond_noise'] else 'no'}")
    for pair, pooled in results.get("paired_over_budgets", {}).items():
        lines.append(f"paired {pair} over every budget and seed: Kendall tau {pooled['mean']:+.3f} on average, "
                     f"{pooled['negative']} of {pooled['pairs']} negative, {pooled['positive']} positive (sign test "
                     f"p = {pooled['sign_test_p']:.3f})")
    for mode, search in (results.get("search") or {}).items():
        if mode == "variant" or not search:
            continue
        lines.append(f"search pick ({results['search']['variant']}, {mode}): stand-alone {search['standalone_accuracy']:.4f}, "
                     f"inherited {search['inherited_accuracy']:.4f}, {search.get('cost', {})}")
    return "\n".join(lines)
