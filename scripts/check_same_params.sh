#!/usr/bin/env bash
# Trains the same runs with two seqrec binaries and compares every tensor
# of the model files, byte for byte (scripts/compare_params.py): a
# refactor that must not change training passes with "0 differ" for each.
#
# Usage: scripts/check_same_params.sh BEFORE_BIN AFTER_BIN [DATA]
#   DATA: a MovieLens folder (default data/ml100k, from
#   ../shared/tools/get-ml100k data/ml100k).
# Runs: the parity settings (3 epochs), --preset best (3 epochs),
# --preset sasrec (2 epochs), and SASRec with gBCE, 64 negatives and lazy
# AdamW (1 epoch); seed 1, 2 threads.
set -euo pipefail
before=${1:?BEFORE_BIN}
after=${2:?AFTER_BIN}
data=${3:-data/ml100k}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
runs=(
  "parity|--preset parity --epochs 3"
  "best|--preset best --epochs 3"
  "sasrec|--preset sasrec --epochs 2"
  "sasrec-gbce-lazy|--preset sasrec --epochs 1 --full-softmax=false --loss gbce --negatives 64 --optimizer lazy-adamw"
)
status=0
for run in "${runs[@]}"; do
  name=${run%%|*}
  flags=${run#*|}
  for side in before after; do
    bin=$before
    [[ $side == after ]] && bin=$after
    # shellcheck disable=SC2086
    "$bin" train "$data" $flags --seed 1 --threads 2 --quiet \
      --out "$tmp/$name-$side.safetensors" > /dev/null
  done
  echo "== $name"
  python3 "$here/compare_params.py" "$tmp/$name-before.safetensors" "$tmp/$name-after.safetensors" \
    || status=1
done
exit $status
