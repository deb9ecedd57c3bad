"""A score (top-1, BLEU) of retrained networks against a cost (energy: paper Fig. 6; effective FLOPs: Fig. 5), one
line per family: the searched hybrids, the restricted search, the homogeneous networks of the space and the
expert-designed families, each point at its seed mean with the seed range as an error bar.

A row is a mapping with ``family``, ``name``, the cost (a metric of :data:`~nni_shiftadd.cost.metrics.METRICS`, e.g.
``energy_mJ``) and ``score: {mean, min, max}``, as the rows of :mod:`nni_shiftadd.experiment.paper_table`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..cost.metrics import METRICS
from .subnet import save_figure

_MARKERS = ("*", "o", "s", "^", "D", "v", "P", "X", "h", "<", ">")


def plot_score_cost(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], y_label: str = "top-1",
                    title: str = "", cost: str = "energy_mJ") -> Path:
    """One line per ``family`` of ``rows`` (its networks in order of ``cost``), the mean score with the seed range
    as error bars, against ``cost`` (log scale when it spans more than 20x); write to ``path`` and return it."""
    if cost not in METRICS:
        raise ValueError(f"plot_score_cost: cost {cost!r} is not a metric; known: {list(METRICS)}")
    if not rows:
        raise ValueError("plot_score_cost: no rows to plot")
    for row in rows:
        missing = [k for k in ("family", "name", cost, "score") if k not in row]
        if missing:
            raise ValueError(f"plot_score_cost: row {row.get('name', '?')!r} lacks {missing}")
    families: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        families.setdefault(row["family"], []).append(row)
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for k, (family, members) in enumerate(families.items()):
        members = sorted(members, key=lambda r: r[cost])
        xs = [r[cost] for r in members]
        ys = [r["score"]["mean"] for r in members]
        err = [[y - r["score"]["min"] for y, r in zip(ys, members)],
               [r["score"]["max"] - y for y, r in zip(ys, members)]]
        ax.errorbar(xs, ys, yerr=err, marker=_MARKERS[k % len(_MARKERS)], markersize=11 if k == 0 else 6,
                    color=f"C{k % 10}", lw=2.0 if k == 0 else 1.2, capsize=3, label=family, zorder=4 if k == 0 else 3)
    values = [r[cost] for r in rows]
    if min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")
    metric = METRICS[cost]
    ax.set_xlabel(f"{metric.what} [{metric.unit}]")
    ax.set_ylabel(f"{y_label} (retrained)")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    return save_figure(fig, path)
