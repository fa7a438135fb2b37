#!/usr/bin/env bash
# Measures every training option of `seqrec train` alone, the parity
# configuration and `--preset best`, on real MovieLens-100K and on synthetic
# ML-1M-shaped data, over several seeds: HR@10, NDCG@10, MRR@10 on the test
# examples (seen items excluded) and training time. Writes a markdown table.
#
# Usage: scripts/compare_options.sh [OUT.md]
# Environment: SEEDS (default "1 2 3"), ML100K (default data/ml100k, fetched
# with ../shared/tools/get-ml100k), SYNTH (default data/synth-ml1m, made by
# `seqrec synth`), THREADS (default 2), DATASETS (default "ml100k synth"),
# TABLE (default "options": each option of the reference's window training
# alone; "sequence": sequence training, both towers at contexts 10, 50 and
# 200, and each loss, written to docs/training-sequence.md), ROWS (only the
# rows whose name contains this text), EXTRA_FLAGS (added after every row's
# flags, which they override: e.g. "--epochs 10" for a shorter schedule on
# bigger data), RESULTS (a JSON-lines file the runs are appended
# to and the table is made from, kept between calls, so a long table can be
# measured a few rows at a time).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
table=${TABLE:-options}
case $table in
  options) default_out=docs/training-options.md ;;
  sequence) default_out=docs/training-sequence.md ;;
  *) echo "unknown TABLE $table: expected options or sequence" >&2; exit 2 ;;
esac
out=${1:-$default_out}
seeds=${SEEDS:-"1 2 3"}
threads=${THREADS:-2}
ml100k=${ML100K:-data/ml100k}
synth=${SYNTH:-data/synth-ml1m}
datasets=${DATASETS:-"ml100k synth"}

cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A private copy, so a rebuild during the runs cannot change what is measured.
cp "$root/target/release/seqrec" "$work/seqrec"
bin=$work/seqrec
[[ -s $ml100k/ratings.dat ]] || ../shared/tools/get-ml100k "$ml100k"
[[ -s $synth/ratings.dat ]] || "$bin" --quiet synth "$synth"

if [[ $table == options ]]; then
configs=(
  "parity (reference)|"
  "left padding|--padding left"
  "mask padding|--mask-padding"
  "shuffle|--shuffle"
  "accidental hits removed|--remove-accidental-hits"
  "logQ correction|--logq-correction"
  "256 extra negatives (alpha 0.75)|--negatives 256"
  "shared embeddings|--shared-embeddings"
  "dropout 0.1 in / 0.1 out|--dropout-input 0.1 --dropout-output 0.1"
  "warm-up 20 steps + cosine decay|--warmup-steps 20 --lr-schedule cosine"
  "validation split, best epoch|--validation"
  "preset best|--preset best"
)
else
# Every sequence row is `--preset sasrec` (one recipe for both towers) with
# the flags named. Rows measured before the preset dropped its validation
# split name the split they were measured with.
configs=(
  "preset best (window GRU, one label per row)|--preset best"
  "GRU, context 10|--preset sasrec --tower gru --context-len 10 --validation --patience 10 --epochs 200"
  "GRU, context 50|--preset sasrec --tower gru --context-len 50 --validation --patience 10 --epochs 200"
  "GRU, context 200|--preset sasrec --tower gru --context-len 200 --validation --patience 10 --epochs 200"
  "SASRec, context 10|--preset sasrec --context-len 10 --validation --patience 10 --epochs 200"
  "SASRec, context 50|--preset sasrec --context-len 50 --validation --patience 10 --epochs 200"
  "SASRec, context 200 (preset sasrec: 60 epochs, input dropout 0.2, no validation split)|--preset sasrec"
  "SASRec, context 200, 70 epochs|--preset sasrec --epochs 70"
  "SASRec, context 200, 50 epochs without input dropout (the previous preset)|--preset sasrec --epochs 50 --dropout-input 0"
  "SASRec, context 200, validation split and early stopping (patience 10)|--preset sasrec --validation --patience 10 --epochs 200"
  "SASRec, context 200, read items kept in the loss|--preset sasrec --exclude-history-in-loss=false --validation --patience 10 --epochs 200"
  "SASRec, context 50, in-batch softmax + logQ|--preset sasrec --context-len 50 --full-softmax=false --logq-correction --validation --patience 10 --epochs 200"
  "SASRec, context 50, gBCE (t 0.75, 256 uniform negatives)|--preset sasrec --context-len 50 --full-softmax=false --loss gbce --negatives 256 --negative-alpha 0 --validation --patience 10 --epochs 200"
)
fi
if [[ -n ${ROWS:-} ]]; then
  kept=()
  for entry in "${configs[@]}"; do [[ ${entry%%|*} == *"$ROWS"* ]] && kept+=("$entry"); done
  configs=("${kept[@]}")
