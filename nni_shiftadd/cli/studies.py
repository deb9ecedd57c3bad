"""Study commands: ``ranking`` (paper Table 5: how faithfully supernets rank subnets, against training budget and
technique)."""
from __future__ import annotations

import argparse

from ._command import Command, recipe

def cmd_ranking(args: argparse.Namespace) -> int:
    from ..experiment.ranking import RankingConfig, export_ledger, run_and_print

    cfg = recipe(args, RankingConfig)
    if args.export_ledger:
        written = export_ledger(cfg.output, args.export_ledger)
        print(f"exported {len(written)} files of the ledger of {cfg.output} to {args.export_ledger} (copy them back "
              f"into an output folder to go on from them)")
        return 0
    return run_and_print(cfg, args.quick)[0]


def _ranking_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a small version in minutes (6 architectures, one supernet "
                   "seed, a few batches each) in <output>_quick: checks the pipeline, ranks nothing")
    p.add_argument("--export-ledger", default=None, metavar="DIR", help="copy the study's results and cached "
                   "evaluations (no checkpoints) to DIR and stop: what results/ holds and a later run resumes from")


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
]
