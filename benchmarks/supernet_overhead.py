"""What a supernet training step costs beyond training the sampled path alone: for the same sampled architectures,
the same batch, threads and optimiser, a step of the supernet (``hws`` and ``naive``) against a step of the frozen
stand-alone subnet of that architecture; and where the time goes. Image spaces (cv_small) and translation spaces
(the nlp_tiny SuperTransformer) alike.

A step is forward, the loss (cross-entropy; label-smoothed 0.1 over target tokens for translation; in ``hws`` mode
the eq. (5) terms join it inside the forward pass), backward and the recipe's optimiser step (image: timm's AdamW as
``train-supernet`` builds it, in its channels-last layout; translation: Adam with betas (0.9, 0.98) as
``train-supertransformer`` runs it), for the supernet over all its parameters, for the subnet over its own. The
three run round-robin, one architecture at a time, so machine noise hits them alike. Reported: the **mean** step
time over the sampled paths (the mean is what a study pays; the median hides the expensive paths) with the median
beside it, their ratio to the stand-alone step (target: at most 1.15x, HWS included), the phases of a step (forward,
backward, optimiser), and the forward time of each layer by block type and where it sits (image: resolution;
translation: encoder or decoder), supernet against stand-alone, summed over the sampled paths.

Usage::

    .venv/bin/python benchmarks/supernet_overhead.py [--quick] [--space cv_small|nlp_tiny] [--archs 30]
                                                     [--batch-size N] [--json PATH]

Batch: the image recipe's 128 images; translation: 56 sentences of 18 tokens (about the recipe's 1,024 tokens per
batch at trans-de-en's mean length), a 2,160-token dictionary (the recipe's joined dictionary). It is a
measurement, not a test: the exit status is 0 even when the target is missed (the output says MISS).
"""
from __future__ import annotations

import argparse
import dataclasses
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
from nni_shiftadd.nn import channels_last, channels_last_batch
from nni_shiftadd.space.cv import HybridCVSpace
from nni_shiftadd.space.nlp import HybridNLPSpace
from nni_shiftadd.space.nlp_transformer import transformer_config
from nni_shiftadd.tasks.classification import timm_optimization
from nni_shiftadd.tasks.retrain import build_subnet
from nni_shiftadd.tasks.supernet import SupernetConfig

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.15
PHASES = ("forward", "backward", "optimizer")
MODES = ("hws", "naive")
PAD = 1
Where = tuple[str, str]  # (block type, resolution or side)


@dataclasses.dataclass
class Bench:
    """What the timing loop needs from one space kind: the supernets by mode, their hooked layers, the loss of a
    model on the fixed batch, and the stand-alone subnet of an architecture."""

    name: str
    batch: str
    supernets: dict[str, nn.Module]
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    loss: Callable[[nn.Module], torch.Tensor]
    activate: Callable[[nn.Module, dict[str, Any]], None]
    plan: Callable[[dict[str, Any]], dict[Any, Where]]
    layers: Callable[[nn.Module], dict[Any, nn.Module]]
    standalone: Callable[[dict[str, Any]], nn.Module]


class LayerClock:
    """Forward time of the hooked layers, summed per ``(block type, where)`` key."""

    def __init__(self) -> None:
        self.seconds: dict[Where, float] = defaultdict(float)
        self._start: dict[int, float] = {}

    def hook(self, module: nn.Module, key: Callable[[], Where | None]) -> None:
        def before(mod: nn.Module, args: Any) -> None:
            self._start[id(mod)] = time.perf_counter()

        def after(mod: nn.Module, args: Any, out: Any) -> None:
            where = key()
            if where is not None:
                self.seconds[where] += time.perf_counter() - self._start.pop(id(mod))

        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)


def timed_step(model: nn.Module, opt: torch.optim.Optimizer, loss: Callable[[nn.Module], torch.Tensor]
               ) -> dict[str, float]:
    """One training step, timed by phase (seconds)."""
    t0 = time.perf_counter()
    value = loss(model)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    value.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    return {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2}


