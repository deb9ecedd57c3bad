"""Fast CPU adder kernels: a C++/OpenMP library built on first use and cached.

The library (``adder_cpu.cpp``) is compiled once per source, compiler and CPU into
``$NNI_SHIFTADD_CACHE`` (default ``~/.cache/nni_shiftadd``) and loaded with ctypes; it needs no PyTorch
headers, so a build takes about a second. It links the OpenMP runtime PyTorch already loaded, so both
share one thread pool. Without a C++ compiler, :func:`load` warns once and returns ``None``, and the
operators fall back to the reference kernels.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from ..cache import cache_root

SOURCE = "adder_cpu.cpp"
_lock = threading.Lock()
_state: dict[str, object] = {}


def cache_dir() -> Path:
    """Where built kernels are kept: ``$NNI_SHIFTADD_CACHE/kernels`` or ``~/.cache/nni_shiftadd/kernels``."""
    return cache_root() / "kernels"


def compiler() -> str | None:
    """The C++ compiler to use: ``$CXX`` if set, else the first of ``c++``, ``g++``, ``clang++`` on PATH."""
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _flags() -> list[str]:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=fast"]
    flags.append("-mcpu=native" if platform.machine() in ("aarch64", "arm64") else "-march=native")
    return flags


def _build(cxx: str) -> Path:
    source = resources.files("nni_shiftadd.kernels").joinpath(SOURCE).read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(_flags()).encode(),
                                     platform.machine().encode(), platform.processor().encode(),
                                     _cpu_signature()])).hexdigest()[:16]
    target = cache_dir() / f"adder_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        out = Path(tmp) / target.name
        proc = subprocess.run([cxx, *_flags(), str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building the CPU adder kernel with {cxx} failed:\n{proc.stderr[-4000:]}")
        os.replace(out, target)  # atomic: concurrent builders (DDP ranks) never see a partial file
    return target


def _cpu_signature() -> bytes:
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features")):
                    return line
    except OSError:
        pass
    return b""


def load() -> ctypes.CDLL | None:
    """Build (once) and load the library; ``None``, with one warning, if that is impossible here."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        cxx = compiler()
        if cxx is None:
            warnings.warn("nni_shiftadd: no C++ compiler found (set CXX or install g++); the adder operators "
                          "use the slow reference kernels on CPU", RuntimeWarning, stacklevel=3)
        else:
            try:
                lib = ctypes.CDLL(str(_build(cxx)))
            except (RuntimeError, OSError) as err:
                warnings.warn(f"nni_shiftadd: the fast CPU adder kernel is unavailable ({err}); the adder "
                              "operators use the slow reference kernels on CPU", RuntimeWarning, stacklevel=3)
        if lib is not None:
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            for name in ("nsa_l1mm_f32", "nsa_l1mm_f64"):
                getattr(lib, name).argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]
            for name in ("nsa_htmm_f32", "nsa_htmm_f64"):
                getattr(lib, name).argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]
            for name in ("nsa_im2col_f32", "nsa_im2col_f64", "nsa_col2im_f32", "nsa_col2im_f64"):
                getattr(lib, name).argtypes = [ptr, ptr] + [i64] * 15 + [ctypes.c_int]
        _state["lib"] = lib
        return lib


def reset() -> None:
    """Forget the loaded library so that the next :func:`load` looks again (used by tests)."""
    with _lock:
        _state.clear()


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def supports(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _SUFFIX


def l1mm(weight: Tensor, cols: Tensor) -> Tensor:
    """``out[g, o, p] = -sum_k |cols[g, k, p] - weight[g, o, k]|``; see :func:`reference.l1mm`."""
    lib = load()
    weight, cols = weight.contiguous(), cols.contiguous()
    G, O, K = weight.shape
    P = cols.shape[2]
    out = cols.new_empty(G, O, P)
    getattr(lib, "nsa_l1mm_" + _SUFFIX[cols.dtype])(
        weight.data_ptr(), cols.data_ptr(), out.data_ptr(), G, O, K, P, torch.get_num_threads())
    return out


def htmm(weight: Tensor, cols: Tensor, grad: Tensor) -> Tensor:
    """``out[g, k, p] = sum_o grad[g, o, p] * HardTanh(weight[g, o, k] - cols[g, k, p])``."""
    lib = load()
    wt = weight.transpose(1, 2).contiguous()
    cols, grad = cols.contiguous(), grad.contiguous()
    G, O, K = weight.shape
    P = cols.shape[2]
    out = cols.new_empty(G, K, P)
    getattr(lib, "nsa_htmm_" + _SUFFIX[cols.dtype])(
        wt.data_ptr(), cols.data_ptr(), grad.data_ptr(), out.data_ptr(), G, O, K, P, torch.get_num_threads())
    return out


def im2col(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
           dilation: tuple[int, int], groups: int, out_hw: tuple[int, int]) -> Tensor:
    """``x [N, C, H, W] -> cols [G, C/G * kh * kw, N * Ho * Wo]`` in one pass (unfold + permute, fused)."""
    x = x.contiguous()
    N, C, H, W = x.shape
    cols = x.new_empty(groups, C // groups * kernel[0] * kernel[1], N * out_hw[0] * out_hw[1])
    getattr(load(), "nsa_im2col_" + _SUFFIX[x.dtype])(
        x.data_ptr(), cols.data_ptr(), N, C, H, W, groups, *kernel, *stride, *padding, *dilation, *out_hw,
        torch.get_num_threads())
    return cols


def col2im(cols: Tensor, shape: tuple[int, int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
           padding: tuple[int, int], dilation: tuple[int, int], groups: int, out_hw: tuple[int, int]) -> Tensor:
    """Adjoint of :func:`im2col`: sums the columns back into a ``shape`` = (N, C, H, W) tensor."""
    cols = cols.contiguous()
    dx = cols.new_empty(shape)
    getattr(load(), "nsa_col2im_" + _SUFFIX[cols.dtype])(
        cols.data_ptr(), dx.data_ptr(), *shape, groups, *kernel, *stride, *padding, *dilation, *out_hw,
        torch.get_num_threads())
    return dx
