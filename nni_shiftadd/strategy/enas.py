"""NNI's ENAS strategy, mended to run under the Lightning versions this package installs.

NNI 3.0's ENAS interleaves training batches (which train the supernet's weights) with validation batches (which
give the RL controller its reward) through one loader, and tells the two apart in ``training_step`` by the
loader index that Lightning 2.0 passed along with each batch. Later Lightning 2.x loops drop that index before
``training_step``, so NNI's ENAS mistakes a ``(x, y)`` batch for its legacy ``(batch, "train" | "val")`` pair
and fails on the first validation batch ("too many values to unpack"). :class:`ENAS` here tags each batch with
its mode itself, in the pair form NNI's module reads under every Lightning 2.x, and is otherwise NNI's ENAS::

    from nni_shiftadd.strategy.enas import ENAS
    strategy = ENAS(mutation_hooks=oneshot_hooks("hws"), reward_metric_name="val_acc")

It needs NNI's RL dependencies (tianshou 0.4 and gym), installed by ``pip install nni-shiftadd[enas]``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import nni.nas.strategy
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch._dataloader import ConcatLoader
from nni.nas.oneshot.pytorch.sampling import EnasLightningModule
from pytorch_lightning import LightningModule


class ModeBatch(NamedTuple):
    """One batch of the interleaved loader and the loader it came from (``"train"`` or ``"val"``); Lightning moves
    the batch inside it to the device like any tuple."""
    batch: Any
    mode: str


class _TaggedConcatLoader(ConcatLoader):
    """NNI's train-then-val ``ConcatLoader`` (its Lightning 2.x form) whose items carry their mode as
    :class:`ModeBatch`."""

    def __next__(self) -> tuple[ModeBatch, int, int]:
        batch, batch_idx, loader_idx = super().__next__()
        return ModeBatch(batch, list(self._iterables)[loader_idx]), batch_idx, loader_idx


class _EnasModule(EnasLightningModule):
    """NNI's ENAS module reading the mode from a :class:`ModeBatch`, whether or not the Lightning loop passes the
    loader's ``(batch, batch_idx, loader_idx)`` triple along, and exporting the controller's most likely
    architecture (NNI's exports one more random draw from it) from the trained controller (NNI's ``list_models``
    sets the supernet again, which gave NNI's module a fresh, untrained controller)."""

    def set_model(self, model: ModelSpace) -> None:
        if self._generator is not None and getattr(self.training_module, "model", None) is model:
            return  # the same supernet again: keep the controller trained on it
        super().set_model(model)

    def training_step(self, batch_packed: Any, batch_idx: int) -> Any:
        if not isinstance(batch_packed, ModeBatch) and isinstance(batch_packed[0], ModeBatch):
            batch_packed = batch_packed[0]
        if not isinstance(batch_packed, ModeBatch):
            raise TypeError(f"ENAS: expected a batch tagged with its loader, got {type(batch_packed).__name__}; "
                            "train through nni_shiftadd.strategy.enas.ENAS's own dataloaders")
        return super().training_step(tuple(batch_packed), batch_idx)

    def export(self) -> dict[str, Any]:
        """The controller's greedy decode: the most likely choice at each step, given the choices before it."""
        policy = self.policy
        deterministic, policy._deterministic_eval = policy._deterministic_eval, True  # tianshou 0.4's PG switch
        try:
            return super().export()
        finally:
            policy._deterministic_eval = deterministic


class ENAS(nni.nas.strategy.ENAS):
    """NNI's :class:`nni.nas.strategy.ENAS` (same arguments) with batches tagged by their loader, so that the
    controller is rewarded on validation batches under every Lightning 2.x, and ``export`` (and so
    ``list_models``) giving the controller's most likely architecture."""

    def configure_oneshot_module(self, training_module: LightningModule) -> EnasLightningModule:
        return _EnasModule(training_module, batches_per_update=self.batches_per_update,
                                 log_prob_every_n_step=self.log_prob_every_n_step,
                                 replay_buffer_size=self.replay_buffer_size,
                                 reward_metric_name=self.reward_metric_name, policy_fn=self.policy_fn,
                                 update_kwargs=self.update_kwargs, warmup_epochs=self.warmup_epochs,
                                 penalty=self.penalty)

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        return _TaggedConcatLoader({"train": train_dataloader_fn(), "val": val_dataloader_fn()})
