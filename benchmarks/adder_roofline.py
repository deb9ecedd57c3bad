"""Where the Add operator's training time goes, kernel by kernel, against the convolution it replaces.

A convolution's forward+backward is three GEMM-like passes of one fused multiply-add (FMA) per term (a term is
one weight-input pair at one output position): forward, input gradient, weight gradient. The adder's passes
(``nni_shiftadd/kernels/adder_cpu.cpp``, SPEC's training rules) are

================  ===========================================  =====================  ===================
pass              per term                                     vector operations      ``benchmarks/ops.py``
================  ===========================================  =====================  ===================
forward           ``-|x - w|`` as ``2 min(x, w)`` + row sums    min, FMA: 2            l1mm
input gradient    ``g * HardTanh(w - x)``                      max, min, FMA: 3       htmm
weight gradient   ``g * (x - w)``: a GEMM minus a rank-one      FMA: 1 (BLAS)          GEMM
================  ===========================================  =====================  ===================

so with every pass at the CPU's peak rate the adder needs (2 + 3 + 1) / 3 = 2.0x the convolution's time: that
is the floor this formulation allows on any CPU whose min/max and FMA share the same vector ports (x86 and
Arm alike). The passes are compute-bound (register-blocked over panels that stay in L1/L2); what a direct
convolution does not pay on top is memory traffic: the im2col copies (forward and backward) and the col2im sum
of the input gradient, each one pass over K x positions values.

This script times each piece on the cases of ``benchmarks/ops.py`` (whole batch, float32, no chunking), the whole
operator as training runs it, and the convolution's forward and forward+backward on the same inputs, and prints
each piece's rate in terms per second next to the convolution's, so the gap to the floor can be read per piece.

Usage::

    PYTHONPATH=. python benchmarks/adder_roofline.py [--reps N] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

_ROOT = Path(__file__).resolve().parents[1]
if not any(Path(p or ".").resolve() == _ROOT for p in sys.path):
    sys.path.insert(0, str(_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nni_shiftadd.kernels import cpu  # noqa: E402
from nni_shiftadd.ops import adder_conv2d, adder_linear  # noqa: E402

#: (name, x shape, weight shape): those of benchmarks/ops.py (conv: stride 1, padding k // 2).
CASES = [
    ("conv-N32-C64-16x16-o64-k3", (32, 64, 16, 16), (64, 64, 3, 3)),
    ("conv-N32-C128-8x8-o128-k3", (32, 128, 8, 8), (128, 128, 3, 3)),
    ("conv-N64-C256-7x7-o256-k3", (64, 256, 7, 7), (256, 256, 3, 3)),
    ("linear-30x1024-o4096", (30, 1024), (4096, 1024)),
]
#: vector operations per term of each adder pass (module docstring); the convolution's passes take 1 each.
OPS_PER_TERM = {"l1mm": 2, "htmm": 3, "gemm": 1}


def _median_ms(fn: Callable[[], object], reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(x_shape: tuple[int, ...], w_shape: tuple[int, ...], reps: int) -> dict[str, float]:
    """Milliseconds of each adder piece and of the convolution's passes on one case."""
    g = torch.Generator().manual_seed(0)
    conv = len(x_shape) == 4
    x = torch.randn(x_shape, generator=g)
    w = torch.randn(w_shape, generator=g)
    if conv:
        k, pad = w_shape[2], w_shape[2] // 2
        hw = tuple(s + 2 * pad - k + 1 for s in x_shape[2:])
        geometry = ((k, k), (1, 1), (pad, pad), (1, 1), 1, hw)
        cols = cpu.im2col(x, *geometry)
        grad_y = torch.randn(x_shape[0], w_shape[0], *hw, generator=g)
    else:
        cols = x.t().contiguous()[None]
        grad_y = torch.randn(x_shape[0], w_shape[0], generator=g)
    weight = w.reshape(1, w_shape[0], -1).contiguous()
    rows = torch.randn(1, w_shape[0], cols.shape[2], generator=g)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()

    def conv_fwd() -> torch.Tensor:
        return F.conv2d(xr, wr, padding=pad) if conv else F.linear(xr, wr)

    def conv_fwd_bwd() -> None:
        xr.grad = wr.grad = None
        conv_fwd().backward(grad_y)

    def adder_fwd_bwd() -> None:  # the operator as training runs it (benchmarks/ops.py's "add")
        xr.grad = wr.grad = None
        y = adder_conv2d(xr, wr, padding=pad, eta=0.2) if conv else adder_linear(xr, wr, eta=0.2)
        y.backward(grad_y)

    ms = {"conv_fwd": _median_ms(conv_fwd, reps), "conv_fwd_bwd": _median_ms(conv_fwd_bwd, reps),
          "adder_fwd_bwd": _median_ms(adder_fwd_bwd, reps),
          "l1mm": _median_ms(lambda: cpu.l1mm(weight, cols), reps),
          "htmm": _median_ms(lambda: cpu.htmm(weight, cols, rows), reps),
          "gemm": _median_ms(lambda: torch.bmm(rows, cols.transpose(1, 2)), reps)}
    if conv:
        grad_cols = cpu.htmm(weight, cols, rows)
        ms["im2col"] = _median_ms(lambda: cpu.im2col(x, *geometry), reps)
        ms["col2im"] = _median_ms(lambda: cpu.col2im(grad_cols, tuple(x_shape), *geometry), reps)
    ms["terms"] = float(math.prod(w_shape) * cols.shape[2])
    return ms


