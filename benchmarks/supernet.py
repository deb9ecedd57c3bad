"""Cost of heterogeneous weight sharing: time per supernet training step and peak memory of the cv_small supernet
in the three weight-sharing modes (``hws`` against ``naive`` and ``none``; ``hws`` with the recipe's estimator of the
eq. (5) terms, by default ``spacing``, and with ``moments`` for reference), on the same sequence of sampled
architectures and the same batches.

A step is: activate the sampled path, forward, cross-entropy, backward (in ``hws`` mode this includes the eq. (5) KL
terms and the eq. (6) transform), and the optimiser update of the supernet recipe (timm's AdamW with foreach
updates, as ``train-supernet`` builds it), in the channels-last layout training uses. The modes run round-robin (one
step each, in turn) so that noise from other processes hits them alike; the median step time is reported. Peak
memory is the extra resident memory of one step (``benchmarks/ops.py``'s VmHWM probe). Target: ``hws`` step time <=
1.10 x ``naive``.

Usage::

    .venv/bin/python benchmarks/supernet.py [--quick] [--json PATH] [--space cv_small] [--batch-size 64]

It is a measurement, not a test: the exit status is 0 even when the target is missed (the output says MISS).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ops import RssProbe  # noqa: E402  (the same memory probe as the operator benchmark)

from nni_shiftadd.config import load_yaml  # noqa: E402
from nni_shiftadd.space import load_space, random_arch  # noqa: E402
from nni_shiftadd.nn import channels_last, channels_last_batch  # noqa: E402
from nni_shiftadd.space.cv import HybridCVSpace, supernet_parameters  # noqa: E402
from nni_shiftadd.tasks.classification import timm_optimization  # noqa: E402
from nni_shiftadd.tasks.supernet import SupernetConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TARGET = 1.10


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 timed steps instead of 150")
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    p.add_argument("--space", default="cv_small", help="a shipped search space or a YAML path")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--recipe", default=str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"),
                   help="supernet recipe whose optimiser settings the steps use")
    args = p.parse_args(argv)

    spec = load_space(args.space)
    steps, warmup = (10, 3) if args.quick else (150, 5)
    rng = random.Random(0)
    archs = [random_arch(spec, rng) for _ in range(warmup + steps)]
    gen = torch.Generator().manual_seed(0)
    size = (spec.input.channels, spec.input.size, spec.input.size)
    batches = [(channels_last_batch(torch.randn(args.batch_size, *size, generator=gen)),
                torch.randint(0, spec.num_classes, (args.batch_size,), generator=gen)) for _ in range(4)]

    recipe = load_yaml(SupernetConfig, args.recipe, {"space": args.space, "batch_size": args.batch_size})
    # hws with the recipe's estimator (the default: spacing), and with the moment-matched one for reference
    variants = {"none": ("none", recipe.hws), "naive": ("naive", recipe.hws), "hws": ("hws", recipe.hws),
                "hws-moments": ("hws", dataclasses.replace(recipe.hws, estimator="moments"))}
    models, optims = {}, {}
    for name, (mode, hws) in variants.items():
        torch.manual_seed(0)
        models[name] = channels_last(HybridCVSpace(spec, mode=mode, kl_weight=recipe.kl_weight,
                                                   hws=hws).train())
        # the optimiser train-supernet builds from the recipe (timm's factory: AdamW, foreach updates)
        optims[name] = timm_optimization(models[name], recipe, steps_per_epoch=100)["optimizer"]

    def step(mode: str, i: int) -> None:
        model, opt = models[mode], optims[mode]
        x, y = batches[i % len(batches)]
        model.activate(archs[i])
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times: dict[str, list[float]] = {m: [] for m in variants}
    for i in range(warmup + steps):
        for mode in variants:
            t0 = time.perf_counter()
            step(mode, i)
            if i >= warmup:
                times[mode].append(time.perf_counter() - t0)

    probe = RssProbe()
    peaks = {m: (None if probe.error else probe.measure(lambda m=m: step(m, 0))) for m in variants}
    median = {m: statistics.median(t) * 1e3 for m, t in times.items()}
    ratio = median["hws"] / median["naive"]
    results = {
        "space": spec.name, "batch_size": args.batch_size, "steps": steps, "threads": torch.get_num_threads(),
        "estimator": recipe.hws.estimator, "step_ms": median, "peak_bytes": peaks,
        "params": {m: supernet_parameters(spec, variants[m][0]) for m in variants},
        "hws_over_naive": ratio, "hws_moments_over_naive": median["hws-moments"] / median["naive"],
        "target": TARGET, "met": ratio <= TARGET,
        "memory_note": probe.error or probe.warning,
    }
    print(f"{spec.name} supernet, batch {args.batch_size}, {steps} steps per mode (median), "
          f"{torch.get_num_threads()} threads")
    print(f"{'mode':12s} {'step ms':>9s} {'peak MB':>9s} {'params':>10s}")
    for m in variants:
        peak = "-" if peaks[m] is None else f"{peaks[m] / 1e6:.1f}"
        print(f"{m:12s} {median[m]:9.1f} {peak:>9s} {results['params'][m]:10d}")
    print(f"{'PASS' if results['met'] else 'MISS'}  hws ({recipe.hws.estimator} estimator) step time {ratio:.3f}x naive "
          f"(target <= {TARGET}x); with the moment-matched estimator {results['hws_moments_over_naive']:.3f}x")
    if results["memory_note"]:
        print("note:", results["memory_note"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
