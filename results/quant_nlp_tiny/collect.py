"""results.json of the 8-bit study from the networks run.sh trained: python collect.py OUT [results.json]."""
from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {"attn_conv": "Lite Transformer (Attn+Conv in every layer, largest)",
         "attn_add": "Attn+Add in every layer (largest)"}
RUNS = ("float", "finetune_none", "finetune_8")


def run_row(folder: Path) -> dict:
    m = json.loads((folder / "metrics.json").read_text())
    s = m["subnets"]["subnet"]
    return {"updates": m["updates"], "bits": m["bits"], "quant_bits": m.get("quant_bits"),
            "fit_seconds": m["fit_seconds"], "valid_loss_nats": round(s["valid"]["loss_nats"], 4),
            "test_bleu": s["test"]["bleu"], "bleu_signature": s["test"]["signature"], "energy_mJ": s["energy_mJ"],
            "latency_ms": s["latency_ms"], "params_M": s["params_M"], "macs_G": s["macs_G"],
            "effective_macs_G": s["macs_G"] * (m["bits"] / 32) ** 2}


def main(out: Path, target: Path) -> None:
    result = {"space": "nlp_tiny", "data": "trans-de-en (2,000 BPE merges); test BLEU on all 1,000 test pairs, beam 4",
              "networks": {}}
    for net, name in NAMES.items():
        runs: dict = {run: {} for run in RUNS}
        for folder in sorted((out / net).iterdir()):
            run, _, seed = folder.name.partition("_s")
            if run in runs and (folder / "metrics.json").is_file():
                runs[run][seed or "1"] = run_row(folder)
        result["networks"][net] = {"name": name, "arch": json.loads((out / f"{net}.json").read_text()), "runs": runs}
    target.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).with_name("results.json")))
