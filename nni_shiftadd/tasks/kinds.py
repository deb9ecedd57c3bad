"""What the tasks do for each kind of search space: the task half of the registry of space kinds
(:mod:`nni_shiftadd.space.kinds`). A kind declares how to recognise its supernet checkpoints and the functions that
evaluate a subnet in one (the trial of a search) and train a subnet from scratch (``retrain``), as
``"module:function"`` paths under :mod:`nni_shiftadd.tasks`, imported on first use (a translation trial must not
import Lightning). Commands look the kind up from the space they name, else from the checkpoint they are given
(:func:`task_kind_of`); the default kind (:data:`~nni_shiftadd.space.kinds.DEFAULT_KIND`, image classification)
takes every checkpoint no other kind claims and names what is wrong with one that is not its own. A third kind
registers itself with :func:`register_task_kind` from its own module.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..space.kinds import DEFAULT_KIND
from ..space.spec import load_space

__all__ = ["TASK_KINDS", "TaskKind", "register_task_kind", "task_kind_of"]


@dataclasses.dataclass(frozen=True)
class TaskKind:
    """The tasks of one space kind, each a ``"module:function"`` path (module relative to :mod:`nni_shiftadd.tasks`).

    ``claims``: ``checkpoint path -> bool``, whether a file is a supernet of this kind (``None`` for the default
    kind); ``trial``: ``(TrialConfig, arch, start time) -> metrics``; ``retrain``: ``RetrainConfig -> metrics``;
    ``trial_preload``: the third-party modules a trial imports, which a warm trial host
    (:mod:`nni_shiftadd.trial_host`) imports once for all its trials (never ``nni``).
    """

    kind: str
    trial: str
    retrain: str
    claims: str | None = None
    trial_preload: tuple[str, ...] = ("torch", "pytorch_lightning", "timm.data", "scipy.stats", "pandas", "json_tricks")

    def function(self, role: str) -> Callable[..., Any]:
        """The function of ``role`` (``"claims"``, ``"trial"`` or ``"retrain"``), imported now."""
        module, name = getattr(self, role).split(":")
        return getattr(importlib.import_module(module, __package__), name)


#: The task kinds, by space kind.
TASK_KINDS: dict[str, TaskKind] = {}


def register_task_kind(task_kind: TaskKind) -> TaskKind:
    """Add ``task_kind`` to :data:`TASK_KINDS`; every kind but the default one must say which checkpoints it claims."""
    known = TASK_KINDS.get(task_kind.kind)
    if known is not None and known != task_kind:
        raise ValueError(f"task kind {task_kind.kind!r} is registered already: {known}")
    if (task_kind.claims is None) != (task_kind.kind == DEFAULT_KIND):
        raise ValueError(f"task kind {task_kind.kind!r}: 'claims' names how to recognise its checkpoints; only the "
                         f"default kind {DEFAULT_KIND!r} takes every checkpoint no other kind claims")
    TASK_KINDS[task_kind.kind] = task_kind
    return task_kind


def task_kind_of(checkpoint: str | Path | None, space: str | None = None) -> TaskKind:
    """The task kind whose supernet ``checkpoint`` is: with ``space`` named, that space's kind (the kind's loader
    then refuses a checkpoint of another kind, and the file is not read just to recognise it: 0.6-0.8 s of
    unpickling for the demo's supernet); else the kind that claims it, else the default kind (also for ``None`` or a
    missing file, whose own loader names the problem)."""
    if space is not None:
        return TASK_KINDS[load_space(space).kind]
    if checkpoint is not None and Path(checkpoint).is_file():
        for task_kind in TASK_KINDS.values():
            if task_kind.claims is not None and task_kind.function("claims")(checkpoint):
                return task_kind
    return TASK_KINDS[DEFAULT_KIND]


register_task_kind(TaskKind(DEFAULT_KIND, trial=".trial:evaluate_image", retrain=".retrain:retrain_image"))
register_task_kind(TaskKind("translation", trial=".trial:evaluate_translation", retrain=".retrain:retrain_translation",
                            claims=".translation.evaluate:is_supertransformer",
                            trial_preload=(*TaskKind.trial_preload, "fairseq", "sacrebleu")))
