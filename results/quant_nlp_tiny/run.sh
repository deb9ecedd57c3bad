#!/usr/bin/env bash
# 8-bit quantisation-aware fine-tuning of two nlp_tiny subnets: each trained in float with the demo supernet's recipe
# (4,000 updates), then 1,000 more updates from those weights at a tenth of the peak learning rate, in float (the
# control) and at 8 bits; seeds 1 and 2 (SEEDS). Run from the repository root; OUT holds the networks (about 30
# minutes per seed on one core); then `.venv/bin/python results/quant_nlp_tiny/collect.py "$OUT"` writes results.json.
set -e
OUT=${OUT:-runs/quant_nlp_tiny}
mkdir -p "$OUT"
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from nni_shiftadd.space import load_space
spec = load_space("nlp_tiny")
for op in ("attn+conv", "attn+add"):
    arch = spec.canonical_arch(spec.baseline_arch(op))
    json.dump(arch, open(f"{sys.argv[1]}/{op.replace('+', '_')}.json", "w"), indent=1)
PY
run() { .venv/bin/nni-shiftadd train-supertransformer --config examples/translation/supernet_nlp_tiny.yaml \
          --baselines '[]' --eval-archs 0 --threads 1 "$@"; }
for seed in ${SEEDS:-1 2}; do
  sfx=""; [ "$seed" = 1 ] || sfx="_s$seed"
  for net in attn_conv attn_add; do
    run --seed "$seed" --subnet "$OUT/$net.json" --output "$OUT/$net/float$sfx"
    for bits in none 8; do
      q=(); [ "$bits" = 8 ] && q=(--quant-bits 8)
      run --seed "$seed" --subnet "$OUT/$net.json" --init-from "$OUT/$net/float$sfx/checkpoints/checkpoint_last.pt" \
          --max-updates 1000 --warmup-updates 100 --lr 2.0e-4 --save-interval-updates 500 "${q[@]}" \
          --output "$OUT/$net/finetune_$bits$sfx"
    done
  done
done
