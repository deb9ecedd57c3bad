"""nni-shiftadd: ShiftAddNAS for NNI 3.0.

A user's whole workflow from the top level (every name loads on first use):

- **operators** (paper eq. (2)): ``AdderConv2d`` / ``AdderLinear`` / ``AdderConv1d`` (Add, AdderNet) and
  ``ShiftConv2d`` / ``ShiftLinear`` (Shift, DeepShift), ``convert_model`` to turn any model's layers into them;
- **spaces**: ``load_space`` (a shipped name or a YAML), the supernets ``HybridCVSpace`` and ``HybridNLPSpace``
  (NNI ``ModelSpace``s), ``HybridChoice`` and ``oneshot_hooks`` for your own NNI spaces;
- **supernet training**: ``SupernetConfig`` / ``train_supernet`` (image), ``SuperTransformerConfig`` /
  ``train_supertransformer`` (translation, fairseq); ``recalibrate_batchnorm`` for frozen subnets;
- **search**: ``Evolution`` (the ask/tell core) with ``load_preset``, ``ShiftAddEvolutionStrategy`` (an NNI
  strategy for ``NasExperiment``), ``ShiftAddEvolutionTuner`` (the nnictl tuner, registered as
  ``ShiftAddEvolution``);
- **cost**: ``profile`` (op counts, Eyeriss energy and latency of any model), ``space_cost_fn`` (of a space's
  architectures);
- **retraining**: ``RetrainConfig`` / ``retrain``.

Importing a light part (the evolution tuner that NNI's dispatcher must start within 10 s, a config schema) does not
pull in torch, timm and NNI's NAS. The ``shiftadd_*`` timm models are registered by ``import nni_shiftadd.models``
(or by touching any operator name here).
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
#: Every public name and the module it lives in.
_LAZY = {**{name: "nni_shiftadd.ops" for name in _OPS},
         "HybridChoice": "nni_shiftadd.nn", "oneshot_hooks": "nni_shiftadd.nn",
         "recalibrate_batchnorm": "nni_shiftadd.nn",
         "load_space": "nni_shiftadd.space", "HybridCVSpace": "nni_shiftadd.space.cv",
         "HybridNLPSpace": "nni_shiftadd.space.nlp",
         "SupernetConfig": "nni_shiftadd.tasks.supernet", "train_supernet": "nni_shiftadd.tasks.supernet",
         "SuperTransformerConfig": "nni_shiftadd.tasks.supertransformer",
         "train_supertransformer": "nni_shiftadd.tasks.supertransformer",
         "Evolution": "nni_shiftadd.strategy", "load_preset": "nni_shiftadd.strategy",
         "ShiftAddEvolutionStrategy": "nni_shiftadd.strategy.nas", "ShiftAddEvolutionTuner": "nni_shiftadd.strategy.tuner",
         "profile": "nni_shiftadd.cost", "space_cost_fn": "nni_shiftadd.cost.metrics",
         "RetrainConfig": "nni_shiftadd.tasks.retrain", "retrain": "nni_shiftadd.tasks.retrain"}


def __getattr__(name: str):
    if name in _LAZY:
        if _LAZY[name] == "nni_shiftadd.ops":
            importlib.import_module("nni_shiftadd.models")  # the shiftadd_* models in timm's registry
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nni_shiftadd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [*_LAZY, "__version__"]
