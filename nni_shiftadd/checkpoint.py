"""Checkpoints that are safe to write, to read and to resume from.

- **Reading** (:func:`load_checkpoint`): always ``torch.load(weights_only=True)``, so a file carrying a pickled
  object that runs code is refused; a truncated or corrupt file, a file that is not a checkpoint at all, and a
  checkpoint of another kind each end in a :class:`CheckpointError` naming the path and what is wrong.
- **Writing** (:class:`~nni_shiftadd.tasks.checkpoint_io.SafeCheckpointIO`, Lightning's writer plugin): to a temporary file, flushed to disk, then renamed over the old one, so a
  kill mid-write keeps the previous checkpoint; and never with a non-finite tensor, so a diverged run cannot leave
  a checkpoint that a resumed run would only diverge from again (:class:`NonFiniteCheckpointError`).
- **Resuming** (:func:`find_resumable`): the newest checkpoint of a folder that loads and is finite, ``last.ckpt``
  first; the ones passed over are reported with the reason.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

LAST = "last.ckpt"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, refused, or not of the expected kind."""


class NonFiniteCheckpointError(FloatingPointError):
    """A checkpoint was about to be written with NaN or Inf tensors (the run diverged); nothing was written."""


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded with ``torch.load(weights_only=True)``.

    Raises ``FileNotFoundError`` when there is no file, and :class:`CheckpointError` naming the path when the file is
    truncated or corrupt, holds objects that weights-only loading refuses, or is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r}: no such file")
    try:
        try:
            state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap can only be used" not in str(err):
                raise
            state = torch.load(path, map_location=map_location, weights_only=True)  # the legacy format
    except pickle.UnpicklingError as err:
        found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
        if found:
            raise CheckpointError(
                f"{path}: refused: it holds a Python object that weights-only loading does not allow "
                f"({found.group(1)}); nni-shiftadd never unpickles code from a checkpoint. It is not a checkpoint "
                "written by nni-shiftadd (or it was altered)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt: {_short(err)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: {_short(err)}); "
                              f"{path.stat().st_size} bytes") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def _short(err: BaseException) -> str:
    """The first sentence of an error (torch's carry paragraphs of advice)."""
    text = str(err).strip()
    if not text:
        return type(err).__name__
    if text.startswith("Weights only load failed"):  # a legacy-format pickle that is not a checkpoint
        found = re.search(r"(invalid load key[^.]*|[A-Z]\w+Error: [^.]*)", text)
        return found.group(1) if found else "not a torch checkpoint"
    return re.split(r"\.\s", text.splitlines()[0], maxsplit=1)[0][:200]


def non_finite_tensors(obj: Any, prefix: str = "") -> list[str]:
    """The names (dotted paths) of the floating-point tensors in ``obj`` (nested dicts, lists and tuples) that hold
    NaN or Inf, and of non-finite float scalars."""
    found: list[str] = []
    stack: list[tuple[str, Any]] = [(prefix, obj)]
    while stack:
        name, value = stack.pop()
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() or value.is_complex():
                if value.numel() and not bool(torch.isfinite(value).all()):
                    found.append(name)
        elif isinstance(value, float):
            if not math.isfinite(value):
                found.append(name)
        elif isinstance(value, dict):
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{name}[{i}]", v) for i, v in enumerate(value))
    return sorted(found)


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss, gradient or validation score. A ``RuntimeError`` so that fairseq's
    trainer passes it straight up (it re-runs a step under its NaN detector, and writes ``crash.pt``, for other
    errors); the commands turn it into one message naming the update, the tensor and the checkpoint to go on from."""


def describe_non_finite(names: list[str]) -> str:
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return f"{len(names)} tensor(s) hold NaN/Inf: {shown}"


#: The parts of a Lightning checkpoint that a resumed run continues from (weights, optimiser moments).
TRAINING_STATE = ("state_dict", "optimizer_states")


def _step_of(path: Path) -> int:
    found = re.search(r"step=(\d+)", path.name)
    return int(found.group(1)) if found else -1


def find_resumable(folder: str | os.PathLike[str]) -> tuple[Path | None, list[str]]:
    """The checkpoint of ``folder`` to resume from: ``last.ckpt`` if it loads and its weights and optimiser state
    are finite, else the newest other ``*.ckpt`` that does. Returns it (``None`` when the folder has none) and one
    line per checkpoint passed over, saying why."""
    folder = Path(folder)
    if not folder.is_dir():
        return None, []
    last = folder / LAST
    others = sorted((p for p in folder.glob("*.ckpt") if p.name != LAST),
                    key=lambda p: (_step_of(p), p.stat().st_mtime), reverse=True)
    skipped: list[str] = []
    for path in ([last] if last.is_file() else []) + others:
        try:
            state = load_checkpoint(path, mmap=True)
        except CheckpointError as err:
            skipped.append(str(err))
            continue
        if "state_dict" not in state or "global_step" not in state:
            skipped.append(f"{path}: not a training checkpoint (no 'state_dict' and 'global_step')")
            continue
        bad = [n for key in TRAINING_STATE if key in state for n in non_finite_tensors(state[key], key)]
        if bad:
            skipped.append(f"{path}: {describe_non_finite(bad)}")
            continue
        return path, skipped
    return None, skipped
