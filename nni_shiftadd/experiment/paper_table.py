"""The paper's result tables at laptop scale, whatever the kind of space (``nni-shiftadd reproduce table4|table3``):
once everything is retrained from scratch, do searched hybrids beat homogeneous and expert-designed networks on the
score-energy front?

The study is the same for every kind; a :class:`TableKind` (:mod:`.image_table`: Table 4 and Fig. 6;
:mod:`.translation_table`: Table 3 and Fig. 5) supplies what differs: how its supernet trains, how a subnet scores
with inherited weights (the searches' objective), how a network trains from scratch and scores (top-1, BLEU), and
which baselines stand beside the picks.

1. **Supernet**: trained once with the kind's recipe, or a finished checkpoint the recipe names.
2. **Searches** on it: the Pareto preset over the whole space and the same search restricted to
   ``restricted_blocks``; each front thinned to ``picks`` architectures spread evenly over its energy.
3. **Retraining** of the picks and the kind's baselines from scratch with one recipe and every seed of ``seeds``.
4. **Quantised rows** (a kind whose recipe sets ``quant_bits``): the networks of ``quantized`` (search names and
   baseline families) fine-tuned from their float weights, seed by seed, with quantisation-aware training at
   ``quant_bits`` bits, scored on the quantised model and costed at that word width (paper Table 3's 8-bit rows).
5. **Report**: one row per network (its score's seed mean and range, bits, params, MACs and effective MACs
   ``MACs x (bits/32)^2``, #Mult/#Add/#Shift, energy, latency); for each hybrid pick, every other network of its word
   width it beats (a higher score beyond the seed ranges at no more energy), loses to, or cannot be told from;
   ``results.json``, ``table.md`` and the kind's figures (``score_energy.png``: Fig. 6's axes; translation also
   ``score_flops.png``: Fig. 5's, against effective FLOPs). They are written after every network trained too, with
   the rows so far (``complete: false``; a row short of seeds says so, and the standing counts only whole rows).

Everything is cached under ``output``: the supernet (``supernet/``), each search's evaluations (``search/``), each
trained network (``train/<name>-s<seed>/metrics.json``) with the recipe they share (``train/recipe.json``), each
quantised one (``train-q<bits>/<arch id>-s<seed>/``, recipe ``train-q<bits>/recipe.json``). Run the
same command again after a kill and it goes on without training anything twice.
"""
from __future__ import annotations

import abc
import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, atomic_write_text, read_json
from ..lock import output_lock
from .arch_selection import arch_id
from .ledger import copy_ledger, evolve, pin_recipe, same_supernet

#: The family of the hybrid search's picks, and of the restricted search's.
HYBRID, RESTRICTED = "ShiftAddNAS (hybrid search)", "restricted search"
#: What every row reports of its network's cost.
COST_KEYS: tuple[str, ...] = ("params", "macs", "mult", "add", "shift", "energy_mJ", "latency_ms")


class TableKind(abc.ABC):
    """What a table study does for one kind of space. ``cfg`` is the kind's recipe, which has at least ``space``,
    ``search_preset``, ``search_overrides``, ``restricted_blocks``, ``picks``, ``seeds`` and ``output``."""

    #: The score after retraining (a key of what :meth:`train_arch` returns), how tables and plots name it, and
    #: the family name of the restricted search.
    score: str
    score_label: str
    restricted_family: str = RESTRICTED
    #: The costs the score is plotted against, one figure each (metrics of ``cost.metrics.METRICS``).
    figures: tuple[str, ...] = ("energy_mJ",)

    @abc.abstractmethod
    def supernet(self, cfg: Any, out: Path, log: Callable[[str], None]) -> Path:
        """The supernet checkpoint: the recipe's, or the one trained (or resumed) in ``out / "supernet"``."""

    @abc.abstractmethod
    def scorer(self, cfg: Any, checkpoint: Path) -> Callable[[Mapping[str, Any]], dict[str, float]]:
        """``arch -> {objective: value, ...}`` with inherited weights (the searches' objective)."""

    @abc.abstractmethod
    def recipe(self, cfg: Any) -> dict[str, Any]:
        """The training recipe every network shares, as JSON (what ``train/recipe.json`` records)."""

    @abc.abstractmethod
    def train_arch(self, cfg: Any, arch: Mapping[str, Any], seed: int, folder: Path) -> dict[str, Any]:
        """``arch`` of the space trained from scratch with ``seed`` in ``folder``: its :attr:`score`,
        ``fit_seconds`` and ``cost`` (:data:`COST_KEYS`)."""

    def quant_recipe(self, cfg: Any) -> dict[str, Any] | None:
        """The quantisation-aware fine-tuning recipe as JSON, or ``None`` for a kind without quantised rows."""
        return None

    def train_quantized(self, cfg: Any, arch: Mapping[str, Any], seed: int, start: Path, folder: Path
                        ) -> dict[str, Any]:
        """``arch`` fine-tuned at ``cfg.quant_bits`` bits in ``folder`` from its float training in ``start``; what
        :meth:`train_arch` returns, costed at that word width."""
        raise NotImplementedError(f"{type(self).__name__} has no quantised rows")

    @abc.abstractmethod
    def baselines(self, cfg: Any, spec: Any) -> list[tuple[str, str, Callable[[int, Path], dict[str, Any]] | None,
                                                           Mapping[str, Any] | None]]:
        """The networks beside the picks: ``(name, family, train, arch)``, ``train(seed, folder)`` for a network
        outside the space (``arch`` ``None``), else ``train`` ``None`` and ``arch`` trained as the picks are."""


