"""Speed and peak memory of the Add and Shift operators against ``F.conv2d`` / ``F.linear`` on the same inputs.

For every case (a conv2d or linear geometry, float32, CPU) it times the training forward pass (autograd on)
and the forward+backward pass of

- ``baseline``: ``F.conv2d`` / ``F.linear`` with a plain float weight,
- ``add``: :func:`nni_shiftadd.ops.adder_conv2d` / :func:`~nni_shiftadd.ops.adder_linear` with ``eta=0.2``
  (AdderNet's adaptive learning rate, as in training) and the ``auto`` kernel backend,
- ``shift-Q`` / ``shift-PS``: the :class:`~nni_shiftadd.ops.ShiftConv2d` / :class:`~nni_shiftadd.ops.ShiftLinear`
  modules (``bias=False``) in both DeepShift variants,
- ``add-ref``: the adder's ``reference`` backend, on the first conv case only (slow; skipped by ``--quick``),

and the peak extra resident memory of one forward and one forward+backward. The input requires grad, as
for any layer but the first, so the backward computes both gradients.

Peak memory is the Linux RSS high-water mark (VmHWM, reset through ``/proc/self/clear_refs``) above the
resident size before the call, after ``malloc_trim(0)``. RSS follows live memory only if glibc returns freed
blocks to the OS, which needs ``MALLOC_MMAP_THRESHOLD_=65536`` from process start; that setting also makes
every large allocation page-fault afresh and slows the operators unevenly, so the timings are taken in this
process with the default allocator and the memory in a child process started with the setting.

Usage::

    PYTHONPATH=. python benchmarks/ops.py [--quick] [--json PATH] [--cases SUBSTR[,SUBSTR]] [--reps N]

It is a measurement, not a test: the exit status is 0 even when a target is missed (the table says MISS).
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parents[1]
if not any(Path(p or ".").resolve() == _ROOT for p in sys.path):
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from nni_shiftadd import kernels  # noqa: E402
from nni_shiftadd.ops import ShiftConv2d, ShiftLinear, adder_conv2d, adder_linear  # noqa: E402

ETA = 0.2
WARMUP = 2
REPS_FULL, REPS_QUICK = 7, 3
MEMORY_REPS = 3
#: glibc returns blocks of at least this many bytes to the OS on free, so that RSS tracks live memory.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

#: name -> (ops it applies to, metric, limit). Ratios are op / baseline on the same case.
TARGETS: dict[str, tuple[tuple[str, ...], str, float]] = {
    "add_fwd_bwd_time": (("add",), "ratio_fwd_bwd", 2.0),
    "add_peak_memory": (("add",), "peak_ratio", 1.5),
    "shift_fwd_bwd_time": (("shift-Q", "shift-PS"), "ratio_fwd_bwd", 1.3),
}
_METRIC_LABEL = {"ratio_fwd_bwd": "f+b", "peak_ratio": "mem"}
_TARGET_TEXT = {
    "add_fwd_bwd_time": "Add forward+backward time <= 2x baseline (its passes' floor: benchmarks/adder_roofline.py)",
    "add_peak_memory": "Add forward+backward peak memory <= 1.5x baseline",
    "shift_fwd_bwd_time": "Shift (Q and PS) forward+backward time <= 1.3x baseline",
}


@dataclass(frozen=True)
class Case:
    """One geometry: ``conv`` (x [N, C, H, W], weight [O, C, k, k], stride 1, padding k // 2) or ``linear``."""

    name: str
    kind: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    quick: bool = False

    @property
    def padding(self) -> int:
        return self.w_shape[-1] // 2 if self.kind == "conv" else 0


CASES = [
    Case("conv-N32-C64-16x16-o64-k3", "conv", (32, 64, 16, 16), (64, 64, 3, 3), quick=True),
    Case("conv-N32-C128-8x8-o128-k3", "conv", (32, 128, 8, 8), (128, 128, 3, 3)),
    Case("conv-N64-C256-7x7-o256-k3", "conv", (64, 256, 7, 7), (256, 256, 3, 3)),
    Case("linear-30x1024-o4096", "linear", (30, 1024), (4096, 1024), quick=True),
]


@dataclass
class Op:
    """A callable to benchmark: ``forward()`` returns the output; ``params`` (and the input) get gradients."""

    name: str
    backend: str
    forward: Callable[[], Tensor]
    params: list[Tensor]
    reps: int
    warmup: int = WARMUP
    memory_reps: int = MEMORY_REPS
    fwd_s: list[float] = field(default_factory=list)
    fwd_bwd_s: list[float] = field(default_factory=list)


def make_ops(case: Case, reps: int, with_reference: bool) -> tuple[Tensor, Tensor, list[Op]]:
    """Input ``x`` (requires grad), the output gradient, and the operators to compare on ``case``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case.x_shape, generator=g).requires_grad_()
    fan_in = math.prod(case.w_shape[1:])
    w_base = (torch.randn(case.w_shape, generator=g) / math.sqrt(fan_in)).requires_grad_()
    w_add = torch.randn(case.w_shape, generator=g).requires_grad_()  # adder weights start N(0, 1)
    module_name = kernels.select(x).__name__.rsplit(".", 1)[-1]
    add_backend = {"triton_adder": "triton"}.get(module_name, module_name)
    p = case.padding
    if case.kind == "conv":
        out_c, in_c, k = case.w_shape[0], case.w_shape[1], case.w_shape[2]
        out_shape = (case.x_shape[0], out_c, *(s + 2 * p - k + 1 for s in case.x_shape[2:]))

        def base() -> Tensor:
            return F.conv2d(x, w_base, padding=p)

        def add(backend: str = "auto") -> Callable[[], Tensor]:
            return lambda: adder_conv2d(x, w_add, padding=p, eta=ETA, backend=backend)

        def shift(variant: str) -> nn.Module:
            return ShiftConv2d(in_c, out_c, k, padding=p, bias=False, variant=variant)
    else:
        out_shape = (*case.x_shape[:-1], case.w_shape[0])

        def base() -> Tensor:
            return F.linear(x, w_base)

        def add(backend: str = "auto") -> Callable[[], Tensor]:
            return lambda: adder_linear(x, w_add, eta=ETA, backend=backend)

        def shift(variant: str) -> nn.Module:
            return ShiftLinear(case.w_shape[1], case.w_shape[0], bias=False, variant=variant)

    grad = torch.randn(out_shape, generator=g)
    slow = add_backend == "reference"  # no C++ compiler: "add" already is the reference; run it once
    ops = [Op("baseline", "aten", base, [w_base], reps),
           Op("add", add_backend, add(), [w_add], *((1, 0, 1) if slow else (reps,)))]
    for variant in ("Q", "PS"):
        torch.manual_seed(0)
        module = shift(variant)
        ops.append(Op(f"shift-{variant}", "aten", lambda m=module: m(x), list(module.parameters()), reps))
    if with_reference and not slow:
        ops.append(Op("add-ref", "reference", add("reference"), [w_add], 1, 0, 1))
    return x, grad, ops


def _clear_grads(x: Tensor, op: Op) -> None:
    x.grad = None
    for t in op.params:
        t.grad = None


def _fwd(op: Op) -> Callable[[], None]:
    def run() -> None:
        op.forward()  # the output and its graph are dropped at once
    return run


def _fwd_bwd(grad: Tensor, op: Op) -> Callable[[], None]:
    def run() -> None:
        op.forward().backward(grad)
    return run


# ----------------------------------------------------------------------------------------------- timing

def time_case(case: Case, reps: int, with_reference: bool) -> list[Op]:
    """Median-of-``reps`` timings on ``case``, in rounds over the ops (each: forward, then forward+backward)
    so that drift and noise from other processes hit all ops and both passes alike."""
    x, grad, ops = make_ops(case, reps, with_reference)
    for r in range(WARMUP + reps):
        for op in ops:
            if r < WARMUP - op.warmup or r >= WARMUP + op.reps:
                continue  # ops with fewer runs (add-ref) take part in the first timed rounds only
            for fn, times in ((_fwd(op), op.fwd_s), (_fwd_bwd(grad, op), op.fwd_bwd_s)):
                _clear_grads(x, op)
                t0 = time.perf_counter()
                fn()
                t = time.perf_counter() - t0
                if r >= WARMUP:
                    times.append(t)
    return ops


# ----------------------------------------------------------------------------------------------- memory

class RssProbe:
    """Peak extra resident memory of a call, from Linux's VmHWM after resetting it via ``/proc/self/clear_refs``."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.warning: str | None = None
        self._trim: Callable[[int], int] | None = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._status_kib("VmHWM")
        except (OSError, RuntimeError) as err:
            self.error = f"cannot reset/read the RSS high-water mark ({err}); peak memory not measured"
            return
        try:
            self._trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self.warning = "malloc_trim unavailable (not glibc?): the baseline RSS may include cached free blocks"
        if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
            self.warning = f"{MALLOC_ENV} not set: peak memory may miss reused blocks"

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{key} not found in /proc/self/status")

    def measure(self, fn: Callable[[], None]) -> int:
        """Bytes by which the resident set grew at its highest during ``fn()``."""
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current VmRSS
        before = self._status_kib("VmRSS")
        fn()
        return max(0, self._status_kib("VmHWM") - before) * 1024


def memory_worker(cases: list[Case], with_reference: bool, out: Path) -> None:
    """Child process: peak forward and forward+backward memory of every op, written to ``out`` as JSON."""
    probe = RssProbe()
    result: dict[str, Any] = {"error": probe.error, "warning": probe.warning, "peaks": {}}
    if probe.error is None:
        for case in cases:
            x, grad, ops = make_ops(case, 1, with_reference and case is CASES[0])
            for op in ops:
                for _ in range(op.warmup):  # one-off allocations (thread pools, primitive caches) come first
                    _clear_grads(x, op)
                    _fwd_bwd(grad, op)()
                peaks: dict[str, list[int]] = {"fwd": [], "fwd_bwd": []}
                for _ in range(op.memory_reps):
                    for key, fn in (("fwd", _fwd(op)), ("fwd_bwd", _fwd_bwd(grad, op))):
                        _clear_grads(x, op)
                        peaks[key].append(probe.measure(fn))
                _clear_grads(x, op)
                result["peaks"].setdefault(case.name, {})[op.name] = peaks
    out.write_text(json.dumps(result))


def measure_memory(cases: list[Case], with_reference: bool) -> tuple[dict[str, Any], str | None]:
    """Run :func:`memory_worker` in a child process with :data:`MALLOC_ENV`; ``(peaks, note)``."""
    if not sys.platform.startswith("linux"):
        return {}, f"peak memory needs Linux /proc (platform {sys.platform}); not measured"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "memory.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", str(out),
               "--cases", ",".join(c.name for c in cases)] + ([] if with_reference else ["--quick"])
        proc = subprocess.run(cmd, env=dict(os.environ, **MALLOC_ENV), capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            return {}, f"memory worker failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        result = json.loads(out.read_text())
    return result["peaks"], result["error"] or result["warning"]


# ----------------------------------------------------------------------------------------------- report

def _median(v: list[float] | list[int] | None) -> float | None:
    return float(statistics.median(v)) if v else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summarise(case: Case, ops: list[Op], peaks: dict[str, dict[str, list[int]]]) -> list[dict[str, Any]]:
    """Per-op records of ``case``: times, ratios to the baseline, peak memory, targets."""
    base = ops[0]
    b_fwd, b_fb = _median(base.fwd_s), _median(base.fwd_bwd_s)
    b_peak = _median(peaks.get(base.name, {}).get("fwd_bwd"))
    fast_add = next((o for o in ops if o.name == "add"), None)
    rows = []
    for op in ops:
        fwd, fb = _median(op.fwd_s), _median(op.fwd_bwd_s)
        mem = peaks.get(op.name, {})
        peak = _median(mem.get("fwd_bwd"))
        row: dict[str, Any] = {
            "case": case.name, "kind": case.kind, "x_shape": list(case.x_shape), "w_shape": list(case.w_shape),
            "padding": case.padding, "op": op.name, "backend": op.backend, "reps": op.reps,
            "fwd_ms": None if fwd is None else fwd * 1e3,
            "fwd_bwd_ms": None if fb is None else fb * 1e3,
            "fwd_ms_runs": [t * 1e3 for t in op.fwd_s], "fwd_bwd_ms_runs": [t * 1e3 for t in op.fwd_bwd_s],
            "ratio_fwd": _ratio(fwd, b_fwd), "ratio_fwd_bwd": _ratio(fb, b_fb),
            "peak_fwd_bytes": _median(mem.get("fwd")), "peak_fwd_bwd_bytes": peak,
            "peak_fwd_bwd_bytes_runs": mem.get("fwd_bwd", []), "peak_ratio": _ratio(peak, b_peak),
            "targets": {}, "met": None,
        }
        if op.name == "add-ref" and fast_add is not None:
            row["fast_kernel_speedup_fwd"] = _ratio(fwd, _median(fast_add.fwd_s))
            row["fast_kernel_speedup_fwd_bwd"] = _ratio(fb, _median(fast_add.fwd_bwd_s))
        for name, (names, metric, limit) in TARGETS.items():
            if op.name in names:
                value = row[metric]
                row["targets"][name] = {"metric": metric, "limit": limit, "value": value,
                                        "met": None if value is None else value <= limit}
        verdicts = [t["met"] for t in row["targets"].values() if t["met"] is not None]
        if verdicts:
            row["met"] = all(verdicts)
        rows.append(row)
    return rows


def target_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: limit, worst value and where, met overall (``None`` if never measured), and the misses."""
    out: dict[str, Any] = {}
    for name, (names, metric, limit) in TARGETS.items():
        hits = [(r["targets"][name]["value"], r["case"], r["op"]) for r in rows
                if name in r["targets"] and r["targets"][name]["value"] is not None]
        worst = max(hits, default=None)
        out[name] = {
            "description": _TARGET_TEXT[name], "ops": list(names), "metric": metric, "limit": limit,
            "checked": len(hits), "met": None if not hits else all(v <= limit for v, _, _ in hits),
            "worst": None if worst is None else {"value": worst[0], "case": worst[1], "op": worst[2]},
            "missed": [{"case": c, "op": o, "value": v} for v, c, o in hits if v > limit],
        }
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The results as an aligned text table, one block per case."""
    head = ["case", "op", "backend", "fwd ms", "f+b ms", "fwd x", "f+b x", "peak MB", "mem x", "target", "result"]
    body = []
    for r in rows:
        target = ",".join(f"{_METRIC_LABEL[t['metric']]}<={t['limit']:g}x" for t in r["targets"].values()) or "-"
        result = {True: "PASS", False: "MISS", None: "-"}[r["met"]]
        if r["met"] is False:
            result += "(" + ",".join(_METRIC_LABEL[t["metric"]] for t in r["targets"].values()
                                     if t["met"] is False) + ")"
        peak = r["peak_fwd_bwd_bytes"]
        body.append([r["case"], r["op"], r["backend"], _fmt(r["fwd_ms"], ".2f"), _fmt(r["fwd_bwd_ms"], ".2f"),
                     _fmt(r["ratio_fwd"], ".2f"), _fmt(r["ratio_fwd_bwd"], ".2f"),
                     _fmt(None if peak is None else peak / 2**20, ".1f"), _fmt(r["peak_ratio"], ".2f"),
                     target, result])
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    right = {3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    print(line(head))
    print("  ".join("-" * w for w in widths))
    for i, (r, cells) in enumerate(zip(rows, body)):
        if i and r["case"] != rows[i - 1]["case"]:
            print()
        print(line(cells))


def machine_info() -> dict[str, Any]:
    """CPU model, thread counts and software versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    lib = kernels.cpu.load()
    return {"cpu": cpu, "adder_vector_bits": None if lib is None else lib.nsa_vector_bytes() * 8,
            "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"first conv case and the linear case, {REPS_QUICK} runs, no reference backend")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON to PATH")
    p.add_argument("--cases", metavar="SUBSTR[,SUBSTR]",
                   help="only cases whose name contains one of these (case-insensitive); "
                        f"names: {', '.join(c.name for c in CASES)}")
    p.add_argument("--reps", type=int, help=f"timed runs per op (median reported; default {REPS_FULL}, "
                                            f"{REPS_QUICK} with --quick)")
    p.add_argument("--memory-worker", metavar="OUT", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def select_cases(quick: bool, patterns: str | None) -> list[Case]:
    """The cases of a run: the quick ones or all, filtered by comma-separated substrings."""
    cases = [c for c in CASES if c.quick or not quick]
    if patterns:
        wanted = [s.strip().lower() for s in patterns.split(",") if s.strip()]
        cases = [c for c in cases if any(s in c.name.lower() for s in wanted)]
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker:  # cases named exactly by the parent; --quick only drops the reference backend
        memory_worker(select_cases(False, args.cases), not args.quick, args.memory_worker)
        return 0
    cases = select_cases(args.quick, args.cases)
    if not cases:
        print(f"no case matches --cases {args.cases!r}; names: {', '.join(c.name for c in CASES)}", file=sys.stderr)
        return 2
    reps = args.reps or (REPS_QUICK if args.quick else REPS_FULL)
    machine = machine_info()
    print(f"# {machine['cpu']}, adder kernel vectors of {machine['adder_vector_bits']} bits, {machine['threads']} "
          f"threads, torch {machine['torch']}, float32; time: median of {reps} run{'s' * (reps > 1)} after {WARMUP} "
          f"warm-up; peak: median of {MEMORY_REPS}, RSS high-water mark above the level before the call (child process, {' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())})")
    if kernels.select(torch.zeros(1)) is kernels.reference:
        print("# note: the fast CPU adder kernel is unavailable; 'add' runs the reference kernels, once")
    t0 = time.perf_counter()
    timed = [(case, time_case(case, reps, not args.quick and case is CASES[0])) for case in cases]
    peaks, memory_note = measure_memory(cases, not args.quick)
    elapsed = time.perf_counter() - t0
    if memory_note:
        print(f"# note: {memory_note}")
    rows = [row for case, ops in timed for row in summarise(case, ops, peaks.get(case.name, {}))]
    print()
    print_table(rows)
    targets = target_summary(rows)
    print()
    for t in targets.values():
        if t["met"] is None:
            print(f"n/a   {t['description']}: not measured")
            continue
        w = t["worst"]
        detail = f"worst {w['value']:.2f}x ({w['op']} on {w['case']})"
        if not t["met"]:
            detail += f"; missed on {len(t['missed'])} of {t['checked']}: " + ", ".join(
                f"{m['op']}@{m['case']} {m['value']:.2f}x" for m in t["missed"])
        print(f"{'PASS' if t['met'] else 'MISS'}  {t['description']}: {detail}")
    for r in rows:
        if r.get("fast_kernel_speedup_fwd_bwd"):
            print(f"info  fast adder kernel ({next(x['backend'] for x in rows if x['op'] == 'add')}) vs reference "
                  f"on {r['case']}: {r['fast_kernel_speedup_fwd']:.1f}x faster forward, "
                  f"{r['fast_kernel_speedup_fwd_bwd']:.1f}x faster forward+backward")
    print(f"# {elapsed:.1f} s")
    if args.json:
        doc = {"machine": machine,
               "settings": {"quick": args.quick, "reps": reps, "warmup": WARMUP, "memory_reps": MEMORY_REPS,
                            "dtype": "float32", "eta": ETA, "input_requires_grad": True,
                            "forward": "autograd enabled (training forward)",
                            "peak_memory": "VmHWM - VmRSS before the call, after malloc_trim(0) and clear_refs=5, "
                                           f"in a child process with {MALLOC_ENV}",
                            "memory_note": memory_note, "seconds": elapsed},
               "cases": rows, "targets": targets}
        if args.json.parent != Path(""):
            args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
