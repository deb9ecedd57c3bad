"""What an exact resume of a Lightning training needs beyond Lightning's own checkpoint: a sampler and loader that
stop and resume mid-epoch (Lightning saves and restores the loader's ``state_dict``), the global random generators
as plain data (so that a checkpoint loads with ``torch.load(weights_only=True)``), and a mend of Lightning's epoch
counters in one case it gets wrong (:class:`MidEpochCounters`).

DDP: the sampler shards itself (each rank takes ``perm[rank::world]`` of the epoch's permutation; Lightning's own
``DistributedSampler`` injection is turned off by the trainer).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import random

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["GlobalRngState", "MidEpochCounters", "ResumableLoader", "ResumableSampler", "global_rng_state",
           "mend_epoch_counters", "numpy_restore", "numpy_state", "python_restore", "python_state",
           "restore_global_rng"]


def _dist_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class ResumableSampler(Sampler[int]):
    """A seeded sampler that can stop and resume mid-epoch.

    Epoch ``e`` uses ``randperm(n)`` seeded with ``seed + e`` (or ``range(n)`` unshuffled), cut to a multiple of
    ``num_replicas``; rank ``r`` takes ``perm[r::num_replicas]``, truncated to ``num_batches * batch_size``.
    :meth:`state_dict` records the epoch and the number of batches already taken; after :meth:`load_state_dict` the
    next iteration of that epoch skips them. The rank is read from ``torch.distributed`` when iteration starts.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int = 1,
                 limit_batches: int | None = None) -> None:
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.num_replicas = num_replicas
        per_rank = size // num_replicas
        self.num_batches = per_rank // batch_size
        if limit_batches is not None:
            self.num_batches = min(self.num_batches, limit_batches)
        if self.num_batches < 1:
            raise ValueError(f"batch_size: {batch_size} x {num_replicas} device(s) is more than the {size} samples")
        self.epoch = 0
        self.batches_taken = 0  # in the current epoch
        self._skip = 0  # batches to skip on the next iteration (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def _ranked(self, rank: int) -> list[int]:
        """The indices rank ``rank`` draws in the current epoch, in order."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.size)
        return order[:self.size - self.size % self.num_replicas][rank::self.num_replicas][:len(self)].tolist()

    def __iter__(self) -> Iterator[int]:
        mine = self._ranked(_dist_rank())
        skip, self._skip = self._skip, 0
        self.batches_taken = skip
        for i in range(skip * self.batch_size, len(mine)):
            if i % self.batch_size == 0:
                self.batches_taken = i // self.batch_size + 1
            yield mine[i]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_taken": self.batches_taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self._skip = self.batches_taken = int(state["batches_taken"])


class ResumableLoader(DataLoader):
    """A single-process ``DataLoader`` over a :class:`ResumableSampler`; its ``state_dict``/``load_state_dict``
    make Lightning save and restore the position inside the epoch."""

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, num_workers: int = 0) -> None:
        super().__init__(dataset, batch_size=sampler.batch_size, sampler=sampler, drop_last=True,
                         num_workers=num_workers, generator=torch.Generator().manual_seed(sampler.seed))
        self.resumable_sampler = sampler

    def state_dict(self) -> dict[str, int]:
        return self.resumable_sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resumable_sampler.load_state_dict(state)


def mend_epoch_counters(checkpoint: dict[str, Any]) -> bool:
    """Count the epoch a mid-epoch checkpoint stopped in as started, where Lightning did not; whether it had to.

    A run resumed from a checkpoint of an epoch's last batch (a periodic one, or a stop there) goes on into the next
    epoch without counting it as started (Lightning 2.x: ``epoch_progress.current.ready`` stays equal to
    ``completed``). A checkpoint written later in that epoch then reads as one written at the epoch's start, so the
    next resume would train the epoch again from its first batch while the sampler skips the batches already taken:
    more steps than the recipe's, on other data. Mid-epoch (some batches done, not the last) the epoch must count as
    started; this makes it so."""
    loop = checkpoint.get("loops", {}).get("fit_loop")
    if not loop or "epoch_progress" not in loop or "epoch_loop.batch_progress" not in loop:
        return False
    epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
    mid_epoch = batches["current"]["completed"] > 0 and not batches.get("is_last_batch", False)
    if not mid_epoch or epochs["current"]["ready"] != epochs["current"]["completed"]:
        return False
    for counts in (epochs["current"], epochs["total"]):
        counts["ready"] = counts["started"] = counts["completed"] + 1
    return True


class MidEpochCounters(pl.Callback):
    """:func:`mend_epoch_counters` on the checkpoint a fit resumes from, before Lightning restores its loops."""

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        mend_epoch_counters(checkpoint)


def python_state(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_restore(state: list[Any]) -> tuple:
    return (int(state[0]), tuple(int(x) for x in state[1]), state[2])


def numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def numpy_restore(state: list[Any]) -> None:
    name, keys, pos, has_gauss, cached = state
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def global_rng_state() -> dict[str, Any]:
    """The global ``torch`` (and CUDA's, where there is one), ``random`` and ``numpy`` generators' states as plain
    data (augmentation draws from them in the main process; dropout from torch's or CUDA's)."""
    state = {"torch": torch.get_rng_state(), "python": python_state(random.getstate()), "numpy": numpy_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    """Set the global generators to a :func:`global_rng_state` (CUDA's when it holds them and there is CUDA)."""
    torch.set_rng_state(state["torch"])
    random.setstate(python_restore(state["python"]))
    numpy_restore(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class GlobalRngState(pl.Callback):
    """Saves :func:`global_rng_state` in every checkpoint and restores it when a fit resumes, at ``on_train_start``:
    after Lightning's set-up and sanity check, right before the first batch is fetched (Lightning does not call
    ``on_train_epoch_start`` for an epoch resumed in its middle, and fetches batches without prefetching from a
    loader that has a length, as :class:`ResumableLoader` has)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # a run resumed after its last step saves again without training: the checkpoint's states, not this process's
        return self._pending if self._pending is not None else global_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            state, self._pending = self._pending, None
            restore_global_rng(state)
