"""The paper's Table 3 for a translation demo: the subnets a search chose and the homogeneous baselines, each with
params, FLOPs, BLEU on the test split, Eyeriss latency and energy; and BLEU-versus-cost Pareto plots of everything
the searches evaluated.

Every row's BLEU is a beam search of its subnet with the weights it inherits from the SuperTransformer, on the test
split (sacrebleu against the untokenised references), computed here once per subnet and kept in
``table_cache.json``, so a demo killed while it scores goes on where it stopped. The validation loss (the search's
objective), the costs and whether the row meets the search's constraints come from the searches' records.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json

#: What the paper's Table 3 calls the homogeneous networks of a translation space.
BASELINE_LABELS: dict[str, str] = {"all_attn": "all-Attn (Transformer)", "all_conv": "all-Conv (Lightweight Conv)",
                                   "all_shift": "all-Shift", "all_add": "all-Add"}
COLUMNS: tuple[str, ...] = ("params_M", "flops_G", "valid_loss", "bleu", "latency_ms", "energy_mJ")


def table_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of the table, without BLEU: the homogeneous baselines of the main search, the best subnet of each
    extra search (e.g. HAT's Attn-only space) and the best of the main (hybrid) search, each with its record."""
    rows = []
    for name, record in sorted(results.get("baselines", {}).items()):
        if record.get("status") == "ok":
            rows.append({"label": BASELINE_LABELS.get(name, name), "source": f"baseline {name}", "record": record})
    for name, extra in results.get("extra_searches", {}).items():
        blocks = extra.get("blocks")
        if extra.get("best"):
            what = f"search over {', '.join(blocks)} only" if blocks else "search"
            rows.append({"label": f"{name}: {what} (best)", "source": f"search {name}", "record": extra["best"]})
    if results.get("best"):
        rows.append({"label": "ShiftAddNAS search (best)", "source": "search", "record": results["best"]})
    return rows


def translation_table(checkpoint: str | os.PathLike[str], results: Mapping[str, Any], out: str | os.PathLike[str], *,
                      beam: int = 4, lenpen: float = 0.6, test_sentences: int | None = None) -> dict[str, Any]:
    """Score every row of :func:`table_rows` (test BLEU with inherited weights), write ``table.json`` and the BLEU
    Pareto plots (``plots/pareto_energy.png``, ``plots/pareto_latency.png``) into ``out``; return the table."""
    from tqdm import tqdm

    from ..data.translation import references_dir
    from ..strategy.evolution import arch_key
    from ..tasks.translation.evaluate import bleu, load_trained, supertransformer_data

    out = Path(out)
    rows = table_rows(results)
    cache_file = out / "table_cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    settings = f"beam={beam},lenpen={lenpen},sentences={test_sentences}"
    todo = [r for r in rows if f"{settings}|{arch_key(r['record']['arch'])}" not in cache]
    signature = next((v["signature"] for v in cache.values()), None)
    if todo:
        data_bin = supertransformer_data(checkpoint)
        model, task = load_trained(checkpoint, data_bin)
        references = references_dir(data_bin)
        for row in tqdm(todo, desc="      test BLEU", unit="subnet", dynamic_ncols=True):
            model.activate(row["record"]["arch"])
            score = bleu(model, task, "test", references, beam=beam, lenpen=lenpen, limit=test_sentences)
            cache[f"{settings}|{arch_key(row['record']['arch'])}"] = {
                k: score[k] for k in ("bleu", "signature", "sentences", "examples")}
            atomic_write_json(cache_file, cache)
            signature = score["signature"]
    table_rows_out = []
    for row in rows:
        record, scored = row["record"], cache[f"{settings}|{arch_key(row['record']['arch'])}"]
        table_rows_out.append({"label": row["label"], "source": row["source"], "arch": record["arch"],
                               "feasible": record.get("feasible", True),
                               **{c: record.get(c) for c in COLUMNS if c != "bleu"},
                               "bleu": scored["bleu"], "valid_bleu": record.get("bleu"),
                               "test_sentences": scored["sentences"], "example": (scored["examples"] or [None])[0]})
    table = {"rows": table_rows_out, "bleu_signature": signature, "beam": beam, "lenpen": lenpen,
             "constraints": results.get("constraints"), "inherited_loss": inherited_loss(results),
             "plots": _plots(results, out)}
    (out / "table.json").write_text(json.dumps(table, indent=1))
    return table


