"""Tasks: image classification (timm data and models, Lightning training), one-shot supernet training and
retraining, and translation (the fairseq plugin in :mod:`.translation`).

The names below load on first use: importing a translation module (``nni_shiftadd.tasks.translation``, which a
translation trial needs) must not pull in Lightning, which takes seconds to import."""
import importlib
from typing import Any

_LAZY = {"ClassificationTask": "classification", "TrainConfig": "classification", "build_model": "classification",
         "train": "classification"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClassificationTask", "TrainConfig", "build_model", "train"]
