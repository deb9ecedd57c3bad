"""Multi-objective selection (NSGA-II, Deb et al. 2002) for the evolution core's ``goal: pareto``: non-dominated
sorting of objective vectors into fronts, the crowding distance inside a front, and the order in which NSGA-II
picks survivors (front by front, the least crowded first within a front).

Every function takes objective vectors oriented so that larger is better in every coordinate (the core negates the
objectives whose goal is ``min``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["crowding_distance", "dominates", "hypervolume", "non_dominated_fronts", "survivor_order"]

Vector = Sequence[float]


def dominates(a: Vector, b: Vector) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_fronts(vectors: Sequence[Vector]) -> list[list[int]]:
    """The indices of ``vectors`` sorted into fronts: the first holds those no other vector dominates, the next
    those only the first dominates, and so on (every index in exactly one front, each front in index order)."""
    n = len(vectors)
    dominated_by = [0] * n  # how many vectors dominate i
    dominating: list[list[int]] = [[] for _ in range(n)]  # the vectors i dominates
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(vectors[i], vectors[j]):
                dominating[i].append(j)
                dominated_by[j] += 1
            elif dominates(vectors[j], vectors[i]):
                dominating[j].append(i)
                dominated_by[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if dominated_by[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in dominating[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    following.append(j)
        current = following
    return fronts


def crowding_distance(vectors: Sequence[Vector], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each index of ``front``: over the objectives, the normalised gap between its
    two neighbours along that objective; the extremes of every objective get ``inf`` (they are always kept)."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for k in range(len(vectors[front[0]])):
        ordered = sorted(front, key=lambda i: (vectors[i][k], i))
        low, high = vectors[ordered[0]][k], vectors[ordered[-1]][k]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low or not math.isfinite(high - low):
            continue
        for prev, cur, nxt in zip(ordered, ordered[1:], ordered[2:]):
            distance[cur] += (vectors[nxt][k] - vectors[prev][k]) / (high - low)
    return distance


def survivor_order(vectors: Sequence[Vector]) -> list[int]:
    """Every index, in the order NSGA-II keeps them: by front, and within a front by decreasing crowding distance
    (ties by index, so the order is deterministic)."""
    order: list[int] = []
    for front in non_dominated_fronts(vectors):
        distance = crowding_distance(vectors, front)
        order += sorted(front, key=lambda i: (-distance[i], i))
    return order


def hypervolume(vectors: Sequence[Vector], reference: Vector) -> float:
    """The area that two-objective ``vectors`` dominate above ``reference`` (a point every vector beats in both
    objectives): how much of the trade-off a front covers, the usual single number to compare two fronts by."""
    if any(len(v) != 2 for v in vectors) or len(reference) != 2:
        raise ValueError("hypervolume: two objectives only")
    points = sorted({(float(x), float(y)) for x, y in vectors if x > reference[0] and y > reference[1]},
                    key=lambda p: (-p[0], -p[1]))
    area, top = 0.0, reference[1]
    for x, y in points:  # by the first objective, best first: each adds the strip it raises above the others
        if y > top:
            area += (x - reference[0]) * (y - top)
            top = y
    return area