def report(name: str, ms: dict[str, float]) -> dict[str, float]:
    """Rates and ratios of one case: each pass's giga-terms per second, the convolution's mean rate over its three
    passes, the measured adder total (two im2col, one col2im) and its compute-only part, against conv's f+b."""
    terms = ms["terms"]
    conv_rate = 3 * terms / ms["conv_fwd_bwd"] / 1e6
    out = {"conv_gterms_per_s": conv_rate}
    for piece in OPS_PER_TERM:
        out[f"{piece}_gterms_per_s"] = terms / ms[piece] / 1e6
        out[f"{piece}_of_floor"] = out[f"{piece}_gterms_per_s"] * OPS_PER_TERM[piece] / conv_rate
    compute = sum(ms[p] for p in OPS_PER_TERM)
    memory = 2 * ms.get("im2col", 0.0) + ms.get("col2im", 0.0)
    out.update(compute_ms=compute, memory_ms=memory, compute_ratio=compute / ms["conv_fwd_bwd"],
               total_ratio=(compute + memory) / ms["conv_fwd_bwd"], floor_ratio=sum(OPS_PER_TERM.values()) / 3,
               operator_ratio=ms["adder_fwd_bwd"] / ms["conv_fwd_bwd"],
               rest_ms=ms["adder_fwd_bwd"] - compute - memory)
    print(f"{name}: conv f+b {ms['conv_fwd_bwd']:.2f} ms ({conv_rate:.0f} G terms/s per pass) | "
          + " | ".join(f"{p} {ms[p]:.2f} ms ({out[f'{p}_of_floor']:.0%} of its floor)" for p in OPS_PER_TERM)
          + (f" | im2col {ms['im2col']:.2f} ms x2, col2im {ms['col2im']:.2f} ms" if "im2col" in ms else "")
          + f" | adder/conv: compute {out['compute_ratio']:.2f}x + memory passes = {out['total_ratio']:.2f}x "
          f"(floor {out['floor_ratio']:.1f}x); the operator {ms['adder_fwd_bwd']:.2f} ms = "
          f"{out['operator_ratio']:.2f}x ({out['rest_ms']:.2f} ms outside the kernels)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7, help="timed runs per piece (median)")
    p.add_argument("--json", type=Path, help="write the timings and ratios as JSON")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps: {args.reps} is not >= 1")
    if cpu.load() is None:
        print("the fast CPU adder kernel is unavailable (no C++ compiler): nothing to break down")
        return 0
    print(f"# {torch.get_num_threads()} threads, adder kernel vectors of {cpu.load().nsa_vector_bytes() * 8} bits; "
          f"a piece at 100% runs at the convolution's per-pass rate divided by its vector operations per term")
    doc = {name: {**(ms := measure(x, w, args.reps)), **report(name, ms)} for name, x, w in CASES}
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "cases": doc}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
