"""Data layer: a small registry of datasets (``fashion_mnist``, ``digits``, a user's ``image_folder``), timm transforms and seeded loaders
(:mod:`.datasets`), and the translation pairs (:mod:`.translation`).

The names below load on first use, so that the translation modules do not pull in timm and torchvision."""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DEIT_EVAL",
    "DEIT_TRAIN",
    "FASHION_MNIST_SYSTEM_DIR",
    "IMAGE_FOLDER",
    "SPLITS",
    "DatasetInfo",
    "TensorImageDataset",
    "cache_dir",
    "check_data_dir",
    "create_dataset",
    "create_image_transform",
    "create_loader",
    "dataset_info",
    "digits_split_indices",
    "image_folder_classes",
    "list_datasets",
    "locate_fashion_mnist",
    "prepare_fashion_mnist",
    "register_dataset",
    "resolve_input_size",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.datasets"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
