"""The batched augmentation against timm's per-image transform it replaces: same crop distribution, same pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation

from nni_shiftadd.data.augment import BatchAugment


def _images(n: int = 4, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(n, 1, size, size, generator=g), 3, 1, 1)
    return (smooth * 255).round().to(torch.uint8)


def test_crop_boxes_follow_timms_distribution() -> None:
    n = 20_000
    torch.manual_seed(0)
    ours = BatchAugment((0.0,), (1.0,), is_training=True).crop_boxes(n, 28, 28).float()
    timm = RandomResizedCropAndInterpolation(28, scale=(0.8, 1.0))
    blank = Image.new("L", (28, 28))
    theirs = torch.tensor([timm.get_params(blank, timm.scale, timm.ratio) for _ in range(n)]).float()
    assert ours.min() >= 0 and (ours[:, 0] + ours[:, 2]).max() <= 28 and (ours[:, 1] + ours[:, 3]).max() <= 28
    # top, left, h, w: means and spreads within a few standard errors of timm's draws
    assert torch.allclose(ours.mean(0), theirs.mean(0), atol=0.06)
    assert torch.allclose(ours.std(0), theirs.std(0), rtol=0.05)
    area_ours, area_theirs = (ours[:, 2] * ours[:, 3]).mean() / 784, (theirs[:, 2] * theirs[:, 3]).mean() / 784
    assert abs(area_ours - area_theirs) < 0.003


@pytest.mark.parametrize("flip", [False, True])
def test_pixels_match_pil_resized_crop(flip: bool) -> None:
    """Each crop equals PIL's bilinear resize of the same box (timm's resample) to within PIL's uint8 rounding."""
    images = _images()
    boxes = torch.tensor([[1, 2, 25, 26], [0, 0, 28, 28], [3, 1, 24, 27], [2, 2, 26, 24]])
    augment = BatchAugment((0.0,), (1.0,), is_training=True, hflip=float(flip))
    augment.crop_boxes = lambda n, h, w: boxes  # type: ignore[method-assign]
    out = augment(images) * 255
    for k, (top, left, h, w) in enumerate(boxes.tolist()):
        pil = Image.fromarray(images[k, 0].numpy()).resize((28, 28), Image.BILINEAR, box=(left, top, left + w, top + h))
        if flip:
            pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
        reference = torch.from_numpy(np.array(pil)).float()
        assert (out[k, 0] - reference).abs().max() <= 1.0 + 1e-3  # one grey level, and float32 rounding of x 255


def test_evaluation_only_normalises() -> None:
    images = _images()
    out = BatchAugment((0.25,), (0.5,), is_training=False)(images)
    assert torch.allclose(out, (images.float() / 255 - 0.25) / 0.5)


def test_same_seed_same_batch() -> None:
    augment = BatchAugment((0.5,), (0.5,), is_training=True)
    torch.manual_seed(3)
    first = augment(_images(16))
    torch.manual_seed(3)
    assert torch.equal(first, augment(_images(16)))
    assert not torch.equal(first, augment(_images(16)))


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="scale: got"):
        BatchAugment((0.5,), (0.5,), is_training=True, scale=(0.9, 0.8))
    with pytest.raises(ValueError, match="ratio: got"):
        BatchAugment((0.5,), (0.5,), is_training=True, ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="hflip: got"):
        BatchAugment((0.5,), (0.5,), is_training=True, hflip=1.5)
