"""ImageNet-format data: a user's ``train/<class>/*.png`` + ``val/<class>/...`` folder through timm's dataset
factory, RGB, DeiT augmentation for training; channels, size and classes checked against the space; the supernet
and the retrain run on it. The folder is generated: 3 classes of 20x20 images in a class colour plus noise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nni_shiftadd.config import load_yaml
from nni_shiftadd.data import DEIT_TRAIN, create_dataset, dataset_info, image_folder_classes

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("cat", "dog", "eel")
SPACE = """
name: rgb_tiny
input: {channels: 3, size: 16}
num_classes: 3
stem: {channels: 8, kernel: 3, stride: 1, pool: false}
stages:
  - {width: 8, resolution: 16, depths: [1], blocks: [conv, shift, add, attn], bottleneck: 2, mlp_ratio: 1.0,
     heads: 1}
  - {width: 16, resolution: 8, depths: [1], blocks: [conv, shift, add, attn], bottleneck: 2, mlp_ratio: 1.0,
     heads: 1}
classifier: {pool: avg, dropout: 0.0}
"""


def _folder(root: Path, per_class: dict[str, int], extra_val: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for c, name in enumerate(CLASSES + ((extra_val,) if extra_val and split == "val" else ())):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                colour = np.array([255 * (c == 0), 255 * (c == 1), 255 * (c >= 2)], dtype=float)
                pixels = np.clip(colour * 0.7 + rng.normal(0, 30, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _folder(tmp_path_factory.mktemp("imagenet_like"), {"train": 8, "val": 3})


def test_the_folder_reads_as_rgb_with_classes_from_its_subfolders(folder: Path) -> None:
    assert image_folder_classes(folder) == list(CLASSES)
    info = dataset_info("image_folder", folder)
    assert (info.num_classes, info.in_chans) == (3, 3)
    train = create_dataset("image_folder", "train", data_dir=folder, is_training=True, input_size=(3, 16, 16))
    val = create_dataset("image_folder", "val", data_dir=folder, input_size=16)
    test = create_dataset("image_folder", "test", data_dir=folder, input_size=16)  # no test/: the val folder
    assert (len(train), len(val), len(test)) == (24, 9, 9)
    image, label = train[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 0
    assert sorted({val[i][1] for i in range(len(val))}) == [0, 1, 2]
    # the DeiT recipe: RandAugment and random erasing in training, a deterministic centre crop in evaluation
    assert "RandAugment" in repr(train.transform) and "RandomErasing" in repr(train.transform)
    assert DEIT_TRAIN["auto_augment"].startswith("rand-m9")
    assert torch.equal(val[0][0], val[0][0])


def test_folder_errors_name_the_problem(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(ValueError, match="image_folder' needs the folder holding train"):
        create_dataset("image_folder", "train")
    with pytest.raises(ValueError, match="no 'train' folder"):
        create_dataset("image_folder", "train", data_dir=tmp_path)
    odd = _folder(tmp_path / "odd", {"train": 1, "val": 1}, extra_val="yak")
    with pytest.raises(ValueError, match=r"val/ holds classes that train/ lacks: \['yak'\]"):
        create_dataset("image_folder", "val", data_dir=odd)


def test_the_space_must_fit_the_folder(folder: Path, tmp_path: Path) -> None:
    from nni_shiftadd.tasks.supernet import SupernetConfig

    recipe = ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml"
    base = {"dataset": "image_folder", "data_dir": str(folder), "output": str(tmp_path / "o")}
    with pytest.raises(ValueError, match=r"image_folder has 3 channel\(s\) but space 'cv_small' takes 1"):
        load_yaml(SupernetConfig, recipe, {**base, "space": "cv_small"})
    imagenet = ROOT / "examples" / "imagenet" / "supernet_cv_imagenet.yaml"  # the shipped recipe
    with pytest.raises(ValueError, match=rf"image_folder at {folder} has 3 classes but space 'cv_imagenet' has "
                       r"1000"):
        load_yaml(SupernetConfig, imagenet, {"data_dir": str(folder), "output": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="field 'data_dir': dataset 'image_folder' needs the folder"):
        load_yaml(SupernetConfig, imagenet, {"output": str(tmp_path / "o")})


def test_supernet_and_retrain_train_on_the_folder(folder: Path, tmp_path: Path) -> None:
    from nni_shiftadd.tasks.retrain import RetrainConfig, retrain
    from nni_shiftadd.tasks.supernet import SupernetConfig, train_supernet

    space = tmp_path / "rgb_tiny.yaml"
    space.write_text(SPACE)
    common = {"space": str(space), "dataset": "image_folder", "data_dir": str(folder), "epochs": 1,
              "warmup_epochs": 0, "batch_size": 4, "limit_train_batches": 3,
              "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1}  # DeiT's batch mixing
    result = train_supernet(load_yaml(SupernetConfig, ROOT / "examples" / "fashion_mnist" / "supernet_cv_small.yaml",
                                      {**common, "eval_archs": 0, "output": str(tmp_path / "supernet")}))
    assert result["global_step"] == 3
    metrics = retrain(load_yaml(RetrainConfig, ROOT / "examples" / "fashion_mnist" / "retrain_cv_small.yaml",
                                {**common, "arch": "all_conv", "quant_bits": None, "output": str(tmp_path / "r")}))
    assert metrics["train_steps"] == 3 and 0 <= metrics["test_acc"] <= 1 and metrics["cost"]["energy_mJ"] > 0
