"""nni-shiftadd: ShiftAddNAS for NNI 3.0.

Hybrid operators that mix multiplication-based and multiplication-free computation (paper eq. (2)):
``AdderConv2d`` / ``AdderLinear`` / ``AdderConv1d`` (Add, AdderNet) and ``ShiftConv2d`` / ``ShiftLinear``
(Shift, DeepShift), and ``convert_model`` to turn any model's layers into them; ``HybridChoice`` and
``oneshot_hooks`` for NNI model spaces; ``recalibrate_batchnorm`` for subnets frozen from a supernet; ``profile``
for op counts, energy and latency.

Every name loads on first use, so that importing a light part (the evolution tuner that NNI's dispatcher must
start within 10 s, a config schema) does not pull in torch, timm and NNI's NAS. The ``shiftadd_*`` timm models
are registered by ``import nni_shiftadd.models`` (or by touching any operator name here).
"""
import importlib
import warnings

__version__ = "0.1.0"

# NNI 3.0 warns, at import and for every run, about each torch class newer than itself ("<class
# 'torch.nn.parameter.Buffer'> is found to be not a nn.Module, which is unexpected"); with torch 2.14 that is
# harmless noise before every command's own output.
warnings.filterwarnings("ignore", message=r"<class '.*'> is found to be not a nn\.Module, which is unexpected",
                        category=RuntimeWarning)

_OPS = ("AdderConv1d", "AdderConv2d", "AdderLinear", "ShiftConv2d", "ShiftLinear", "adder_conv1d", "adder_conv2d",
        "adder_linear", "convert_model")
_LAZY = {**{name: "nni_shiftadd.ops" for name in _OPS}, "HybridChoice": "nni_shiftadd.nn",
         "oneshot_hooks": "nni_shiftadd.nn", "profile": "nni_shiftadd.cost",
         "recalibrate_batchnorm": "nni_shiftadd.nn"}


def __getattr__(name: str):
    if name in _LAZY:
        importlib.import_module("nni_shiftadd.models")  # the shiftadd_* models in timm's registry
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_shiftadd' has no attribute {name!r}")


__all__ = ["HybridChoice", "oneshot_hooks", "profile", "recalibrate_batchnorm", *_OPS, "__version__"]
