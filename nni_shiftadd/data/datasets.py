"""Datasets behind one registry: ``create_dataset(name, split)``, timm style.

``fashion_mnist`` reads the Debian package ``dataset-fashion-mnist`` (nothing is downloaded); its
``.gz`` files are decompressed once into ``$NNI_SHIFTADD_CACHE/data`` (default
``~/.cache/nni_shiftadd/data``), a root that ``torchvision.datasets.FashionMNIST`` reads with
``download=False`` into memory; its training augmentation (timm's random resized crop and flip) runs a batch at
a time (:mod:`.augment`), and a ``transform`` of one's own gets torchvision's PIL images instead. ``digits`` is
scikit-learn's bundled 8x8 digits set, small enough for fast tests.
``image_folder`` reads a user's ImageNet-style folder (``DIR/train/<class>/*.jpg``, ``DIR/val/<class>/...``, an
optional ``DIR/test``) through timm's dataset factory, RGB, with the DeiT augmentation recipe for training; its
class count comes from the folder (``dataset_info("image_folder", data_dir)``).

Every dataset yields ``(image [C,H,W] float tensor, int label)``; splits are ``train``/``val``/``test``
and always the same samples.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import DataLoader, Dataset, Subset

from ..cache import cache_root
from .augment import BatchAugment

InputSize = Union[int, tuple[int, int], tuple[int, int, int]]
Transform = Callable[[Any], Any]
Factory = Callable[..., Dataset]

SPLITS = ("train", "val", "test")

#: Where ``apt-get install -y dataset-fashion-mnist`` puts the files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Uncompressed IDX files torchvision's ``FashionMNIST`` needs under ``root/FashionMNIST/raw``, with
#: their exact sizes (16- or 8-byte header + one byte per pixel or label).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}
FASHION_MNIST_NUM_TRAIN = 55_000  # the rest of the official 60k train set is "val"
#: The light training augmentation of the small image datasets: random resized crops of 80-100% of the area, flips.
TRAIN_CROP_SCALE = (0.8, 1.0)
TRAIN_HFLIP = 0.5
DIGITS_SPLIT_SEED = 0
DIGITS_FRACTIONS = (0.70, 0.15)  # train, val; test is the rest


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    num_classes: int
    in_chans: int
    input_size: tuple[int, int, int]  # default (C, H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = SPLITS
    #: where the data comes from when it reads no data directory (``data_dir`` must then be left unset)
    bundled_with: str | None = None


_REGISTRY: dict[str, tuple[DatasetInfo, Factory]] = {}


def register_dataset(info: DatasetInfo) -> Callable[[Factory], Factory]:
    """Decorator adding ``factory(split, *, data_dir, is_training, input_size, transform)`` as ``info.name``."""

    def add(factory: Factory) -> Factory:
        _REGISTRY[info.name] = (info, factory)
        return factory

    return add


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`, sorted."""
    return sorted(_REGISTRY)


