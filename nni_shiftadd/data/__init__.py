"""Data layer: a small registry of datasets (``fashion_mnist``, ``digits``), timm transforms and seeded loaders."""
from __future__ import annotations

from .datasets import (
    FASHION_MNIST_SYSTEM_DIR,
    SPLITS,
    DatasetInfo,
    TensorImageDataset,
    cache_dir,
    check_data_dir,
    create_dataset,
    create_image_transform,
    create_loader,
    dataset_info,
    digits_split_indices,
    list_datasets,
    locate_fashion_mnist,
    prepare_fashion_mnist,
    register_dataset,
    resolve_input_size,
)

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
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
    "list_datasets",
    "locate_fashion_mnist",
    "prepare_fashion_mnist",
    "register_dataset",
    "resolve_input_size",
]
