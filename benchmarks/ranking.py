"""Paper Table 5 on this machine: does heterogeneous weight sharing rank subnets better than naive sharing (and than
no sharing)? Runs (or resumes) the ranking study of :mod:`nni_shiftadd.experiment.ranking` and prints its table:
Kendall tau, Pearson r, Spearman rho and top-k precision per weight-sharing mode (seed mean, bootstrap 95% interval
over architectures, range over supernet seeds), beside the seed ceiling of stand-alone training; the supernet sizes;
the stand-alone accuracy of each mode's search pick. The paper reports Kendall tau 0.49 (naive) -> 0.54 (HWS).

Usage::

    .venv/bin/python benchmarks/ranking.py [--config examples/fashion_mnist/ranking_cv_small.yaml] [--quick]
                                           [--json PATH]

The full study trains dozens of networks (hours on a 2-core CPU); each is cached under the study's output, so run
the same command again after a kill or a session limit and it goes on. ``--quick`` checks the pipeline in minutes.
It is a measurement, not a test: the exit status is 0 whatever the outcome (1 when the seed ceiling is too low).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nni_shiftadd.experiment.ranking import load_config, run_and_print

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "fashion_mnist" / "ranking_cv_small.yaml"))
    p.add_argument("--quick", action="store_true", help="the small version (minutes), in <output>_quick")
    p.add_argument("--json", type=Path, help="also write the results to this path")
    args = p.parse_args(argv)
    code, results = run_and_print(load_config(args.config), args.quick, "ranking")
    if results is None:
        return code
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