fi

results=${RESULTS:-$work/results.jsonl}
touch "$results"
for ds in $datasets; do
  case $ds in
    ml100k) data=$ml100k ;;
    synth) data=$synth ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  for entry in "${configs[@]}"; do
    name=${entry%%|*}${EXTRA_FLAGS:+ (with $EXTRA_FLAGS)}
    flags=${entry#*|}
    for seed in $seeds; do
      # shellcheck disable=SC2086
      "$bin" --quiet train "$data" --out "$work/model" --seed "$seed" --threads "$threads" --json $flags ${EXTRA_FLAGS:-} >"$work/run.json"
      python3 - "$ds" "$name" "$seed" "$work/run.json" >>"$results" <<'PY'
import json, sys
ds, name, seed, path = sys.argv[1:]
r = json.load(open(path))
print(json.dumps({"dataset": ds, "config": name, "seed": int(seed), "hr": r["test"]["hr"], "ndcg": r["test"]["ndcg"],
                  "mrr": r["test"]["mrr"], "hr_all": r["test_all_items"]["hr"], "pop_hr": r["popularity"]["hr"],
                  "seconds": r["train_seconds"], "epochs": len(r["epochs"])}))
PY
      echo "$ds | $name | seed $seed: $(tail -1 "$results")" >&2
    done
  done
done

python3 - "$results" "$out" "$synth/synth.json" <<'PY'
import json, sys, statistics, os, platform
results, out, synth_json = sys.argv[1:]
rows = [json.loads(l) for l in open(results)]
# RESULTS may hold runs of earlier calls: name the seeds actually measured.
seeds = [str(x) for x in sorted({r["seed"] for r in rows})]
ceiling = json.load(open(synth_json)) if os.path.exists(synth_json) else None
def cell(vals, digits=4):
    m = statistics.mean(vals)
    return f"{m:.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"
title = "Training options, measured" if os.path.basename(out) == "training-options.md" else "Sequence training, measured"
lines = [f"# {title}", "",
         "Made by `scripts/compare_options.sh`: each row is `seqrec train` with the reference's settings plus the flags",
         "named, over seeds " + ", ".join(seeds) + " (mean and min-max of each row's runs).",
         "Metrics are on the test examples (each user's last item), ranked against the full catalogue with the",
         "user's earlier items excluded; a label tied with others ranks after them. Time is training only,",
         f"2 threads on this machine ({platform.processor() or platform.machine()}); times count any other",
         "load on the machine, quality figures are deterministic.", ""]
if title.startswith("Training options"):
    lines += ["Sequence training (a loss at every step of a history), the SASRec tower and the losses beside softmax are",
              "measured in [training-sequence.md](training-sequence.md) (`TABLE=sequence scripts/compare_options.sh`).", ""]
else:
    lines += ["Every row but the first is `--preset sasrec` (SASRec, sequence training, full softmax with read items",
              "excluded, context 200, 64 dimensions, batch 64, input dropout 0.2, 60 epochs without a validation split) with the flags named;",
              "the first is the window-trained GRU of `--preset best`. gBCE's negatives are shared by the batch.", ""]
for ds in dict.fromkeys(r["dataset"] for r in rows):
    sub = [r for r in rows if r["dataset"] == ds]
    title = {"ml100k": "MovieLens-100K (real)", "synth": "Synthetic ML-1M-shaped data (`seqrec synth`, seed 1)"}.get(ds, ds)
    lines += [f"## {title}", "", "| configuration | HR@10 | NDCG@10 | MRR@10 | epochs | train time (s) |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["config"] for r in sub):
        rs = [r for r in sub if r["config"] == name]
        lines.append(f"| {name} | {cell([r['hr'] for r in rs])} | {cell([r['ndcg'] for r in rs])} | {cell([r['mrr'] for r in rs])} | "
                     f"{statistics.mean(r['epochs'] for r in rs):.0f} | {cell([r['seconds'] for r in rs], 1)} |")
    pop = statistics.mean(r["pop_hr"] for r in sub)
    lines += ["", f"Most-popular baseline on the same examples: HR@10 {pop:.4f}."]
    if ds == "synth" and ceiling:
        lines.append(f"Ceiling of the planted structure (an oracle knowing the generator's state, every item a candidate): "
                     f"HR@10 {ceiling['ceiling_hr10']:.4f}. On the same terms (every item a candidate):")
        for name in dict.fromkeys(r["config"] for r in sub):
            rs = [r for r in sub if r["config"] == name]
            hr_all = statistics.mean(r["hr_all"] for r in rs)
            lines.append(f"- {name}: {hr_all:.4f}, {hr_all / ceiling['ceiling_hr10']:.1%} of it.")
    lines.append("")
tmp = out + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines))
os.replace(tmp, out)
print("\n".join(lines))
PY
