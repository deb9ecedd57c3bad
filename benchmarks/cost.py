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
    warm-up and 40 timed runs each, every run right after a run of the all-Conv reference, the mean of the middle
    60% of the per-run ratios times the reference's median latency; one thread (the paper's target: held-out error
    < 5%). 1,000 architectures (200 with ``--quick``), cached in ``runs/bench_latency_<device>.measured.jsonl`` so a
    second run only fits. Then the noise floor: 40 of them timed twice more, absolutely and against the reference,
    and how far the two passes lie apart.

(g) Fidelity against silicon (:mod:`nni_shiftadd.cost.silicon`): AlexNet CONV1-5 at batch 4 on the ``jssc2017``
    preset beside the chip's measurements (Chen et al., JSSC 2017): processing latency, active PEs, global-buffer
    and DRAM traffic (with and without run-length compression), at the chip's own mappings, each with the
    tolerance ``tests/test_cost_silicon.py`` holds it to; then what the model's own mapper would choose; then the
    Transformer-big anchor beside the paper (the ``shiftaddnas`` preset, tolerances of ``test_cost_eyeriss.py``).
(h) Calibrated constants: how the anchors (Transformer-big energy and latency; AlexNet's total latency and DRAM
    traffic) move when each constant fixed by calibration, or each authors' modelling restriction, changes.
(i) Shape fidelity for Transformers: per-GEMM rows of one encoder and one decoder layer of Transformer-big under
    the authors' model and under the ``physical`` preset (chip-validated mechanisms at the paper's technology
    point), then attention products with heads folded or not, encoder-decoder attention over 1-3 encoder layers,
    and lightweight convolutions of kernel 3-31.

Usage::

    PYTHONPATH=. python benchmarks/cost.py [--quick] [--json PATH] [--sections a,g,h,i]

It is a measurement, not a test: the exit status is 0 even when a target is missed (the output says MISS).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import random
import statistics
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

from nni_shiftadd.cost import silicon as chip  # noqa: E402
from nni_shiftadd.cost.eyeriss import ORDERS, EyerissConfig, layer_cost  # noqa: E402
from nni_shiftadd.cost.layers import LayerRecord, LayerShape  # noqa: E402
from nni_shiftadd.cost.profile import profile, report_from_records  # noqa: E402
from nni_shiftadd.cost.profilers import EyerissProfiler, trace_model  # noqa: E402
from nni_shiftadd.cost.trace import trace_layers  # noqa: E402
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
    p.add_argument("--sections", default="abcdefghi", help="which sections to run, e.g. 'g,h,i' (default: all)")
    args = p.parse_args(argv)
    args.sections = set(args.sections.replace(",", "").lower())
    bad = args.sections - set("abcdefghi")
    if bad:
        p.error(f"--sections: unknown section(s) {sorted(bad)}; expected letters a-i")
    return args


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
    from nni_shiftadd.cost.encoding import ArchEncoder
    from nni_shiftadd.cost.predictor import fit_predictor
    from nni_shiftadd.cost.timing import collect_samples

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


def _repeatability(device: str, n: int, repeats: int) -> dict[str, float]:
    """Mean relative difference between two passes over the same ``n`` cv_small subnets, timed absolutely and as
    a ratio to the all-Conv reference (each pass: every subnet once, in the same order)."""
    from nni_shiftadd.cost.timing import measure_latency, measure_latency_ratio
    from nni_shiftadd.space.cv import HybridCVSpace
    from nni_shiftadd.space.spec import baseline_arch, load_space, random_arch

    spec = load_space("cv_small")
    rng = random.Random(1)
    models = [HybridCVSpace(spec, "none").freeze(random_arch(spec, rng)) for _ in range(n)]
    reference = HybridCVSpace(spec, "none").freeze(baseline_arch(spec, "conv"))
    x = torch.randn(1, 1, 28, 28)
    timing = dict(warmup=5, repeats=repeats, device=device, trim=0.2)
    passes = [[(measure_latency(m, x, **timing), measure_latency_ratio(m, reference, x, **timing)[0])
               for m in models] for _ in range(2)]

    def spread(i: int) -> float:
        return statistics.fmean(abs(a[i] - b[i]) / ((a[i] + b[i]) / 2) for a, b in zip(*passes))

    return {"n": n, "absolute": spread(0), "ratio": spread(1)}


