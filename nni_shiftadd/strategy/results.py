"""What a search leaves behind: every evaluated architecture with all its metrics (JSON and CSV) and the
objective-vs-energy / objective-vs-latency Pareto plots (accuracy, or a validation loss) with the homogeneous
baselines marked."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from ..atomic import atomic_write_text
from .evolution import Evolution

_plotted: dict[str, tuple[int, int]] = {}  # output folder -> (generation, results) last plotted


def write_results(evolution: Evolution, out_dir: str | os.PathLike[str], *, error: str | None = None,
                  plots: bool = True) -> dict[str, Path]:
    """Write ``results.json`` (records, baselines, best, per-generation history, error), ``results.csv`` (one
    row per architecture: metrics, then one column per label), ``best.json`` (the best feasible architecture and
    its metrics) and, once per generation, the Pareto plots."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = evolution.records()
    baselines = {r["baseline"]: r for r in records if r["baseline"]}
    best = evolution.best()
    summary = {"space": evolution.spec.name, "preset": evolution.cfg.name, "generation": evolution.generation,
               "iterations": evolution.cfg.iterations, "done": evolution.done, "error": error,
               "constraints": {k: {"min": b.min, "max": b.max} for k, b in evolution.cfg.constraints.items()},
               "blocks": evolution.cfg.blocks, "evaluated": len(records), "rejected_samples": evolution.rejected, "best": best,
               "baselines": baselines, "history": evolution.history, "records": records}
    if evolution.cfg.goal == "pareto":  # every record says whether it is on the front, too
        summary["front"] = evolution.front()
    paths = {"json": out / "results.json", "csv": out / "results.csv"}
    atomic_write_text(paths["json"], json.dumps(summary, indent=1))
    if best is not None:  # what `nni-shiftadd retrain --arch` and `plot subnet --arch` take
        paths["best"] = out / "best.json"
        atomic_write_text(paths["best"], json.dumps(best, indent=1))
    labels = list(evolution.space)
    metric_keys = sorted({k for r in records for k in r if k not in ("arch",) and not isinstance(r[k], dict)})
    tmp = paths["csv"].with_name("results.csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(metric_keys + labels)
        for r in records:
            writer.writerow([r.get(k) for k in metric_keys] + [r["arch"][label] for label in labels])
    os.replace(tmp, paths["csv"])
    mark = (evolution.generation, len(records))
    last = _plotted.get(str(out))
    objective = evolution.cfg.objective
    ok = [r for r in records if r["status"] == "ok" and "energy_mJ" in r and "latency_ms" in r and objective in r]
    due = last is None or last[0] != mark[0] or evolution.done or error is not None
    if plots and ok and due and last != mark:
        from ..plots.pareto import plot_pareto_pair

        good = {name: r for name, r in baselines.items() if r["status"] == "ok"}
        for path in plot_pareto_pair(ok, out, good, best, y=objective, maximize=evolution.cfg.objective_goal == "max"):
            paths[path.stem] = path
        _plotted[str(out)] = mark
    return paths
