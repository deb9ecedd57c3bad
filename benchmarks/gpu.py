"""The GPU check: one prepared command for the short windows a GPU is lent in (under 5 minutes on one GPU).

1. **Kernels**: the Triton adder kernels against the PyTorch reference on the same device: the forward, the input
   gradient and the weight gradient of ``adder_conv2d`` and ``adder_linear``, in float32 and (where the GPU has
   it) bfloat16; relative error against the largest value.
2. **Operators**: forward+backward time of Add (Triton) and Shift (DeepShift-Q and -PS) against cuDNN's
   ``F.conv2d`` and ``F.linear``, with TF32 off and on; ratios in one run.
3. **Steps**: a ``cv_small`` supernet training step (``hws``, batch 128) and a SuperTransformer update
   (``nlp_tiny``, 32 sentences of 30 tokens), mean ms over timed steps after warm-up.
4. **Training**: a short supernet training on the digits through ``train-supernet``'s own code (Lightning picks
   the GPU), to a finite loss.

Everything lands in one JSON (``--json``, default ``runs/gpu_check.json``). On a machine without CUDA it says so
and exits 0 without running anything (``--device cpu`` runs the same checks on the CPU, slowly: what the tests do,
with the Triton kernels under ``TRITON_INTERPRET=1``). A failed check is recorded in the JSON with its error and the
command goes on to the next; the exit status is 1 if a kernel is off by more than its tolerance.

Usage::

    .venv/bin/python benchmarks/gpu.py [--json runs/gpu_check.json] [--quick] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
#: Largest relative error (against the largest value) a kernel may show against the reference, per dtype.
TOLERANCE = {"float32": 1e-5, "bfloat16": 2e-2}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    """Mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


def check_kernels(device: torch.device, quick: bool = False) -> dict[str, Any]:
    """The Triton kernels against the reference: forward and both gradients of a conv and a linear layer."""
    from nni_shiftadd.ops.adder import adder_conv2d, adder_linear

    dtypes = [torch.float32]
    if device.type != "cuda" or torch.cuda.is_bf16_supported():
        dtypes.append(torch.bfloat16)
    conv = (2, 8, 9, 9) if quick else (16, 64, 28, 28)
    out = {}
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        gen = torch.Generator().manual_seed(0)
        cases = {"conv2d": (torch.randn(*conv, generator=gen), torch.randn(conv[1] * 2, conv[1], 3, 3, generator=gen),
                            lambda x, w, b: adder_conv2d(x, w, padding=1, backend=b)),
                 "linear": (torch.randn(4 if quick else 64, 16 if quick else 512, generator=gen),
                            torch.randn(8 if quick else 512, 16 if quick else 512, generator=gen),
                            lambda x, w, b: adder_linear(x, w, backend=b))}
        for case, (x0, w0, op) in cases.items():
            results = {}
            for backend in ("triton", "reference"):
                x = x0.to(device, dtype).requires_grad_()
                w = w0.to(device, dtype).requires_grad_()
                y = op(x, w, backend)
                y.backward(torch.ones_like(y))
                results[backend] = (y.detach(), x.grad, w.grad)
            errors = {part: _rel(t, r) for part, t, r in zip(("forward", "grad_input", "grad_weight"),
                                                              results["triton"], results["reference"])}
            out[f"{case}/{name}"] = {**errors, "ok": max(errors.values()) <= TOLERANCE[name]}
    return out


