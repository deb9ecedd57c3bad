"""Triton adder kernels against the reference, run on CPU through Triton's interpreter.

Triton decides between compiling and interpreting when a kernel is decorated, i.e. when
``nni_shiftadd.kernels.triton_adder`` is first imported, reading ``TRITON_INTERPRET`` then. Another test
(or the package's own ``__init__``) may already have imported it in compiled mode, and reloading it would
leak interpreter-mode kernels into later tests. So the kernel checks run in a fresh interpreter with
``TRITON_INTERPRET=1``: each case prints one JSON line of measurements that the test asserts on.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from nni_shiftadd.kernels import triton_adder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys
import torch
from nni_shiftadd.kernels import reference as ref, triton_adder as ta

torch.manual_seed(0)
case = sys.argv[1]
res = {"interpreted": ta.interpreted(), "supports_cpu": ta.supports(torch.zeros(1))}

def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()

def inputs(G, O, K, P, dtype):
    return (torch.randn(G, O, K, dtype=dtype), torch.randn(G, K, P, dtype=dtype),
            torch.randn(G, O, P, dtype=dtype))

if case == "accuracy":
    for dtype in (torch.float32, torch.float64):
        for shape in ((1, 5, 7, 37), (3, 4, 9, 100), (1, 33, 70, 130)):
            w, x, g = inputs(*shape, dtype)
            a, c = ta.l1mm(w, x), ta.htmm(w, x, g)
            res[f"{dtype}-{shape}"] = [str(a.dtype), str(c.dtype), list(a.shape), list(c.shape),
                                       rel(a, ref.l1mm(w, x)), rel(c, ref.htmm(w, x, g))]
elif case == "nonfinite":
    w, x, g = inputs(2, 5, 7, 37, torch.float32)
    w[0, 1, 3] = float("nan"); x[1, 2, 5] = float("nan")
    x[0, 4, 9] = float("inf"); w[1, 0, 0] = float("-inf")
    for name, args in (("l1mm", (w, x)), ("htmm", (w, x, g))):
        a, b = getattr(ta, name)(*args), getattr(ref, name)(*args)
        res[name] = [int(a.isnan().sum()), torch.equal(a.isnan(), b.isnan()), torch.equal(a.isinf(), b.isinf()),
                     rel(a.nan_to_num(0, 0, 0), b.nan_to_num(0, 0, 0))]
elif case == "layouts":
    for dtype in (torch.float16, torch.bfloat16):
        w, x, g = inputs(2, 5, 7, 37, dtype)
        wd, xd, gd = w.double(), x.double(), g.double()
        a, c = ta.l1mm(w, x), ta.htmm(w, x, g)
        res[str(dtype)] = [str(a.dtype), str(c.dtype), rel(a, ref.l1mm(wd, xd)), rel(c, ref.htmm(wd, xd, gd))]
    w = torch.randn(2, 7, 5).transpose(1, 2)
    x = torch.randn(2, 37, 7).transpose(1, 2)
    g = torch.randn(37, 2, 5).permute(1, 2, 0)
    res["strided"] = [rel(ta.l1mm(w, x), ref.l1mm(w, x)), rel(ta.htmm(w, x, g), ref.htmm(w, x, g))]
    for shape in ((0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0)):
        w, x, g = inputs(*shape, torch.float32)
        a, b, c, d = ta.l1mm(w, x), ref.l1mm(w, x), ta.htmm(w, x, g), ref.htmm(w, x, g)
        res[f"empty-{shape}"] = a.shape == b.shape and torch.equal(a, b) and c.shape == d.shape and torch.equal(c, d)
print(json.dumps(res))
"""


def _child(case: str) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", _CHILD, case], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res.pop("interpreted") and res.pop("supports_cpu")
    return res


def test_matches_reference_float32_float64() -> None:
    # Relative to the largest |value| of the reference output.
    tol = {"torch.float32": 1e-5, "torch.float64": 1e-12}
    res = _child("accuracy")
    assert len(res) == 6
    for key, (l1_dtype, ht_dtype, l1_shape, ht_shape, l1_err, ht_err) in res.items():
        dtype = key.split("-")[0]
        G, O, K, P = json.loads(key.split("-")[1].replace("(", "[").replace(")", "]"))
        assert l1_dtype == ht_dtype == dtype, key
        assert l1_shape == [G, O, P] and ht_shape == [G, K, P], key
        assert l1_err < tol[dtype] and ht_err < tol[dtype], (key, l1_err, ht_err)


def test_nan_and_inf_propagate_like_reference() -> None:
    for name, (nans, same_nan, same_inf, err) in _child("nonfinite").items():
        assert nans > 0 and same_nan and same_inf, name
        assert err < 1e-5, (name, err)


def test_half_dtypes_strided_and_empty() -> None:
    res = _child("layouts")
    for dtype, tol in (("torch.float16", 2e-3), ("torch.bfloat16", 2e-2)):
        l1_dtype, ht_dtype, l1_err, ht_err = res.pop(dtype)
        assert l1_dtype == ht_dtype == dtype
        assert l1_err < tol and ht_err < tol, (dtype, l1_err, ht_err)
    assert max(res.pop("strided")) < 1e-5
    assert res and all(res.values()), res


def test_supports_in_this_process() -> None:
    assert triton_adder.available()
    # CPU tensors only when this process imported the module in interpreter mode.
    assert triton_adder.supports(torch.zeros(1)) == triton_adder.interpreted()
    assert not triton_adder.supports(torch.zeros(1, dtype=torch.int32))
    assert not triton_adder.supports(torch.zeros(1, dtype=torch.complex64))