def searches(cfg: Any) -> dict[str, dict[str, Any]]:
    """A table recipe's searches and their preset overrides: ``hybrid``, and ``restricted`` (to
    ``restricted_blocks``) when the recipe names blocks."""
    found = {"hybrid": dict(cfg.search_overrides)}
    if cfg.restricted_blocks:
        found["restricted"] = {**cfg.search_overrides, "blocks": list(cfg.restricted_blocks), "baselines": []}
    return found


def thin_front(front: list[Mapping[str, Any]], count: int, objective: str, maximize: bool) -> list[Mapping[str, Any]]:
    """At most ``count`` members of a Pareto front spread evenly over it by energy (its two ends included); one
    member: the best in ``objective``."""
    ordered = sorted(front, key=lambda r: r["energy_mJ"])
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [(max if maximize else min)(ordered, key=lambda r: r[objective])]
    return [ordered[i] for i in sorted({round(k * (len(ordered) - 1) / (count - 1)) for k in range(count)})]


def compare(pick: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """How a searched pick stands against another network, by the seed ranges of the score (higher is better) and
    the energy: ``better`` (a higher score beyond the seed ranges at no more energy), ``worse`` (the other is better
    in that sense), ``more energy`` (better beyond noise but at more energy), ``less accurate`` (worse beyond noise
    but at less energy) or ``within seed noise``."""
    if pick["score"]["min"] > other["score"]["max"]:
        return "better" if pick["energy_mJ"] <= other["energy_mJ"] else "more energy"
    if other["score"]["min"] > pick["score"]["max"]:
        return "worse" if other["energy_mJ"] <= pick["energy_mJ"] else "less accurate"
    return "within seed noise"


def _hybrid(r: Mapping[str, Any]) -> bool:
    """Whether row ``r`` is a pick of the hybrid search (at any word width)."""
    return r.get("float_family", r["family"]) == HYBRID


def comparisons(rows: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """For each hybrid pick: :func:`compare` against every network of its word width outside its search, and
    whether it beats every one of them that spends at least its energy (``beats_all_at_no_more_energy``)."""
    out = {}
    for pick in filter(_hybrid, rows):
        others = [r for r in rows if not _hybrid(r) and r.get("bits", 32) == pick.get("bits", 32)]
        versus = {r["name"]: compare(pick, r) for r in others}
        rivals = [r for r in others if r["energy_mJ"] >= pick["energy_mJ"]]
        out[pick["name"]] = {"versus": versus, "rivals_at_no_less_energy": [r["name"] for r in rivals],
                             "beats_all_at_no_more_energy": bool(rivals) and all(versus[r["name"]] == "better"
                                                                                 for r in rivals)}
    return out


def row(name: str, family: str, runs: Mapping[int, Mapping[str, Any]], score: str, **extra: Any) -> dict[str, Any]:
    """One row of a table: the score per seed, its mean and range, and the network's cost."""
    from ..cost.counts import effective_macs

    values = {str(seed): float(run[score]) for seed, run in runs.items()}
    cost = next(iter(runs.values()))["cost"]
    bits = int(cost.get("bits", 32))
    effective = effective_macs(cost["macs"], bits)
    return {"name": name, "family": family, **extra,
            "score": {"mean": sum(values.values()) / len(values), "min": min(values.values()),
                      "max": max(values.values()), "per_seed": values},
            "bits": bits, **{k: cost[k] for k in COST_KEYS}, "effective_macs": effective, "flops_G": 2 * effective / 1e9}


#: One network to train: the folder its ``metrics.json`` is cached in, what trains it, and what the log calls it.
Job = tuple[Path, Callable[[], dict[str, Any]], str]


@dataclasses.dataclass
class Planned:
    """One row of a table before its networks are trained: its name and family, a :data:`Job` per seed, and what
    the row reports besides the score and cost (``search``, ``arch``, ...)."""

    name: str
    family: str
    jobs: dict[int, Job]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def _finished(folder: Path) -> dict[str, Any] | None:
    """The cached ``metrics.json`` of a network trained and costed in ``folder``; ``None`` when there is none."""
    cached = read_json(folder / "metrics.json")
    return cached if cached is not None and "cost" in cached else None


class PaperTable:
    """One table study of ``kind``: each phase reads its cache under ``cfg.output`` and computes only what is
    missing. ``log`` receives one line per finished network or phase."""

    def __init__(self, cfg: Any, kind: TableKind, log: Callable[[str], None] | None = None) -> None:
        from ..space import load_space

        self.cfg, self.kind, self.out = cfg, kind, Path(cfg.output)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.spec = load_space(cfg.space)
        self._check_recipe()

    def _check_recipe(self) -> None:
        """Refuse a cache of networks trained with another recipe (``train/recipe.json``)."""
        pin_recipe(self.out / "train" / "recipe.json", self.kind.recipe(self.cfg), "these networks were",
                   "remove the folder or choose another 'output'")
        quant = self.kind.quant_recipe(self.cfg)
        if quant is not None:
            pin_recipe(self.quant_dir / "recipe.json", quant, "these quantised networks were",
                       "remove the folder or choose another 'output'")

    @property
    def quant_dir(self) -> Path:
        """Where the quantised networks are cached: ``train-q<quant_bits>``."""
        return self.out / f"train-q{getattr(self.cfg, 'quant_bits', None)}"

    def search(self, name: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The Pareto search ``name`` on the supernet (the kind's inherited score, the preset's costs); its front and
        the picks thinned from it. Cached in ``search/<name>.json``, evaluation by evaluation."""
        from ..strategy.evolution import load_preset

        preset = load_preset(self.cfg.search_preset, dict(overrides))
        maximize = preset.objective_goal == "max"
        path = self.out / "search" / f"{name}.json"
        state = read_json(path) or {}
        if "front" not in state:
            checkpoint = self.kind.supernet(self.cfg, self.out, self.log)
            state = same_supernet(state, "evaluated", checkpoint, self.log, f"search {name}")
            evolution, evaluated = evolve(self.spec, preset, self.kind.scorer(self.cfg, checkpoint), path,
                                          state.get("evaluated"), state["supernet"])
            front = [{"arch": r["arch"], preset.objective: r[preset.objective], "energy_mJ": r["energy_mJ"],
                      "latency_ms": r["latency_ms"]} for r in evolution.front()]
            if not front:
                raise ValueError(f"search {name!r}: no architecture met the constraints of {self.cfg.search_preset!r}")
            state = {"evaluated": evaluated, "supernet": state["supernet"], "front": front,
                     "objective": preset.objective, "blocks": preset.blocks}
            atomic_write_json(path, state)
            self.log(f"search {name}: {len(evaluated)} architectures evaluated, a front of {len(front)}")
        picks = thin_front(state["front"], self.cfg.picks, preset.objective, maximize)
        return {"front": state["front"], "objective": preset.objective, "evaluations": len(state["evaluated"]),
                "picks": picks}

    def _train(self, folder: Path, train: Callable[[], dict[str, Any]], what: str) -> None:
        """Run one :data:`Job` and cache its metrics in ``folder``."""
        metrics = train()
        atomic_write_json(folder / "metrics.json", metrics)
        self.log(f"trained {what}: {self.kind.score_label} {metrics[self.kind.score]:.4f} "
                 f"({metrics['fit_seconds']:.0f} s)")

    def _arch_jobs(self, arch: Mapping[str, Any]) -> dict[int, Job]:
        """Per seed, where ``arch`` trained from scratch is cached, how it trains, and what the log calls it."""
        folders = {s: self.out / "train" / f"{arch_id(arch)}-s{s}" for s in self.cfg.seeds}
        return {s: (folder, lambda s=s, folder=folder: self.kind.train_arch(self.cfg, arch, s, folder),
                    f"{arch_id(arch)} seed {s}") for s, folder in folders.items()}

    def plan(self, found: Mapping[str, Mapping[str, Any]]) -> list[Planned]:
        """Every row of the table with the networks it needs, in training order: the picks, the baselines, then the
        quantised rows (each after the float networks it starts from)."""
        planned = []
        for name, search in found.items():
            family = HYBRID if name == "hybrid" else self.kind.restricted_family
            for k, pick in enumerate(search["picks"], 1):
                planned.append(Planned(f"{name}-{k}", family, self._arch_jobs(pick["arch"]), {
                    "search": name, "arch": pick["arch"], "arch_id": arch_id(pick["arch"]),
                    "inherited": pick[search["objective"]]}))
        for name, family, train, arch in self.kind.baselines(self.cfg, self.spec):
            if train is None:
                planned.append(Planned(name, family, self._arch_jobs(arch),
                                       {"arch": dict(arch), "arch_id": arch_id(arch)}))
            else:
                folders = {s: self.out / "train" / f"{name}-s{s}" for s in self.cfg.seeds}
                planned.append(Planned(name, family, {
                    s: (folder, lambda s=s, folder=folder, train=train: train(s, folder), f"{name} seed {s}")
                    for s, folder in folders.items()}))
        return planned + self.quantized_plan(planned)

    def quantized_plan(self, planned: list[Planned]) -> list[Planned]:
        """The rows of ``cfg.quantized`` (search names, baseline families) again at ``cfg.quant_bits`` bits, each
        seed fine-tuned from that seed's float network; none for a kind or recipe without quantised rows."""
        bits = getattr(self.cfg, "quant_bits", None)
        if bits is None or self.kind.quant_recipe(self.cfg) is None:
            return []
        chosen = set(self.cfg.quantized)
        out = []
        for p in planned:
            if "arch" not in p.extra or not (p.extra.get("search") in chosen or p.family in chosen):
                continue
            arch, name = p.extra["arch"], p.extra["arch_id"]
            jobs: dict[int, Job] = {}
            for seed in self.cfg.seeds:
                start, folder = (root / f"{name}-s{seed}" for root in (self.out / "train", self.quant_dir))
                jobs[seed] = (folder, lambda arch=arch, s=seed, start=start, folder=folder: self.kind.train_quantized(
                    self.cfg, arch, s, start, folder), f"{name} seed {seed} at {bits} bits")
            out.append(Planned(f"{p.name}-{bits}bit", f"{p.family} ({bits}-bit)", jobs,
                               {"float_family": p.family, "arch": arch, "arch_id": name}))
        return out

    def run(self) -> dict[str, Any]:
        """Every phase, each resumed from its cache; ``results.json``, ``table.md`` and the figures after every
        network trained (``complete: false``: the rows so far) and at the end."""
        found = {name: self.search(name, overrides) for name, overrides in searches(self.cfg).items()}
        planned = self.plan(found)
        for p in planned:
            for job in p.jobs.values():
                if _finished(job[0]) is None:
                    self._train(*job)
                    self._write(self.results(found, planned))
        return self._write(self.results(found, planned))

    def results(self, found: Mapping[str, Mapping[str, Any]], planned: list[Planned]) -> dict[str, Any]:
        """The table of the networks trained so far: a row per planned row with at least one seed trained
        (``seeds_trained``), the comparisons among the rows with every seed, ``networks`` trained of planned, and
        ``complete`` when none is left."""
        rows, trained, total = [], 0, 0
        for p in planned:
            runs = {seed: m for seed, (folder, _, _) in p.jobs.items() if (m := _finished(folder)) is not None}
            trained, total = trained + len(runs), total + len(p.jobs)
            if runs:
                rows.append({**row(p.name, p.family, runs, self.kind.score, **p.extra), "seeds_trained": len(runs)})
        whole = [r for r in rows if r["seeds_trained"] == len(self.cfg.seeds)]
        return {"space": self.cfg.space, "complete": trained == total,
                "networks": {"trained": trained, "planned": total},
                "score": self.kind.score, "score_label": self.kind.score_label, "seeds": self.cfg.seeds,
                "rows": rows, "comparisons": comparisons(whole),
                "searches": {n: {k: v for k, v in s.items() if k != "picks"} for n, s in found.items()},
                "config": dataclasses.asdict(self.cfg)}

    def _write(self, results: dict[str, Any]) -> dict[str, Any]:
        from ..plots.score_cost import plot_score_cost

        atomic_write_json(self.out / "results.json", results)
        atomic_write_text(self.out / "table.md", format_table(results) + "\n")
        plots = {}
        title = f"{self.cfg.space}: {self.kind.score_label} after retraining{_progress(results)}"
        for cost in self.kind.figures:
            name = f"score_{cost.split('_')[0]}"
            plots[name] = str(plot_score_cost(results["rows"], self.out / f"{name}.png", y_label=self.kind.score_label,
                                              title=title, cost=cost))
        return {**results, "plots": plots, "table": str(self.out / "table.md")}


def format_table(results: Mapping[str, Any]) -> str:
    """The table in Markdown: the score (mean and seed range), bits, params, MACs and effective MACs,
    #Mult/#Add/#Shift, energy, latency; then each hybrid pick's standing against the rest of its word width."""
    seeds = len(results["seeds"])
    lines = [] if results.get("complete", True) else [
        f"In progress: {results['networks']['trained']} of {results['networks']['planned']} networks trained. A row "
        "with fewer seeds says so, and the standing of the picks counts only the rows with every seed.", ""]
    lines += [f"| network | family | {results['score_label']} (mean, range over {seeds} seeds) | bits | params | "
             "MACs | eff. MACs | #Mult | #Add | #Shift | energy (mJ) | latency (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=lambda r: (r["family"], r["energy_mJ"])):
        s = r["score"]
        effective = r.get("effective_macs", r["macs"])
        partial = "" if r.get("seeds_trained", seeds) == seeds else f" ({r['seeds_trained']} of {seeds} seeds)"
        lines.append(f"| {r['name']} | {r['family']} | {s['mean']:.4f} ({s['min']:.4f}-{s['max']:.4f}){partial} | "
                     f"{r.get('bits', 32)} | {r['params'] / 1e3:.1f}K | {r['macs'] / 1e6:.2f}M | "
                     f"{effective / 1e6:.2f}M | {r['mult'] / 1e6:.2f}M | "
                     f"{r['add'] / 1e6:.2f}M | {r['shift'] / 1e6:.2f}M | {r['energy_mJ']:.4f} | "
                     f"{r['latency_ms']:.3f} |")
    for name, c in results["comparisons"].items():
        groups: dict[str, list[str]] = {}
        for other, verdict in c["versus"].items():
            groups.setdefault(verdict, []).append(other)
        said = "; ".join(f"{verdict}: {', '.join(names)}" for verdict, names in sorted(groups.items()))
        beats = "yes" if c["beats_all_at_no_more_energy"] else "no"
        every = "every network" if results.get("complete", True) else "every network with all its seeds so far"
        lines.append(f"\n{name}: beats {every} at no less energy beyond seed noise: {beats}. {said}")
    return "\n".join(lines)


def _progress(results: Mapping[str, Any]) -> str:
    """`` (in progress: 19 of 32 networks)`` for a partial table, else nothing."""
    if results.get("complete", True):
        return ""
    n = results["networks"]
    return f" (in progress: {n['trained']} of {n['planned']} networks)"


#: The files of a table study's ledger: its results, the searches' evaluations and fronts, each trained network's
#: metrics and the recipes they share; none of the checkpoints. Carried back, the searches need no supernet and
#: nothing finished trains again (a quantised network still to train needs its float network's weights, which are
#: trained again where they are missing).
LEDGER_FILES: tuple[str, ...] = ("results.json", "table.md", "*.png", "search/*.json", "train*/recipe.json",
                                 "train*/*/metrics.json")


def export_ledger(output: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the table study's ledger (:data:`LEDGER_FILES`) from ``output`` to ``dest``
    (:func:`.ledger.copy_ledger`)."""
    return copy_ledger(output, dest, LEDGER_FILES, "train/recipe.json")


def run_table(cfg: Any, kind: TableKind, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the table study of ``cfg`` and ``kind``; ``output`` is locked while it runs."""
    with output_lock(cfg.output, "field 'output'", "reproduce"):
        return PaperTable(cfg, kind, log).run()
