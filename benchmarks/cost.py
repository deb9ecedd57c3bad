"""Cost models against the paper's anchors, and the speed of the NNI cost profilers.

(a) Table 3 anchor: Transformer-big (:func:`nni_shiftadd.cost.workloads.transformer_big`, a 30-token sentence) on
    the Eyeriss model: energy, latency and energy per memory level beside the paper's 214 mJ / 130 ms (compute
    15.4, DRAM 58.8, global buffer 11.3, NoC 36.3, RF 92.6 mJ).
(b) Table 4: #Mult/#Add/#Shift of ResNet-50 v1 (:func:`~nni_shiftadd.cost.workloads.resnet50_v1`, 224x224) as it
    is, converted to Add and to Shift layers (stem and classifier kept), beside the paper's 3.9/3.9/0,
    0.1/7.6/0 and 0.1/3.9/3.8 G. Traced on the meta device (no arithmetic).
(c) Profiler throughput (architectures per second) of :class:`~nni_shiftadd.cost.profilers.EyerissProfiler` on a
    hybrid ResNet-20-style space: per stage an operator (conv/shift/add) and a depth (1..3 basic blocks), widths
    16/32/64, 32x32 inputs; 3^3 x 3^3 = 729 architectures. The fast path is a ``records_fn`` built on a block-level
    records cache (:class:`StageRecords`): the network is traced once per (operator, depth) with that choice in
    every stage, the records are split by stage, and an architecture's records are the stem's, its three
    stages' and the classifier's, concatenated. That is exact because a stage's layer shapes depend only on its
    own operator and depth (its input shape is fixed by the widths and strides) and its record names only on the
    stage index; the benchmark checks it against freeze-and-trace on random architectures. Reported:

    - cold: the first architectures seen, from empty caches (block traces and Eyeriss mapping searches included);
    - warm: architectures never profiled before, all their layer shapes already costed (memoised ``layer_cost``);
    - memo: architectures profiled again (the profiler's per-sample LRU);
    - slow: the freeze-and-trace path (``space.freeze(sample)`` on the meta device, one forward pass), new
      architectures, layer costs warm; and the same on the real device (``meta=False``) for comparison.
(d) One ``layer_cost`` mapping search from cold (the unmemoised function) for a few representative layers.
(e) The HAT-style latency predictor (:mod:`nni_shiftadd.cost.predictor`) trained on Eyeriss latencies of a larger
    hybrid space (per stage: operator, depth 1..3 and width 16/24/32/48; 46,656 architectures): 2,000 samples,
    80/10/10 split, mean relative error on the held-out test split (target < 3%). Layer records come from an
    analytic description of the network (:func:`analytic_records`), checked against a traced forward pass.
(f) The same predictor on latency measured on this machine (:mod:`nni_shiftadd.cost.measured`, what
    ``nni-shiftadd latency-predictor`` builds): cv_small subnets at batch 1 on the CPU (CUDA too when present), 5
    warm-up and 20 timed runs each, mean of the middle 60%, one thread (the paper's target: held-out error < 5%).
    1,000 architectures (200 with ``--quick``), cached in ``runs/bench_latency_<device>.measured.jsonl`` so a second
    run only fits. A busy machine (another training on the same cores) inflates the noise of every measurement.

Usage::

    PYTHONPATH=. python benchmarks/cost.py [--quick] [--json PATH]

It is a measurement, not a test: the exit status is 0 even when a target is missed (the output says MISS).
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if not any(Path(p or ".").resolve() == _ROOT for p in sys.path):
    sys.path.insert(0, str(_ROOT))

import nni  # noqa: E402
import torch  # noqa: E402
from nni.nas.nn.pytorch import ModelSpace  # noqa: E402
from torch import nn  # noqa: E402

from nni_shiftadd.cost.eyeriss import EyerissConfig, layer_cost  # noqa: E402
from nni_shiftadd.cost.layers import LayerRecord, LayerShape  # noqa: E402
from nni_shiftadd.cost.profile import profile, report_from_records  # noqa: E402
from nni_shiftadd.cost.profilers import EyerissProfiler, trace_model  # noqa: E402
from nni_shiftadd.cost.workloads import resnet50_v1, transformer_big  # noqa: E402
from nni_shiftadd.models.resnet import OPS, SmallResNet  # noqa: E402
from nni_shiftadd.ops import convert_model  # noqa: E402

G = 1e9
PAPER_TABLE3 = {"energy_mJ": 214.0, "latency_ms": 130.0,
                "breakdown_mJ": {"compute": 15.4, "dram": 58.8, "glb": 11.3, "noc": 36.3, "rf": 92.6}}
PAPER_TABLE4 = {"plain": (3.9, 3.9, 0.0), "add": (0.1, 7.6, 0.0), "shift": (0.1, 3.9, 3.8)}
WARM_TARGET = 1000.0  # archs/s of the warm fast path
DEPTHS = (1, 2, 3)
STAGES = 3


# -- the hybrid space and its block-level records cache --------------------------------------------------------------
class HybridResNetSpace(ModelSpace):
    """ResNet-20-style space: ``op{i}`` in conv/shift/add and ``depth{i}`` in 1..3 for each of the 3 stages."""

    def __init__(self, widths: Sequence[int] = (16, 32, 64), in_chans: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.widths, self.in_chans, self.num_classes = tuple(widths), in_chans, num_classes
        for i in range(STAGES):
            self.add_mutable(nni.choice(f"op{i}", list(OPS)))
            self.add_mutable(nni.choice(f"depth{i}", list(DEPTHS)))

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        return SmallResNet(depths=[sample[f"depth{i}"] for i in range(STAGES)], widths=self.widths,
                           op=[sample[f"op{i}"] for i in range(STAGES)], in_chans=self.in_chans,
                           num_classes=self.num_classes)


class StageRecords:
    """``records_fn`` of :class:`HybridResNetSpace`: layer records assembled from per-(stage, op, depth) blocks.

    The first time an (op, depth) pair is needed, ``SmallResNet(depths=(depth,) * 3, op=op)`` is traced once (on
    the meta device) and its records are split into the stem, the three stages (by the ``stages.{i}.`` prefix)
    and the head; every architecture is then a concatenation of cached lists.
    """

    def __init__(self, space: HybridResNetSpace, image: torch.Tensor) -> None:
        self.space, self.image = space, image
        self.stages: dict[tuple[int, str, int], list[LayerRecord]] = {}
        self.stem: list[LayerRecord] = []
        self.head: list[LayerRecord] = []
        self.traces = 0

    def _trace(self, op: str, depth: int) -> None:
        sample = {**{f"op{i}": op for i in range(STAGES)}, **{f"depth{i}": depth for i in range(STAGES)}}
        trace, _ = trace_model(lambda: self.space.freeze(sample), self.image)
        self.traces += 1
        stages: list[list[LayerRecord]] = [[] for _ in range(STAGES)]
        stem, head = [], []
        for rec in trace.layers:
            if rec.name.startswith("stages."):
                stages[int(rec.name.split(".")[1])].append(rec)
            elif not any(stages):
                stem.append(rec)
            else:
                head.append(rec)
        self.stem, self.head = stem, head
        for i, recs in enumerate(stages):
            self.stages[(i, op, depth)] = recs

    def __call__(self, sample: dict[str, Any]) -> list[LayerRecord]:
        records = []
        for i in range(STAGES):
            key = (i, sample[f"op{i}"], sample[f"depth{i}"])
            if key not in self.stages:
                self._trace(key[1], key[2])
            records += self.stages[key]
        return self.stem + records + self.head


def all_archs() -> list[dict[str, Any]]:
    archs = []
    for ops in itertools.product(OPS, repeat=STAGES):
        for depths in itertools.product(DEPTHS, repeat=STAGES):
            archs.append({**{f"op{i}": o for i, o in enumerate(ops)}, **{f"depth{i}": d for i, d in enumerate(depths)}})
    return archs


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


# -- (a) Table 3 -------------------------------------------------------------------------------------------------------
def table3() -> dict[str, Any]:
    model, inputs = transformer_big(tokens=30)
    t0 = time.perf_counter()
    report = profile(model, *inputs)
    seconds = time.perf_counter() - t0
    ours = {"energy_mJ": report.totals["energy_mJ"], "latency_ms": report.totals["latency_ms"],
            "breakdown_mJ": dict(report.breakdown_mJ), "macs": report.totals["macs"], "layers": len(report.rows)}
    print("(a) Table 3 anchor: Transformer-big, 30 tokens, Eyeriss, 32-bit"
          f"  ({len(report.rows)} layers, {report.totals['macs'] / G:.2f} G MACs, profiled in {seconds:.2f} s)")
    print(f"    {'':12s} {'ours':>9s} {'paper':>9s} {'ratio':>6s}")
    rows = [("energy mJ", ours["energy_mJ"], PAPER_TABLE3["energy_mJ"]),
            ("latency ms", ours["latency_ms"], PAPER_TABLE3["latency_ms"])]
    rows += [(f"  {k}", ours["breakdown_mJ"][k], v) for k, v in PAPER_TABLE3["breakdown_mJ"].items()]
    for name, a, b in rows:
        print(f"    {name:12s} {a:9.1f} {b:9.1f} {a / b:6.2f}")
    return {"ours": ours, "paper": PAPER_TABLE3, "seconds": seconds}


# -- (b) Table 4 -------------------------------------------------------------------------------------------------------
def table4() -> dict[str, Any]:
    image = torch.zeros(1, 3, 224, 224)
    print("(b) Table 4: ResNet-50 v1, 224x224, #Mult / #Add / #Shift in G (ours | paper)")
    out = {}
    for name, to in (("plain", None), ("add", "add"), ("shift", "shift")):
        def build(to: str | None = to) -> nn.Module:
            model = resnet50_v1()
            return model if to is None else convert_model(model, to, copy_weights=False, inplace=True)

        t0 = time.perf_counter()
        trace, device = trace_model(build, image)
        report = report_from_records(trace.layers, hardware="none")
        seconds = time.perf_counter() - t0
        ours = tuple(report.totals[k] / G for k in ("mult", "add", "shift"))
        paper = PAPER_TABLE4[name]
        print(f"    {name:6s} {ours[0]:5.2f} / {ours[1]:5.2f} / {ours[2]:5.2f}  |  "
              f"{paper[0]:.1f} / {paper[1]:.1f} / {paper[2]:.1f}   (MACs {report.totals['macs'] / G:.2f} G, "
              f"traced on {device} in {seconds:.2f} s)")
        out[name] = {"ours_G": dict(zip(("mult", "add", "shift"), ours)), "paper_G": dict(
            zip(("mult", "add", "shift"), paper)), "macs_G": report.totals["macs"] / G, "device": device}
    return out


# -- (c) profiler throughput -------------------------------------------------------------------------------------------
def throughput(quick: bool) -> dict[str, Any]:
    space, image = HybridResNetSpace(), torch.zeros(1, 3, 32, 32)
    archs = all_archs()
    random.Random(0).shuffle(archs)
    n_cold, n_slow, n_check = (20, 20, 5) if quick else (50, 50, 20)
    n_warm = 200 if quick else len(archs)

    # the fast path's records are exactly the traced ones
    check = EyerissProfiler(space, image)
    cache = StageRecords(space, image)
    for arch in archs[:n_check]:
        assert cache(arch) == check.trace(arch).layers, f"block-cache records differ from the trace for {arch}"

    layer_cost.cache_clear()
    cache = StageRecords(space, image)
    fast = EyerissProfiler(space, records_fn=cache)
    t0 = time.perf_counter()
    for arch in archs[:n_cold]:
        fast.profile(arch)
    cold_s = time.perf_counter() - t0
    cold_traces, cold_shapes = cache.traces, layer_cost.cache_info().currsize

    # warm-up: the depth-3 uniform archs hold every block and layer shape of the space
    for op in OPS:
        fast.profile({**{f"op{i}": op for i in range(STAGES)}, **{f"depth{i}": 3 for i in range(STAGES)}})
    fast.cache_clear()  # from here on, only the layer-cost memo (and the block cache) is warm
    seen = {tuple(sorted(a.items())) for a in archs[:n_cold]}
    new = [a for a in archs if tuple(sorted(a.items())) not in seen]
    if not quick:
        new += [a for a in archs if tuple(sorted(a.items())) in seen]  # all 729, none in the profiler's memo
    new = new[:n_warm]
    misses_before = layer_cost.cache_info().misses
    t0 = time.perf_counter()
    for arch in new:
        fast.profile(arch)
    warm_s = time.perf_counter() - t0
    assert layer_cost.cache_info().misses == misses_before, "warm phase ran a mapping search"

    t0 = time.perf_counter()
    for arch in new:
        fast.profile(arch)
    memo_s = time.perf_counter() - t0

    slow = EyerissProfiler(space, image)
    t0 = time.perf_counter()
    for arch in archs[:n_slow]:
        slow.profile(arch)
    slow_s = time.perf_counter() - t0
    assert slow.stats.meta_traces == n_slow and slow.stats.real_traces == 0
    real = EyerissProfiler(space, image, meta=False)
    n_real = 3 if quick else 10
    t0 = time.perf_counter()
    for arch in archs[:n_real]:
        real.profile(arch)
    real_s = time.perf_counter() - t0

    res = {
        "space_size": len(archs),
        "cold": {"archs": n_cold, "seconds": cold_s, "archs_per_s": _rate(n_cold, cold_s), "block_traces": cold_traces,
                 "layer_shapes_costed": cold_shapes},
        "warm": {"archs": len(new), "seconds": warm_s, "archs_per_s": _rate(len(new), warm_s)},
        "memo": {"archs": len(new), "seconds": memo_s, "archs_per_s": _rate(len(new), memo_s)},
        "slow_freeze_trace": {"archs": n_slow, "seconds": slow_s, "archs_per_s": _rate(n_slow, slow_s)},
        "slow_freeze_trace_real_device": {"archs": n_real, "seconds": real_s, "archs_per_s": _rate(n_real, real_s)},
        "warm_target_archs_per_s": WARM_TARGET,
        "warm_target_met": _rate(len(new), warm_s) >= WARM_TARGET,
        "layers_per_arch": {"min": min(len(cache(a)) for a in archs), "max": max(len(cache(a)) for a in archs)},
    }
    print(f"(c) EyerissProfiler throughput, hybrid ResNet-20-style space ({len(archs)} archs: op conv/shift/add and "
          f"depth 1..3 per stage; {res['layers_per_arch']['min']}-{res['layers_per_arch']['max']} layers each)")
    print(f"    cold  fast path (records_fn, block cache) {res['cold']['archs_per_s']:9.1f} archs/s  ({n_cold} first "
          f"archs, {cold_traces} block traces, {cold_shapes} layer shapes costed, {cold_s:.2f} s)")
    ok = "OK" if res["warm_target_met"] else "MISS"
    print(f"    warm  fast path, new archs               {res['warm']['archs_per_s']:9.1f} archs/s  ({len(new)} "
          f"archs; target >= {WARM_TARGET:.0f}: {ok})")
    print(f"    memo  same archs again (per-sample LRU)  {res['memo']['archs_per_s']:9.1f} archs/s")
    print(f"    slow  freeze + meta trace, new archs     {res['slow_freeze_trace']['archs_per_s']:9.1f} archs/s  "
          f"({n_slow} archs, layer costs warm)")
    print(f"    slow  freeze + real-device trace         {res['slow_freeze_trace_real_device']['archs_per_s']:9.1f} "
          f"archs/s  ({n_real} archs; the CPU runs the Add/Shift layers for real)")
    return res


# -- (d) one mapping search --------------------------------------------------------------------------------------------
def mapping_search(quick: bool) -> dict[str, Any]:
    cfg = EyerissConfig()
    shapes = {
        "resnet20 stage-1 3x3 conv 16->16 @32x32": LayerShape("conv", "mult", 1, 16, 16, 34, 34, 3, 3, 32, 32),
        "resnet50 layer3 3x3 conv 256->256 @14x14": LayerShape("conv", "mult", 1, 256, 256, 16, 16, 3, 3, 14, 14),
        "transformer-big FFN fc1 1024->4096 x30": LayerShape("fc", "mult", 30, 1024, 4096),
        "adder 3x3 conv 64->64 @8x8": LayerShape("conv", "add", 1, 64, 64, 10, 10, 3, 3, 8, 8),
    }
    reps = 1 if quick else 3
    out = {}
    print("(d) one layer_cost mapping search, cold (unmemoised), best of", reps)
    for name, shape in shapes.items():
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            layer_cost.__wrapped__(shape, cfg)
            best = min(best, time.perf_counter() - t0)
        out[name] = best * 1e3
        print(f"    {name:44s} {best * 1e3:8.2f} ms")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer architectures in (c) and one repetition in (d)")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON to PATH")
    return p.parse_args(argv)


WIDTHS = (16, 24, 32, 48)


def analytic_records(arch: dict[str, Any], image: tuple[int, int, int] = (3, 32, 32),
                     num_classes: int = 10) -> list[LayerRecord]:
    """The layer records of ``SmallResNet(depths, widths, op)`` for ``arch`` without building it: stem conv, per
    basic block two 3x3 convs (the first strided at a stage's start) and a 1x1 projection where the shape
    changes, and the classifier."""
    c, h, w = image
    out: list[LayerRecord] = []

    def conv(name: str, op: str, cin: int, cout: int, k: int, stride: int, size: int) -> int:
        e = (size + 2 * (k // 2) - k) // stride + 1
        out.append(LayerRecord(name, op, LayerShape("conv", {"conv": "mult"}.get(op, op), n=1, c=cin, m=cout, h=size,
                                                    w=size, r=k, s=k, e=e, f=e, stride=stride), cin * cout * k * k))
        return e

    size, channels = h, arch["width0"]
    size = conv("conv1", "conv", c, channels, 3, 1, size)
    for i in range(STAGES):
        op, width = arch[f"op{i}"], arch[f"width{i}"]
        for j in range(arch[f"depth{i}"]):
            stride = 2 if (i > 0 and j == 0) else 1
            prefix = f"stages.{i}.{j}"
            if stride != 1 or channels != width:
                conv(f"{prefix}.downsample.0", op, channels, width, 1, stride, size)
            new = conv(f"{prefix}.conv1", op, channels, width, 3, stride, size)
            conv(f"{prefix}.conv2", op, width, width, 3, 1, new)
            size, channels = new, width
    out.append(LayerRecord("fc", "Linear", LayerShape("fc", "mult", n=1, c=channels, m=num_classes),
                           channels * num_classes + num_classes))
    return out


def _print_fit(report: dict[str, Any], target: str, met: bool) -> None:
    for split in ("train", "val", "test"):
        r = report[split]
        print(f"    {split:5s} n={r['n']:4d}  mean rel err {100 * r['mean_rel_err']:.2f}%  "
              f"max {100 * r['max_rel_err']:.1f}%")
    print(f"    target: held-out mean relative error {target}: {'OK' if met else 'MISS'}")


def predictor_accuracy(quick: bool) -> dict[str, Any]:
    from nni_shiftadd.cost.predictor import ArchEncoder, collect_samples, fit_predictor

    space = {**{f"op{i}": list(OPS) for i in range(STAGES)}, **{f"depth{i}": list(DEPTHS) for i in range(STAGES)},
             **{f"width{i}": list(WIDTHS) for i in range(STAGES)}}
    # the analytic records are the traced ones (shapes and MACs), on a few random architectures
    rng = random.Random(0)
    for _ in range(3):
        arch = {k: rng.choice(v) for k, v in space.items()}
        model = SmallResNet(depths=[arch[f"depth{i}"] for i in range(STAGES)],
                            widths=[arch[f"width{i}"] for i in range(STAGES)],
                            op=[arch[f"op{i}"] for i in range(STAGES)], in_chans=3, num_classes=10)
        traced, _ = trace_model(lambda m=model: m, torch.randn(1, 3, 32, 32), meta=False)
        assert [r.shape for r in traced.layers] == [r.shape for r in analytic_records(arch)], arch
    cfg = EyerissConfig()

    def latency(arch: dict[str, Any]) -> float:
        return sum(layer_cost(r.shape, cfg).latency_ms for r in analytic_records(arch))

    n = 2000  # HAT used ~2000 measured samples; fewer (600) give ~3.6% held-out error here
    start = time.perf_counter()
    archs, targets = collect_samples(space, latency, n, seed=0, progress=False)
    sample_s = time.perf_counter() - start
    _, report = fit_predictor(ArchEncoder(space), archs, targets, seed=0)
    test = report["test"]
    met = test["mean_rel_err"] < 0.03
    print(f"\n(e) latency predictor on Eyeriss latency, hybrid space of {3 ** 6 * 4 ** 3} archs: {n} samples "
          f"({sample_s:.1f} s to profile), fit {report['fit_seconds']:.1f} s")
    _print_fit(report, "< 3%", met)
    return {"samples": n, "report": report, "target_met": met}


def measured_predictor(quick: bool) -> dict[str, Any]:
    from nni_shiftadd.cost.measured import LatencyPredictorConfig, build_latency_predictor

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, Any] = {}
    for device in devices:
        n = 200 if quick else 1000
        cfg = LatencyPredictorConfig(space="cv_small", output=f"runs/bench_latency_{device}", samples=n, device=device,
                                     threads=1 if device == "cpu" else None)
        start = time.perf_counter()
        with torch.enable_grad():
            report = build_latency_predictor(cfg, progress=False)
        test, m = report["test"], report["measured"]
        met = test["mean_rel_err"] < 0.05
        print(f"\n(f) latency predictor on measured {device} latency, cv_small, {n} architectures "
              f"({m['min_ms']:.2f}-{m['max_ms']:.2f} ms at batch 1; {time.perf_counter() - start:.0f} s with the fit)")
        _print_fit(report, "< 5%", met)
        out[device] = {"samples": n, "report": report, "target_met": met}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads"
          + (", --quick" if args.quick else ""))
    results: dict[str, Any] = {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads()}
    results["table3_transformer_big"] = table3()
    results["table4_resnet50_v1"] = table4()
    results["profiler_throughput"] = throughput(args.quick)
    results["mapping_search_ms"] = mapping_search(args.quick)
    results["latency_predictor"] = predictor_accuracy(args.quick)
    results["measured_latency_predictor"] = measured_predictor(args.quick)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
