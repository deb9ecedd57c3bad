"""The ranking study for translation (issue 25's third part): does a SuperTransformer's inherited validation loss rank
subnets as training them alone does, and do its inherited losses spread beyond seed noise?

``nni-shiftadd translation-ranking --config examples/translation/ranking_nlp_tiny.yaml``:

1. **Architectures**: ``archs`` of the space, seeded and spread over block mix, widths and decoder depth
   (:func:`~nni_shiftadd.experiment.arch_selection.select_archs`).
2. **Supernets**: one per technique (``techniques``: SuperTransformer-recipe overrides such as ``sampling: sandwich``)
   and seed; the first technique with every seed of ``supernet_seeds`` (the seed-to-seed noise), the others with
   the first seed.
3. **Inherited**: every architecture's validation loss and test BLEU with the weights it inherits from each supernet.
   The spread of the inherited losses across architectures against the seed-to-seed noise of one architecture's
   inherited loss needs nothing else, so it is written as soon as a technique's supernets are scored
   (``results.json`` with ``complete: false``, and a log line for that technique): the first technique's verdict
   before the next technique's supernet trains, all of them hours before the stand-alone networks are done.
4. **Stand-alone**: each trained from scratch with the supernet's recipe (``standalone_overrides`` on top), then its
   validation loss and test BLEU. After each network it trains but the last, the partial ``results.json`` holds the
   scores so far and, once at least :data:`MIN_RANKED` and more than ``top_k`` networks are trained, each technique's
   rank metrics over them (and a log line of its Kendall tau): a study whose stand-alone networks take days shows its
   trend as it goes.
5. **Report**, per technique: Kendall tau, Pearson r, Spearman rho and top-k precision between inherited and
   stand-alone validation loss (per seed, with bootstrap intervals over architectures), the same for BLEU, and the
   spread; ``results.json``, ``scatter.png`` and ``seed_noise.png`` (each architecture's inherited loss across
   supernet seeds, drawn with the first verdict).

Every trained network and evaluation is cached under ``output`` (``standalone/<arch id>/``,
``supernets/<technique>_seed<seed>/``, ``inherited/<technique>_seed<seed>.json``); a killed study started again goes
on where it stopped, and fairseq resumes a killed training run from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
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
from ..space import load_space
from .arch_selection import arch_id, select_archs
from .ledger import copy_ledger, pin_recipe, same_supernet
from .rank_statistics import architecture_effect, bootstrap_interval, rank_metrics

#: The fewest architectures a rank correlation is computed over (the study's ``archs``, and the stand-alone networks
#: trained so far before the partial results rank them).
MIN_RANKED = 4

#: Recipe fields the study sets per network.
RESERVED: tuple[str, ...] = ("subnet", "seed", "output", "baselines", "eval_archs", "eval_test_sentences", "resume")


@dataclasses.dataclass
class TranslationRankingConfig:
    """Schema of a translation ranking recipe (``examples/translation/ranking_nlp_tiny.yaml``)."""

    supernet_recipe: str = "examples/translation/supernet_nlp_tiny.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    techniques: dict[str, dict[str, Any]] = dataclasses.field(default_factory=lambda: {"uniform": {}})
    supernet_seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    archs: int = 12
    arch_seed: int = 0
    standalone_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    test_sentences: int | None = 200
    top_k: int = 3
    bootstrap: int = 2000
    output: str = "runs/ranking_nlp_tiny"

    def validate(self) -> None:
        """Check every field and every network's recipe (stand-alone and each technique's supernet) before anything
        trains; errors name the field, the value and what is allowed."""
        for name in ("top_k", "bootstrap"):
            if getattr(self, name) < 1:
                raise ValueError(f"field {name!r}: must be >= 1, got {getattr(self, name)}")
        if self.archs < MIN_RANKED:
            raise ValueError(f"field 'archs': a rank correlation needs at least {MIN_RANKED} architectures, got "
                             f"{self.archs}")
        if self.top_k > self.archs:
            raise ValueError(f"field 'top_k': must be <= archs ({self.archs}), got {self.top_k}")
        if self.test_sentences is not None and self.test_sentences < 1:
            raise ValueError(f"field 'test_sentences': must be null (all) or >= 1, got {self.test_sentences}")
        if not self.supernet_seeds or len(set(self.supernet_seeds)) != len(self.supernet_seeds):
            raise ValueError(f"field 'supernet_seeds': at least one, all different, got {self.supernet_seeds}")
        if not self.techniques:
            raise ValueError("field 'techniques': at least one, e.g. {uniform: {}, sandwich: {sampling: sandwich}}")
        if not Path(self.supernet_recipe).is_file():
            raise ValueError(f"field 'supernet_recipe': no such file {self.supernet_recipe!r}")
        check_reserved(self.supernet_overrides, RESERVED, "supernet_overrides")
        check_reserved(self.standalone_overrides, RESERVED, "standalone_overrides")
        for technique, overrides in self.techniques.items():
            check_reserved(overrides, RESERVED, f"techniques.{technique}")
        for technique in self.techniques:
            if not re.fullmatch(r"[a-z0-9_]+", technique):
                raise ValueError(f"field 'techniques': {technique!r}: a name of lower-case letters, digits and _ (it "
                                 "names cache folders)")
        check_output_dir(self.output, "field 'output'")
        self.recipe(self.standalone_overrides, {}, "standalone_overrides")
        for technique, overrides in self.techniques.items():
            self.recipe(overrides, {}, f"techniques.{technique}")

    def recipe(self, overrides: Mapping[str, Any], fields: Mapping[str, Any], where: str) -> Any:
        """The SuperTransformer recipe with ``supernet_overrides``, then ``overrides`` (a technique's, or
        ``standalone_overrides``), then the study's ``fields``; ``ValueError`` naming ``where`` otherwise."""
        from ..tasks.supertransformer import SuperTransformerConfig

        try:
            return load_yaml(SuperTransformerConfig, self.supernet_recipe,
                             {**self.supernet_overrides, **overrides, "baselines": [], "eval_archs": 0,
                              "eval_test_sentences": self.test_sentences, **fields})
        except ConfigError as err:
            raise ValueError(f"field {where!r}: {err}") from None

    def seeds(self, technique: str) -> list[int]:
        """The supernet seeds of ``technique``: all for the first technique, the first for the others."""
        return self.supernet_seeds if technique == next(iter(self.techniques)) else self.supernet_seeds[:1]

    def quick(self) -> TranslationRankingConfig:
        """The ``--quick`` version: 4 architectures, a few updates per network, BLEU on 20 sentences (minutes)."""
        tiny = {"max_updates": 8, "warmup_updates": 2, "save_interval_updates": 8}
        return dataclasses.replace(
            self, archs=4, top_k=min(self.top_k, 2), bootstrap=200, test_sentences=20,
            supernet_overrides={**self.supernet_overrides, **tiny},
            standalone_overrides={**self.standalone_overrides, **tiny},
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


def load_config(path: str, overrides: dict[str, Any] | None = None) -> TranslationRankingConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(TranslationRankingConfig, path, overrides)


def _scores(subnet: Mapping[str, Any]) -> dict[str, float]:
    """Validation loss and test BLEU of one scored subnet (``evaluate_subnet``'s result)."""
    return {"valid_loss": float(subnet["valid"]["loss_nats"]), "bleu": float(subnet["test"]["bleu"])}


class TranslationRanking:
    """One translation ranking study: each phase reads its cache under ``cfg.output`` and trains or evaluates only
    what is missing. ``log`` receives one line per finished network or phase."""

    def __init__(self, cfg: TranslationRankingConfig, log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.out = cfg, Path(cfg.output)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.spec = load_space(cfg.recipe(cfg.standalone_overrides, {}, "standalone_overrides").space)
        self.archs = self._archs()

    def _archs(self) -> list[dict[str, Any]]:
        path = self.out / "archs.json"
        saved = read_json(path)
        if saved is not None and saved.get("space") == self.spec.name and saved.get("seed") == self.cfg.arch_seed \
                and len(saved["archs"]) >= self.cfg.archs:
            return saved["archs"][:self.cfg.archs]
        archs = select_archs(self.spec, self.cfg.archs, self.cfg.arch_seed)
        atomic_write_json(path, {"space": self.spec.name, "seed": self.cfg.arch_seed, "archs": archs})
        return archs

    def _trained(self, recipe: Any, what: str) -> dict[str, Any]:
        """``metrics.json`` of a finished training run of ``recipe`` (trained, or resumed, when missing); a cache of
        another recipe is refused, naming what changed."""
        from ..tasks.supertransformer import train_supertransformer

        folder = Path(recipe.output)
        pin_recipe(folder / "recipe.json", {k: v for k, v in dataclasses.asdict(recipe).items() if k != "output"},
                   f"{what} was", "remove the folder or choose another 'output'")
        cached = read_json(folder / "metrics.json")
        if cached is None:
            cached = train_supertransformer(recipe)
            self.log(f"{what}: {cached['updates']} updates ({cached['train_seconds']:.0f} s of training)")
        return cached

    def standalone(self, arch: Mapping[str, Any]) -> dict[str, float]:
        """Validation loss and test BLEU of ``arch`` trained from scratch with the stand-alone recipe; cached."""
        fields = {"subnet": json.dumps(dict(arch)), "output": str(self.out / "standalone" / arch_id(arch))}
        recipe = self.cfg.recipe(self.cfg.standalone_overrides, fields, "standalone_overrides")
        return _scores(self._trained(recipe, f"stand-alone {arch_id(arch)}")["subnets"]["subnet"])

    def supernet(self, technique: str, seed: int) -> Path:
        """The checkpoint of ``technique``'s supernet trained with ``seed``; trained (or resumed) when missing."""
        folder = self.out / "supernets" / f"{technique}_seed{seed}"
        recipe = self.cfg.recipe(self.cfg.techniques[technique], {"seed": seed, "output": str(folder)},
                                 f"techniques.{technique}")
        return Path(self._trained(recipe, f"supernet {technique} seed {seed}")["checkpoint"])

    def inherited(self, technique: str, seed: int) -> dict[str, dict[str, float]]:
        """Every architecture's validation loss and test BLEU with the weights it inherits from ``technique``'s
        ``seed`` supernet; cached per architecture."""
        path = self.out / "inherited" / f"{technique}_seed{seed}.json"
        ledger = read_json(path) or {"scores": {}}
        todo = [a for a in self.archs if arch_id(a) not in ledger["scores"]]
        if todo:
            from ..data.translation import references_dir
            from ..tasks.translation.evaluate import evaluate_subnet, load_trained, supertransformer_data

            checkpoint = self.supernet(technique, seed)
            ledger = same_supernet(ledger, "scores", checkpoint, self.log, str(path))
            todo = [a for a in self.archs if arch_id(a) not in ledger["scores"]]
            data_bin = supertransformer_data(checkpoint)
            model, task = load_trained(checkpoint, data_bin)
            recipe = self.cfg.recipe(self.cfg.techniques[technique], {}, f"techniques.{technique}")
            for arch in todo:
                scored = evaluate_subnet(model, task, dict(arch), references_dir(data_bin), beam=recipe.beam,
                                         lenpen=recipe.lenpen, max_tokens=recipe.max_tokens,
                                         test_limit=self.cfg.test_sentences)
                ledger["scores"][arch_id(arch)] = _scores(scored)
                atomic_write_json(path, ledger)
            self.log(f"inherited scores in the {technique} seed {seed} supernet: {len(todo)} evaluated")
        return ledger["scores"]

    def technique_report(self, inherited: Mapping[int, Mapping[str, Mapping[str, float]]],
                         standalone: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
        """Rank metrics of one technique's supernets (``inherited``: seed -> arch id -> scores) against the
        stand-alone networks (loss and BLEU; over the architectures ``standalone`` holds, in the study's order), and
        the spread of its inherited losses against their seed noise (over every architecture)."""
        ids = [arch_id(a) for a in self.archs if arch_id(a) in standalone]
        k, n = self.cfg.top_k, self.cfg.bootstrap
        report: dict[str, Any] = {"seeds": list(inherited), "metrics": {}}
        for metric, sign in (("valid_loss", -1.0), ("bleu", 1.0)):  # top-k: the lowest losses, the highest BLEU
            target = [sign * standalone[i][metric] for i in ids]
            runs = {str(s): [sign * scores[i][metric] for i in ids] for s, scores in inherited.items()}
            report["metrics"][metric] = {
                "per_seed": {s: rank_metrics(v, target, k) for s, v in runs.items()},
                "interval": bootstrap_interval(list(runs.values()), target, k, n),
                "inherited": {s: [sign * x for x in v] for s, v in runs.items()}}
        report["spread"] = self.spread(inherited)
        return report

    def spread(self, inherited: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
        """The inherited losses' spread across the architectures against their seed-to-seed noise (a two-way ANOVA
        of architectures by supernet seeds, :func:`.rank_statistics.architecture_effect`; ``None`` for one seed)."""
        losses = np.array([[scores[arch_id(a)]["valid_loss"] for a in self.archs] for scores in inherited.values()])
        effect = architecture_effect(losses) if len(losses) > 1 else None
        return {"inherited_loss": {str(seed): [float(v) for v in row] for seed, row in zip(inherited, losses)},
                "inherited_loss_std": float(losses[0].std(ddof=1)),
                "inherited_loss_range": [float(losses[0].min()), float(losses[0].max())],
                "seed_noise_mean_abs": float(np.abs(losses[0] - losses[1]).mean()) if len(losses) > 1 else None,
                "architecture_effect": effect,
                "beyond_seed_noise": None if effect is None else effect["beyond_noise"]}

    def run(self) -> dict[str, Any]:
        """Every phase (each resumes from its cache): per technique its supernets, their inherited scores and its
        spread in a partial ``results.json`` (``complete: false``), then the stand-alone networks, a partial
        ``results.json`` after each one trained but the last; the complete ``results.json`` and the plots at the
        end."""
        inherited: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
        for technique in self.cfg.techniques:  # each technique's verdict as soon as its seeds are scored
            inherited[technique] = {seed: self.inherited(technique, seed) for seed in self.cfg.seeds(technique)}
            self._write_spread({t: self.spread(per_seed) for t, per_seed in inherited.items()})
        standalone: dict[str, dict[str, float]] = {}
        for arch in self.archs:
            fresh = read_json(self.out / "standalone" / arch_id(arch) / "metrics.json") is None
            standalone[arch_id(arch)] = self.standalone(arch)
            if fresh and len(standalone) < len(self.archs):
                self._write_progress(inherited, standalone)
        techniques = {t: self.technique_report(inherited[t], standalone) for t in self.cfg.techniques}
        results = {"space": self.spec.name, "complete": True,
                   "archs": [{"id": arch_id(a), "arch": a, **standalone[arch_id(a)]} for a in self.archs],
                   "techniques": techniques, "config": dataclasses.asdict(self.cfg)}
        return self._write(results)

    def _write_spread(self, spreads: Mapping[str, Mapping[str, Any]]) -> None:
        """The partial ``results.json`` (architectures and the spread of each technique scored so far, no rank
        metrics) and a log line per technique whose spread it did not hold yet; nothing when it holds them all, or
        when it is a complete study's (one run again, perhaps by newer code)."""
        from ..plots.ranking import plot_seed_noise

        path = self.out / "results.json"
        saved = read_json(path) or {}
        if saved.get("complete") and set(spreads) <= set(saved.get("techniques", {})):
            return  # a finished study run again keeps its complete results until run() has rewritten them
        old = {t: json.dumps(r.get("spread"), sort_keys=True) for t, r in saved.get("techniques", {}).items()}
        new = {t: s for t, s in spreads.items() if old.get(t) != json.dumps(s, sort_keys=True)}
        if not new:
            return
        partial = self._partial({t: {"seeds": self.cfg.seeds(t), "spread": s} for t, s in spreads.items()})
        atomic_write_json(path, partial)
        plot_seed_noise(partial, self.out / "seed_noise.png")
        (self.out / "scatter.png").unlink(missing_ok=True)  # a progress file's, whose rank metrics this one drops
        for technique, report in new.items():
            self.log(f"{technique}: {spread_line(report)}")

    def _partial(self, techniques: Mapping[str, Any], standalone: Mapping[str, Mapping[str, float]] | None = None
                 ) -> dict[str, Any]:
        """A partial ``results.json`` (``complete: false``) of ``techniques``' reports, with the stand-alone scores
        trained so far when there are any."""
        progress = {} if standalone is None else {
            "standalone_trained": {"trained": len(standalone), "planned": len(self.archs)}}
        scores = standalone or {}
        return {"space": self.spec.name, "complete": False, **progress,
                "archs": [{"id": arch_id(a), "arch": a, **scores.get(arch_id(a), {})} for a in self.archs],
                "techniques": dict(techniques), "config": dataclasses.asdict(self.cfg)}

    def _write_progress(self, inherited: Mapping[str, Mapping[int, Mapping[str, Mapping[str, float]]]],
                        standalone: Mapping[str, Mapping[str, float]]) -> None:
        """The partial ``results.json`` after a stand-alone network has trained: the scores so far, every technique's
        spread and, with at least :data:`MIN_RANKED` and more than ``top_k`` networks, its rank metrics over them, the
        scatter of those and a log line of each technique's Kendall tau on validation loss."""
        from ..plots.ranking import plot_translation_ranking

        ranked = len(standalone) >= max(MIN_RANKED, self.cfg.top_k + 1)
        techniques = {t: self.technique_report(per_seed, standalone) if ranked else
                      {"seeds": list(per_seed), "spread": self.spread(per_seed)} for t, per_seed in inherited.items()}
        partial = self._partial(techniques, standalone)
        atomic_write_json(self.out / "results.json", partial)
        if ranked:
            plot_translation_ranking(partial, self.out / "scatter.png")
            for name, report in techniques.items():
                taus = [r["kendall_tau"] for r in report["metrics"]["valid_loss"]["per_seed"].values()]
                self.log(f"{name}: Kendall tau of inherited against stand-alone validation loss over the "
                         f"{len(standalone)} of {len(self.archs)} stand-alone networks trained so far: "
                         f"{np.mean(taus):.2f} (per seed {', '.join(f'{t:.2f}' for t in taus)})")

    def _write(self, results: dict[str, Any]) -> dict[str, Any]:
        from ..plots.ranking import plot_seed_noise, plot_translation_ranking

        atomic_write_json(self.out / "results.json", results)
        plots = {"scatter": plot_translation_ranking(results, self.out / "scatter.png"),
                 "seed_noise": plot_seed_noise(results, self.out / "seed_noise.png")}
        return {**results, "plots": {name: str(path) for name, path in plots.items() if path is not None}}


#: The files of the study's ledger: the architectures, the stand-alone networks' metrics and recipes, every inherited
#: score, the results and the plot; none of the checkpoints (a supernet whose scores are all in ``inherited/`` is
#: not needed again).
LEDGER_FILES: tuple[str, ...] = ("archs.json", "results.json", "*.png", "standalone/*/recipe.json",
                                 "standalone/*/metrics.json", "inherited/*.json")


def export_ledger(output: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the study's ledger (:data:`LEDGER_FILES`) from ``output`` to ``dest`` (:func:`.ledger.copy_ledger`)."""
    return copy_ledger(output, dest, LEDGER_FILES, "archs.json")


def run_study(cfg: TranslationRankingConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the study of ``cfg``; ``output`` is locked while it runs."""
    with output_lock(cfg.output, "field 'output'", "translation-ranking"):
        return TranslationRanking(cfg, log).run()


def spread_line(spread: Mapping[str, Any]) -> str:
    """One line for a technique's ``spread``: the inherited losses' spread, the seed noise and the verdict."""
    e = spread.get("architecture_effect")
    test = "no noise" if e is None or e["F"] is None else (
        f"ICC {e['icc']:.2f}, F({e['df'][0]},{e['df'][1]}) = {e['F']:.2f}, p = {e['p_value']:.3g}")
    noise = "n/a (one seed)" if e is None else (
        f"{e['seed_noise_std']:.4f} against {e['arch_std']:.4f} for the architectures ({test})")
    return (f"inherited loss: std {spread['inherited_loss_std']:.4f} over the architectures (range "
            f"{spread['inherited_loss_range'][0]:.3f}-{spread['inherited_loss_range'][1]:.3f}), seed noise std "
            f"{noise}; beyond seed noise: {spread['beyond_seed_noise']}")


def format_table(results: Mapping[str, Any]) -> str:
    """Per technique and metric: the seed-mean rank metrics with the Kendall tau interval and seed range, and the
    spread of inherited losses against the seed noise."""
    lines = [f"{'technique':>12s} {'metric':10s} {'Kendall tau':>28s} {'Pearson r':>10s} {'Spearman':>10s} "
             f"{'top-k':>6s}"]
    if (progress := results.get("standalone_trained")) is not None:
        lines.insert(0, f"In progress: {progress['trained']} of {progress['planned']} stand-alone networks trained; "
                        "the rank metrics (when shown) are over those.")
    for name, report in results["techniques"].items():
        for metric, data in report.get("metrics", {}).items():  # none before the stand-alone networks rank
            runs = list(data["per_seed"].values())
            taus = [r["kendall_tau"] for r in runs]
            lo, hi = data["interval"]["kendall_tau"]
            lines.append(f"{name:>12s} {metric:10s} {np.mean(taus):6.3f} [{lo:6.3f},{hi:6.3f}] "
                         f"({min(taus):.2f}..{max(taus):.2f}) {np.mean([r['pearson_r'] for r in runs]):10.3f} "
                         f"{np.mean([r['spearman_rho'] for r in runs]):10.3f} "
                         f"{np.mean([r['top_k_precision'] for r in runs]):6.2f}")
        lines.append(f"{name:>12s} {spread_line(report['spread'])}")
    return "\n".join(lines)
