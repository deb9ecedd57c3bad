"""What the warm trial host saves a search: the wall time of ``nni-shiftadd trial`` (one image subnet: inherited
weights, BN recalibration, validation, Eyeriss profile, as the demo runs it) started as a fresh process against the
same trial forked from the host (:mod:`nni_shiftadd.trial_host`, preloading what the image demo's host preloads).

The same architectures run both ways, round-robin, one trial at a time, so machine noise hits both alike; each
trial's scores must agree between the two ways (a fork must compute what a fresh process computes). Target: a trial
through the host takes at most half the fresh trial's wall time (about 6 of a fresh trial's 9 s are imports).

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/trial_host.py [--supernet CKPT] [--trials 6] [--json PATH]

Without ``--supernet`` it first trains a small cv_small supernet (3 steps: the scores do not matter here, only
what a trial costs). It is a measurement, not a test: the exit status is 0 even when the target is missed (the
output says MISS).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nni_shiftadd.tasks.kinds import task_kind_of
from nni_shiftadd.space import load_space
from nni_shiftadd.trial_host import client_command, running_host

TARGET = 0.5
WAYS = ("fresh", "host")


def _small_supernet(folder: Path) -> Path:
    from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

    train_supernet(SupernetConfig(space="cv_small", epochs=1, batch_size=32, limit_train_batches=3, eval_archs=0,
                                  bn_calibration_batches=1, limit_eval_batches=1, output=str(folder / "supernet")))
    return folder / "supernet" / "checkpoints" / "last.ckpt"


def _trial(prefix: list[str], supernet: Path, arch_file: Path) -> tuple[float, dict[str, Any]]:
    command = [*prefix, "trial", "--supernet", str(supernet), "--space", "cv_small", "--eval-batches", "8",
               "--calibration-batches", "3", "--batch-size", "256", "--threads", "1", "--arch", str(arch_file)]
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"trial failed ({run.returncode}): {run.stderr[-2000:]}")
    return seconds, json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", type=Path, help="a cv_small supernet checkpoint (default: train a small one)")
    parser.add_argument("--trials", type=int, default=6, help="trials each way")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.trials < 1:
        parser.error(f"--trials: must be >= 1, got {args.trials}")

    with tempfile.TemporaryDirectory(prefix="trial-host-bench-") as tmp:
        folder = Path(tmp)
        supernet = args.supernet or _small_supernet(folder)
        spec = load_space("cv_small")
        archs = []
        for k in range(args.trials):
            archs.append(folder / f"arch{k}.json")
            archs[-1].write_text(json.dumps(spec.random_arch(k)))
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        started = time.perf_counter()
        with running_host(task_kind_of(None, "cv_small").trial_preload, folder / "host.log") as socket_path:
            host_started = time.perf_counter() - started
            prefixes = {"fresh": [sys.executable, "-m", "nni_shiftadd.cli"],
                        "host": client_command(socket_path, "nni_shiftadd.cli")}
            for k, arch in enumerate(archs):
                scores = {}
                for way in WAYS:
                    seconds, scores[way] = _trial(prefixes[way], supernet, arch)
                    times[way].append(seconds)
                    print(f"arch {k} {way:5s} {seconds:6.2f} s  accuracy {scores[way]['accuracy']:.4f}", flush=True)
                if scores["fresh"]["accuracy"] != scores["host"]["accuracy"]:
                    raise RuntimeError(f"arch {k}: the fork scored {scores['host']} but a fresh process "
                                       f"{scores['fresh']}")

    median = {way: statistics.median(times[way]) for way in WAYS}
    ratio = median["host"] / median["fresh"]
    met = ratio <= TARGET
    print(f"\nper trial (median of {args.trials}): fresh process {median['fresh']:.2f} s, through the host "
          f"{median['host']:.2f} s: {ratio:.2f}x (target <= {TARGET}x: {'met' if met else 'MISS'}); the host was "
          f"ready {host_started:.2f} s after it started")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
            "trials": args.trials, "seconds": times, "median": median, "ratio": ratio,
            "target": {"max_ratio": TARGET, "met": met}, "host_ready_seconds": host_started}, indent=1))


if __name__ == "__main__":
    main()
