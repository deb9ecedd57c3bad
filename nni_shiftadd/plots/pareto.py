"""Accuracy-versus-cost plots of a search (paper Fig. 6 style): every evaluated architecture, the Pareto front
(cost minimised, accuracy maximised), the homogeneous baselines (all-Conv, all-Attn, all-Shift, all-Add) and the
architecture the search chose. They show at a glance whether the hybrid search beats the single-operator networks.

A record is a dict holding at least the plotted metrics (``accuracy``, ``energy_mJ``, ``latency_ms``, ...); other
keys (the architecture, a name) are carried along untouched.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..space.spec import OPS
from .subnet import OP_COLORS, save_figure

#: Axis labels of the usual metrics; any other key is used as it is.
METRIC_LABELS: dict[str, str] = {"accuracy": "accuracy", "energy_mJ": "energy (mJ)", "latency_ms": "latency (ms)",
                                 "flops": "FLOPs", "params": "parameters", "val_acc": "validation accuracy",
                                 "valid_loss": "validation loss (nats/token)", "bleu": "BLEU"}
_UNITS: dict[str, str] = {"energy_mJ": " mJ", "latency_ms": " ms"}
_MARKERS = ("s", "^", "D", "v", "P", "X", "h", "<", ">")


def _metric(record: Any, key: str, where: str) -> float:
    """``record[key]`` as a finite float; ``ValueError`` naming ``where`` (e.g. ``records[3]``) and ``key``."""
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: expected a dict of metrics, got {type(record).__name__}")
    if key not in record:
        raise ValueError(f"{where}: missing key {key!r} (it has {sorted(map(str, record))})")
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{where}[{key!r}]: got {value!r}; expected a finite number")
    return float(value)


def _points(records: Sequence[Mapping[str, Any]], x: str, y: str, what: str = "records") -> list[tuple[float, float]]:
    return [(_metric(r, x, f"{what}[{i}]"), _metric(r, y, f"{what}[{i}]")) for i, r in enumerate(records)]


def pareto_front(records: Sequence[Mapping[str, Any]], x: str, y: str = "accuracy",
                 maximize: bool = True) -> list[Mapping[str, Any]]:
    """The records no other record dominates (``x`` minimised, ``y`` maximised, or minimised with
    ``maximize=False``: a loss), sorted by ``x``.

    A record is dominated when another is at least as good in both metrics and better in one. So of several
    records with the same ``x`` only those with the highest ``y`` stay, a record with the ``y`` of a cheaper one
    goes, and exact duplicates of a front point all stay (in their input order). The records themselves are
    returned, not copies. A missing or non-numeric metric raises ``ValueError`` naming the key and the index.
    """
    sign = 1.0 if maximize else -1.0
    points = [(px, sign * py) for px, py in _points(records, x, y)]
    order = sorted(range(len(records)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    for i in order:
        if not front or points[i][1] > points[front[-1]][1] or points[i] == points[front[-1]]:
            front.append(i)
    return [records[i] for i in front]


def _check_inputs(records: Sequence[Mapping[str, Any]], x: str, y: str,
                  baselines: Mapping[str, Mapping[str, Any]] | None, best: Mapping[str, Any] | None
                  ) -> tuple[list[tuple[float, float]], dict[str, tuple[float, float]], tuple[float, float] | None]:
    """The ``(x, y)`` points of the records, the baselines and ``best``; ``ValueError`` if one lacks a metric."""
    if not records:
        raise ValueError("records: empty; nothing to plot")
    base_points = {name: (_metric(r, x, f"baselines[{name!r}]"), _metric(r, y, f"baselines[{name!r}]"))
                   for name, r in (baselines or {}).items()}
    best_point = None if best is None else (_metric(best, x, "best"), _metric(best, y, "best"))
    return _points(records, x, y), base_points, best_point


def _baseline_style(name: str, k: int) -> dict[str, Any]:
    """Marker and colour of baseline ``name``: the block type's colour when the name says which (``all_conv``)."""
    op = next((op for op in OPS if op in name.lower()), None)
    color = OP_COLORS[op] if op else f"C{k % 10}"
    return {"marker": _MARKERS[k % len(_MARKERS)], "color": color}


def plot_pareto(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], x: str = "energy_mJ",
                y: str = "accuracy", baselines: Mapping[str, Mapping[str, Any]] | None = None,
                best: Mapping[str, Any] | None = None, maximize: bool = True, y_label: str | None = None) -> Path:
    """Scatter ``y`` against ``x`` for every record, draw the Pareto front (:func:`pareto_front`) as a step line,
    mark each of ``baselines`` (name -> record) with its own labelled marker and highlight ``best``; write to
    ``path`` and return it. Every record, baseline and ``best`` must hold ``x`` and ``y`` (``ValueError``
    naming the key and which record lacks it). ``y_label`` names the y axis (default: :data:`METRIC_LABELS`)."""
    points, base_points, best_point = _check_inputs(records, x, y, baselines, best)
    front = _points(pareto_front(records, x, y, maximize), x, y)

    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(*zip(*points), s=16, color="#9DB4C8", alpha=0.8, linewidths=0, label=f"evaluated ({len(points)})",
               zorder=2)
    ax.step(*zip(*front), where="post", color="#1F3A5F", lw=1.4, zorder=3)
    ax.scatter(*zip(*front), s=22, color="#1F3A5F", label=f"Pareto front ({len(front)})", zorder=3)
    for k, (name, (bx, by)) in enumerate(base_points.items()):
        ax.scatter([bx], [by], s=70, edgecolors="black", linewidths=0.8, label=name, zorder=4,
                   **_baseline_style(name, k))
        ax.annotate(name, (bx, by), xytext=(6, -10), textcoords="offset points", fontsize=7.5, zorder=5)
    if best_point is not None:
        ax.scatter(*best_point, s=260, marker="*", color="#FFC20A", edgecolors="black", linewidths=0.9, zorder=6,
                   label=f"best: {y} {best_point[1]:.4g} at {best_point[0]:.4g}{_UNITS.get(x, '')}")
    xs = [px for px, _ in points] + [bx for bx, _ in base_points.values()]
    if min(xs) > 0 and max(xs) / min(xs) > 20:  # e.g. all-Attn at 10x the energy of the rest: log scale
        ax.set_xscale("log")
    y_label = y_label or METRIC_LABELS.get(y, y)
    ax.set_xlabel(METRIC_LABELS.get(x, x))
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.margins(x=0.08, y=0.06)  # room for the baselines' name tags
    ax.set_title(f"{y_label} vs. {METRIC_LABELS.get(x, x)}", fontsize=10)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    return save_figure(fig, path)


def plot_pareto_pair(records: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike[str],
                     baselines: Mapping[str, Mapping[str, Any]] | None = None,
                     best: Mapping[str, Any] | None = None, y: str = "accuracy",
                     maximize: bool = True, y_label: str | None = None) -> list[Path]:
    """:func:`plot_pareto` against energy (``energy_mJ``) and latency (``latency_ms``): writes
    ``pareto_energy.png`` and ``pareto_latency.png`` in ``out_dir`` and returns their paths."""
    for key in ("energy_mJ", "latency_ms"):  # check everything first: write both figures or neither
        _check_inputs(records, key, y, baselines, best)
    out = Path(out_dir)
    return [plot_pareto(records, out / f"pareto_{name}.png", x=key, y=y, baselines=baselines, best=best,
                        maximize=maximize, y_label=y_label)
            for name, key in (("energy", "energy_mJ"), ("latency", "latency_ms"))]
