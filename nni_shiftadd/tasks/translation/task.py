"""fairseq task ``shiftadd_translation``: translation (fairseq's ``TranslationTask``) with one-shot supernet training
of the ``shiftadd_supertransformer`` model: every update trains one subnet sampled uniformly from the search space.

The subnet of update ``u`` is drawn from a generator seeded with ``(subnet_seed, u)`` only, so it is the same on
every rank of a distributed run, for every micro-batch of an update (``--update-freq``), and after a resume from a
checkpoint (fairseq restores the update count): a killed run goes on with the subnet sequence of an uninterrupted one.
Validation runs one fixed subnet (``--valid-subnet``: the largest, the smallest, or an architecture). The eq. (5)
terms of heterogeneous weight sharing join the loss inside the model (through the backward pass), so any criterion
trains them.
"""
# No `from __future__ import annotations`: fairseq reads the config dataclasses' field types at run time.
from dataclasses import dataclass, field
from typing import Any

from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .archs import named_arch, sampled_arch


@dataclass
class ShiftAddTranslationConfig(TranslationConfig):
    subnet_seed: int = field(default=0, metadata={"help": "seed of the per-update subnet sampling"})
    valid_subnet: str = field(default="largest", metadata={"help": "the subnet validation runs: largest, smallest, "
                                                                   "or an architecture (inline JSON or a JSON file)"})


@register_task("shiftadd_translation", dataclass=ShiftAddTranslationConfig)
class ShiftAddTranslationTask(TranslationTask):
    """fairseq's translation task, sampling the supernet's path before every update (see the module docstring)."""

    cfg: ShiftAddTranslationConfig

    def train_step(self, sample: Any, model: Any, criterion: Any, optimizer: Any, update_num: int,
                   ignore_grad: bool = False) -> Any:
        if getattr(model, "space", None) is not None:
            model.activate(sampled_arch(model.spec, self.cfg.subnet_seed, update_num))
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def valid_step(self, sample: Any, model: Any, criterion: Any) -> Any:
        if getattr(model, "space", None) is not None:
            model.activate(named_arch(model.spec, self.cfg.valid_subnet))
        return super().valid_step(sample, model, criterion)