def measured_predictor(quick: bool) -> dict[str, Any]:
    from nni_shiftadd.cost.measured import LatencyPredictorConfig, build_latency_predictor

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out: dict[str, Any] = {}
    for device in devices:
        n, repeats = (200 if quick else 1000), 40
        cfg = LatencyPredictorConfig(space="cv_small", output=f"runs/bench_latency_{device}", samples=n, device=device,
                                     repeats=repeats, threads=1 if device == "cpu" else None)
        start = time.perf_counter()
        previous = torch.get_num_threads()
        with torch.enable_grad():
            report = build_latency_predictor(cfg, progress=False)
        test, m = report["test"], report["measured"]
        met = test["mean_rel_err"] < 0.05
        print(f"\n(f) latency predictor on measured {device} latency, cv_small, {n} architectures "
              f"({m['min_ms']:.2f}-{m['max_ms']:.2f} ms at batch 1, {repeats} runs against the all-Conv reference; "
              f"{time.perf_counter() - start:.0f} s with the fit)")
        _print_fit(report, "< 5%", met)
        if device == "cpu":
            torch.set_num_threads(1)
        try:
            noise = _repeatability(device, 10 if quick else 40, repeats)
        finally:
            torch.set_num_threads(previous)
        print(f"    noise floor: two passes over {noise['n']} subnets lie {100 * noise['absolute']:.1f}% apart on "
              f"average timed absolutely, {100 * noise['ratio']:.1f}% as a ratio to the reference")
        out[device] = {"samples": n, "repeats": repeats, "report": report, "target_met": met, "repeatability": noise}
    return out


# -- (g) against silicon -----------------------------------------------------------------------------------------------
#: per quantity, the relative tolerance tests/test_cost_silicon.py holds it to (latency: also inside the overlap bounds)
SILICON_TOLERANCE = {"active_pes": 0.0, "glb_mb": 0.02, "dram_mb": 0.20, "latency_ms": 0.20}
#: Transformer-big against paper Table 3 (tests/test_cost_eyeriss.py)
ANCHOR_TOLERANCE = {"energy_mJ": 0.05, "latency_ms": 0.05, "compute": 0.01, "rf": 0.10, "dram": 0.10, "noc": 0.25,
                    "glb": 0.25}


def _mark(error: float, tolerance: float) -> str:
    return "ok" if abs(error) <= tolerance + 1e-9 else "MISS"


