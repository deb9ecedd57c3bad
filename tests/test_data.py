"""Tests of the data layer: registry, digits, Fashion-MNIST preparation and loaders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import FashionMNIST

from nni_shiftadd import data
from nni_shiftadd.data import datasets as ds_mod

INSTALL = "sudo apt-get install -y dataset-fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real cache; ignore a user's NNI_SHIFTADD_DATA."""
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NNI_SHIFTADD_DATA", raising=False)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The installed Fashion-MNIST source, decompressed once into a temporary cache."""
    try:
        source = data.locate_fashion_mnist()  # the real environment: system package, $NNI_SHIFTADD_DATA, ...
    except FileNotFoundError:
        pytest.skip(f"Fashion-MNIST is not installed; install it with `{INSTALL}`")
    cache = tmp_path_factory.mktemp("fashion_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NNI_SHIFTADD_CACHE", str(cache))
        root = data.prepare_fashion_mnist(source)
    return {"source": source, "cache": cache, "root": root}


# -- registry ---------------------------------------------------------------------------------------

def test_registry() -> None:
    assert {"fashion_mnist", "digits"} <= set(data.list_datasets())
    info = data.dataset_info("fashion_mnist")
    assert (info.num_classes, info.in_chans, info.input_size) == (10, 1, (1, 28, 28))
    assert info.mean == (0.2860,) and info.std == (0.3530,)
    assert data.dataset_info("digits").input_size == (1, 8, 8)
    with pytest.raises(ValueError, match="unknown name"):
        data.dataset_info("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.create_dataset("digits", "training")


def test_resolve_input_size() -> None:
    assert data.resolve_input_size("fashion_mnist") == (1, 28, 28)
    assert data.resolve_input_size("fashion_mnist", 32) == (1, 32, 32)
    assert data.resolve_input_size("fashion_mnist", (24, 20)) == (1, 24, 20)
    assert data.resolve_input_size("fashion_mnist", (1, 16, 16)) == (1, 16, 16)
    with pytest.raises(ValueError, match="channel"):
        data.resolve_input_size("fashion_mnist", (3, 28, 28))


def test_transform_handles_grey_pil_images() -> None:
    image = Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28), mode="L")
    for is_training in (False, True):
        out = data.create_image_transform("fashion_mnist", is_training=is_training, input_size=20)(image)
        assert out.shape == (1, 20, 20) and out.dtype == torch.float32


# -- digits -----------------------------------------------------------------------------------------

