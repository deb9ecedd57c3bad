"""``plot``: supernet weight histograms (paper Fig. 3, 7), an architecture (Fig. 8), accuracy-cost fronts (Fig. 6)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import arch_argument, json_argument
from ._command import Command

def _plot_weights(args: argparse.Namespace) -> list[Any]:
    from ..plots import check_figure_path, plot_weight_histograms, weight_fits, weight_shapes
    from ..tasks.supernet import load_supernet

    check_figure_path(args.out, "--out")
    supernet, _ = load_supernet(args.supernet)
    layers = [name.strip() for name in args.layers.split(",")] if args.layers else None
    shapes = weight_shapes(supernet, layers)
    for name, fits in weight_fits(supernet, layers).items():
        print(f"{name:28s} " + "  ".join(f"{op}: " + ", ".join(f"{k}={v:.4g}" for k, v in fit.items())
                                         for op, fit in fits.items()))
        print(f"{'':28s} shape: " + "  ".join(f"{op}: " + ", ".join(f"{k}={v:.3g}" for k, v in stats.items())
                                              for op, stats in shapes[name].items()))
    return [plot_weight_histograms(supernet, args.out, layers)]


def _plot_subnet(args: argparse.Namespace) -> list[Any]:
    from ..plots import check_figure_path, plot_subnet
    from ..space.spec import load_space

    check_figure_path(args.out, "--out")
    spec = load_space(args.space)
    if spec.kind != "image_classification":
        raise ValueError(f"--space: {args.space!r} is a translation space; `plot subnet` draws the layer plan of "
                         "image spaces only (a translation architecture is printed by `search-space --info`)")
    return [plot_subnet(spec, arch_argument(args.arch), args.out, args.title)]


def _plot_pareto(args: argparse.Namespace) -> list[Any]:
    from ..plots import plot_pareto_pair

    data = json_argument(args.results, "--results")
    if isinstance(data, dict):
        records, baselines, best = data.get("records"), data.get("baselines"), data.get("best")
    else:
        records, baselines, best = data, None, None
    if not isinstance(records, list):
        raise ValueError(f"--results {args.results}: expected a list of records, or an object with a 'records' "
                         "list (and optional 'baselines' and 'best')")
    if baselines is not None and not isinstance(baselines, dict):
        raise ValueError(f"--results {args.results}: 'baselines' must map names to records")
    return plot_pareto_pair(records, args.out_dir, baselines, best, y=args.y)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        paths = {"weights": _plot_weights, "subnet": _plot_subnet, "pareto": _plot_pareto}[args.what](args)
    except ValueError as err:
        print(f"nni-shiftadd plot {args.what}: error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    kinds = p.add_subparsers(dest="what", required=True)
    w = kinds.add_parser("weights", help="Conv/Shift/Add weight histograms of a trained supernet (paper Fig. 3, 7)")
    w.add_argument("--supernet", required=True, metavar="CKPT", help="checkpoint of `train-supernet`")
    w.add_argument("--out", required=True, metavar="FILE.png")
    w.add_argument("--layers", default=None, metavar="NAMES", help="comma-separated weight pools, e.g. "
                   "stage0.layer0.spatial,stage2.layer1 (default: the 3x3 pool of each stage's first layer)")
    s = kinds.add_parser("subnet", help="diagram of one architecture (paper Fig. 8)")
    s.add_argument("--space", required=True, help="search space name or YAML path, e.g. cv_small")
    s.add_argument("--arch", required=True, metavar="JSON", help="architecture: a JSON file or inline JSON")
    s.add_argument("--out", required=True, metavar="FILE.png")
    s.add_argument("--title", default=None)
    r = kinds.add_parser("pareto", help="accuracy vs. energy and vs. latency with the Pareto front (paper Fig. 6)")
    r.add_argument("--results", required=True, metavar="JSON", help="a list of records (energy_mJ, latency_ms, "
                   "accuracy), or an object with 'records' and optional 'baselines' (name -> record) and 'best'")
    r.add_argument("--out-dir", required=True, metavar="DIR", help="writes pareto_energy.png, pareto_latency.png")
    r.add_argument("--y", default="accuracy", help="the metric to maximise (default accuracy)")


COMMANDS: list[Command] = [
    Command("plot", "figures: supernet weight histograms, an architecture, accuracy-cost fronts", cmd_plot,
            arguments=_plot_arguments),
]
