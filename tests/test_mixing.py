"""Mixup/CutMix (timm's) in the image recipes: soft targets, the odd batch, the loss, and errors naming the field."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from nni_shiftadd.data.mixing import BatchMixing
from nni_shiftadd.tasks.classification import TrainConfig
from nni_shiftadd.tasks.retrain import RetrainConfig
from nni_shiftadd.tasks.supernet import SupernetConfig


def _cfg(**kw):
    return dataclasses.replace(TrainConfig(), **kw)


def test_mixed_batches_get_soft_targets() -> None:
    torch.manual_seed(0)
    mixing = BatchMixing(_cfg(mixup=0.8, cutmix=1.0, label_smoothing=0.1), num_classes=10)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 10
    mixed, hard, soft = mixing.mix(x.clone(), y)
    assert mixing.active and soft is not None and soft.shape == (8, 10)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    assert not torch.equal(mixed, x)  # mixed with the reversed batch (Mixup) or pasted boxes (CutMix)
    assert torch.equal(hard, y)
    # every image's target splits between its own class and its partner's (the reversed batch), plus smoothing
    partner = y.flip(0)
    assert ((soft.argmax(1) == y) | (soft.argmax(1) == partner)).all()
    logits = torch.randn(8, 10, requires_grad=True)
    loss = mixing.loss(logits, hard, soft)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    expected = torch.sum(-soft * F.log_softmax(logits.detach(), -1), -1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_odd_batch_leaves_one_image_out() -> None:
    mixing = BatchMixing(_cfg(mixup=1.0), num_classes=3)
    mixed, hard, soft = mixing.mix(torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1]))
    assert len(mixed) == len(hard) == len(soft) == 4
    one, hard1, soft1 = mixing.mix(torch.rand(1, 3, 8, 8), torch.tensor([2]))
    assert len(one) == 0 and soft1 is None


def test_without_mixing_the_loss_is_smoothed_cross_entropy() -> None:
    mixing = BatchMixing(_cfg(label_smoothing=0.1), num_classes=4)
    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    same, hard, soft = mixing.mix(x, y)
    assert not mixing.active and soft is None and same is x
    logits = torch.randn(6, 4)
    assert mixing.loss(logits, hard, soft) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.1)))
    off = BatchMixing(_cfg(mixup=0.8, mix_prob=0.0), num_classes=4)
    assert not off.active


@pytest.mark.parametrize("schema", [TrainConfig, RetrainConfig, SupernetConfig])
@pytest.mark.parametrize("field, value, message", [
    ("mixup", -0.5, r"field 'mixup': a Beta distribution's alpha, must be >= 0 \(0: off\), got -0.5"),
    ("cutmix", -1.0, r"field 'cutmix'"),
    ("mix_prob", 1.5, r"field 'mix_prob': the probability that a batch is mixed, in \[0, 1\], got 1.5"),
    ("label_smoothing", 1.0, r"field 'label_smoothing': must be in \[0, 1\), got 1.0"),
])
def test_bad_mixing_values_name_the_field(schema, field: str, value: float, message: str, tmp_path) -> None:
    base = {"output": str(tmp_path / "out")}
    if schema is RetrainConfig:
        base["arch"] = "all_conv"
    cfg = dataclasses.replace(schema(), **base, **{field: value})
    with pytest.raises(ValueError, match=message):
        cfg.validate()