def silicon() -> dict[str, Any]:
    rows, search = chip.compare(), chip.compare(mapping="search")
    bounds = {o: chip.compare(link_overlap=o) for o in ("all", "none")}
    print("\n(g) Eyeriss model (preset jssc2017) against the chip: AlexNet CONV1-5, batch 4, 16-bit, 200 MHz "
          "(Chen et al., JSSC 2017), at the chip's own mappings")
    print(f"    {'layer':6s} {'latency ms model/chip':>22s} {'[bounds]':>13s} {'PEs':>9s} {'buffer MB':>17s} "
          f"{'DRAM MB (RLC)':>17s} {'raw':>5s}  mapping (order p q e t r)")
    for row, lo, hi in zip(rows, bounds["all"], bounds["none"]):
        m, c, e, mp = row["model"], row["chip"], row["error"], row["mapping"]
        ok = {k: _mark(e[k], tolerance) for k, tolerance in SILICON_TOLERANCE.items()}
        print(f"    {row['layer']:6s} {m['latency_ms']:6.1f}/{c['latency_ms']:5.1f} {e['latency_ms']:+5.0%} "
              f"{ok['latency_ms']:4s} "
              f"[{lo['model']['latency_ms']:4.1f},{hi['model']['latency_ms']:5.1f}] "
              f"{m['active_pes']:3d}/{c['active_pes']:3d} {ok['active_pes']:4s}"
              f"{m['glb_mb']:5.1f}/{c['glb_mb']:4.1f} {e['glb_mb']:+4.0%} {ok['glb_mb']:4s} "
              f"{m['dram_mb']:4.2f}/{c['dram_mb']:3.1f} {e['dram_mb']:+4.0%} {ok['dram_mb']:4s} "
              f"{m['dram_raw_mb']:5.2f}  {mp['order']:7s} {mp['m0']} {mp['c0']} {mp['e_s']} {mp['m_s']} {mp['c_s']}")
    total = {k: sum(r["model"][k] for r in rows) for k in ("latency_ms", "glb_mb", "dram_mb", "dram_raw_mb")}
    chip_total = {k: sum(getattr(r, k) for r in chip.ALEXNET_JSSC2017) for k in ("latency_ms", "glb_mb", "dram_mb")}
    print(f"    total  latency {total['latency_ms']:.1f}/{chip_total['latency_ms']:.1f} ms "
          f"({total['latency_ms'] / chip_total['latency_ms'] - 1:+.0%}), buffer {total['glb_mb']:.1f}/"
          f"{chip_total['glb_mb']:.1f} MB, DRAM {total['dram_mb']:.2f}/{chip_total['dram_mb']:.1f} MB "
          f"({total['dram_mb'] / chip_total['dram_mb'] - 1:+.0%}; {total['dram_raw_mb']:.2f} MB uncompressed)")
    print("    tolerances: PEs exact, buffer 2%, DRAM 20%, latency 20% and inside [perfect overlap, no overlap]")
    print("    not validated: on-chip energy, model / chip power x latency (the chip's holds clock, leakage and zero "
          "gating, 65 nm): " + ", ".join(f"{r['layer']} {r['model']['onchip_mj']:.1f}/{r['chip']['onchip_mj']:.1f} mJ"
                                        for r in rows))
    print("    the model's own mapper (energy + latency) on the same layers:")
    for row in search:
        m, mp = row["model"], row["mapping"]
        print(f"      {row['layer']:6s} latency {m['latency_ms']:5.1f} ms, {m['active_pes']:3d} PEs, buffer "
              f"{m['glb_mb']:5.1f} MB, DRAM {m['dram_mb']:4.2f} MB  ({mp['order']} p={mp['m0']} q={mp['c0']} "
              f"e={mp['e_s']} t={mp['m_s']} r={mp['c_s']} n={mp['n_s']})")
    model, inputs = transformer_big(tokens=30)
    report = profile(model, *inputs)
    ours = {"energy_mJ": report.totals["energy_mJ"], "latency_ms": report.totals["latency_ms"],
            **report.breakdown_mJ}
    paper = {"energy_mJ": PAPER_TABLE3["energy_mJ"], "latency_ms": PAPER_TABLE3["latency_ms"],
             **PAPER_TABLE3["breakdown_mJ"]}
    print("    Transformer-big anchor (preset shiftaddnas, paper Table 3): " + ", ".join(
        f"{k} {ours[k]:.1f}/{paper[k]:.1f} {_mark(ours[k] / paper[k] - 1, ANCHOR_TOLERANCE[k])}" for k in paper))
    return {"chip_mapping": rows, "model_mapping": search, "bounds": bounds, "total": total, "chip_total": chip_total,
            "transformer_big": {"ours": ours, "paper": paper}}


# -- (h) calibrated constants ------------------------------------------------------------------------------------------
CALIBRATED = [  # (field, values; the first is the default of the preset it was calibrated on)
    ("dram_bus_bits", (64, 32, 128)),
    ("rf_weight_fill_cost", (1.0, 0.5, 2.0)),
    ("pass_fill_cycles", (True, False)),
    ("link_overlap", ("activations", "none", "all")),
    ("placement", ("grid", "free")),
    ("loop_orders", (("pe",), ORDERS)),
]


def calibration_sensitivity() -> dict[str, Any]:
    model, inputs = transformer_big(tokens=30)
    records = trace_layers(model, *inputs).layers
    print("\n(h) calibrated constants and the authors' restrictions: how the anchors move "
          "(Transformer-big on shiftaddnas | AlexNet total on jssc2017 at the chip's mappings)")
    out = []
    for field, values in CALIBRATED:
        for value in values:
            t = report_from_records(records, **{field: value})
            alex = chip.compare(**{field: value}) if field not in ("placement", "loop_orders") else chip.compare()
            lat = sum(r["model"]["latency_ms"] for r in alex)
            dram = sum(r["model"]["dram_mb"] for r in alex)
            default = "   (default)" if value == values[0] else ""
            print(f"    {field:20s} = {str(value):28s} Transformer-big {t['energy_mJ']:6.1f} mJ "
                  f"{t['latency_ms']:6.1f} ms | AlexNet {lat:6.1f} ms {dram:5.2f} MB{default}")
            out.append({"field": field, "value": list(value) if isinstance(value, tuple) else value,
                        "transformer_big_mJ": t["energy_mJ"], "transformer_big_ms": t["latency_ms"],
                        "alexnet_ms": lat, "alexnet_dram_mb": dram})
    physical = report_from_records(records, preset="physical")
    print(f"    {'preset physical':20s}   {'(all of the chip mechanisms)':28s} Transformer-big "
          f"{physical['energy_mJ']:6.1f} mJ {physical['latency_ms']:6.1f} ms")
    out.append({"field": "preset", "value": "physical", "transformer_big_mJ": physical["energy_mJ"],
                "transformer_big_ms": physical["latency_ms"]})
    print("    paper: 214 mJ, 130 ms | chip: 115.3 ms, 15.4 MB. (placement and loop orders are the authors' "
          "restrictions; the chip preset has its own)")
    return {"rows": out}