def inherited_loss(results: Mapping[str, Any]) -> dict[str, Any] | None:
    """How far apart the inherited validation losses of every subnet the searches scored lie (``subnets``, ``min``,
    ``max`` in nats): what the searches rank by, and so how finely the supernet can rank."""
    losses = [float(r["valid_loss"]) for res in (results, *results.get("extra_searches", {}).values())
              for r in res.get("records", []) if r.get("status") == "ok" and isinstance(r.get("valid_loss"), (int, float))]
    return {"subnets": len(losses), "min": min(losses), "max": max(losses)} if losses else None


def _plots(results: Mapping[str, Any], out: Path) -> list[str]:
    """BLEU (the trials', validation split) against energy and latency over every architecture the searches
    evaluated, the baselines and the extra searches' choices marked, the main search's choice starred."""
    from ..plots.pareto import plot_pareto_pair

    records = [r for res in (results, *results.get("extra_searches", {}).values()) for r in res.get("records", [])
               if r.get("status") == "ok" and isinstance(r.get("bleu"), (int, float))]
    if not records:
        return []
    marked = {BASELINE_LABELS.get(name, name): r for name, r in results.get("baselines", {}).items()
              if isinstance(r.get("bleu"), (int, float))}
    for name, extra in results.get("extra_searches", {}).items():
        if extra.get("best") and isinstance(extra["best"].get("bleu"), (int, float)):
            marked[f"{name} (best)"] = extra["best"]
    best = results.get("best") if isinstance((results.get("best") or {}).get("bleu"), (int, float)) else None
    sentences = max(int(r.get("bleu_sentences") or 0) for r in records)
    label = f"BLEU (validation, {sentences} sentences, inherited weights)"
    return [str(p) for p in plot_pareto_pair(records, out / "plots", marked, best, y="bleu", y_label=label)]


def format_table(table: Mapping[str, Any]) -> str:
    """The table as the demo prints it (paper Table 3's columns, plus the search's objective)."""
    head = (f"{'':44s}{'params M':>10s}{'FLOPs G':>10s}{'val loss':>10s}{'BLEU':>8s}{'latency ms':>12s}"
            f"{'energy mJ':>11s}")
    lines = [head]
    for r in table["rows"]:
        def num(key: str, fmt: str) -> str:
            return format(r[key], fmt) if isinstance(r.get(key), (int, float)) else "-"
        mark = "" if r["feasible"] else " *"
        lines.append(f"{(r['label'] + mark)[:43]:44s}{num('params_M', '10.3f')}{num('flops_G', '10.4f')}"
                     f"{num('valid_loss', '10.3f')}{num('bleu', '8.2f')}{num('latency_ms', '12.3f')}"
                     f"{num('energy_mJ', '11.3f')}")
    sentences = {r["test_sentences"] for r in table["rows"]}
    lines.append(f"BLEU: test split ({', '.join(map(str, sorted(sentences)))} sentences), beam {table['beam']}, "
                 f"inherited weights; {table['bleu_signature']}")
    lines.append("* breaks the search's constraints " + json.dumps(table.get("constraints") or {}))
    if table.get("inherited_loss"):
        spread = table["inherited_loss"]
        lines.append(f"val loss: the {spread['subnets']} subnets the searches scored span {spread['min']:.3f}-"
                     f"{spread['max']:.3f} nats ({spread['max'] - spread['min']:.3f} apart) with inherited weights")
    lines.append("cost: a 30-token sentence on the Eyeriss model, 32-bit; FLOPs = 2 x MACs, embeddings and vocabulary "
                 "projection not counted")
    if table.get("plots"):
        lines.append(f"BLEU plots      {', '.join(table['plots'])}")
    return "\n".join(lines)
