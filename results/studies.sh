#!/usr/bin/env bash
# The long studies, one after another, each resumed from the ledger committed beside this script and exported back
# into it as it goes, so that a machine that lives shorter than a study (a session, a preempted VM) loses at most the
# network it was training. Run from the repository root, in the background; one torch thread, so that a core stays
# free:
#
#   setsid nohup results/studies.sh >> runs/studies.log 2>&1 &
#
# then commit results/ whenever a stage has finished (`git status results/` shows what changed). A run folder already
# in runs/ keeps its files (`cp -n`): the ledger only fills in what it lacks. The studies, in
# order (issues 25 and 27; each command is the one its results/<name>/README.md names):
#   ranking_cv_small      nni-shiftadd ranking            (image ranking: budgets, ground-truth check, techniques)
#   table4_cv_small       nni-shiftadd reproduce table4   (paper Table 4 and Fig. 6 after retraining), searching
#                         the ranking study's naive supernet at 4,000 steps: the same recipe as table4's own
#                         (table4_cv_small.yaml's supernet_overrides, seed 0), so it is not trained twice
#   ranking_nlp_tiny      nni-shiftadd translation-ranking
#   table3_nlp_tiny       nni-shiftadd reproduce table3   (paper Table 3 and Fig. 5, 8-bit rows included), searching
#                         the translation ranking's first supernet: the same recipe (supernet_nlp_tiny.yaml at the
#                         paper's 40K updates, seed 1), so its 40K updates are not trained twice; and scoring the
#                         ranking's stand-alone Transformer and Lite Transformer (the same recipe and seed 1) from
#                         their weights rather than training them again
# A study whose results/<name>/results.json says "complete": true is not run again (its command would only recompute
# the report from the ledger, minutes of bootstrap statistics every time the script starts); its ledger is still
# copied into runs/, where a later study may take its trained networks from. RERUN=1 (any value) runs those too.
# EXPORT_EVERY (seconds, default 600): how often the running study's ledger is copied into results/.
set -u
set -f  # no pathname expansion: a flag value such as [runs/x] stays as written
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
CLI=${CLI:-.venv/bin/nni-shiftadd}
EVERY=${EXPORT_EVERY:-600}
command -v "$CLI" >/dev/null || { echo "results/studies.sh: no command $CLI (install with ./install.sh, or set CLI)" >&2; exit 2; }

export_ledger() {  # export_ledger NAME COMMAND...: the running or finished study's ledger into results/NAME
  local name=$1; shift
  "$CLI" "$@" --output "runs/$name" --export-ledger "results/$name" >/dev/null 2>"runs/$name.export.err" ||
    echo "$(date -u +%FT%TZ) $name: export failed: $(tail -1 "runs/$name.export.err")"
}

complete() {  # complete NAME: results/NAME/results.json says the study is complete
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("complete") is not True)' \
    "results/$1/results.json" 2>/dev/null
}

study() {  # study NAME COMMAND... : resume NAME from results/NAME, run it, export its ledger while and after it runs
  local name=$1; shift
  local out=runs/$name
  mkdir -p "$out"
  [ -d "results/$name" ] && cp -rn "results/$name/." "$out/"
  if [ -z "${RERUN:-}" ] && complete "$name"; then
    echo "$(date -u +%FT%TZ) $name: complete in results/$name, not run again (RERUN=1 runs it)"
    return 0
  fi
  echo "$(date -u +%FT%TZ) $name: start"
  nice -n 10 "$CLI" "$@" --output "$out" &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1; waited=$((waited + 1))
    if [ "$waited" -ge "$EVERY" ]; then
      waited=0
      export_ledger "$name" "$@"
    fi
  done
  wait "$pid"; local rc=$?
  export_ledger "$name" "$@"
  echo "$(date -u +%FT%TZ) $name: exit $rc"
  return "$rc"
}

shared_supernet() {  # shared_supernet CHECKPOINT: `--supernet CHECKPOINT` when a study before has left it
  if [ -f "$1" ]; then echo "--supernet $1"
  else echo "$(date -u +%FT%TZ) no $1 to share (a new machine has only the ledgers): a study that needs it trains its own" >&2
  fi
}

shared_runs() {  # shared_runs FOLDER: `--reuse-runs [FOLDER]` when a study before has left its trained networks there
  if [ -d "$1" ]; then echo "--reuse-runs [$1]"
  else echo "$(date -u +%FT%TZ) no $1 to share: a study that needs its networks trains its own" >&2
  fi
}

study ranking_cv_small ranking --config examples/fashion_mnist/ranking_cv_small.yaml &&
study table4_cv_small reproduce table4 --config examples/fashion_mnist/table4_cv_small.yaml \
  $(shared_supernet runs/ranking_cv_small/supernets/steps4000/naive_seed0/checkpoints/last.ckpt) &&
study ranking_nlp_tiny translation-ranking --config examples/translation/ranking_nlp_tiny.yaml &&
study table3_nlp_tiny reproduce table3 --config examples/translation/table3_nlp_tiny.yaml \
  $(shared_supernet runs/ranking_nlp_tiny/supernets/uniform_seed1/checkpoints/checkpoint_last.pt) \
  $(shared_runs runs/ranking_nlp_tiny/standalone)