def time_operators(device: torch.device, quick: bool = False) -> dict[str, Any]:
    """Forward+backward of Add and Shift against conv2d / linear, TF32 off and on; ratios to the multiply."""
    from nni_shiftadd.ops.adder import adder_conv2d, adder_linear
    from nni_shiftadd.ops.shift import ShiftConv2d, ShiftLinear

    steps, warmup = (2, 1) if quick else (20, 5)
    n, c, hw = (2, 8, 8) if quick else (32, 64, 56)
    tokens, width = (8, 16) if quick else (30 * 64, 512)
    out: dict[str, Any] = {}
    for tf32 in (False, True):
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        x = torch.randn(n, c, hw, hw, device=device, requires_grad=True)
        w = torch.randn(c, c, 3, 3, device=device, requires_grad=True)
        t = torch.randn(tokens, width, device=device, requires_grad=True)
        v = torch.randn(width, width, device=device, requires_grad=True)
        shift_q, shift_ps = (ShiftConv2d(c, c, 3, padding=1, bias=False, variant=k).to(device) for k in ("Q", "PS"))
        lin_q, lin_ps = (ShiftLinear(width, width, bias=False, variant=k).to(device) for k in ("Q", "PS"))

        def fb(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
            return lambda: fn().sum().backward()
        cases = {"conv2d": fb(lambda: F.conv2d(x, w, padding=1)), "add_conv2d": fb(lambda: adder_conv2d(x, w, padding=1)),
                 "shift_q_conv2d": fb(lambda: shift_q(x)), "shift_ps_conv2d": fb(lambda: shift_ps(x)),
                 "linear": fb(lambda: F.linear(t, v)), "add_linear": fb(lambda: adder_linear(t, v)),
                 "shift_q_linear": fb(lambda: lin_q(t)), "shift_ps_linear": fb(lambda: lin_ps(t))}
        ms = {name: _timed(fn, device, steps, warmup) * 1e3 for name, fn in cases.items()}
        ratios = {name: ms[name] / ms["conv2d" if name.endswith("conv2d") else "linear"] for name in ms}
        out["tf32" if tf32 else "fp32"] = {"ms": ms, "over_multiply": ratios}
    return out


def time_steps(device: torch.device, quick: bool = False) -> dict[str, Any]:
    """A cv_small supernet training step and a SuperTransformer update (mean ms)."""
    from nni_shiftadd.space import baseline_arch, load_space, random_arch
    from nni_shiftadd.space.cv import HybridCVSpace
    from nni_shiftadd.space.nlp import HybridNLPSpace

    steps, warmup = (2, 1) if quick else (20, 5)
    spec = load_space("cv_small")
    batch = 8 if quick else 128
    torch.manual_seed(0)
    net = HybridCVSpace(spec, "hws").to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=5e-4)
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    archs = iter([random_arch(spec, k) for k in range(steps + warmup)])

    def supernet_step() -> None:
        net.activate(next(archs))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    nlp = load_space("nlp_tiny")
    sentences, tokens, vocab = (4, 8, 100) if quick else (32, 30, 2160)
    model = HybridNLPSpace(nlp, vocab, 1, "hws").to(device).train()
    model.activate(baseline_arch(nlp, "attn"))
    nlp_opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98))
    src, prev, target = (torch.randint(4, vocab, (sentences, tokens), device=device) for _ in range(3))

    def update() -> None:
        nlp_opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(src, prev).flatten(0, 1), target.flatten(), ignore_index=1).backward()
        nlp_opt.step()

    return {"cv_small_supernet_step_ms": _timed(supernet_step, device, steps, warmup) * 1e3, "batch": batch,
            "nlp_tiny_supertransformer_update_ms": _timed(update, device, steps, warmup) * 1e3,
            "sentences": sentences, "tokens": tokens}


def short_training(device: torch.device, quick: bool = False) -> dict[str, Any]:
    """A short supernet training on the digits with ``train-supernet``'s code: its loss must stay finite."""
    from nni_shiftadd.config import from_dict
    from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

    with tempfile.TemporaryDirectory() as out:
        result = train_supernet(from_dict(SupernetConfig, {
            "dataset": "digits", "batch_size": 16 if quick else 64, "limit_train_batches": 4 if quick else 30,
            "epochs": 1, "warmup_epochs": 0, "eval_archs": 0, "limit_eval_batches": 1, "bn_calibration_batches": 1,
            "output": out}))
    loss = float(result["train_loss_last"])
    return {"steps": result["global_step"], "train_loss_first": result["train_loss_first"], "train_loss_last": loss,
            "finite": bool(torch.isfinite(torch.tensor(loss))), "seconds": result["fit_seconds"]}


CHECKS: dict[str, Callable[[torch.device, bool], dict[str, Any]]] = {
    "kernels": check_kernels, "operators": time_operators, "steps": time_steps, "training": short_training}


def run_checks(device: torch.device, quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Every check (or ``only`` those), each recorded with its seconds, or its error when it fails."""
    report: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    for name in only or list(CHECKS):
        start = time.perf_counter()
        try:
            report[name] = CHECKS[name](device, quick)
        except Exception as err:  # noqa: BLE001 - one failed check must not hide the others' results
            report[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        report[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name:10s} {json.dumps(report[name])[:300]}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=ROOT / "runs" / "gpu_check.json")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu to exercise the same code slowly")
    p.add_argument("--quick", action="store_true", help="tiny shapes and step counts: the pipeline only")
    p.add_argument("--only", default=None, help=f"comma-separated checks out of {list(CHECKS)}")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu check: no CUDA device on this machine; nothing was run (use --device cpu to exercise the code)")
        return 0
    only = args.only.split(",") if args.only else None
    unknown = [name for name in only or [] if name not in CHECKS]
    if unknown:
        print(f"gpu check: error: --only: unknown check(s) {unknown}; expected some of {list(CHECKS)}",
              file=sys.stderr)
        return 2
    report = run_checks(device, args.quick, only)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    kernels = report.get("kernels", {})
    bad = [case for case, r in kernels.items() if isinstance(r, dict) and r.get("ok") is False]
    if bad or "error" in kernels:
        print(f"gpu check: kernels off their tolerance: {bad or kernels.get('error')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
