"""Study commands: ``ranking`` (paper Table 5: how faithfully supernets rank subnets, against training budget and
technique), ``translation-ranking`` (the same question for a SuperTransformer) and ``reproduce`` (the paper's
result tables, ``table4`` and ``table3``: searched hybrids against the baselines after retraining)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ._command import Command, add_config_flags, load_schema, recipe

def _export(export: Callable[[str, str], list[Any]], output: str, dest: str) -> int:
    written = export(output, dest)
    print(f"exported {len(written)} files of the ledger of {output} to {dest} (copy them back into an output folder "
          "to go on from them)")
    return 0


def cmd_ranking(args: argparse.Namespace) -> int:
    from ..experiment.ranking import RankingConfig, export_ledger, run_and_print

    cfg = recipe(args, RankingConfig)
    if args.export_ledger:
        return _export(export_ledger, cfg.output, args.export_ledger)
    return run_and_print(cfg, args.quick)[0]


#: The tables ``reproduce`` makes: recipe schema, the function that runs one, and what it is.
TABLES: dict[str, tuple[str, str, str]] = {
    "table4": (".experiment.image_table:ImageTableConfig", ".experiment.image_table:run_image_table",
               "paper Table 4 and Fig. 6 on an image space, e.g. examples/fashion_mnist/table4_cv_small.yaml"),
    "table3": (".experiment.translation_table:TranslationTableConfig",
               ".experiment.translation_table:run_translation_table",
               "paper Table 3 and Fig. 5 on a translation space, e.g. examples/translation/table3_nlp_tiny.yaml"),
}


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..experiment.paper_table import export_ledger, format_table

    schema, run, _ = TABLES[args.table]
    cfg = recipe(args, load_schema(schema))
    if args.quick:
        cfg = cfg.quick()
        cfg.validate()
    if args.export_ledger:
        return _export(export_ledger, cfg.output, args.export_ledger)
    results = load_schema(run)(cfg)
    print(format_table(results))
    print(f"wrote {cfg.output}/results.json, {results['table']} and {', '.join(results['plots'].values())}")
    return 0


def cmd_translation_ranking(args: argparse.Namespace) -> int:
    from ..experiment.translation_ranking import TranslationRankingConfig, export_ledger, format_table, run_study

    cfg = recipe(args, TranslationRankingConfig)
    if args.quick:
        cfg = cfg.quick()
        cfg.validate()
    if args.export_ledger:
        return _export(export_ledger, cfg.output, args.export_ledger)
    results = run_study(cfg)
    print(format_table(results))
    print(f"wrote {cfg.output}/results.json and {results['plots']['scatter']}")
    return 0


def _export_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--export-ledger", default=None, metavar="DIR", help="copy the study's results and cached "
                   "evaluations (no checkpoints) to DIR and stop: what results/ holds and a later run resumes from")


def _translation_ranking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small version in minutes (4 architectures, a few updates "
                   "per network, BLEU on 20 sentences) in <output>_quick: checks the pipeline, ranks nothing")
    _export_argument(p)


def _reproduce_arguments(p: argparse.ArgumentParser) -> None:
    tables = p.add_subparsers(dest="table", required=True, metavar="TABLE")
    for name, (schema, _, what) in TABLES.items():
        table = tables.add_parser(name, help=what, description=f"{what}. Fields come from --config (YAML) and are "
                                  "overridden by the flags below.")
        table.add_argument("--quick", action="store_true", help="a small version in minutes (a few supernet steps, "
                           "one generation per search, a few batches per network) in <output>_quick")
        table.add_argument("--config", default=None, help="table recipe (YAML)")
        _export_argument(table)
        add_config_flags(table, load_schema(schema))


def _ranking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small version in minutes (6 architectures, one supernet "
                   "seed, a few batches each) in <output>_quick: checks the pipeline, ranks nothing")
    _export_argument(p)


COMMANDS: list[Command] = [
    Command("ranking", "paper Table 5: how well each weight-sharing mode's supernet ranks subnets", cmd_ranking,
            description="Train architectures of an image space stand-alone (two seeds for the seed ceiling; a longer "
            "recipe checks the ground truth), supernets in the none/naive/hws modes with several seeds at several "
            "training budgets and techniques, and score every architecture with inherited weights after BN "
            "recalibration; print Kendall tau, Pearson r, Spearman rho and top-k precision per budget and mode with "
            "bootstrap intervals, the paired hws - naive difference, and the stand-alone accuracy of each mode's "
            "search pick. Every trained network is cached in the output folder: run the same command again to "
            "resume. Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".experiment.ranking:RankingConfig", arguments=_ranking_arguments,
            config="study recipe (YAML), e.g. examples/fashion_mnist/ranking_cv_small.yaml"),
    Command("reproduce", "the paper's result tables after retraining: table4 (image), table3 (translation)",
            cmd_reproduce,
            description="Train a supernet (or take --supernet), run the Pareto search over the whole space and the "
            "restricted one (Attn and Conv for table4, Attn only for table3), thin each front to a few picks, retrain "
            "them and the baselines (the space's homogeneous networks and the ResNet/AdderNet/DeepShift families; "
            "Transformer, Lightweight Conv and Lite Transformer) from scratch with one recipe and several seeds, and "
            "write the table (table.md, results.json) and the figures (score against energy, score_energy.png; table3 "
            "also against effective FLOPs, score_flops.png, as the paper's Fig. 5). Every trained "
            "network is cached in the output folder: run the same command again to resume.",
            arguments=_reproduce_arguments),
    Command("translation-ranking", "how well a SuperTransformer's inherited losses rank translation subnets",
            cmd_translation_ranking,
            description="Train architectures of a translation space stand-alone with the supernet's recipe, "
            "SuperTransformers with each training technique (the first with several seeds), and score every "
            "architecture with inherited weights; print Kendall tau, Pearson r, Spearman rho and top-k precision "
            "between inherited and stand-alone validation loss and test BLEU, and the spread of inherited losses "
            "against their seed-to-seed noise. Every trained network is cached in the output folder: run the same "
            "command again to resume. Fields come from --config (YAML) and are overridden by the flags below.",
            schema=".experiment.translation_ranking:TranslationRankingConfig",
            arguments=_translation_ranking_arguments,
            config="study recipe (YAML), e.g. examples/translation/ranking_nlp_tiny.yaml"),
]
