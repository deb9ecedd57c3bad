"""Which architectures a ranking study trains: a seeded sample of a space (image or translation) spread over
block-type mix, widths and depth (farthest-point sampling among many random architectures and the homogeneous
baselines), and the short stable names that key their cached runs."""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["arch_features", "arch_id", "select_archs"]


def arch_id(arch: Mapping[str, Any]) -> str:
    """A short stable name of an architecture (the cache key of its stand-alone runs)."""
    from ..strategy.evolution import arch_key

    return hashlib.sha1(arch_key(arch).encode()).hexdigest()[:10]


def image_features(spec: Any, arch: Mapping[str, Any]) -> np.ndarray:
    """An image architecture's block mix (the share of each block type among its layers) and its depth relative to
    the space's deepest network."""
    from ..space.spec import layer_plan

    plan = layer_plan(spec, arch)
    blocks = sorted({b for stage in spec.stages for b in stage.blocks})
    max_depth = sum(max(stage.depths) for stage in spec.stages)
    share = [sum(layer.op == b for layer in plan) / len(plan) for b in blocks]
    return np.array([*share, len(plan) / max_depth])


def translation_features(spec: Any, arch: Mapping[str, Any]) -> np.ndarray:
    """A translation architecture's block mix (the share of its layers with an attention branch, and with each
    convolution-family branch), its widths (embedding and mean FFN dimensions relative to the largest) and its
    decoder depth relative to the deepest."""
    from ..space.nlp_spec import layers
    from ..vocabulary import ATTENTION, CONV_FAMILY, branches

    active = layers(spec, arch)
    mix = [[b for b in branches(layer.op) if b is not None] for layer in active]
    share = [sum(b in kinds for kinds in mix) / len(active) for b in (ATTENTION, *CONV_FAMILY)]
    widths = [int(arch[f"{side}.embed_dim"]) / getattr(spec, side).max_embed for side in ("encoder", "decoder")]
    ffn = np.mean([layer.ffn_dim for layer in active]) / max(max(spec.encoder.ffn_dims), max(spec.decoder.ffn_dims))
    depth = int(arch["decoder.depth"]) / spec.decoder.max_depth
    return np.array([*share, *widths, ffn, depth])


def image_baselines(spec: Any) -> list[dict[str, Any]]:
    """The homogeneous networks of an image space (Conv where a stage lacks the block type)."""
    from ..space.spec import baseline_arch
    from ..vocabulary import BLOCKS, REFERENCE_BLOCK

    return [baseline_arch(spec, op, fallback=REFERENCE_BLOCK) for op in BLOCKS
            if any(op in stage.blocks for stage in spec.stages)]


def translation_baselines(spec: Any) -> list[dict[str, Any]]:
    """The networks of a translation space whose encoder layers are all of one block type."""
    return list(spec.named_baselines(spec.encoder.blocks).values())


#: What the selection spreads over, and the homogeneous networks it starts from, for each kind of space.
FEATURES: dict[str, Callable[[Any, Mapping[str, Any]], np.ndarray]] = {
    "image_classification": image_features, "translation": translation_features}
BASELINES: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "image_classification": image_baselines, "translation": translation_baselines}


def arch_features(spec: Any, arch: Mapping[str, Any]) -> np.ndarray:
    """What the selection spreads over (:data:`FEATURES` of the space's kind)."""
    return FEATURES[spec.kind](spec, arch)


def select_archs(spec: Any, count: int, seed: int, pool: int = 2000) -> list[dict[str, Any]]:
    """``count`` distinct architectures spread over block mix and depth: farthest-point sampling, seeded, over
    ``pool`` random architectures and the homogeneous baselines; the first pick is the random
    architecture nearest the pool's centre, so the list's prefixes are spread too."""
    from ..space.spec import canonical_arch, random_arch
    from ..strategy.evolution import arch_key

    rng = random.Random(seed)
    candidates: dict[str, dict[str, Any]] = {}
    for baseline in BASELINES[spec.kind](spec):
        arch = canonical_arch(spec, baseline)
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
