#!/usr/bin/env bash
# Runs two builds' `train_step` and `scale` bench binaries alternately (the
# order swapped each round, so a slow spell of the machine falls on both)
# and prints each configuration's medians and the median of per-round
# ratios, after / before.
#
# Usage: scripts/compare_benches.sh BEFORE_DIR AFTER_DIR [ROUNDS] [OUT]
#   *_DIR: a folder holding that build's `train_step` and `scale` binaries,
#   copied from the paths `cargo bench --bench train_step --no-run` (and
#   `--bench scale`) print at each commit. ROUNDS: default 12.
# Environment: SEQREC_BENCH_THREADS (default 2 here).
set -euo pipefail
before=${1:?BEFORE_DIR}
after=${2:?AFTER_DIR}
rounds=${3:-12}
out=${4:-$(mktemp -d)}
export SEQREC_BENCH_THREADS=${SEQREC_BENCH_THREADS:-2}
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then order="before after"; else order="after before"; fi
  for bench in train_step scale; do
    for side in $order; do
      dir=$before
      [[ $side == after ]] && dir=$after
      "$dir/$bench" --bench > "$out/$bench-$side-$r.txt" 2>&1
    done
  done
done
python3 - "$out" "$rounds" <<'PY'
import re, statistics as st, sys
out, rounds = sys.argv[1], int(sys.argv[2])
R = range(1, rounds + 1)
def step(f):
    return float(re.search(r"step \(median\)\s+([\d.]+) ms", open(f).read()).group(1))
def scale(f):
    rows = {}
    for line in open(f):
        m = re.match(r"\s+(\d+)\s+(\S+)\s+\d+(?:\s+[\d.]+){4}\s+([\d.]+)", line)
        if m:
            rows[(int(m.group(1)), m.group(2))] = float(m.group(3))
    return rows
def show(name, b, a):
    ratios = [y / x for x, y in zip(b, a)]
    q = st.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(f"{name:32} before {st.median(b):8.2f} ms  after {st.median(a):8.2f} ms  "
          f"ratio {st.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f})")
show("train_step step", [step(f"{out}/train_step-before-{r}.txt") for r in R],
     [step(f"{out}/train_step-after-{r}.txt") for r in R])
for key in scale(f"{out}/scale-before-1.txt"):
    show(f"scale {key[0]} {key[1]}", [scale(f"{out}/scale-before-{r}.txt")[key] for r in R],
         [scale(f"{out}/scale-after-{r}.txt")[key] for r in R])
PY
echo "raw outputs: $out"
