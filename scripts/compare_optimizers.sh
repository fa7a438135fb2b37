#!/usr/bin/env bash
# Dense AdamW against lazy AdamW: test HR@10 / NDCG@10 (seen items
# excluded) for the parity and best presets, seeds 1-3, on MovieLens-100K
# and on synthetic data, mean (min-max) per row.
#
#   scripts/compare_optimizers.sh [ML100K_DIR] [WORK_DIR]
#
# ML100K_DIR defaults to data/ml100k (write it with ../shared/tools/get-ml100k).
set -euo pipefail
cd "$(dirname "$0")/.."
ml100k="${1:-data/ml100k}"
work="${2:-$(mktemp -d)}"
cargo build --release --quiet
bin=target/release/seqrec
[[ -s $work/synth/ratings.dat ]] ||
  $bin --quiet synth "$work/synth" --users 3000 --items 8000 --ratings 400000 --seed 3
results="$work/results.txt"
: > "$results"
for data in "$ml100k" "$work/synth"; do
  for preset in parity best; do
    for opt in adamw lazy-adamw; do
      for seed in 1 2 3; do
        line=$($bin --quiet train "$data" --preset $preset --optimizer $opt --seed $seed \
          --threads 2 --out "$work/m.safetensors" | grep '^test (seen')
        echo "$(basename "$data") $preset $opt $seed $line" | tee -a "$results"
      done
    done
  done
done
python3 - "$results" <<'PY'
import collections, re, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    f = line.split()
    m = re.search(r"HR@10 ([\d.]+)\s+NDCG@10 ([\d.]+)", line)
    if m:
        rows[tuple(f[:3])].append((float(m.group(1)), float(m.group(2))))
print("| data | preset | optimizer | HR@10 | NDCG@10 |\n|---|---|---|---|---|")
for key, v in rows.items():
    hr, nd = [x[0] for x in v], [x[1] for x in v]
    print(f"| {' | '.join(key)} | {sum(hr)/len(hr):.4f} ({min(hr):.4f}-{max(hr):.4f}) "
          f"| {sum(nd)/len(nd):.4f} ({min(nd):.4f}-{max(nd):.4f}) |")
PY
