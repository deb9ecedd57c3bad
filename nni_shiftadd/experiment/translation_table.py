"""The paper's Table 3 and Fig. 5 at laptop scale on a translation space (``nni-shiftadd reproduce table3``), the
translation kind of :mod:`.paper_table`: the SuperTransformer with fairseq (the paper's 40K updates), the searches
scored by inherited validation loss (the hybrid space, and HAT's Attn-only space as the restricted search), the
picks and the baselines (Transformer: all-Attn; Lightweight Conv: all-Conv encoder; Lite Transformer: Attn+Conv in
every layer) retrained from scratch with the supernet's recipe and scored by test BLEU; then Table 3's 8-bit rows:
the networks of ``quantized`` (the hybrid picks and Lite Transformer) fine-tuned from their float weights with
quantisation-aware training at ``quant_bits`` bits (every weight and input of every product, the lightweight
branch's pooled weights and the tied embedding included: :func:`nni_shiftadd.quant.fake_quantize`), BLEU measured
on the quantised model. Every row is costed on the Eyeriss model for a 30-token sentence at its word width.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, read_json
from ..config import ConfigError, check_reserved, load_yaml
from ..lock import check_output_dir
from ..vocabulary import ATTENTION, REFERENCE_BLOCK, multi_branch
from .paper_table import TableKind, run_table, searches

#: Recipe fields the study sets per network.
RESERVED: tuple[str, ...] = ("space", "subnet", "seed", "output", "baselines", "eval_archs", "eval_test_sentences",
                             "resume", "quant_bits", "init_from")


@dataclasses.dataclass
class TranslationTableConfig:
    """Schema of a Table 3 recipe (``examples/translation/table3_nlp_tiny.yaml``)."""

    space: str = "nlp_tiny"
    supernet: str | None = None
    supernet_recipe: str = "examples/translation/supernet_nlp_tiny.yaml"
    supernet_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    search_preset: str = "nlp_tiny_pareto"
    search_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    restricted_blocks: list[str] = dataclasses.field(default_factory=lambda: [ATTENTION])
    picks: int = 3
    retrain_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    baselines: dict[str, str] = dataclasses.field(default_factory=lambda: {
        "Transformer": ATTENTION, "Lightweight Conv": REFERENCE_BLOCK,
        "Lite Transformer": multi_branch(REFERENCE_BLOCK)})
    test_sentences: int | None = None
    quant_bits: int | None = None
    quantized: list[str] = dataclasses.field(default_factory=lambda: ["hybrid", "Lite Transformer"])
    quant_overrides: dict[str, Any] = dataclasses.field(default_factory=lambda: {
        "max_updates": 4000, "warmup_updates": 400, "lr": 2e-4, "save_interval_updates": 1000})
    reuse_runs: list[str] = dataclasses.field(default_factory=list)
    output: str = "runs/table3_nlp_tiny"

    def validate(self) -> None:
        """Check every field and every stage's recipe (supernet, both searches, the retraining recipe) before
        anything trains; errors name the field, the value and what is allowed."""
        if self.picks < 1:
            raise ValueError(f"field 'picks': must be >= 1, got {self.picks}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"field 'seeds': one or more distinct seeds >= 0 (two give a seed range), got "
                             f"{self.seeds}")
        if self.test_sentences is not None and self.test_sentences < 1:
            raise ValueError(f"field 'test_sentences': must be null (all) or >= 1, got {self.test_sentences}")
        if not Path(self.supernet_recipe).is_file():
            raise ValueError(f"field 'supernet_recipe': no such file {self.supernet_recipe!r}")
        if self.supernet is not None and not Path(self.supernet).is_file():
            raise ValueError(f"field 'supernet': no such checkpoint {self.supernet!r} (null trains one with "
                             "supernet_recipe)")
        for folder in self.reuse_runs:
            if not Path(folder).is_dir():
                raise ValueError(f"field 'reuse_runs': no such folder {folder!r} (folders of finished training runs, "
                                 "e.g. runs/ranking_nlp_tiny/standalone; [] for none)")
        for name in ("supernet_overrides", "retrain_overrides", "quant_overrides"):
            check_reserved(getattr(self, name), RESERVED, name)
        check_output_dir(self.output, "field 'output'")
        self.recipe(self.supernet_overrides, {}, "supernet_overrides")  # its space checked too
        self.recipe(self.retrain_overrides, {}, "retrain_overrides")
        from ..space import load_space

        spec = load_space(self.space)
        from ..strategy.evolution import load_preset

        for name, overrides in searches(self).items():
            try:
                preset = load_preset(self.search_preset, overrides)
            except ConfigError as err:
                raise ValueError(f"fields 'search_preset', 'search_overrides', 'restricted_blocks' (search {name!r}): "
                                 f"{err}") from None
            if preset.goal != "pareto" or preset.objective != "valid_loss":
                raise ValueError(f"field 'search_preset': {self.search_preset!r} must search the validation-loss "
                                 f"front (goal: pareto, objective: valid_loss), got goal {preset.goal!r}, objective "
                                 f"{preset.objective!r}")
        for family, op in self.baselines.items():
            try:
                spec.baseline_arch(op)
            except ValueError as err:
                raise ValueError(f"field 'baselines': {family}: {err}") from None
        if self.quant_bits is not None:
            from ..quant import check_bits

            try:
                check_bits(self.quant_bits)
            except ValueError as err:
                raise ValueError(f"field 'quant_bits': {err}; or null for no quantised rows") from None
            self.quant_recipe({}, "quant_overrides")
            allowed = [*searches(self), *self.baselines]
            unknown = [name for name in self.quantized if name not in allowed]
            if unknown:
                raise ValueError(f"field 'quantized': {unknown[0]!r} is neither a search nor a baseline family; "
                                 f"allowed: {allowed} (its default is {TranslationTableConfig().quantized}; "
                                 "quant_bits: null turns the quantised rows off)")

    def recipe(self, overrides: Mapping[str, Any], fields: Mapping[str, Any], where: str) -> Any:
        """The SuperTransformer recipe with ``overrides`` and the study's ``fields`` on top, in this study's space;
        ``ValueError`` naming ``where`` otherwise."""
        from ..tasks.supertransformer import SuperTransformerConfig

        try:
            return load_yaml(SuperTransformerConfig, self.supernet_recipe,
                             {**overrides, "space": self.space, "baselines": [], "eval_archs": 0,
                              "eval_test_sentences": self.test_sentences, **fields})
        except ConfigError as err:
            raise ValueError(f"field {where!r}: {err}") from None

    def quant_recipe(self, fields: Mapping[str, Any], where: str = "quant_overrides") -> Any:
        """The quantisation-aware fine-tuning recipe: the retraining recipe with ``quant_overrides`` on top, at
        ``quant_bits`` bits, and the study's ``fields`` (without a ``subnet``: the space's largest, which stands
        for every network in what they share)."""
        from ..space import load_space

        largest = {"subnet": json.dumps(load_space(self.space).baseline_arch(ATTENTION, size="largest"))}
        return self.recipe({**self.retrain_overrides, **self.quant_overrides},
                           {**largest, "quant_bits": self.quant_bits, **fields}, where)

    def quick(self) -> TranslationTableConfig:
        """The ``--quick`` version (minutes): a few updates per network, one generation per search, two picks, BLEU
        on 20 sentences; in ``<output>_quick``. It checks the pipeline, ranks nothing."""
        tiny = {"max_updates": 8, "warmup_updates": 2, "save_interval_updates": 8}
        return dataclasses.replace(
            self, supernet_overrides={**self.supernet_overrides, **tiny}, picks=min(self.picks, 2),
            search_overrides={**self.search_overrides, "iterations": 1, "population": 6, "parents": 3,
                              "mutation": 2, "crossover": 2},
            retrain_overrides={**self.retrain_overrides, **tiny}, quant_overrides={**self.quant_overrides, **tiny},
            test_sentences=20,
            output=str(Path(self.output).with_name(Path(self.output).name + "_quick")))


def load_config(path: str, overrides: dict[str, Any] | None = None) -> TranslationTableConfig:
    """The recipe at ``path`` with ``overrides`` on top, validated (``ConfigError`` naming the field)."""
    return load_yaml(TranslationTableConfig, path, overrides)


class TranslationKind(TableKind):
    """Table 3: test BLEU after retraining, the Transformer, Lightweight Conv and Lite Transformer beside."""

    score, score_label, restricted_family = "bleu", "BLEU", "HAT (Attn-only search)"
    figures = ("energy_mJ", "flops_G")  # Fig. 5 plots BLEU against (effective) FLOPs

    def supernet(self, cfg: TranslationTableConfig, out: Path, log: Callable[[str], None]) -> Path:
        if cfg.supernet is not None:
            return Path(cfg.supernet)
        from ..tasks.supertransformer import train_supertransformer

        recipe = cfg.recipe(cfg.supernet_overrides, {"output": str(out / "supernet")}, "supernet_overrides")
        metrics = read_json(out / "supernet" / "metrics.json")
        if metrics is None:
            metrics = train_supertransformer(recipe)  # resumes a killed run; refuses another recipe's checkpoints
            log(f"supernet: {metrics['updates']} updates ({metrics['train_seconds']:.0f} s of training)")
        return Path(metrics["checkpoint"])

    def scorer(self, cfg: TranslationTableConfig, checkpoint: Path) -> Callable[[Mapping[str, Any]], dict[str, float]]:
        from ..tasks.translation.evaluate import load_trained, supertransformer_data, validation_loss

        model, task = load_trained(checkpoint, supertransformer_data(checkpoint))
        max_tokens = cfg.recipe(cfg.supernet_overrides, {}, "supernet_overrides").max_tokens

        def score(arch: Mapping[str, Any]) -> dict[str, float]:
            model.activate(dict(arch))
            model.eval()
            return {"valid_loss": float(validation_loss(model, task, "valid", max_tokens)["loss_nats"])}

        return score

    def recipe(self, cfg: TranslationTableConfig) -> dict[str, Any]:
        return _shared(cfg.recipe(cfg.retrain_overrides, {}, "retrain_overrides"))

    def quant_recipe(self, cfg: TranslationTableConfig) -> dict[str, Any] | None:
        return None if cfg.quant_bits is None else _shared(cfg.quant_recipe({}))

    def train_arch(self, cfg: TranslationTableConfig, arch: Mapping[str, Any], seed: int, folder: Path
                   ) -> dict[str, Any]:
        return _trained(cfg.recipe(cfg.retrain_overrides, _network(arch, seed, folder), "retrain_overrides"),
                        [Path(p) for p in cfg.reuse_runs])

    def train_quantized(self, cfg: TranslationTableConfig, arch: Mapping[str, Any], seed: int, start: Path,
                        folder: Path) -> dict[str, Any]:
        from ..tasks.supertransformer import checkpoint_updates

        weights = start / "checkpoints" / "checkpoint_last.pt"
        float_updates = cfg.recipe(cfg.retrain_overrides, {}, "retrain_overrides").max_updates
        if not weights.is_file() or checkpoint_updates(weights) < float_updates:
            # a carried ledger holds the float network's metrics, not its weights (or a retrain of them was killed)
            carried = read_json(start / "metrics.json")
            self.train_arch(cfg, arch, seed, start)
            if carried is not None:  # its row keeps the scores it was reported with (fairseq's file replaced them)
                atomic_write_json(start / "metrics.json", carried)
        return _trained(cfg.quant_recipe({**_network(arch, seed, folder), "init_from": str(weights)}))

    def baselines(self, cfg: TranslationTableConfig, spec: Any) -> list[tuple[str, str, Any, Mapping[str, Any] | None]]:
        return [(f"all_{op}", family, None, spec.canonical_arch(spec.baseline_arch(op)))
                for family, op in cfg.baselines.items()]


def _shared(recipe: Any) -> dict[str, Any]:
    """What every network of a recipe shares, as JSON (not its subnet, seed, output or starting weights)."""
    return {k: v for k, v in dataclasses.asdict(recipe).items() if k not in ("subnet", "seed", "output", "init_from")}


def _network(arch: Mapping[str, Any], seed: int, folder: Path) -> dict[str, Any]:
    """The recipe fields of one network of the table."""
    return {"subnet": json.dumps(dict(arch)), "seed": seed, "output": str(folder)}


def _trained(recipe: Any, reuse: list[Path] | None = None) -> dict[str, Any]:
    """Train (or resume, or adopt from a finished run of the same recipe in ``reuse``) the subnet of ``recipe``; its
    test BLEU, validation loss, cost at its word width and training time (``fit_seconds``: fairseq's, over every
    resume)."""
    from ..tasks.supertransformer import train_supertransformer

    result = train_supertransformer(recipe, reuse or [])
    scored = result["subnets"]["subnet"]
    cost = {"params": scored["params_M"] * 1e6, "macs": scored["macs_G"] * 1e9, "mult": scored["mult_G"] * 1e9,
            "add": scored["add_G"] * 1e9, "shift": scored["shift_G"] * 1e9, "energy_mJ": scored["energy_mJ"],
            "latency_ms": scored["latency_ms"]}
    return {"bleu": float(scored["test"]["bleu"]), "valid_loss": float(scored["valid"]["loss_nats"]),
            "updates": result["updates"], "fit_seconds": result["train_seconds"],
            "cost": {"bits": result["bits"], **cost}}


def run_translation_table(cfg: TranslationTableConfig, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) Table 3 of ``cfg``; ``output`` is locked while it runs."""
    return run_table(cfg, TranslationKind(), log)
