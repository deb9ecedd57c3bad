"""fairseq task ``shiftadd_translation``: translation (fairseq's ``TranslationTask``) with one-shot supernet training
of the ``shiftadd_supertransformer`` model: every update trains one subnet sampled uniformly from the search space.

The subnet of update ``u`` is drawn from a generator seeded with ``(subnet_seed, u)`` only, so it is the same on
every rank of a distributed run, for every micro-batch of an update (``--update-freq``), and after a resume from a
checkpoint (fairseq restores the update count): a killed run goes on with the subnet sequence of an uninterrupted one.
The training batches are rebuilt every epoch (``rebuild_batches``), so a run resumed in a later epoch batches as
an uninterrupted one does, and the resume is exact.
Validation runs one fixed subnet (``--valid-subnet``: the largest, the smallest, or an architecture). The eq. (5)
terms of heterogeneous weight sharing join the loss inside the model (through the backward pass), so any criterion
trains them.

Divergence guard: a non-finite training loss or gradient, or a non-finite validation loss, raises
:class:`~nni_shiftadd.checkpoint.DivergenceError` naming the update (and the parameter whose gradient is not
finite) before fairseq takes the step or saves a checkpoint, so no checkpoint ever holds a diverged run.
"""
# No `from __future__ import annotations`: fairseq reads the config dataclasses' field types at run time.
from dataclasses import dataclass, field
from typing import Any

import torch
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from ...checkpoint import DivergenceError
from ...space.sampling import SAMPLINGS, step_paths
from .archs import OptionError, named_arch, update_rng


@dataclass
class ShiftAddTranslationConfig(TranslationConfig):
    subnet_seed: int = field(default=0, metadata={"help": "seed of the per-update subnet sampling"})
    valid_subnet: str = field(default="largest", metadata={"help": "the subnet validation runs: largest, smallest, "
                                                                   "or an architecture (inline JSON or a JSON file)"})
    # fairseq builds an iterator's batches once, seeded with the epoch it was created in; a run resumed in epoch 2
    # or later created it there and batched differently from an uninterrupted run. Rebuilt every epoch, seeded
    # with that epoch, the batches are the same either way (an exact resume).
    # (fairseq's generation options own --sampling)
    supernet_sampling: str = field(default="uniform", metadata={
        "help": "the paths an update trains: uniform (one), fair (FairNAS: every block type of every layer), "
                "sandwich (BigNAS: deepest, shallowest and random decoder depths)"})
    sandwich_random: int = field(default=2, metadata={"help": "sandwich: random paths beside the extremes"})
    rebuild_batches: bool = field(default=True, metadata={"help": "rebuild the training batches every epoch "
                                                                  "(seeded with the epoch): exact resume"})


@register_task("shiftadd_translation", dataclass=ShiftAddTranslationConfig)
class ShiftAddTranslationTask(TranslationTask):
    """fairseq's translation task, sampling the supernet's path before every update (see the module docstring)."""

    cfg: ShiftAddTranslationConfig
    _update = 0  # the update the last training step belonged to (for validation's messages)

    def build_model(self, cfg: Any, from_checkpoint: bool = False) -> Any:
        """The model, with ``--valid-subnet`` checked against its space now rather than at the first validation."""
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.supernet_sampling not in SAMPLINGS:
            raise OptionError(f"--supernet-sampling: got {self.cfg.supernet_sampling!r}; expected one of {list(SAMPLINGS)}")
        if getattr(model, "space", None) is not None:
            from ...space.nlp_spec import validate_arch

            try:
                validate_arch(model.spec, named_arch(model.spec, self.cfg.valid_subnet))
            except ValueError as err:
                raise OptionError(str(err) if str(err).startswith("--") else f"--valid-subnet: {err}") from None
        return model

    def train_step(self, sample: Any, model: Any, criterion: Any, optimizer: Any, update_num: int,
                   ignore_grad: bool = False) -> Any:
        self._update = update_num + 1
        if getattr(model, "space", None) is None:  # one subnet trained on its own
            paths: list[Any] = [None]
        else:
            paths = step_paths(model.spec, update_rng(self.cfg.subnet_seed, update_num), self.cfg.supernet_sampling,
                               self.cfg.sandwich_random)
        losses, logs = [], []
        for arch in paths:  # each path's backward adds its gradient: one update with their sum
            if arch is not None:
                model.activate(arch)
            loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num,
                                                                    ignore_grad)
            losses.append(loss.detach())
            logs.append(logging_output)
        if len(paths) > 1:  # the losses logged are the paths' mean, so that runs with other techniques compare
            loss = torch.stack(losses).sum()
            logging_output = {**logs[0], **{key: sum(log[key] for log in logs) / len(logs)
                                            for key in ("loss", "nll_loss") if key in logs[0]}}
        loss_value = torch.stack(losses).sum()
        if not torch.isfinite(loss_value).all():
            raise DivergenceError(f"update {self._update}: the training loss is {float(loss_value):g}")
        # the optimiser's flat list of what it trains (walking the supernet's module tree costs 3 ms an update)
        params = optimizer.params if hasattr(optimizer, "params") else model.parameters()
        grads = [p.grad for p in params if p.grad is not None]
        if grads and not torch.isfinite(torch.stack(torch._foreach_norm(grads))).all():
            named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
            bad = next((n for n, g in named if not g.isfinite().all()), None)
            if bad is None:  # every entry finite, their norm beyond float's range
                name, top = max(((n, float(g.abs().max())) for n, g in named), key=lambda item: item[1])
                what = f"the gradient norm overflows (largest entry {top:g}, in {name})"
            else:
                what = f"the gradient of {bad} is not finite"
            raise DivergenceError(f"update {self._update}: {what}; the loss was {float(loss_value):g}")
        return loss, sample_size, logging_output

    def valid_step(self, sample: Any, model: Any, criterion: Any) -> Any:
        if getattr(model, "space", None) is not None:
            model.activate(named_arch(model.spec, self.cfg.valid_subnet))
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if not torch.isfinite(torch.as_tensor(loss)).all():
            raise DivergenceError(f"validation after update {self._update}: the loss of the {self.cfg.valid_subnet} "
                                  f"subnet is {float(loss):g}")
        return loss, sample_size, logging_output
