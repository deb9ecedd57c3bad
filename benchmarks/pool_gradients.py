"""What each candidate does to a shared weight pool during supernet training (paper Sec. 3.2.2): per-candidate
gradient and update magnitudes on the cv_small supernet's pools, trained on Fashion-MNIST with the supernet
recipe's optimiser (timm's AdamW), for each way the pool can combine them.

At every step one architecture is sampled; at each layer position whose active candidate is Conv, Shift or Add,
each pool's gradient (the candidate's loss plus, in ``hws`` mode, the eq. (5) terms) and the optimiser's update are
recorded under that candidate. Three numbers per candidate (medians over steps and pools after a warm-up):

- ``grad``: RMS of the pool's gradient;
- ``update``: RMS of the optimiser's change to the pool;
- ``descent``: the step along the candidate's own descent direction, ``-<update, grad> / (|grad| sqrt(n))`` (mean):
  what the candidate actually learns from its step. Adam's state is shared by the candidates of a pool, so an update
  can be mostly another candidate's momentum.

Variants: ``none`` (each candidate owns its weights and optimiser state: the reference), ``naive`` and ``hws`` with
AdderNet's adaptive learning rate on Add's gradient (``add_adaptive_lr: always``, the authors' code) and without it
on shared pools (``own``, the default). Question answered: does a shared pool let every candidate learn, and at
what pace against its own weights?

Usage::

    .venv/bin/python benchmarks/pool_gradients.py [--quick] [--steps 200] [--json PATH]

A measurement, not a test (exit status 0); the conclusion is in ``nni_shiftadd.hws.HWSConfig``'s docstring.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from nni_shiftadd.config import load_yaml
from nni_shiftadd.data import create_dataset
from nni_shiftadd.space import load_space, random_arch
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.spec import depth_label, op_label
from nni_shiftadd.tasks.classification import timm_optimization
from nni_shiftadd.tasks.supernet import SupernetConfig
from nni_shiftadd.vocabulary import CONV_FAMILY

ROOT = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, tuple[str, str]] = {"none": ("none", "own"), "naive (always)": ("naive", "always"),
                                        "naive": ("naive", "own"), "hws (always)": ("hws", "always"),
                                        "hws": ("hws", "own")}


def measure(mode: str, adaptive: str, recipe: SupernetConfig, steps: int, warmup: int,
            batch_size: int) -> dict[str, dict[str, float]]:
    """Per-candidate medians of gradient and update RMS and the mean step along the own descent direction."""
    spec = load_space(recipe.space)
    data = create_dataset(recipe.dataset, "train", input_size=(spec.input.channels, spec.input.size, spec.input.size),
                          is_training=True)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    hws = dataclasses.replace(recipe.hws, add_adaptive_lr=adaptive)
    model = HybridCVSpace(spec, mode=mode, kl_weight=recipe.kl_weight, hws=hws).train()
    optimizer = timm_optimization(model, recipe, steps_per_epoch=len(loader))["optimizer"]
    rng = random.Random(0)
    records: dict[str, dict[str, list[float]]] = {op: {"grad": [], "update": [], "descent": []} for op in CONV_FAMILY}
    batches = iter(loader)
    for step in range(warmup + steps):
        arch = random_arch(spec, rng)
        model.activate(arch)
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        seen = []
        for i, stage in enumerate(model.stages):
            for j, layer in enumerate(stage.layers[:arch[depth_label(i)]]):
                op = arch[op_label(i, j)]
                if op not in CONV_FAMILY:
                    continue
                for pool in layer.block.pools.values():
                    t = pool.own[op] if mode == "none" else pool.pool
                    if t.grad is not None:
                        seen.append((op, t, t.detach().clone(), t.grad.detach().clone()))
        optimizer.step()
        if step < warmup:
            continue
        for op, t, before, grad in seen:
            delta = t.detach() - before
            records[op]["grad"].append(grad.pow(2).mean().sqrt().item())
            records[op]["update"].append(delta.pow(2).mean().sqrt().item())
            records[op]["descent"].append((-(delta * grad).sum() / grad.norm().clamp_min(1e-30)
                                           / math.sqrt(grad.numel())).item())
    return {op: {"grad": statistics.median(r["grad"]), "update": statistics.median(r["update"]),
                 "descent": statistics.fmean(r["descent"]), "samples": len(r["grad"])}
            for op, r in records.items() if r["grad"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="40 measured steps instead of --steps")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--recipe", default=str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"))
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    steps = 40 if args.quick else args.steps
    # the demo's supernet budget: lr 0.01 without warm-up, so that the pools move within a few hundred steps
    recipe = load_yaml(SupernetConfig, args.recipe, {"lr": 0.01, "warmup_epochs": 0, "epochs": 2})
    torch.set_num_threads(max(1, torch.get_num_threads()))
    results = {}
    print(f"cv_small pools under {recipe.optimizer} (lr {recipe.lr}), {steps} steps after 20 of warm-up; medians "
          "per candidate (descent: mean step along the candidate's own descent direction)")
    print(f"{'variant':16s} {'op':6s} {'grad RMS':>10s} {'update RMS':>11s} {'descent':>10s} {'vs own weights':>15s}")
    for name, (mode, adaptive) in VARIANTS.items():
        results[name] = measure(mode, adaptive, recipe, steps, 20, args.batch_size)
        for op, r in results[name].items():
            own = results["none"][op]["descent"]
            print(f"{name:16s} {op:6s} {r['grad']:10.2e} {r['update']:11.2e} {r['descent']:10.2e} "
                  f"{r['descent'] / own:14.2f}x")
    for name in ("naive (always)", "naive", "hws (always)", "hws"):
        d = {op: r["descent"] for op, r in results[name].items()}
        print(f"{name}: Add's descent step is {d['add'] / d['conv']:.1f}x Conv's and {d['add'] / d['shift']:.1f}x "
              "Shift's")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "optimizer": recipe.optimizer, "lr": recipe.lr,
                                         "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