def dataset_info(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``; for ``image_folder`` with ``data_dir``, its class count is that
    of the folder's ``train`` split."""
    if name not in _REGISTRY:
        raise ValueError(f"dataset: unknown name {name!r}; expected one of {list_datasets()}")
    info = _REGISTRY[name][0]
    if name == IMAGE_FOLDER and data_dir is not None:
        return dataclasses.replace(info, num_classes=len(image_folder_classes(data_dir)))
    return info


def resolve_input_size(name: str, input_size: InputSize | None = None) -> tuple[int, int, int]:
    """``input_size`` (``S``, ``(H, W)`` or ``(C, H, W)``; ``None`` = the dataset's default) as ``(C, H, W)``."""
    info = dataset_info(name)
    if input_size is None:
        return info.input_size
    size = (input_size,) if isinstance(input_size, int) else tuple(int(s) for s in input_size)
    if len(size) == 1:
        size = (info.in_chans, size[0], size[0])
    elif len(size) == 2:
        size = (info.in_chans, *size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size: expected S, (H, W) or (C, H, W) of positive ints, got {input_size!r}")
    if size[0] != info.in_chans:
        raise ValueError(f"input_size: {name} has {info.in_chans} channel(s), got {input_size!r}")
    return size  # type: ignore[return-value]


def check_data_dir(name: str, data_dir: str | os.PathLike[str] | None, field: str = "field 'data_dir'") -> None:
    """Raise ``ValueError`` naming ``field`` (a recipe field or a flag) when ``data_dir`` is given for a dataset
    that reads none, or is not a directory."""
    info = dataset_info(name)
    if data_dir is None:
        if name == IMAGE_FOLDER:
            raise ValueError(f"{field}: dataset 'image_folder' needs the folder holding train/<class>/*.jpg and "
                             "val/<class>/*.jpg (ImageNet layout)")
        return
    if info.bundled_with is not None:
        raise ValueError(f"{field}: dataset {name!r} ships with {info.bundled_with} and reads no data directory, got "
                         f"{str(data_dir)!r}; leave it unset")
    if not Path(data_dir).expanduser().is_dir():
        raise ValueError(f"{field}: {str(data_dir)!r} is not a directory (it should hold the {name} files; check "
                         f"with `nni-shiftadd data {name} --data-dir DIR`)")
    if name == IMAGE_FOLDER:
        try:
            image_folder_classes(data_dir)
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"{field}: {err}") from None


def create_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    is_training: bool = False,
    input_size: InputSize | None = None,
    transform: Transform | None = None,
) -> Dataset:
    """Split ``split`` of dataset ``name``, yielding ``(image [C,H,W], label)``.

    ``is_training`` turns on augmentation (where the dataset has any); ``input_size`` defaults to the
    dataset's own; ``transform`` replaces the default per-sample transform.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"split: unknown value {split!r} for {name}; expected one of {list(info.splits)}")
    check_data_dir(name, data_dir)
    factory = _REGISTRY[name][1]
    return factory(split, data_dir=data_dir, is_training=is_training,
                   input_size=resolve_input_size(name, input_size), transform=transform)


def create_image_transform(
    name: str,
    *,
    is_training: bool,
    input_size: InputSize | None = None,
    interpolation: str = "bilinear",
) -> Transform:
    """timm's transform for a PIL-image dataset: PIL image -> normalised ``[C,H,W]`` tensor.

    Training adds light augmentation: random resized crop (scale 0.8-1) and horizontal flip; no colour
    jitter or auto-augment. Evaluation resizes to ``input_size`` (crop_pct 1, no image lost).
    timm only uses the last two entries of ``input_size`` and normalises with as many channels as
    ``mean``/``std`` have, so one-channel ``'L'`` images need no special handling.
    """
    info = dataset_info(name)
    return create_transform(
        input_size=resolve_input_size(name, input_size),
        is_training=is_training,
        scale=TRAIN_CROP_SCALE,
        hflip=TRAIN_HFLIP,
        color_jitter=None,  # type: ignore[arg-type]  # timm's own way to turn it off
        auto_augment=None,
        interpolation=interpolation,
        mean=info.mean,
        std=info.std,
        crop_pct=1.0,
    )


def create_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    is_training: bool,
    num_workers: int = 0,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` whose order depends only on ``seed``; training shuffles and drops the last batch.

    Workers' ``torch``/``random`` (and here ``numpy``) RNGs are seeded from the same generator, so
    augmentation is reproducible too when ``num_workers > 0``; with ``num_workers=0`` it uses the
    process's global RNGs.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=is_training,
        drop_last=is_training,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_numpy_in_worker if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
    )


def _seed_numpy_in_worker(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2**32)


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST

def cache_dir() -> Path:
    """Where prepared data lives: ``$NNI_SHIFTADD_CACHE/data`` or ``~/.cache/nni_shiftadd/data``."""
    return cache_root() / "data"


def fashion_mnist_deb_dir() -> Path:
    """Where the no-root install (``apt-get download`` + ``dpkg-deb -x``) is looked for."""
    return cache_dir() / "deb"


def _candidate_dirs(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_dir is not None:
        bases = [Path(data_dir).expanduser()]  # explicit: no silent fallback to other copies
    else:
        bases = [Path(p).expanduser() for p in [os.environ.get("NNI_SHIFTADD_DATA")] if p]
        bases += [FASHION_MNIST_SYSTEM_DIR, fashion_mnist_deb_dir() / "usr/share/datasets/fashion-mnist",
                  cache_dir()]
    dirs: list[Path] = []
    for base in bases:
        for d in (base, base / "FashionMNIST" / "raw"):
            if d not in dirs:
                dirs.append(d)
    return dirs


def _raw_ok(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == FASHION_MNIST_FILES[path.name]


def _has_all(d: Path) -> bool:
    return all(_raw_ok(d / f) or (d / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES)


def _is_torchvision_raw(d: Path) -> bool:
    return d.name == "raw" and d.parent.name == "FashionMNIST" and all(
        _raw_ok(d / f) for f in FASHION_MNIST_FILES)


def fashion_mnist_missing_message(tried: list[Path]) -> str:
    """The error text for missing Fashion-MNIST: every path tried and how to install the data."""
    deb = fashion_mnist_deb_dir()
    names = ", ".join(f"{f}[.gz]" for f in FASHION_MNIST_FILES)
    return "\n".join([
        f"Fashion-MNIST not found: none of these directories holds all of {names}:",
        *(f"  {p}" for p in tried),
        "Install it (nothing is downloaded at run time) with one of:",
        "  sudo apt-get install -y dataset-fashion-mnist",
        f'  mkdir -p {deb} && cd "$(mktemp -d)" && apt-get download dataset-fashion-mnist && '
        f"dpkg-deb -x dataset-fashion-mnist_*.deb {deb}    # without root",
        "or point --data-dir (data_dir=...) or $NNI_SHIFTADD_DATA at a directory holding those files "
        "(or a torchvision root with FashionMNIST/raw/).",
    ])


def locate_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding the four Fashion-MNIST IDX files (each plain or ``.gz``); writes nothing.

    Tried in order: ``data_dir`` (only it, when given), else ``$NNI_SHIFTADD_DATA``,
    ``/usr/share/datasets/fashion-mnist``, the no-root install under :func:`fashion_mnist_deb_dir`,
    and the prepared cache; each also as a torchvision root (``DIR/FashionMNIST/raw``).
    Raises ``FileNotFoundError`` naming every path tried and the install commands.
    """
    tried = _candidate_dirs(data_dir)
    for d in tried:
        if _has_all(d):
            return d
    raise FileNotFoundError(fashion_mnist_missing_message(tried))


