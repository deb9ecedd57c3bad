"""nni-shiftadd: ShiftAddNAS for NNI 3.0.

Hybrid operators that mix multiplication-based and multiplication-free computation (paper eq. (2)):
``AdderConv2d`` / ``AdderLinear`` / ``AdderConv1d`` (Add, AdderNet) and ``ShiftConv2d`` / ``ShiftLinear``
(Shift, DeepShift), and ``convert_model`` to turn any model's layers into them.
"""
from . import models  # noqa: F401  (registers the shiftadd_* models in timm's registry)
from .ops import (AdderConv1d, AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear, adder_conv1d, adder_conv2d,
                  adder_linear, convert_model)

__version__ = "0.1.0"

_LAZY = {"HybridChoice": "nni_shiftadd.nn", "oneshot_hooks": "nni_shiftadd.nn", "profile": "nni_shiftadd.cost"}


def __getattr__(name: str):  # the NNI-facing parts load on first use: importing nni takes seconds
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_shiftadd' has no attribute {name!r}")


__all__ = ["HybridChoice", "oneshot_hooks", "profile", "AdderConv1d", "AdderConv2d", "AdderLinear", "ShiftConv2d", "ShiftLinear", "__version__",
           "adder_conv1d", "adder_conv2d", "adder_linear", "convert_model"]
