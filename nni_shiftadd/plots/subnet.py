"""Diagram of one CV architecture in the style of the paper's Fig. 8: layers along x, one row per resolution, each
active layer a box coloured by its block type (Attn / Conv / Shift / Add) and annotated with its width.

Also home of what the other plots share: the fixed colour of each block type (:data:`OP_COLORS`, so that e.g. the
all-Conv baseline of a Pareto plot has the colour of the Conv boxes here) and :func:`save_figure`.
"""
from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

from ..atomic import atomic_write_bytes
from ..space.spec import OPS, SpaceSpec, layer_plan
from ..vocabulary import BLOCK_TYPES

#: Fixed colour per block type (Okabe-Ito, colour-blind safe), used by every plot of this package.
OP_COLORS: dict[str, str] = {name: block.colour for name, block in BLOCK_TYPES.items()}
#: Display name per block type.
OP_NAMES: dict[str, str] = {name: block.display for name, block in BLOCK_TYPES.items()}
_FIXED = "#BBBBBB"  # stem and head: not searched
_BOX_W, _BOX_H = 0.78, 0.62


def check_figure_path(path: str | os.PathLike[str], field: str = "path") -> Path:
    """``path`` as a figure file: a name whose suffix is a format matplotlib writes (``.png``, ``.pdf``, ``.svg``,
    ...), not a folder and not under a file; ``ValueError`` naming ``field`` otherwise."""
    path = Path(path)
    formats = sorted(Figure().canvas.get_supported_filetypes())
    if path.is_dir():
        raise ValueError(f"{field}: {str(path)!r} is a folder; give a file name, e.g. {str(path / 'figure.png')!r}")
    if path.suffix.lstrip(".").lower() not in formats:
        raise ValueError(f"{field}: {str(path)!r} has no figure format suffix; expected one of "
                         f"{['.' + f for f in formats]}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{field}: {str(path)!r} lies under {str(parent)!r}, which is a file")
            break
    return path


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, PNG for ``.png``), creating the folder; return the path.
    The file is replaced whole (:func:`~nni_shiftadd.atomic.atomic_write_bytes`): a study that redraws its figure
    while another process copies it never hands on half a file.

    Figures are built as ``matplotlib.figure.Figure`` objects, not through ``pyplot``: no global backend or figure
    registry is touched, so plotting works headless and leaks nothing between calls."""
    path = check_figure_path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format=path.suffix.lstrip(".").lower() or None)
    return atomic_write_bytes(path, buffer.getvalue())


def _text_color(hex_color: str) -> str:
    """Black or white, whichever reads better on ``hex_color`` (relative luminance)."""
    r, g, b = (int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.5 else "white"


def _box(ax: Any, x: float, y: float, color: str, title: str, subtitle: str) -> None:
    ax.add_patch(FancyBboxPatch((x - _BOX_W / 2, y - _BOX_H / 2), _BOX_W, _BOX_H,
                                boxstyle="round,pad=0,rounding_size=0.08", facecolor=color, edgecolor="#333333",
                                linewidth=0.8, zorder=2))
    ink = _text_color(color)  # the y axis is inverted (highest resolution on top): smaller y is higher up
    ax.text(x, y - 0.1, title, ha="center", va="center", fontsize=9, fontweight="bold", color=ink, zorder=3)
    ax.text(x, y + 0.15, subtitle, ha="center", va="center", fontsize=7.5, color=ink, zorder=3)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float]) -> None:
    (x0, y0), (x1, y1) = start, end
    ax.add_patch(FancyArrowPatch((x0 + _BOX_W / 2, y0), (x1 - _BOX_W / 2, y1), arrowstyle="-|>", mutation_scale=9,
                                 color="#555555", linewidth=0.9, shrinkA=1, shrinkB=1, zorder=1))


def plot_subnet(spec: SpaceSpec, arch: Mapping[str, Any], path: str | os.PathLike[str],
                title: str | None = None) -> Path:
    """Draw ``arch`` of ``spec`` (Fig. 8 style) to ``path`` and return the path.

    One row per resolution (top: the stem's output, then every halving), one column per active layer in network
    order, so a layer that halves the resolution steps down a row. Each box names the block type and the output
    width (``in->out`` where the width changes); grey boxes are the fixed stem and head. ``arch`` is validated
    first: a bad one raises the ``ValueError`` of :func:`~nni_shiftadd.space.spec.validate_arch`.
    """
    plan = layer_plan(spec, arch)
    rows = len(spec.stages)
    n = len(plan)
    fig = Figure(figsize=(max(6.0, 0.95 * (n + 2) + 1.6), 0.8 * rows + 1.9), layout="constrained")
    ax = fig.add_subplot()

    _box(ax, -1, 0, _FIXED, "Stem", f"{spec.input.channels}\u2192{spec.stem.channels}")
    prev = (-1.0, 0.0)
    for k, layer in enumerate(plan):
        widths = f"{layer.in_width}\u2192{layer.width}" if layer.in_width != layer.width else f"{layer.width} ch"
        _box(ax, k, layer.stage, OP_COLORS[layer.op], OP_NAMES[layer.op], widths)
        _arrow(ax, prev, (k, layer.stage))
        prev = (float(k), float(layer.stage))
    _box(ax, n, rows - 1, _FIXED, "Head", f"{plan[-1].width}\u2192{spec.num_classes}")
    _arrow(ax, prev, (n, rows - 1))

    ax.set_xlim(-1.6, n + 0.6)
    ax.set_ylim(rows - 0.5, -0.5)  # highest resolution on top
    ax.set_xticks(range(n), [str(k) for k in range(n)], fontsize=8)
    ax.set_xlabel("layer")
    ax.set_yticks(range(rows), [f"{st.resolution}\u00d7{st.resolution}\n{st.width} ch" for st in spec.stages],
                  fontsize=8.5)
    ax.set_ylabel("resolution")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for r in range(rows):  # faint bands, one per resolution
        ax.axhspan(r - 0.45, r + 0.45, color="#F2F2F2", zorder=0)

    if title is None:
        counts = Counter(layer.op for layer in plan)
        title = f"{spec.name}: {n} layers (" + ", ".join(f"{counts[op]} {OP_NAMES[op]}" for op in OPS
                                                         if counts[op]) + ")"
    ax.set_title(title, fontsize=10)
    fig.legend(handles=[Patch(facecolor=OP_COLORS[op], edgecolor="#333333", label=OP_NAMES[op]) for op in OPS],
               loc="outside lower center", ncol=len(OPS), frameon=False, fontsize=8.5)
    return save_figure(fig, path)