def image_bench(space: str, recipe_path: str, batch: int) -> Bench:
    """cv_small and its kin: the supernet recipe's AdamW, cross-entropy on random images of the space's size."""
    spec = load_space(space)
    recipe = load_yaml(SupernetConfig, recipe_path, {"space": space, "batch_size": batch})
    gen = torch.Generator().manual_seed(0)
    size = (batch, spec.input.channels, spec.input.size, spec.input.size)
    x = channels_last_batch(torch.randn(size, generator=gen))
    y = torch.randint(0, spec.num_classes, (batch,), generator=gen)
    supernets = {}
    for mode in MODES:
        torch.manual_seed(0)
        supernets[mode] = channels_last(HybridCVSpace(spec, mode=mode, kl_weight=recipe.kl_weight,
                                                      hws=recipe.hws).train())
    return Bench(
        spec.name, f"{batch} images", supernets,
        optimizer=lambda net: timm_optimization(net, recipe, steps_per_epoch=100)["optimizer"],
        loss=lambda net: F.cross_entropy(net(x), y),
        activate=lambda net, arch: net.activate(arch),
        plan=lambda arch: {(p.stage, p.index): (p.op, str(p.resolution)) for p in layer_plan(spec, arch)},
        layers=lambda net: {(i, j): layer for i, stage in enumerate(net.stages)  # supernet stages hold .layers
                            for j, layer in enumerate(getattr(stage, "layers", stage))},
        standalone=lambda arch: channels_last(build_subnet(spec, arch).train()))


def translation_bench(space: str, batch: int, tokens: int, vocab: int, lr: float) -> Bench:
    """nlp_tiny and its kin: label-smoothed cross-entropy over a random batch of token ids, Adam as fairseq's."""
    spec = load_space(space)
    gen = torch.Generator().manual_seed(0)
    src, prev, target = (torch.randint(PAD + 3, vocab, (batch, tokens), generator=gen) for _ in range(3))
    supernets = {}
    for mode in MODES:
        torch.manual_seed(0)
        supernets[mode] = HybridNLPSpace(spec, vocab, PAD, mode).train()

    def loss(net: nn.Module) -> torch.Tensor:
        logits = net(src, prev)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=PAD, label_smoothing=0.1)

    def plan(arch: dict[str, Any]) -> dict[Any, Where]:
        config = transformer_config(spec, arch)
        return {(side, i): (layer.op, side) for side in ("encoder", "decoder")
                for i, layer in enumerate(getattr(config, side))}

    def layers(net: nn.Module) -> dict[Any, nn.Module]:
        core = net.transformer if isinstance(net, HybridNLPSpace) else net
        return {(side, i): layer for side in ("encoder", "decoder")
                for i, layer in enumerate(getattr(core, f"{side}_layers"))}

    return Bench(
        spec.name, f"{batch} sentences x {tokens} tokens, dictionary {vocab}", supernets,
        optimizer=lambda net: torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.98)),
        loss=loss, activate=lambda net, arch: net.activate(arch), plan=plan, layers=layers,
        standalone=lambda arch: supernets["naive"].freeze(arch).train())


