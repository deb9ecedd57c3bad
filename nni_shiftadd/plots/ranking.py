"""Figures of the ranking study (paper Table 5): inherited against stand-alone accuracy per weight-sharing mode, and
Kendall tau against the supernet's training budget with the seed ceiling as a band.

Both read the ``results.json`` mapping that :mod:`nni_shiftadd.experiment.ranking` writes; the translation study's
scatter (:func:`plot_translation_ranking`) and seed-noise plot (:func:`plot_seed_noise`) read that of
:mod:`nni_shiftadd.experiment.translation_ranking`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .subnet import save_figure

__all__ = ["plot_rank_scatter", "plot_seed_noise", "plot_tau_against_budget", "plot_translation_ranking"]

#: Colour of each weight-sharing mode (Okabe-Ito, apart from the block-type colours).
MODE_COLORS: dict[str, str] = {"none": "#999999", "naive": "#0072B2", "hws": "#D55E00"}


def plot_rank_scatter(results: Mapping[str, Any], variant: str, path: str | os.PathLike[str]) -> Path:
    """Inherited (mean over supernet seeds, bars the seed range) against stand-alone accuracy, one panel a mode, for
    the supernets of ``variant`` (a budget or technique of the study)."""
    modes = results["variants"][variant]["modes"]
    target = np.array([a["standalone"] for a in results["archs"]])
    fig = Figure(figsize=(4.2 * len(modes), 4.0))
    axes = fig.subplots(1, len(modes), squeeze=False)[0]
    for ax, (mode, data) in zip(axes, modes.items()):
        acc = np.array(list(data["inherited"].values()))
        mean = acc.mean(0)
        ax.errorbar(target, mean, yerr=[mean - acc.min(0), acc.max(0) - mean], fmt="o", ms=4, alpha=0.8, capsize=2,
                    color=MODE_COLORS.get(mode))
        s = data["summary"]["kendall_tau"]
        lo, hi = data["interval"]["kendall_tau"]
        ax.set_title(f"{mode}: tau {s['mean']:.2f} [{lo:.2f}, {hi:.2f}]")
        ax.set_xlabel("stand-alone test accuracy")
        ax.set_ylabel("inherited accuracy (BN recalibrated)")
        ax.grid(alpha=0.3)
    ceiling = results["ceiling"]["kendall_tau"]
    fig.suptitle(f"{results['space']}, {variant}: inherited vs stand-alone ({len(target)} architectures; "
                 f"seed ceiling tau {ceiling:.2f})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_tau_against_budget(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Kendall tau (seed mean; bars: range over seeds; shade: bootstrap 95% interval over architectures) against
    supernet training steps, one line per mode over the budget variants, the stand-alone seed ceiling as a band.
    Technique variants, where the study has them, are drawn as single marked points at their training time in
    one-path steps (steps x the paths a step trains), the budget they are compared with."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    ceiling = results["ceiling"]
    lo, hi = ceiling["interval"]["kendall_tau"]
    ax.axhspan(lo, hi, color="#BBBBBB", alpha=0.35, lw=0, label=f"seed ceiling {ceiling['kendall_tau']:.2f} (95%)")
    ax.axhline(ceiling["kendall_tau"], color="#777777", lw=1)
    budgets = [(name, v) for name, v in results["variants"].items() if v.get("technique") is None]
    modes = sorted({m for _, v in budgets for m in v["modes"]}, key=list(MODE_COLORS).index)
    for mode in modes:
        rows = [(v["steps"], v["modes"][mode]) for _, v in budgets if mode in v["modes"]]
        steps = np.array([s for s, _ in rows], dtype=float)
        mean = np.array([d["summary"]["kendall_tau"]["mean"] for _, d in rows])
        low = np.array([d["summary"]["kendall_tau"]["min"] for _, d in rows])
        high = np.array([d["summary"]["kendall_tau"]["max"] for _, d in rows])
        band = np.array([d["interval"]["kendall_tau"] for _, d in rows])
        color = MODE_COLORS.get(mode)
        ax.fill_between(steps, band[:, 0], band[:, 1], color=color, alpha=0.12, lw=0)
        ax.errorbar(steps, mean, yerr=[mean - low, high - mean], fmt="o-", color=color, capsize=3, label=mode)
    techniques = [v for v in results["variants"].values() if v.get("technique")]
    for k, v in enumerate(techniques):
        paths = v.get("paths_per_step", 1)
        for mode, d in v["modes"].items():
            tau = d["summary"]["kendall_tau"]
            # a little right of its budget, so that the budget's own point stays visible
            ax.errorbar([v["steps"] * paths * 1.04 ** (k + 1)], [tau["mean"]],
                        yerr=[[tau["mean"] - tau["min"]], [tau["max"] - tau["mean"]]], marker="^*sPD"[k % 6], ms=9,
                        ls="none", capsize=3, color=MODE_COLORS.get(mode), markeredgecolor="black",
                        label=f"{mode}, {v['technique']} ({v['steps']:,} steps x {paths} paths)")
    ax.set_xscale("log")
    ticks = sorted({v["steps"] for v in results["variants"].values() if v["steps"] and not v.get("technique")})
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("supernet training steps of one path (log)")
    ax.set_ylabel("Kendall tau, inherited vs stand-alone")
    ax.set_title(f"{results['space']}: ranking fidelity against supernet budget ({len(results['archs'])} archs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_translation_ranking(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Inherited against stand-alone validation loss (left) and test BLEU (right) of the translation ranking study
    (:mod:`nni_shiftadd.experiment.translation_ranking`), one colour per technique, the seed range as error bars."""
    fig = Figure(figsize=(9.6, 4.2))
    axes = fig.subplots(1, 2)
    for ax, metric, label in zip(axes, ("valid_loss", "bleu"), ("validation loss (nats/token)", "test BLEU")):
        target = np.array([a[metric] for a in results["archs"] if metric in a])  # a partial study: those trained
        for k, (name, report) in enumerate(results["techniques"].items()):
            runs = np.array(list(report["metrics"][metric]["inherited"].values()))
            taus = [r["kendall_tau"] for r in report["metrics"][metric]["per_seed"].values()]
            mean = runs.mean(0)
            ax.errorbar(target, mean, yerr=[mean - runs.min(0), runs.max(0) - mean], fmt="o", color=f"C{k}",
                        capsize=2, ms=5, label=f"{name} (tau {np.mean(taus):.2f})")
        ax.set_xlabel(f"stand-alone {label}")
        ax.set_ylabel(f"inherited {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    trained = sum("valid_loss" in a for a in results["archs"])
    of = "" if trained == len(results["archs"]) else f" of {len(results['archs'])} so far"
    fig.suptitle(f"{results['space']}: inherited vs stand-alone ({trained} architectures{of})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_seed_noise(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Each architecture's inherited validation loss in one supernet seed against the first seed's, a panel per
    technique with two or more seeds (the line of slope 1 through the means: no seed noise), the two-way ANOVA's
    verdict in its title: whether the spread over architectures stands out of the seed noise. ``None`` when no
    technique has two seeds."""
    panels = {name: report["spread"] for name, report in results["techniques"].items()
              if len(report["spread"].get("inherited_loss") or {}) > 1}
    if not panels:
        return None
    fig = Figure(figsize=(max(5.2, 4.2 * len(panels)), 4.6))
    for ax, (name, spread) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels.items()):
        seeds = list(spread["inherited_loss"])
        first = np.array(spread["inherited_loss"][seeds[0]])
        for k, seed in enumerate(seeds[1:]):
            ax.plot(first, spread["inherited_loss"][seed], "o", color=f"C{k}", ms=5, label=f"seed {seed}")
        # without noise a seed moves every architecture alike: slope 1 through the means (the ANOVA's seed shift)
        rest = np.array([spread["inherited_loss"][seed] for seed in seeds[1:]], dtype=float)
        lo, hi = first.min(), first.max()
        pad = 0.05 * (hi - lo or 1.0)
        x = np.array([lo - pad, hi + pad])
        ax.plot(x, x + rest.mean() - first.mean(), color="0.6", lw=1, zorder=0, label="no seed noise")
        e = spread["architecture_effect"]
        test = "" if e["F"] is None else f"F({e['df'][0]},{e['df'][1]}) = {e['F']:.1f}, p = {e['p_value']:.2g}"
        ax.set_title(f"{name}: {test}\nbeyond seed noise: {spread['beyond_seed_noise']}", fontsize=9)
        ax.set_xlabel(f"inherited validation loss, seed {seeds[0]} (nats)")
        ax.set_ylabel("inherited validation loss, other seed (nats)")
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['space']}: {len(results['archs'])} architectures across supernet seeds", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
