"""The trial of a search: one architecture, evaluated with the weights it inherits from the trained supernet.

Under NNI (``nnictl create``) the architecture comes from ``nni.get_next_parameter()`` and the result goes to
``nni.report_final_result`` as ``{"default": accuracy, "accuracy", "loss", "energy_mJ", "latency_ms", "mult_G",
"add_G", "shift_G", "params_M", "macs_M", "flops_G"}``; every key becomes a column of the web UI's trial table.
Outside NNI pass the architecture yourself (``nni-shiftadd trial --supernet CKPT --arch ARCH.json``).

Accuracy is top-1 on the dataset's validation split after recalibrating BatchNorm on ``calibration_batches``
training batches (the supernet's statistics mix every path); energy, latency and op counts come from the
Eyeriss model of the frozen subnet.

A SuperTransformer checkpoint (``train-supertransformer``, fairseq) makes it a translation trial, reported as
``{"default": valid_loss, "valid_loss", "valid_ppl", "bleu", "energy_mJ", "latency_ms", "flops_G", ...}`` with the
costs of a 30-token sentence. The objective is HAT's, the validation loss (nats per token, teacher forcing) of the
subnet with inherited weights: every sentence of the split counts and it varies smoothly with the weights. BLEU is
sacrebleu's on a beam search over the split's first ``bleu_sentences`` sentences (a fixed sample; ``0`` skips it),
reported beside the loss so that the web UI and the Pareto plots can show it.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..config import ConfigError
from ..space.spec import canonical_arch, load_space
from ..cost.metrics import space_cost_fn
from .kinds import task_kind_of
from .trial_config import TrialConfig


def evaluate_subnet(cfg: TrialConfig, arch: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy (inherited weights), Eyeriss energy/latency and op counts of ``arch`` (see the module doc), on
    ``cfg.threads`` torch threads (the caller's setting is restored afterwards)."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _evaluate_subnet(cfg, arch)
    finally:
        torch.set_num_threads(threads)


def evaluate_translation(cfg: TrialConfig, arch: Mapping[str, Any], start: float) -> dict[str, Any]:
    """The trial of a translation subnet (see the module doc); ``start``: when the trial began."""
    from ..data.translation import references_dir
    from .translation.evaluate import bleu, load_trained, supertransformer_data, validation_loss

    model, task = load_trained(cfg.supernet, supertransformer_data(cfg.supernet))
    spec = model.spec
    if cfg.space is not None and load_space(cfg.space) != spec:
        raise ValueError(f"--supernet {cfg.supernet}: trained on space {spec.name!r}, not the requested "
                         f"{cfg.space!r}")
    arch = _in_space(spec, arch, cfg.supernet)
    model.activate(arch)
    model.eval()
    split = "valid" if cfg.split == "val" else "test"
    valid = validation_loss(model, task, split)
    out = {"default": valid["loss_nats"], "valid_loss": valid["loss_nats"], "valid_ppl": valid["ppl"]}
    if cfg.bleu_sentences != 0:
        score = bleu(model, task, split, references_dir(task.cfg.data), beam=cfg.beam, lenpen=cfg.lenpen,
                     limit=cfg.bleu_sentences)
        out.update({"bleu": score["bleu"], "bleu_sentences": score["sentences"]})
    costs = space_cost_fn(spec, cfg.bits, eyeriss=cfg.eyeriss)(arch)
    return {**out, **{k: float(v) for k, v in costs.items()}, "eval_seconds": round(time.perf_counter() - start, 2)}


def _in_space(spec: Any, arch: Mapping[str, Any], supernet: str) -> dict[str, Any]:
    """``arch`` in canonical form; ``ValueError`` naming the space and the supernet if it is not one of its."""
    try:
        return canonical_arch(spec, arch)
    except ValueError as err:
        raise ValueError(f"trial: the proposed architecture does not belong to space {spec.name!r} of the supernet "
                         f"{supernet}: {err}") from None


def _evaluate_subnet(cfg: TrialConfig, arch: Mapping[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    return task_kind_of(cfg.supernet, cfg.space).function("trial")(cfg, arch, start)


def evaluate_image(cfg: TrialConfig, arch: Mapping[str, Any], start: float) -> dict[str, Any]:
    """The trial of an image subnet (see the module doc); ``start``: when the trial began."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from ..data import create_dataset
    from .supernet import evaluate_arch, load_supernet

    supernet, recipe = load_supernet(cfg.supernet, cfg.space)
    spec = supernet.spec
    arch = _in_space(spec, arch, cfg.supernet)
    size = (spec.input.channels, spec.input.size, spec.input.size)
    data_dir = cfg.data_dir if cfg.data_dir is not None else recipe.data_dir
    evaluation = create_dataset(recipe.dataset, cfg.split, data_dir=data_dir, input_size=size)
    train = create_dataset(recipe.dataset, "train", data_dir=data_dir, is_training=True, input_size=size)
    loader = DataLoader(evaluation, batch_size=cfg.batch_size, shuffle=False)
    calibration = DataLoader(train, batch_size=cfg.batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(cfg.seed))
    # timm's random crop draws from Python's `random`, torchvision's flip from torch: seed both, so that an
    # architecture scores the same in every trial (and the evolution is deterministic)
    pl.seed_everything(cfg.seed, verbose=False)
    scores = evaluate_arch(supernet, arch, loader, cfg.eval_batches, calibration, cfg.calibration_batches)
    costs = space_cost_fn(spec, cfg.bits, eyeriss=cfg.eyeriss)(arch)
    return {"default": scores["accuracy"], "accuracy": scores["accuracy"], "loss": scores["loss"],
            **{k: float(v) for k, v in costs.items()},
            "eval_seconds": round(time.perf_counter() - start, 2)}


def run_trial(cfg: TrialConfig, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``arch``, or under NNI the architecture NNI hands out, and report the metrics to NNI."""
    import nni

    under_nni = arch is None
    if under_nni:
        arch = nni.get_next_parameter()
        if not arch:
            raise ConfigError("trial: no architecture (not started by NNI? pass --arch ARCH.json)")
    metrics = evaluate_subnet(cfg, arch)
    if under_nni:
        nni.report_final_result(metrics)
    print(json.dumps({"arch": dict(arch), **metrics}))
    return metrics
