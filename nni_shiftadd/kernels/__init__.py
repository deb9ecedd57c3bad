"""Adder kernels behind one interface, chosen by device.

Every backend provides ``l1mm(weight [G,O,K], cols [G,K,P]) -> [G,O,P]`` and
``htmm(weight, cols, grad [G,O,P]) -> [G,K,P]`` (see :mod:`.reference`) and ``supports(tensor)``.

``auto`` picks: CUDA tensors -> Triton; CPU float32/float64 -> the C++ kernel when it builds; anything
else -> the reference.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor

from . import cpu, reference, triton_adder

BACKENDS: dict[str, ModuleType] = {"reference": reference, "cpu": cpu, "triton": triton_adder}


def select(tensor: Tensor, backend: str = "auto") -> ModuleType:
    """The kernel module to use for ``tensor``: ``backend`` by name, or the fastest that supports it."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown value {backend!r}; expected one of "
                             f"{['auto', *BACKENDS]}")
        module = BACKENDS[backend]
        if module is not reference and not module.supports(tensor):
            raise ValueError(f"backend: {backend!r} cannot run on a {tensor.dtype} tensor on {tensor.device}")
        if module is cpu and cpu.load() is None:
            raise RuntimeError("backend: 'cpu' was requested but the C++ kernel could not be built")
        return module
    if tensor.device.type == "cuda" and triton_adder.available() and triton_adder.supports(tensor):
        return triton_adder
    if cpu.supports(tensor) and cpu.load() is not None:
        return cpu
    return reference