def prepare_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """A torchvision root for ``FashionMNIST(root, download=False)``, decompressing into the cache once.

    A directory found by :func:`locate_fashion_mnist` that already is such a root is returned as is.
    """
    src = locate_fashion_mnist(data_dir)
    if _is_torchvision_raw(src):
        return src.parent.parent
    root = cache_dir()
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FASHION_MNIST_FILES:
        if not _raw_ok(raw / name):
            _materialise(src, name, raw / name)
    return root


def _materialise(src: Path, name: str, dst: Path) -> None:
    """Write ``src/name`` (copied) or ``src/name.gz`` (decompressed) to ``dst`` atomically."""
    plain = _raw_ok(src / name)
    source = src / name if plain else src / f"{name}.gz"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, (open(source, "rb") if plain else gzip.open(source, "rb")) as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        size = os.path.getsize(tmp)
        if size != FASHION_MNIST_FILES[name]:
            raise ValueError(f"{source}: decompresses to {size} bytes, expected {FASHION_MNIST_FILES[name]}; "
                             "the file is damaged or not Fashion-MNIST")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@lru_cache(maxsize=2)
def _fashion_mnist_arrays(root: str, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One file's images ``[N,1,28,28]`` (uint8) and labels, read once per process: the train and val splits (and
    a trial's evaluation and calibration sets) come from the same file."""
    from torchvision.datasets import FashionMNIST

    raw = FashionMNIST(root, train=train, download=False)
    return raw.data.unsqueeze(1), raw.targets


@register_dataset(DatasetInfo("fashion_mnist", num_classes=10, in_chans=1, input_size=(1, 28, 28),
                              mean=(0.2860,), std=(0.3530,)))
def _fashion_mnist(
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None,
    is_training: bool,
    input_size: tuple[int, int, int],
    transform: Transform | None,
) -> Dataset:
    from torchvision.datasets import FashionMNIST

    root = prepare_fashion_mnist(data_dir)
    if transform is None:  # in memory, augmented a batch at a time (timm's transform, batched)
        images, targets = _fashion_mnist_arrays(str(root), split != "test")
        info = dataset_info("fashion_mnist")
        if tuple(input_size[1:]) != tuple(images.shape[-2:]):
            images = F.interpolate(images.float(), size=input_size[1:], mode="bilinear", align_corners=False,
                                   antialias=True).round_().clamp_(0, 255).to(torch.uint8)
        augment = BatchAugment(info.mean, info.std, is_training=is_training, scale=TRAIN_CROP_SCALE,
                               hflip=TRAIN_HFLIP)
        dataset: Dataset = TensorImageDataset(images, targets, batch_transform=augment)
    else:
        dataset = FashionMNIST(str(root), train=split != "test", transform=transform, download=False)
    if split == "train":
        return Subset(dataset, range(FASHION_MNIST_NUM_TRAIN))
    if split == "val":
        return Subset(dataset, range(FASHION_MNIST_NUM_TRAIN, len(dataset)))
    return dataset


# --------------------------------------------------------------------------------------------------
# scikit-learn digits

class TensorImageDataset(Dataset):
    """In-memory images ``[N,C,H,W]`` and labels ``[N]``, yielding ``(image, int label)``.

    ``batch_transform`` maps a stack of images at once (:class:`~.augment.BatchAugment`): the ``DataLoader``
    fetches a whole batch through ``__getitems__``, so it runs once per batch; ``transform`` then maps each image.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform: Transform | None = None,
                 batch_transform: Transform | None = None) -> None:
        if len(images) != len(targets):
            raise ValueError(f"images and targets differ in length: {len(images)} vs {len(targets)}")
        self.images = images
        self.targets = targets
        self.transform = transform
        self.batch_transform = batch_transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        if self.batch_transform is not None:
            images = self.batch_transform(images)
        samples = [self.transform(image) for image in images] if self.transform is not None else images.unbind(0)
        return list(zip(samples, self.targets[index].tolist()))


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # [N,1,8,8] in [0,1]
    return images, torch.from_numpy(digits.target).long()


def digits_split_indices(split: str) -> torch.Tensor:
    """The sample indices of ``split`` in ``load_digits()``: a fixed permutation cut 70/15/15."""
    n = len(_digits_arrays()[1])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    n_train, n_val = (round(f * n) for f in DIGITS_FRACTIONS)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
    lo, hi = bounds[split]
    return order[lo:hi]


@register_dataset(DatasetInfo("digits", num_classes=10, in_chans=1, input_size=(1, 8, 8),
                              mean=(0.3053,), std=(0.3760,), bundled_with="scikit-learn"))
def _digits(
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None,
    is_training: bool,
    input_size: tuple[int, int, int],
    transform: Transform | None,
) -> Dataset:
    # data_dir is None (checked: the data ships with scikit-learn); no augmentation, so is_training is unused.
    info = dataset_info("digits")
    images, targets = _digits_arrays()
    index = digits_split_indices(split)
    images, targets = images[index], targets[index]
    if input_size[1:] != images.shape[-2:]:
        images = F.interpolate(images, size=input_size[1:], mode="bilinear", align_corners=False,
                               antialias=True).clamp_(0.0, 1.0)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return TensorImageDataset((images - mean) / std, targets, transform)


# --------------------------------------------------------------------------------------------------
# A user's ImageNet-style folder

IMAGE_FOLDER = "image_folder"
#: The DeiT training augmentation (Touvron et al. 2021, timm's ``deit_*`` recipe): RandAugment m9, colour jitter
#: 0.3, bicubic random-resized crops, random erasing 0.25; evaluation resizes to size / 0.875 and centre-crops.
DEIT_TRAIN = dict(auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.3, interpolation="bicubic", re_prob=0.25,
                  re_mode="pixel", re_count=1)
DEIT_EVAL = dict(interpolation="bicubic", crop_pct=0.875)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def _split_dir(data_dir: str | os.PathLike[str], split: str) -> Path:
    root = Path(data_dir).expanduser()
    folder = root / split
    if split == "test" and not folder.is_dir():
        folder = root / "val"  # ImageNet has no labelled test split: its val folder is the test set
    if not folder.is_dir():
        raise FileNotFoundError(f"image_folder: no {split!r} folder in {str(root)!r}; expected {root}/train/<class>/"
                                f"*.jpg and {root}/val/<class>/*.jpg (ImageNet layout)")
    return folder


def _classes_in(folder: Path) -> list[str]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"image_folder: {str(folder)!r} holds no class folders (<class>/*.jpg)")
    return classes


def image_folder_classes(data_dir: str | os.PathLike[str]) -> list[str]:
    """The class names of an ImageNet-style folder (its ``train`` subfolders, sorted; label ``i`` is the ``i``-th).
    ``ValueError`` when ``val`` holds a class that ``train`` lacks."""
    classes = _classes_in(_split_dir(data_dir, "train"))
    for split in ("val", "test"):
        try:
            extra = sorted(set(_classes_in(_split_dir(data_dir, split))) - set(classes))
        except FileNotFoundError:
            continue
        if extra:
            raise ValueError(f"image_folder: {split}/ holds classes that train/ lacks: {extra[:5]}")
    return classes


@register_dataset(DatasetInfo(IMAGE_FOLDER, num_classes=0, in_chans=3, input_size=(3, 224, 224),
                              mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD))
def _image_folder(
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None,
    is_training: bool,
    input_size: tuple[int, int, int],
    transform: Transform | None,
) -> Dataset:
    from timm.data import create_dataset as timm_dataset

    if data_dir is None:
        raise ValueError("field 'data_dir': image_folder needs the folder holding train/ and val/ (ImageNet layout)")
    folder = _split_dir(data_dir, split)
    class_map = {name: i for i, name in enumerate(image_folder_classes(data_dir))}
    if transform is None:
        info = dataset_info(IMAGE_FOLDER)
        recipe = DEIT_TRAIN if is_training else DEIT_EVAL
        transform = create_transform(input_size=input_size, is_training=is_training, mean=info.mean, std=info.std,
                                     **recipe)
    dataset = timm_dataset("", root=str(folder), split=split, search_split=False, class_map=class_map,
                           is_training=is_training, input_img_mode="RGB")
    dataset.transform = transform
    if len(dataset) == 0:
        raise FileNotFoundError(f"image_folder: no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}")
    return dataset
