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

SOURCES = {"adder": "adder_cpu.cpp", "shift": "shift_cpu.cpp", "hws": "hws_cpu.cpp"}
_lock = threading.Lock()
_libs: dict[str, ctypes.CDLL | None] = {}
_warned: set[str] = set()


def cache_dir() -> Path:
    """Where built kernels are kept: ``<cache root>/kernels`` (see :func:`nni_shiftadd.cache.cache_root`)."""
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


def _build(cxx: str, source_name: str) -> Path:
    source = resources.files("nni_shiftadd.kernels").joinpath(source_name).read_bytes()
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(_flags()).encode(),
                                     platform.machine().encode(), _cpu_signature()])).hexdigest()[:16]
    target = cache_dir() / f"{Path(source_name).stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / source_name
        src.write_bytes(source)
        out = Path(tmp) / target.name
        proc = subprocess.run([cxx, *_flags(), str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {source_name} with {cxx} failed:\n{proc.stderr[-4000:]}")
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


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _declare(lib: ctypes.CDLL, name: str) -> None:
    i64, ptr, c_int, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    signatures = {
        "adder": {"l1mm": [ptr, ptr, ptr, i64, i64, i64, i64, c_int],
                  "htmm": [ptr, ptr, ptr, ptr, i64, i64, i64, i64, c_int],
                  "im2col": [ptr, ptr] + [i64] * 15 + [c_int],
                  "col2im": [ptr, ptr] + [i64] * 15 + [c_int]},
        "shift": {"pow2": [ptr, ptr, i64, c_int, c_int, c_int, c_int],
                  "ps": [ptr, ptr, ptr, i64, c_int, c_int, None, c_int],
                  "ps_backward": [ptr, ptr, ptr, ptr, ptr, i64, c_int, c_int, c_int]},
        "hws": {"kl_forward": [ptr, i64, ptr, ptr, ptr, i64, f64, ptr, ptr],
                "kl_backward": [ptr, i64, ptr, ptr, ptr, i64, f64, ptr, f64, ptr, ptr],
                "spacing_kl": [ptr, i64, ptr, ptr, ptr, i64, f64, c_int, c_int, c_int, ptr, ptr, ptr],
                "rank_segments": [ptr, i64, i64, ptr]},
    }[name]
    for fn, args in signatures.items():
        for suffix, real in (("f32", ctypes.c_float), ("f64", ctypes.c_double)):
            getattr(lib, f"nsa_{fn}_{suffix}").argtypes = [real if a is None else a for a in args]


def load(name: str = "adder") -> ctypes.CDLL | None:
    """Build (once, cached) and load the ``name`` kernel library; ``None``, after one warning, if impossible."""
    with _lock:
        if name in _libs:
            return _libs[name]
        lib = None
        cxx = compiler()
        if cxx is None:
            which = (f"CXX={os.environ['CXX']!r} is not an executable on PATH" if os.environ.get("CXX")
                     else "no C++ compiler found (set CXX or install g++)")
            _warn_once("compiler", f"nni_shiftadd: {which}; the Add and Shift operators use the slower PyTorch "
                       "reference kernels on CPU")
        else:
            try:
                lib = ctypes.CDLL(str(_build(cxx, SOURCES[name])))
                _declare(lib, name)
            except (RuntimeError, OSError) as err:
                _warn_once(name, f"nni_shiftadd: the fast CPU {name} kernel is unavailable ({err}); the operators "
                           "use the slower PyTorch reference kernels on CPU")
                lib = None
        _libs[name] = lib
        return lib


def reset() -> None:
    """Forget the loaded libraries and warnings so that the next :func:`load` looks again (used by tests)."""
    with _lock:
        _libs.clear()
        _warned.clear()


_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def supports(t: Tensor) -> bool:
    """True for CPU float32/float64 tensors (whether the library builds is :func:`load`'s business)."""
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
    weight, cols, grad = weight.contiguous(), cols.contiguous(), grad.contiguous()
    G, O, K = weight.shape
    P = cols.shape[2]
    out = cols.new_empty(G, K, P)
    getattr(lib, "nsa_htmm_" + _SUFFIX[cols.dtype])(
        weight.data_ptr(), cols.data_ptr(), grad.data_ptr(), out.data_ptr(), G, O, K, P, torch.get_num_threads())
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


def pow2_round(w: Tensor, amin: int, pmin: int, pmax: int) -> Tensor:
    """DeepShift-Q rounding in one pass; see :func:`nni_shiftadd.ops.quantize.round_power_of_two`."""
    w = w.contiguous()
    q = torch.empty_like(w)
    getattr(load("shift"), "nsa_pow2_" + _SUFFIX[w.dtype])(w.data_ptr(), q.data_ptr(), w.numel(), amin, pmin, pmax,
                                                           torch.get_num_threads())
    return q


def ps_weight(shift: Tensor, sign: Tensor, pmin: int, pmax: int, threshold: float) -> Tensor:
    """DeepShift-PS weight ``S * 2^P`` in one pass."""
    shift, sign = shift.contiguous(), sign.contiguous()
    w = torch.empty_like(shift)
    getattr(load("shift"), "nsa_ps_" + _SUFFIX[w.dtype])(shift.data_ptr(), sign.data_ptr(), w.data_ptr(), w.numel(),
                                                         pmin, pmax, threshold, torch.get_num_threads())
    return w


def ps_weight_backward(shift: Tensor, weight: Tensor, grad: Tensor, pmin: int, pmax: int, need_shift: bool,
                       need_sign: bool) -> tuple[Tensor | None, Tensor | None]:
    """STE gradients of :func:`ps_weight`: ``(g * w * ln 2, g * 2^P)``."""
    shift, weight, grad = shift.contiguous(), weight.contiguous(), grad.contiguous()
    dshift = torch.empty_like(shift) if need_shift else None
    dsign = torch.empty_like(shift) if need_sign else None
    getattr(load("shift"), "nsa_ps_backward_" + _SUFFIX[shift.dtype])(
        shift.data_ptr(), weight.data_ptr(), grad.data_ptr(), 0 if dshift is None else dshift.data_ptr(),
        0 if dsign is None else dsign.data_ptr(), shift.numel(), pmin, pmax, torch.get_num_threads())
    return dshift, dsign


def _pools_args(flat: Tensor, lengths: Tensor, alpha: Tensor | None, index: Tensor | None, scale: float) -> tuple:
    """The arguments ``hws_cpu.cpp``'s two functions share: pools, run lengths, the optional transform, ``scale``."""
    if alpha is None:
        return flat.data_ptr(), lengths.numel(), lengths.data_ptr(), 0, 0, 0, scale
    return flat.data_ptr(), lengths.numel(), lengths.data_ptr(), alpha.data_ptr(), index.data_ptr(), alpha.shape[-1], \
        scale


def pools_kl_forward(flat: Tensor, lengths: Tensor, alpha: Tensor | None, index: Tensor | None,
                     scale: float) -> tuple[float, Tensor]:
    """The eq. (5) KL terms of the pools concatenated in ``flat`` (run lengths ``lengths``), the Laplace ones of
    ``flat * alpha[p * segments + index]`` when ``alpha`` (``[P, segments]``) is given; returns the summed KL and the
    per-pool statistics :func:`pools_kl_backward` needs. See ``hws_cpu.cpp``."""
    stats = torch.zeros(lengths.numel(), 6, dtype=torch.float64, device="cpu")
    out = ctypes.c_double()
    getattr(load("hws"), "nsa_kl_forward_" + _SUFFIX[flat.dtype])(
        *_pools_args(flat, lengths, alpha, index, scale), stats.data_ptr(), ctypes.byref(out))
    return out.value, stats


def pools_kl_backward(flat: Tensor, lengths: Tensor, alpha: Tensor | None, index: Tensor | None, scale: float,
                      stats: Tensor, grad: float) -> tuple[Tensor, Tensor | None]:
    """Gradients of ``grad *`` :func:`pools_kl_forward` with respect to ``flat`` and ``alpha``."""
    gw = torch.empty_like(flat)
    galpha = None if alpha is None else torch.zeros_like(alpha)
    getattr(load("hws"), "nsa_kl_backward_" + _SUFFIX[flat.dtype])(
        *_pools_args(flat, lengths, alpha, index, scale), stats.data_ptr(), grad, gw.data_ptr(),
        0 if galpha is None else galpha.data_ptr())
    return gw, galpha


def spacing_kl(x: Tensor, lengths: Tensor, alpha: Tensor | None, index: Tensor | None, scale: float,
               gaussian: bool, laplace: bool) -> tuple[float, Tensor, Tensor | None]:
    """The ``spacing`` estimator of the eq. (5) terms of the samples concatenated in ``x`` (run lengths ``lengths``):
    the Gaussian term of each sample when ``gaussian``, the Laplace one of ``x * alpha[p, index]`` (of ``x`` without
    ``alpha``, ``[P, segments]``) when ``laplace``. Returns the summed KL, its gradient with respect to ``x`` and to
    ``alpha``."""
    x = x.contiguous()
    kl = torch.zeros(lengths.numel(), dtype=torch.float64, device="cpu")
    gx = torch.empty_like(x)
    galpha = None if alpha is None else torch.zeros_like(alpha)
    getattr(load("hws"), "nsa_spacing_kl_" + _SUFFIX[x.dtype])(
        *_pools_args(x, lengths, alpha, index, scale), int(gaussian), int(laplace), torch.get_num_threads(),
        kl.data_ptr(), gx.data_ptr(), 0 if galpha is None else galpha.data_ptr())
    return float(kl.sum()), gx, galpha


def rank_segments(w: Tensor, segments: int) -> Tensor:
    """The run of ``T`` (eq. (6)) each element of the flat ``w`` falls in: ``r * segments // n`` for the element of
    rank ``r`` in descending order (a radix sort, see ``hws_cpu.cpp``)."""
    w = w.contiguous()
    out = torch.empty(w.numel(), dtype=torch.int64, device="cpu")  # even under torch.device("meta")
    getattr(load("hws"), "nsa_rank_segments_" + _SUFFIX[w.dtype])(w.data_ptr(), w.numel(), segments, out.data_ptr())
    return out
