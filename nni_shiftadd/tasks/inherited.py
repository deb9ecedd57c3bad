"""Scoring many architectures of one image supernet with the weights they inherit (what the ranking study and the
searches of the paper's tables rank by): the supernet loaded once, each architecture's BatchNorm recalibrated on the
same training batches, so that two architectures differ by their weights alone."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data import create_dataset
from .supernet import evaluate_arch, load_supernet

__all__ = ["inherited_scorer"]


def inherited_scorer(checkpoint: str | Path, batch_size: int, eval_batches: int, calibration_batches: int
                     ) -> Callable[[Mapping[str, Any]], dict[str, float]]:
    """``arch -> {"accuracy", "loss"}`` on ``eval_batches`` validation batches of the supernet ``checkpoint``'s
    dataset, after recalibrating BatchNorm on ``calibration_batches`` training batches (the same ones, drawn with
    seed 0, for every architecture)."""
    supernet, recipe = load_supernet(checkpoint)
    spec = supernet.spec
    size = (spec.input.channels, spec.input.size, spec.input.size)
    val = create_dataset(recipe.dataset, "val", data_dir=recipe.data_dir, input_size=size)
    train = create_dataset(recipe.dataset, "train", data_dir=recipe.data_dir, input_size=size)
    val_loader = DataLoader(val, batch_size=batch_size, shuffle=False)

    def score(arch: Mapping[str, Any]) -> dict[str, float]:
        calibration = DataLoader(train, batch_size=batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))
        scores = evaluate_arch(supernet, dict(arch), val_loader, eval_batches, calibration, calibration_batches)
        return {"accuracy": float(scores["accuracy"]), "loss": float(scores["loss"])}

    return score
