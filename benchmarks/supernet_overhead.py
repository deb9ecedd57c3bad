"""What a supernet training step costs beyond training the sampled path alone: for the same sampled architectures,
the same batch, threads and optimiser, a step of the cv_small supernet (``hws`` and ``naive``) against a step of
the frozen stand-alone subnet of that architecture; and where the time goes.

A step is forward, cross-entropy, backward and the recipe's optimiser step (timm's AdamW: for the supernet over all
its parameters, as ``train-supernet`` builds it; for the subnet over its own). The three run round-robin, one
architecture at a time, so machine noise hits them alike. Reported: the **mean** step time over the sampled paths
(the mean is what a study pays; the median hides the expensive paths) with the median beside it, their ratio to the
stand-alone step (target: at most 1.15x, HWS included), the phases of a step (forward, backward, optimiser; the
eq. (5) terms of ``hws`` are part of the backward's graph), and the forward time of each layer by block type and
resolution, supernet against stand-alone, summed over the sampled paths.

Usage::

    .venv/bin/python benchmarks/supernet_overhead.py [--quick] [--archs 30] [--batch-size 128] [--json PATH]

It is a measurement, not a test: the exit status is 0 even when the target is missed (the output says MISS).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nni_shiftadd.config import load_yaml
from nni_shiftadd.space import layer_plan, load_space, random_arch
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.tasks.classification import timm_optimization
from nni_shiftadd.tasks.retrain import build_subnet
from nni_shiftadd.tasks.supernet import SupernetConfig

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.15
PHASES = ("forward", "backward", "optimizer")


class LayerClock:
    """Forward time of the hooked layers, summed per ``(block type, resolution)`` key."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, int], float] = defaultdict(float)
        self._start: dict[int, float] = {}

    def hook(self, module: nn.Module, key: Callable[[], tuple[str, int] | None]) -> None:
        def before(mod: nn.Module, args: Any) -> None:
            self._start[id(mod)] = time.perf_counter()

        def after(mod: nn.Module, args: Any, out: Any) -> None:
            where = key()
            if where is not None:
                self.seconds[where] += time.perf_counter() - self._start.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def timed_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One training step, timed by phase (seconds)."""
    t0 = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="6 architectures, batch 32 (the pipeline, seconds)")
    p.add_argument("--archs", type=int, default=30, help="sampled architectures (one step each per model)")
    p.add_argument("--batch-size", type=int, default=128, help="the recipe's batch (default 128)")
    p.add_argument("--space", default="cv_small")
    p.add_argument("--recipe", default=str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"))
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    count, batch = (6, 32) if args.quick else (args.archs, args.batch_size)

    spec = load_space(args.space)
    recipe = load_yaml(SupernetConfig, args.recipe, {"space": args.space, "batch_size": batch})
    rng = random.Random(0)
    archs = [random_arch(spec, rng) for _ in range(count)]
    gen = torch.Generator().manual_seed(0)
    size = (spec.input.channels, spec.input.size, spec.input.size)
    x = torch.randn(batch, *size, generator=gen)
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen)

    supernets, optims, clocks = {}, {}, {}
    current: dict[str, Any] = {"clocked": True}
    for mode in ("hws", "naive"):
        torch.manual_seed(0)
        net = HybridCVSpace(spec, mode=mode, kl_weight=recipe.kl_weight, hws=recipe.hws).train()
        supernets[mode], optims[mode] = net, timm_optimization(net, recipe, steps_per_epoch=100)["optimizer"]
        clocks[mode] = LayerClock()
        for i, stage in enumerate(net.stages):
            for j, layer in enumerate(stage.layers):
                clocks[mode].hook(layer, lambda i=i, j=j: current["plan"].get((i, j)) if current["clocked"] else None)
    clocks["standalone"] = LayerClock()

    times: dict[str, list[dict[str, float]]] = {m: [] for m in ("hws", "naive", "standalone")}
    for n, arch in enumerate(archs):
        current["plan"] = {(layer.stage, layer.index): (layer.op, layer.resolution) for layer in layer_plan(spec, arch)}
        torch.manual_seed(n)
        subnet = build_subnet(spec, arch).train()
        sub_opt = timm_optimization(subnet, recipe, steps_per_epoch=100)["optimizer"]
        timed_step(subnet, sub_opt, x, y)  # warm-up: first-touch allocations of a new network, not clocked
        for (i, j), where in current["plan"].items():
            clocks["standalone"].hook(subnet.stages[i][j], lambda where=where: where)
        for mode in ("hws", "naive"):
            supernets[mode].activate(arch)
            if n == 0:  # warm-up, not clocked
                current["clocked"] = False
                timed_step(supernets[mode], optims[mode], x, y)
                current["clocked"] = True
            times[mode].append(timed_step(supernets[mode], optims[mode], x, y))
        times["standalone"].append(timed_step(subnet, sub_opt, x, y))

    total = {m: [sum(t.values()) for t in ts] for m, ts in times.items()}
    mean = {m: statistics.fmean(v) * 1e3 for m, v in total.items()}
    median = {m: statistics.median(v) * 1e3 for m, v in total.items()}
    phases = {m: {ph: statistics.fmean(t[ph] for t in ts) * 1e3 for ph in PHASES} for m, ts in times.items()}
    ratio = {m: mean[m] / mean["standalone"] for m in ("hws", "naive")}
    keys = sorted({k for c in clocks.values() for k in c.seconds}, key=lambda k: (-k[1], k[0]))
    layers = {f"{op}@{res}": {m: clocks[m].seconds.get((op, res), 0.0) * 1e3 / count for m in clocks}
              for op, res in keys}
    results = {"space": spec.name, "archs": count, "batch_size": batch, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine(), "step_ms_mean": mean, "step_ms_median": median,
               "phases_ms_mean": phases, "over_standalone": ratio, "layer_forward_ms_per_path": layers,
               "target": TARGET, "met": all(r <= TARGET for r in ratio.values())}

    print(f"{spec.name}: {count} sampled paths, batch {batch}, {torch.get_num_threads()} threads; mean (median) ms "
          "per training step")
    print(f"{'model':12s} {'mean':>8s} {'median':>8s} {'x alone':>8s}  " + "  ".join(f"{ph:>9s}" for ph in PHASES))
    for m in ("hws", "naive", "standalone"):
        rel = f"{mean[m] / mean['standalone']:8.3f}"
        print(f"{m:12s} {mean[m]:8.1f} {median[m]:8.1f} {rel}  " + "  ".join(f"{phases[m][ph]:9.1f}" for ph in PHASES))
    print("forward ms per path, by block type @ resolution (supernet hws / naive / stand-alone):")
    for name, row in layers.items():
        print(f"  {name:12s} {row['hws']:8.2f} {row['naive']:8.2f} {row['standalone']:8.2f}")
    for m in ("hws", "naive"):
        print(f"{'PASS' if ratio[m] <= TARGET else 'MISS'}  {m} supernet step {ratio[m]:.3f}x the stand-alone step "
              f"(mean over paths; target <= {TARGET}x)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
