"""The JSON ledger of a cached study (the ranking study, the paper's tables): naming what changed between the recipe
a cached result was made with and the one asked for now, so that a study never mixes results of two recipes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes, atomic_write_json, read_json

__all__ = ["copy_ledger", "evolve", "fingerprint", "pin_recipe", "plain", "recipe_changes", "same_supernet",
           "trained_supernet"]


def recipe_changes(saved: Mapping[str, Any], wanted: Mapping[str, Any], keys: set[str]) -> str:
    """``"key: saved -> wanted, ..."`` over the ``keys`` whose values differ (sorted); empty when none do."""
    return ", ".join(f"{k}: {saved.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(keys)
                     if saved.get(k) != wanted.get(k))


def plain(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples as lists), so that it compares equal to a saved copy."""
    return json.loads(json.dumps(data))


def pin_recipe(path: Path, recipe: Mapping[str, Any], what: str, remedy: str) -> None:
    """Record ``recipe`` at ``path`` beside a cache the first time; later, refuse (``ValueError``) when the cache
    there was made with another recipe, naming ``what`` (``"these networks were"``), every field that changed and
    the ``remedy``."""
    wanted = plain(recipe)
    saved = read_json(path)
    if saved is None:
        atomic_write_json(path, wanted)
        return
    changes = recipe_changes(saved, wanted, set(saved) | set(wanted))
    if changes:
        raise ValueError(f"{path.parent}: {what} trained with another recipe ({changes}); {remedy}")


def trained_supernet(recipe: Any, log: Callable[[str], None], what: str = "supernet") -> Path:
    """The checkpoint of the image supernet ``recipe`` describes: trained (or resumed) unless its folder holds a
    finished run, and refused (``ValueError``) when that run was trained with another recipe, naming what changed."""
    from ..checkpoint import load_checkpoint
    from ..tasks.supernet import train_supernet

    folder = Path(recipe.output)
    if not (folder / "metrics.json").is_file():
        result = train_supernet(recipe)
        log(f"{what}: {result['global_step']} steps ({result['fit_seconds']:.0f} s)")
    checkpoint = folder / "checkpoints" / "last.ckpt"
    saved = load_checkpoint(checkpoint, mmap=True)["hyper_parameters"]["config"]
    wanted = plain(dataclasses.asdict(recipe))
    changes = recipe_changes(saved, wanted, set(wanted) - {"output", "resume"})
    if changes:
        raise ValueError(f"{folder}: this supernet was trained with another recipe ({changes}); remove the folder "
                         "to train it again")
    return checkpoint


def fingerprint(checkpoint: Path) -> str:
    """The identity of one trained supernet: the SHA-256 of its checkpoint file (16 hex digits)."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def same_supernet(state: Mapping[str, Any], key: str, checkpoint: Path, log: Callable[[str], None],
                  what: str) -> dict[str, Any]:
    """A partial evaluation ledger ``state`` ready to go on with the supernet ``checkpoint``: its scores (under
    ``key``) kept when they were made with this checkpoint (or before ledgers recorded one), dropped with a log line
    when with another training of the same recipe (a ledger carried without its checkpoint, whose supernet was then
    trained again: not bit-identical across machines, so its scores are of another supernet); ``"supernet"`` set to
    the checkpoint's :func:`fingerprint`."""
    mark = fingerprint(checkpoint)
    kept = dict(state)
    if kept.get("supernet") not in (None, mark) and kept.get(key):
        log(f"{what}: {len(kept[key])} scores made with another training of this supernet dropped")
        kept[key] = {}
    kept["supernet"] = mark
    return kept


def evolve(spec: Any, preset: Any, score: Callable[[Mapping[str, Any]], dict[str, float]], path: Path,
           evaluated: dict[str, Any] | None = None, supernet: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Run the evolution of ``preset`` on ``spec`` to its end with ``score`` (inherited weights) and the preset's
    costs, each architecture's score written to ``path`` (``{"evaluated": {arch id: score}, "supernet":
    supernet}``: the scoring supernet's :func:`fingerprint`) as soon as it is known; ``evaluated`` (a killed run's)
    is not scored again. Returns the evolution and every score."""
    from ..cost.metrics import space_cost_fn
    from ..strategy.evolution import Evolution
    from .arch_selection import arch_id

    cost = space_cost_fn(spec, preset.bits, preset.latency, eyeriss=preset.eyeriss)
    evolution = Evolution(spec, preset, cost)
    evaluated = dict(evaluated or {})
    while not evolution.done:
        for arch in evolution.ask():
            key = arch_id(arch)
            if key not in evaluated:
                evaluated[key] = score(arch)
                atomic_write_json(path, {"evaluated": evaluated, "supernet": supernet})
            evolution.tell(arch, {**evaluated[key], **cost(arch)})
    return evolution, evaluated


def copy_ledger(output: str | os.PathLike[str], dest: str | os.PathLike[str], patterns: Sequence[str],
                marker: str) -> list[Path]:
    """Copy the files of a study's ledger (``patterns``, globs under ``output``: its results and cached evaluations,
    no checkpoints; a few hundred kB) to ``dest``, where they are committed or carried to another machine; copied
    back into an output folder, the study goes on from them without training anything it has results for.
    ``marker``: a file every started study of the kind has (``FileNotFoundError`` without it). Returns the files
    written."""
    src, out = Path(output), Path(dest)
    if not (src / marker).is_file():
        raise FileNotFoundError(f"{src}: no study here (no {marker}); run the study first")
    written = []
    for pattern in patterns:
        for path in sorted(src.glob(pattern)):
            if path.is_file():
                written.append(atomic_write_bytes(out / path.relative_to(src), path.read_bytes()))
    return written