def measure(bench: Bench, archs: list[dict[str, Any]]) -> dict[str, Any]:
    """Time one step of each supernet and of the fresh stand-alone subnet per architecture (round-robin)."""
    optims = {m: bench.optimizer(net) for m, net in bench.supernets.items()}
    current: dict[str, Any] = {"clocked": True, "plan": {}}
    clocks = {m: LayerClock() for m in (*MODES, "standalone")}
    for mode, net in bench.supernets.items():
        for key, layer in bench.layers(net).items():
            clocks[mode].hook(layer, lambda key=key: current["plan"].get(key) if current["clocked"] else None)

    times: dict[str, list[dict[str, float]]] = {m: [] for m in clocks}
    for n, arch in enumerate(archs):
        current["plan"] = bench.plan(arch)
        torch.manual_seed(n)
        subnet = bench.standalone(arch)
        sub_opt = bench.optimizer(subnet)
        timed_step(subnet, sub_opt, bench.loss)  # warm-up: first-touch allocations of a new network, not clocked
        for key, layer in bench.layers(subnet).items():
            clocks["standalone"].hook(layer, lambda where=current["plan"][key]: where)
        for mode, net in bench.supernets.items():
            bench.activate(net, arch)
            if n == 0:  # warm-up, not clocked
                current["clocked"] = False
                timed_step(net, optims[mode], bench.loss)
                current["clocked"] = True
            times[mode].append(timed_step(net, optims[mode], bench.loss))
        times["standalone"].append(timed_step(subnet, sub_opt, bench.loss))

    total = {m: [sum(t.values()) for t in ts] for m, ts in times.items()}
    mean = {m: statistics.fmean(v) * 1e3 for m, v in total.items()}
    median = {m: statistics.median(v) * 1e3 for m, v in total.items()}
    phases = {m: {ph: statistics.fmean(t[ph] for t in ts) * 1e3 for ph in PHASES} for m, ts in times.items()}
    ratio = {m: mean[m] / mean["standalone"] for m in MODES}
    keys = sorted({k for c in clocks.values() for k in c.seconds},
                  key=lambda k: (-int(k[1]) if k[1].isdigit() else 0, k[1], k[0]))
    layers = {f"{op}@{where}": {m: clocks[m].seconds.get((op, where), 0.0) * 1e3 / len(archs) for m in clocks}
              for op, where in keys}
    return {"space": bench.name, "archs": len(archs), "batch": bench.batch, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "step_ms_mean": mean, "step_ms_median": median,
            "phases_ms_mean": phases, "over_standalone": ratio, "layer_forward_ms_per_path": layers,
            "target": TARGET, "met": all(r <= TARGET for r in ratio.values())}


def report(results: dict[str, Any]) -> None:
    mean, median, phases = results["step_ms_mean"], results["step_ms_median"], results["phases_ms_mean"]
    print(f"{results['space']}: {results['archs']} sampled paths, batch {results['batch']}, {results['threads']} "
          "threads; mean (median) ms per training step")
    print(f"{'model':12s} {'mean':>8s} {'median':>8s} {'x alone':>8s}  " + "  ".join(f"{ph:>9s}" for ph in PHASES))
    for m in (*MODES, "standalone"):
        rel = f"{mean[m] / mean['standalone']:8.3f}"
        print(f"{m:12s} {mean[m]:8.1f} {median[m]:8.1f} {rel}  " + "  ".join(f"{phases[m][ph]:9.1f}" for ph in PHASES))
    print("forward ms per path, by block type @ where (supernet hws / naive / stand-alone):")
    for name, row in results["layer_forward_ms_per_path"].items():
        print(f"  {name:16s} {row['hws']:8.2f} {row['naive']:8.2f} {row['standalone']:8.2f}")
    for m, ratio in results["over_standalone"].items():
        print(f"{'PASS' if ratio <= TARGET else 'MISS'}  {m} supernet step {ratio:.3f}x the stand-alone step "
              f"(mean over paths; target <= {TARGET}x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="6 architectures, a quarter of the batch (the pipeline)")
    p.add_argument("--archs", type=int, default=30, help="sampled architectures (one step each per model)")
    p.add_argument("--space", default="cv_small", help="a shipped image or translation space (or a YAML path)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images (default 128, the recipe's) or sentences (default 56) per batch")
    p.add_argument("--tokens", type=int, default=18, help="translation: tokens per sentence (default 18)")
    p.add_argument("--vocab", type=int, default=2160, help="translation: dictionary size (default 2,160)")
    p.add_argument("--recipe", default=str(ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"),
                   help="image: the supernet recipe whose optimiser the steps use")
    p.add_argument("--lr", type=float, default=2e-3, help="translation: Adam's learning rate (the recipe's)")
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    if args.archs < 1 or (args.batch_size is not None and args.batch_size < 1) or args.tokens < 1:
        p.error(f"--archs, --batch-size, --tokens: must be >= 1, got {args.archs}, {args.batch_size}, {args.tokens}")
    spec = load_space(args.space)
    translation = getattr(spec, "kind", None) == "translation"
    batch = args.batch_size or (56 if translation else 128)
    count, batch = (6, max(1, batch // 4)) if args.quick else (args.archs, batch)
    bench = (translation_bench(args.space, batch, args.tokens, args.vocab, args.lr) if translation
             else image_bench(args.space, args.recipe, batch))
    rng = random.Random(0)
    results = measure(bench, [random_arch(spec, rng) for _ in range(count)])
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
