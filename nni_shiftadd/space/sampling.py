"""Which paths one supernet training step trains: the technique of one-shot training, a recipe's ``sampling``.

- ``uniform``: one path drawn uniformly (single-path one-shot training, the paper's Sec. 3.1);
- ``fair``: strict fairness over the block types of every layer (FairNAS): one architecture drawn per step for
  everything but the block types (depths, and a translation space's widths), and as many paths as the widest layer
  offers block types, path ``k`` taking the ``k``-th type of each layer's own random permutation, so every
  candidate of every layer is trained at least once per step (layers offering fewer types repeat theirs);
- ``sandwich``: the sandwich rule over depth (BigNAS): the deepest and the shallowest depth pattern and
  ``sandwich_random`` random ones per step, everything else random.

It works on any space kind through its labels: block types are the ``*.op`` labels, depths the ``*.depth`` ones.

A step sums the paths' losses (their gradients add up) and makes one update, so a technique with ``n`` paths costs
about ``n`` uniform steps; compare techniques at equal time, not at equal steps. The paths come from the caller's
``random.Random`` only, so a resumed run draws the same sequence.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

from .spec import arch_space, random_arch, structurally_valid

__all__ = ["SAMPLINGS", "paths_per_step", "step_paths"]


def _uniform(spec: Any, rng: random.Random, extra: int) -> list[dict[str, Any]]:
    return [random_arch(spec, rng)]


def _fair(spec: Any, rng: random.Random, extra: int) -> list[dict[str, Any]]:
    base = random_arch(spec, rng)
    choices = {label: list(values) for label, values in arch_space(spec).items() if label.endswith(".op")}
    for values in choices.values():
        rng.shuffle(values)
    width = max(len(values) for values in choices.values())
    return [{**base, **{label: values[k % len(values)] for label, values in choices.items()}} for k in range(width)]


def depth_patterns(spec: Any) -> list[dict[str, int]]:
    """Every allowed assignment of the space's depth labels (``*.depth``): the stage depths of an image space that
    add up to its ``total_depth``, the decoder depths of a translation space."""
    space = arch_space(spec)
    labels = [label for label in space if label.endswith(".depth")]
    base = random_arch(spec, random.Random(0))
    patterns = [dict(zip(labels, combo)) for combo in itertools.product(*(space[label] for label in labels))]
    return [p for p in patterns if structurally_valid(spec, {**base, **p})]


def _sandwich(spec: Any, rng: random.Random, extra: int) -> list[dict[str, Any]]:
    patterns = depth_patterns(spec)
    deepest, shallowest = max(patterns, key=lambda p: sum(p.values())), min(patterns, key=lambda p: sum(p.values()))
    paths = [{**random_arch(spec, rng), **depths} for depths in (deepest, shallowest)]
    return paths + [random_arch(spec, rng) for _ in range(extra)]


#: Every technique and the function that draws a step's paths from it.
SAMPLINGS: dict[str, Callable[[Any, random.Random, int], list[dict[str, Any]]]] = {
    "uniform": _uniform, "fair": _fair, "sandwich": _sandwich}


def step_paths(spec: Any, rng: random.Random, sampling: str, sandwich_random: int = 2
               ) -> list[dict[str, Any]]:
    """The architectures one training step of ``sampling`` trains (see the module docstring)."""
    try:
        draw = SAMPLINGS[sampling]
    except KeyError:
        raise ValueError(f"sampling: got {sampling!r}; expected one of {list(SAMPLINGS)}") from None
    return draw(spec, rng, sandwich_random)


def paths_per_step(spec: Any, sampling: str, sandwich_random: int = 2) -> int:
    """How many paths a step of ``sampling`` trains: its cost in uniform steps."""
    return len(step_paths(spec, random.Random(0), sampling, sandwich_random))
