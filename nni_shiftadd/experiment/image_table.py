"""The paper's Table 4 and Fig. 6 at laptop scale (``nni-shiftadd reproduce table4``): once everything is retrained
from scratch, do searched hybrids beat homogeneous and expert-designed networks on the accuracy-energy front?

1. **Supernet**: the supernet recipe trained once, or ``supernet``: a finished checkpoint (a ranking study's, say).
2. **Searches** on it, inherited accuracy after BatchNorm recalibration as the objective: the Pareto preset over
   the whole space (ShiftAddNAS) and the same search restricted to ``restricted_blocks`` (Attn and Conv: the
   CNN+Transformer NAS baseline). Each front is thinned to ``picks`` architectures spread evenly over its energy.
3. **Retraining** from scratch with one recipe (the retrain recipe with ``retrain_overrides``) and every seed of
   ``seeds``: the picks, the space's homogeneous networks (``baselines``: all-Conv/Shift/Add/Attn), and the ResNet,
   AdderNet and DeepShift families (each model of ``resnets`` with the ``op`` of ``resnet_families``) trained with
   the same recipe fields.
4. **Report**: one row per network (top-1 mean and seed range, params, MACs, #Mult/#Add/#Shift, energy and
   latency on the Eyeriss model at 32 bits, every row costed the same way); for each hybrid pick, every other
   network it beats (higher accuracy beyond the seed ranges at no more energy), loses to, or cannot be told from;
   ``results.json``, ``table.md`` and ``accuracy_energy.png`` (Fig. 6's shape: one line per family, seed ranges as
   error bars).

Everything is cached under ``output``: the supernet (``supernet/``), each search's evaluations (``search/``), each
trained network (``train/<arch id or model-op>-s<seed>/metrics.json``) with the recipe they share
(``train/recipe.json``). Run the same command again after a kill and it goes on without training anything twice.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json
from ..config import ConfigError, load_yaml
from ..lock import check_output_dir, output_lock
from ..vocabulary import ATTENTION, BLOCK_TYPES, CONV_FAMILY, REFERENCE_BLOCK, block_type
from .arch_selection import arch_id
from .ledger import plain, read_json, recipe_changes

#: The family of the hybrid search's picks, and of the restricted search's.
HYBRID, RESTRICTED = "ShiftAddNAS (hybrid search)", "CNN+Transformer search"
#: What every row reports of its network's cost (:func:`~nni_shiftadd.cost.profile.profile` at 32 bits).
COST_KEYS: tuple[str, ...] = ("params", "macs", "mult", "add", "shift", "energy_mJ", "latency_ms")


@dataclasses.dataclass
class ImageTableConfig:
    """Schema of a Table 4 recipe (``examples/fashion_mnist/table4_cv_small.yaml``)."""

    space: str = "cv_small"
    supernet: str | None = None
    supernet_recipe: str = "examples/fashion_mnist/supernet_cv_small.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    search_preset: str = "cv_small_pareto"
    search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    restricted_blocks: list[str] = dataclasses.field(default_factory=lambda: [ATTENTION, REFERENCE_BLOCK])
    picks: int = 3
    eval_batches: int = 10
    calibration_batches: int = 3
    eval_batch_size: int = 256
    retrain_recipe: str = "examples/fashion_mnist/retrain_cv_small.yaml"
    retrain_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    baselines: list[str] = dataclasses.field(default_factory=lambda: [*CONV_FAMILY, ATTENTION])
    resnets: list[str] = dataclasses.field(default_factory=lambda: ["shiftadd_resnet8", "shiftadd_resnet20"])
    resnet_families: dict[str, str] = dataclasses.field(
        default_factory=lambda: {b.cnn_family: name for name, b in BLOCK_TYPES.items() if b.cnn_family})
    output: str = "runs/table4_cv_small"

    def validate(self) -> None:
        """Check every field and every stage's recipe (supernet, both searches, the retrain recipe, each ResNet)
        before anything trains; errors name the field, the value and what is allowed."""
        for name in ("picks", "eval_batches", "calibration_batches", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"field 'seeds': one or more distinct seeds >= 0 (two give a seed range), got {self.seeds}")
        for name in ("supernet_recipe", "retrain_recipe"):
            if not Path(getattr(self, name)).is_file():
                raise ValueError(f"field {name!r}: no such file {getattr(self, name)!r}")
        if self.supernet is not None and not Path(self.supernet).is_file():
            raise ValueError(f"field 'supernet': no such checkpoint {self.supernet!r} (null trains one with "
                             "supernet_recipe)")
        for family, op in self.resnet_families.items():
            if op not in CONV_FAMILY:
                raise ValueError(f"field 'resnet_families': {family}: unknown op {op!r}; allowed {list(CONV_FAMILY)}")
        for name, reserved in (("retrain_overrides", ("arch", "seed", "output", "space", "supernet")),
                               ("supernet_overrides", ("space", "output", "resume"))):
            clash = sorted(set(getattr(self, name)) & set(reserved))
            if clash:
                raise ValueError(f"field {name!r}: {clash} are set by the study per network; remove them")
        check_output_dir(self.output, "field 'output'")
        self._validate_stages()

    def _validate_stages(self) -> None:
        from ..space import load_space
        from ..space.spec import named_baselines
        from ..tasks.supernet import SupernetConfig

        try:
            spec = load_space(self.space)
        except ValueError as err:
            raise ValueError(f"field 'space': {err}") from None
        if self.supernet is None:
            try:
                load_yaml(SupernetConfig, self.supernet_recipe, self.supernet_fields(Path(self.output)))
            except ConfigError as err:
                raise ValueError(f"field 'supernet_overrides': {err}") from None
        for name, overrides in self.searches().items():
            preset = self.preset(overrides, f"search {name!r}")
            if preset.goal != "pareto" or preset.objective != "accuracy":
                raise ValueError(f"field 'search_preset': {self.search_preset!r} must search the accuracy front "
                                 f"(goal: pareto, objective: accuracy), got goal {preset.goal!r}, objective "
                                 f"{preset.objective!r}")
        try:
            named_baselines(spec, self.baselines)
        except ValueError as err:
            raise ValueError(f"field 'baselines': {err}") from None
        recipe = self.retrain_recipe_for("all_conv", 0, Path(self.output))
        if recipe.quant_bits is not None:
            raise ValueError(f"field 'retrain_overrides': quant_bits {recipe.quant_bits}: the table compares networks "
                             "in floating point (the ResNets have no quantised recipe); set quant_bits: null")
        for model in self.resnets:
            for family, op in self.resnet_families.items():
                try:
                    self.resnet_recipe(recipe, model, op, 0, Path(self.output)).validate()
                except ValueError as err:
                    raise ValueError(f"field 'resnets': {model} ({family}, op {op}): {err}") from None

    def supernet_fields(self, out: Path) -> dict[str, Any]:
        """The supernet recipe's overrides: ``supernet_overrides`` in ``output/supernet``, resumed when killed."""
        return {**self.supernet_overrides, "space": self.space, "output": str(out / "supernet"), "resume": "auto"}

    def searches(self) -> dict[str, dict[str, Any]]:
        """The searches and their preset overrides: ``hybrid``, and ``restricted`` when ``restricted_blocks``."""
        searches = {"hybrid": dict(self.search_overrides)}
        if self.restricted_blocks:
            searches["restricted"] = {**self.search_overrides, "blocks": list(self.restricted_blocks),
                                      "baselines": [op for op in self.baselines if op in self.restricted_blocks]}
        return searches

    def preset(self, overrides: Mapping[str, Any], where: str) -> Any:
        """The search preset with ``overrides``; ``ValueError`` naming the fields and ``where`` otherwise."""
        from ..strategy.evolution import load_preset

        try:
            return load_preset(self.search_preset, dict(overrides))
        except ConfigError as err:
            raise ValueError(f"fields 'search_preset', 'search_overrides', 'restricted_blocks' ({where}): {err}") \
                from None

    def retrain_recipe_for(self, arch: Mapping[str, Any] | str, seed: int, folder: Path) -> Any:
        """The one training recipe (a resolved :class:`~nni_shiftadd.tasks.retrain.RetrainConfig`) for ``arch``."""
        from ..tasks.retrain import RetrainConfig

        overrides = {**self.retrain_overrides, "space": self.space, "supernet": None, "arch": arch, "seed": seed,
                     "output": str(folder)}
        try:
            return load_yaml(RetrainConfig, self.retrain_recipe, overrides).resolved()
        except ConfigError as err:
            raise ValueError(f"field 'retrain_overrides': {err}") from None

    def resnet_recipe(self, recipe: Any, model: str, op: str, seed: int, folder: Path) -> Any:
        """The ``train`` recipe of ``model`` with ``op``: every field it shares with the retrain recipe from
        ``recipe`` (one recipe for every row of the table), at the space's input size."""
        from ..space import load_space
        from ..tasks.classification import TrainConfig

        shared = {f.name for f in dataclasses.fields(TrainConfig)} & {f.name for f in dataclasses.fields(recipe)}
        fields = {name: getattr(recipe, name) for name in shared - {"seed", "output"}}
        return TrainConfig(**fields, model=model, model_kwargs={"op": op}, input_size=load_space(self.space).input.size,
                           seed=seed, output=str(folder))

    def quick(self) -> ImageTableConfig:
        """The ``--quick`` version (minutes): a few supernet steps, one generation per search, two picks, a few
        batches per network, the smallest ResNet; in ``<output>_quick``. It checks the pipeline, ranks nothing."""
        tiny = {"epochs": 1, "warmup_epochs": 0, "limit_train_batches": 4, "limit_eval_batches": 2}
        return dataclasses.replace(
            self, supernet_overrides={**self.supernet_overrides, "epochs": 1, "warmup_epochs": 0,
                                      "limit_train_batches": 8, "limit_eval_batches": 2, "eval_archs": 0},
            search_overrides={**self.search_overrides, "iterations": 1, "population": 6, "parents": 3,
                              "mutation": 2, "crossover": 2},
            picks=min(self.picks, 2), eval_batches=2, calibration_batches=1,
            retrain_overrides={**self.retrain_overrides, **tiny}, resnets=self.resnets[:1],
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


def load_config(path: str, overrides: dict[str, Any] | None = None) -> ImageTableConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(ImageTableConfig, path, overrides)


def thin_front(front: list[Mapping[str, Any]], count: int) -> list[Mapping[str, Any]]:
    """At most ``count`` members of a Pareto front spread evenly over it by energy (its two ends included)."""
    ordered = sorted(front, key=lambda r: r["energy_mJ"])
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [max(ordered, key=lambda r: r["accuracy"])]
    return [ordered[i] for i in sorted({round(k * (len(ordered) - 1) / (count - 1)) for k in range(count)})]


def compare(pick: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """How a searched pick stands against another network, by the seed ranges of top-1 and the energy: ``better``
    (higher accuracy beyond the seed ranges at no more energy), ``worse`` (the other is better in that sense),
    ``more energy`` (more accurate beyond noise but at more energy), ``less accurate`` (less accurate beyond noise
    but at less energy) or ``within seed noise``."""
    if pick["accuracy"]["min"] > other["accuracy"]["max"]:
        return "better" if pick["energy_mJ"] <= other["energy_mJ"] else "more energy"
    if other["accuracy"]["min"] > pick["accuracy"]["max"]:
        return "worse" if other["energy_mJ"] <= pick["energy_mJ"] else "less accurate"
    return "within seed noise"


class ImageTable:
    """One Table 4 study: each phase reads its cache under ``cfg.output`` and computes only what is missing.
    ``log`` receives one line per finished network or phase."""

    def __init__(self, cfg: ImageTableConfig, log: Callable[[str], None] | None = None) -> None:
        from ..space import load_space

        self.cfg, self.out = cfg, Path(cfg.output)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.spec = load_space(cfg.space)
        self._check_recipe()

    def _check_recipe(self) -> None:
        """Refuse a cache of networks trained with another recipe (``train/recipe.json``)."""
        recipe = dataclasses.asdict(self.cfg.retrain_recipe_for("all_conv", 0, self.out))
        wanted = plain({k: v for k, v in recipe.items() if k not in ("arch", "seed", "output")})
        path = self.out / "train" / "recipe.json"
        saved = read_json(path)
        if saved is None:
            atomic_write_json(path, wanted)
            return
        changes = recipe_changes(saved, wanted, set(saved) | set(wanted))
        if changes:
            raise ValueError(f"{path.parent}: these networks were trained with another recipe ({changes}); remove the "
                             "folder or choose another 'output' (field 'retrain_overrides')")

    # -- supernet and searches -------------------------------------------------------------------------------------
    def supernet(self) -> Path:
        """The supernet checkpoint: ``cfg.supernet``, or the one trained (or resumed) in ``output/supernet``."""
        if self.cfg.supernet is not None:
            return Path(self.cfg.supernet)
        from ..checkpoint import load_checkpoint
        from ..tasks.supernet import SupernetConfig, train_supernet

        recipe = load_yaml(SupernetConfig, self.cfg.supernet_recipe, self.cfg.supernet_fields(self.out))
        folder = Path(recipe.output)
        if not (folder / "metrics.json").is_file():
            result = train_supernet(recipe)
            self.log(f"supernet: {result['global_step']} steps ({result['fit_seconds']:.0f} s)")
        checkpoint = folder / "checkpoints" / "last.ckpt"
        saved = load_checkpoint(checkpoint, mmap=True)["hyper_parameters"]["config"]
        changes = recipe_changes(saved, plain(dataclasses.asdict(recipe)), set(saved) - {"output", "resume"})
        if changes:
            raise ValueError(f"{folder}: this supernet was trained with another recipe ({changes}); remove the folder "
                             "to train it again")
        return checkpoint

    def search(self, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The Pareto search ``name`` on the supernet (inherited accuracy, the preset's costs); its front and the
        picks thinned from it. Cached in ``search/<name>.json``, evaluation by evaluation."""
        from ..cost.metrics import space_cost_fn
        from ..strategy.evolution import Evolution
        from ..tasks.inherited import inherited_scorer

        path = self.out / "search" / f"{name}.json"
        state = read_json(path) or {}
        if "front" not in state:
            preset = self.cfg.preset(overrides, f"search {name!r}")
            score = inherited_scorer(self.supernet(), self.cfg.eval_batch_size, self.cfg.eval_batches,
                                     self.cfg.calibration_batches)
            cost = space_cost_fn(self.spec, preset.bits, preset.latency, eyeriss=preset.eyeriss)
            evolution = Evolution(self.spec, preset, cost)
            evaluated = state.get("evaluated", {})
            while not evolution.done:
                for arch in evolution.ask():
                    key = arch_id(arch)
                    if key not in evaluated:
                        evaluated[key] = score(arch)
                        atomic_write_json(path, {"evaluated": evaluated})
                    evolution.tell(arch, {**evaluated[key], **cost(arch)})
            front = [{"arch": r["arch"], "accuracy": r["accuracy"], "energy_mJ": r["energy_mJ"],
                      "latency_ms": r["latency_ms"]} for r in evolution.front()]
            if not front:
                raise ValueError(f"search {name!r}: no architecture met the constraints of {self.cfg.search_preset!r}")
            state = {"evaluated": evaluated, "front": front, "blocks": preset.blocks}
            atomic_write_json(path, state)
            self.log(f"search {name}: {len(evaluated)} architectures evaluated, a front of {len(front)}")
        picks = thin_front(state["front"], self.cfg.picks)
        return {"front": state["front"], "evaluations": len(state["evaluated"]), "picks": picks}

    # -- training --------------------------------------------------------------------------------------------------
    def trained_arch(self, arch: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """``arch`` of the space trained from scratch with the table's recipe and ``seed``; cached."""
        from ..tasks.retrain import retrain

        folder = self.out / "train" / f"{arch_id(arch)}-s{seed}"
        cached = read_json(folder / "metrics.json")
        if cached is None:
            cached = retrain(self.cfg.retrain_recipe_for(dict(arch), seed, folder))
            self.log(f"trained {arch_id(arch)} seed {seed}: test accuracy {cached['test_acc']:.4f} "
                     f"({cached['fit_seconds']:.0f} s)")
        return cached

    def trained_resnet(self, model: str, op: str, seed: int) -> dict[str, Any]:
        """``model`` with ``op`` trained from scratch with the table's recipe and ``seed``, with its cost; cached."""
        import torch

        from ..cost.profile import profile
        from ..tasks.classification import build_model, train

        folder = self.out / "train" / f"{model}-{op}-s{seed}"
        cached = read_json(folder / "metrics.json")
        if cached is None or "cost" not in cached:
            recipe = self.cfg.resnet_recipe(self.cfg.retrain_recipe_for("all_conv", seed, folder), model, op, seed,
                                            folder)
            result = cached or train(recipe)
            size = (self.spec.input.channels, self.spec.input.size, self.spec.input.size)
            net = build_model(recipe, size[0], self.spec.num_classes).eval()
            cost = profile(net, torch.zeros(1, *size), bits=32)
            cached = {**result, "cost": {"bits": 32, **{k: cost[k] for k in COST_KEYS}}}
            atomic_write_json(folder / "metrics.json", cached)
            self.log(f"trained {model} op {op} seed {seed}: test accuracy {cached['test_acc']:.4f} "
                     f"({cached['fit_seconds']:.0f} s)")
        return cached

    @staticmethod
    def row(name: str, family: str, runs: Mapping[int, Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
        """One row of the table: top-1 per seed, its mean and range, and the network's cost."""
        acc = {str(seed): float(run["test_acc"]) for seed, run in runs.items()}
        values = list(acc.values())
        cost = next(iter(runs.values()))["cost"]
        return {"name": name, "family": family, **extra,
                "accuracy": {"mean": sum(values) / len(values), "min": min(values), "max": max(values),
                             "per_seed": acc},
                **{k: cost[k] for k in COST_KEYS}}

    def run(self) -> dict[str, Any]:
        """Every phase, each resumed from its cache; ``results.json``, ``table.md`` and the figure at the end."""
        from ..space.spec import named_baselines

        seeds = self.cfg.seeds
        searches = {name: self.search(name, overrides) for name, overrides in self.cfg.searches().items()}
        rows = []
        for name, search in searches.items():
            family = HYBRID if name == "hybrid" else RESTRICTED
            for k, pick in enumerate(search["picks"], 1):
                runs = {s: self.trained_arch(pick["arch"], s) for s in seeds}
                rows.append(self.row(f"{name}-{k}", family, runs, arch=pick["arch"], arch_id=arch_id(pick["arch"]),
                                     inherited_accuracy=pick["accuracy"]))
        homogeneous = named_baselines(self.spec, self.cfg.baselines)
        for op in self.cfg.baselines:
            arch = homogeneous[f"all_{op}"]
            runs = {s: self.trained_arch(arch, s) for s in seeds}
            rows.append(self.row(f"all_{op}", f"all-{block_type(op).display}", runs, arch=arch, arch_id=arch_id(arch)))
        for family, op in self.cfg.resnet_families.items():
            for model in self.cfg.resnets:
                runs = {s: self.trained_resnet(model, op, s) for s in seeds}
                rows.append(self.row(f"{model}-{op}", family, runs, model=model, op=op))
        return self._write({"space": self.cfg.space, "complete": True, "seeds": seeds, "rows": rows,
                            "comparisons": comparisons(rows),
                            "searches": {n: {k: v for k, v in s.items() if k != "picks"} for n, s in searches.items()},
                            "config": dataclasses.asdict(self.cfg)})

    def _write(self, results: dict[str, Any]) -> dict[str, Any]:
        from ..plots.accuracy_energy import plot_accuracy_energy

        atomic_write_json(self.out / "results.json", results)
        (self.out / "table.md").write_text(format_table(results) + "\n")
        figure = plot_accuracy_energy(results["rows"], self.out / "accuracy_energy.png",
                                      title=f"{self.cfg.space}: top-1 after retraining against energy")
        return {**results, "plots": {"accuracy_energy": str(figure)}, "table": str(self.out / "table.md")}


def comparisons(rows: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each hybrid pick: :func:`compare` against every network outside its search, and whether it beats every
    one of them that spends at least its energy (``beats_all_at_no_more_energy``)."""
    out = {}
    for pick in (r for r in rows if r["family"] == HYBRID):
        versus = {r["name"]: compare(pick, r) for r in rows if r["family"] != HYBRID}
        rivals = [r for r in rows if r["family"] != HYBRID and r["energy_mJ"] >= pick["energy_mJ"]]
        out[pick["name"]] = {"versus": versus, "rivals_at_no_less_energy": [r["name"] for r in rivals],
                             "beats_all_at_no_more_energy": bool(rivals) and all(versus[r["name"]] == "better"
                                                                                 for r in rivals)}
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """Table 4's shape in Markdown: top-1 (mean and seed range), params, MACs, #Mult/#Add/#Shift, energy, latency;
    then each hybrid pick's standing against the rest."""
    seeds = len(results["seeds"])
    lines = [f"| network | family | top-1 (mean, range over {seeds} seeds) | params | MACs | #Mult | #Add | #Shift | "
             "energy (mJ) | latency (ms) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=lambda r: (r["family"], r["energy_mJ"])):
        a = r["accuracy"]
        lines.append(f"| {r['name']} | {r['family']} | {a['mean']:.4f} ({a['min']:.4f}-{a['max']:.4f}) | "
                     f"{r['params'] / 1e3:.1f}K | {r['macs'] / 1e6:.2f}M | {r['mult'] / 1e6:.2f}M | "
                     f"{r['add'] / 1e6:.2f}M | {r['shift'] / 1e6:.2f}M | {r['energy_mJ']:.4f} | "
                     f"{r['latency_ms']:.3f} |")
    for name, c in results["comparisons"].items():
        groups: dict[str, list[str]] = {}
        for other, verdict in c["versus"].items():
            groups.setdefault(verdict, []).append(other)
        said = "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in sorted(groups.items()))
        beats = "yes" if c["beats_all_at_no_more_energy"] else "no"
        lines.append(f"\n{name}: beats every network at no less energy beyond seed noise: {beats}. {said}")
    return "\n".join(lines)


def run_table(cfg: ImageTableConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``cfg``; ``output`` is locked while it runs."""
    with output_lock(cfg.output, "field 'output'", "reproduce table4"):
        return ImageTable(cfg, log).run()