def test_digits_shapes_and_deterministic_splits() -> None:
    splits = {s: data.create_dataset("digits", s) for s in data.SPLITS}
    assert sum(len(d) for d in splits.values()) == 1797
    assert [len(splits[s]) for s in data.SPLITS] == [1258, 270, 269]
    index = {s: set(data.digits_split_indices(s).tolist()) for s in data.SPLITS}
    assert not (index["train"] & index["val"] or index["train"] & index["test"] or index["val"] & index["test"])
    again = data.create_dataset("digits", "val")
    assert torch.equal(again.images, splits["val"].images) and torch.equal(again.targets, splits["val"].targets)

    image, label = splits["train"][0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32
    assert isinstance(label, int) and 0 <= label < 10
    train = splits["train"].images
    assert abs(train.mean().item()) < 0.05 and abs(train.std().item() - 1) < 0.05


def test_digits_input_size() -> None:
    image, _ = data.create_dataset("digits", "test", input_size=16)[0]
    assert image.shape == (1, 16, 16)


def test_loader_is_seeded() -> None:
    dataset = data.create_dataset("digits", "train")

    def labels(seed: int) -> list[int]:
        loader = data.create_loader(dataset, 100, is_training=True, seed=seed)
        return [y for _, batch in loader for y in batch.tolist()]

    assert labels(0) == labels(0)
    assert labels(0) != labels(1)
    assert len(data.create_loader(dataset, 100, is_training=True)) == len(dataset) // 100  # drop_last

    loader = data.create_loader(dataset, 100, is_training=False)
    assert len(loader) == -(-len(dataset) // 100)
    x, y = next(iter(loader))
    assert torch.equal(y, dataset.targets[:100]) and x.shape == (100, 1, 8, 8)


# -- Fashion-MNIST: missing data (never skipped) ----------------------------------------------------

def _assert_install_hints(message: str) -> None:
    assert INSTALL in message
    assert "apt-get download dataset-fashion-mnist" in message and "dpkg-deb -x" in message
    assert str(data.cache_dir() / "deb") in message
    assert "--data-dir" in message


def test_missing_data_dir_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        data.create_dataset("fashion_mnist", "train", data_dir=empty)
    message = str(err.value)
    assert str(empty) in message and str(empty / "FashionMNIST" / "raw") in message
    _assert_install_hints(message)


def test_missing_data_no_fallback_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("NNI_SHIFTADD_DATA", str(empty))
    monkeypatch.setattr(ds_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no_system_copy")
    with pytest.raises(FileNotFoundError) as err:
        data.locate_fashion_mnist()
    message = str(err.value)
    for tried in (empty, tmp_path / "no_system_copy",
                  data.cache_dir() / "deb/usr/share/datasets/fashion-mnist", data.cache_dir()):
        assert f"  {tried}\n" in message
    _assert_install_hints(message)


# -- Fashion-MNIST: installed data ------------------------------------------------------------------

def test_fashion_cache_prepared_once(fashion: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NNI_SHIFTADD_CACHE", str(fashion["cache"]))
    root = fashion["root"]
    raw = root / "FashionMNIST" / "raw"
    assert root == data.cache_dir() or root == fashion["source"].parent.parent
    assert sorted(p.name for p in raw.iterdir() if not p.name.endswith(".gz")) == sorted(ds_mod.FASHION_MNIST_FILES)
    stamps = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    assert data.prepare_fashion_mnist(fashion["source"]) == root
    assert data.prepare_fashion_mnist(root) == root  # a torchvision root is used as is
    assert data.prepare_fashion_mnist(raw) == root
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == stamps  # nothing rewritten


def test_fashion_splits(fashion: dict[str, Path]) -> None:
    train = data.create_dataset("fashion_mnist", "train", data_dir=fashion["root"], is_training=True)
    val = data.create_dataset("fashion_mnist", "val", data_dir=fashion["root"])
    test = data.create_dataset("fashion_mnist", "test", data_dir=fashion["root"])
    assert (len(train), len(val), len(test)) == (55_000, 5_000, 10_000)
    assert isinstance(train, Subset) and train.indices == range(55_000)
    assert isinstance(val, Subset) and val.indices == range(55_000, 60_000)
    raw_train = FashionMNIST(str(fashion["root"]), train=True)
    raw_test = FashionMNIST(str(fashion["root"]), train=False)
    assert torch.equal(val.dataset.images[55_000:, 0], raw_train.data[55_000:])  # val: the train file's last 5,000
    assert torch.equal(test.images[:, 0], raw_test.data) and torch.equal(test.targets, raw_test.targets)


def test_fashion_batches_are_fetched_whole(fashion: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader fetches a batch with one ``__getitems__`` call: the augmentation runs once per batch."""
    train = data.create_dataset("fashion_mnist", "train", data_dir=fashion["root"], is_training=True)
    calls: list[int] = []
    augment = train.dataset.batch_transform
    monkeypatch.setattr(train.dataset, "batch_transform", lambda images: calls.append(len(images)) or augment(images))
    loader = iter(data.create_loader(train, 64, is_training=True, seed=0))
    next(loader), next(loader)
    assert calls == [64, 64]


def test_fashion_own_transform_gets_pil_images(fashion: dict[str, Path]) -> None:
    seen: list[type] = []
    own = data.create_dataset("fashion_mnist", "test", data_dir=fashion["root"],
                              transform=lambda image: seen.append(type(image)) or torch.zeros(1, 4, 4))
    image, label = own[3]
    assert seen == [Image.Image] and image.shape == (1, 4, 4) and isinstance(label, int)


def test_fashion_train_batch(fashion: dict[str, Path]) -> None:
    train = data.create_dataset("fashion_mnist", "train", data_dir=fashion["root"], is_training=True)
    x, y = next(iter(data.create_loader(train, 64, is_training=True, seed=0)))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() <= 9
    _, y_again = next(iter(data.create_loader(train, 64, is_training=True, seed=0)))
    assert torch.equal(y, y_again)


def test_fashion_test_batch_is_normalised(fashion: dict[str, Path]) -> None:
    test = data.create_dataset("fashion_mnist", "test", data_dir=fashion["root"])
    x, y = next(iter(data.create_loader(test, 1000, is_training=False)))
    assert x.shape == (1000, 1, 28, 28)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    assert set(y.tolist()) == set(range(10))


def test_fashion_input_size(fashion: dict[str, Path]) -> None:
    for split, is_training in (("train", True), ("test", False)):
        image, _ = data.create_dataset("fashion_mnist", split, data_dir=fashion["root"],
                                       is_training=is_training, input_size=32)[0]
        assert image.shape == (1, 32, 32)
