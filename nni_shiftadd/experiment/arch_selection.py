"""Which architectures a ranking study trains: a seeded sample of a space spread over block-type mix and depth
(farthest-point sampling among many random architectures and the homogeneous baselines), and the short stable
names that key their cached runs."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["arch_features", "arch_id", "select_archs"]


def arch_id(arch: Mapping[str, Any]) -> str:
    """A short stable name of an architecture (the cache key of its stand-alone runs)."""
    from ..strategy.evolution import arch_key

    return hashlib.sha1(arch_key(arch).encode()).hexdigest()[:10]


def arch_features(spec: Any, arch: Mapping[str, Any]) -> np.ndarray:
    """What the selection spreads over: the share of each block type among the layers, and the depth relative to
    the space's deepest network."""
    from ..space.spec import layer_plan

    plan = layer_plan(spec, arch)
    blocks = sorted({b for stage in spec.stages for b in stage.blocks})
    max_depth = sum(max(stage.depths) for stage in spec.stages)
    share = [sum(layer.op == b for layer in plan) / len(plan) for b in blocks]
    return np.array([*share, len(plan) / max_depth])


def select_archs(spec: Any, count: int, seed: int, pool: int = 2000) -> list[dict[str, Any]]:
    """``count`` distinct architectures spread over block mix and depth: farthest-point sampling, seeded, over
    ``pool`` random architectures and the homogeneous baselines; the first pick is the random
    architecture nearest the pool's centre, so the list's prefixes are spread too."""
    from ..space.spec import baseline_arch, canonical_arch, random_arch
    from ..strategy.evolution import arch_key
    from ..vocabulary import BLOCKS, REFERENCE_BLOCK

    rng = random.Random(seed)
    candidates: dict[str, dict[str, Any]] = {}
    for op in BLOCKS:
        if any(op in stage.blocks for stage in spec.stages):
            arch = canonical_arch(spec, baseline_arch(spec, op, fallback=REFERENCE_BLOCK))
            candidates.setdefault(arch_key(arch), arch)
    for _ in range(pool):
        arch = canonical_arch(spec, random_arch(spec, rng))
        candidates.setdefault(arch_key(arch), arch)
    archs = list(candidates.values())
    if len(archs) < count:
        raise ValueError(f"archs: the space {spec.name!r} yielded only {len(archs)} distinct architectures in "
                         f"{pool} draws; ask for fewer than {count}")
    feats = np.stack([arch_features(spec, a) for a in archs])
    first = int(np.argmin(((feats - feats.mean(0)) ** 2).sum(1)))
    chosen = [first]
    dist = ((feats - feats[first]) ** 2).sum(1)
    while len(chosen) < count:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((feats - feats[nxt]) ** 2).sum(1))
    return [archs[i] for i in chosen]