# -- (i) Transformer GEMMs ---------------------------------------------------------------------------------------------
def _gemm_line(label: str, shape: LayerShape, configs: dict[str, EyerissConfig]) -> dict[str, Any]:
    cells, row = [], {"gemm": label, "shape": dataclasses.asdict(shape)}
    for name, cfg in configs.items():
        cost = layer_cost(shape, cfg)
        mp = cost.mapping
        row[name] = {"pj_per_mac": cost.total_mj * 1e9 / shape.macs, "latency_us": cost.latency_ms * 1e3,
                     "utilization": cost.utilization, "order": mp.order, "m0": mp.m0, "c0": mp.c0}
        cells.append(f"{cost.total_mj * 1e9 / shape.macs:5.1f} {cost.latency_ms * 1e3:8.1f} {cost.utilization:4.2f} "
                     f"{mp.order:7s}")
    dims = f"{shape.n}x{shape.c}->{shape.m}" + (f" x{shape.repeat * shape.groups}" if shape.repeat * shape.groups > 1
                                               else "") + (f" k{shape.s}" if shape.s > 1 else "")
    print(f"    {label:34s} {dims:20s} {shape.macs / 1e6:8.2f} " + " | ".join(cells))
    return row


def transformer_gemms() -> dict[str, Any]:
    configs = {"authors": EyerissConfig(), "physical": EyerissConfig.preset("physical")}
    model, inputs = transformer_big(tokens=30, encoder_layers=1, decoder_layers=1)
    records = trace_layers(model, *inputs).layers
    print("\n(i) per-GEMM cost, one encoder and one decoder layer of Transformer-big (30 tokens, 32-bit); per config: "
          "pJ/MAC, latency us, PE utilisation, loop order")
    print(f"    {'GEMM':34s} {'n x c -> m':20s} {'M MACs':>8s} {'authors (shiftaddnas)':>28s} | {'physical':>20s}")
    rows = [_gemm_line(r.name, r.shape, configs) for r in records]
    qk = next(r.shape for r in records if r.shape.weights_are_activations)
    print("    attention products, heads one after another / folded side by side (parallel_instances):")
    for fold in (False, True):
        folded = {k: dataclasses.replace(v, parallel_instances=fold) for k, v in configs.items()}
        rows.append(_gemm_line(f"  Q.K^T, heads {'folded' if fold else 'apart'}", qk, folded))
    print("    encoder-decoder attention over k encoder layers (keys and values 30k tokens long):")
    head = qk.c
    for k in (1, 2, 3):
        rows.append(_gemm_line(f"  cross Q.K^T, k={k}", dataclasses.replace(qk, m=30 * k), configs))
        rows.append(_gemm_line(f"  cross A.V,   k={k}", dataclasses.replace(qk, c=30 * k, m=head), configs))
    print("    lightweight convolution (depthwise, 1024 channels, 30 tokens), Conv and Shift:")
    for op in ("mult", "shift"):
        for kernel in (3, 7, 15, 31):
            shape = LayerShape("conv", op, n=1, c=1, m=1, h=1, w=30, r=1, s=kernel, e=1, f=30, groups=1024,
                               lightweight=True)
            rows.append(_gemm_line(f"  lightweight {op}, kernel {kernel}", shape, configs))
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads"
          + (", --quick" if args.quick else ""))
    results: dict[str, Any] = {"quick": args.quick, "torch": torch.__version__, "threads": torch.get_num_threads()}
    sections = [("a", "table3_transformer_big", table3), ("b", "table4_resnet50_v1", table4),
                ("c", "profiler_throughput", lambda: throughput(args.quick)),
                ("d", "mapping_search_ms", lambda: mapping_search(args.quick)),
                ("e", "latency_predictor", lambda: predictor_accuracy(args.quick)),
                ("f", "measured_latency_predictor", lambda: measured_predictor(args.quick)),
                ("g", "silicon_alexnet", silicon), ("h", "calibrated_constants", calibration_sensitivity),
                ("i", "transformer_gemms", transformer_gemms)]
    for letter, key, run in sections:
        if letter in args.sections:
            results[key] = run()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
