#!/usr/bin/env bash
# Runs seqrec and the reference (Keras-RS GRU4Rec on JAX, ../shared/anchors)
# one after the other on the same data with the same number of threads, and
# prints their per-step and per-epoch times, peak memory and val_loss side by
# side, with the ratios reference / seqrec.
#
# Usage: benches/compare_reference.sh [options] [DATA_DIR]
#
#   DATA_DIR            a folder with ratings.dat and movies.dat (MovieLens-1M
#                       format; the reference reads no other). Default:
#                       synthetic ML-1M-shaped data from `seqrec synth`.
#   --ref-epochs N      epochs of the reference (default 2; ~50 s each on 2 cores)
#   --seqrec-epochs N   epochs of seqrec (default 2)
#   --threads N         threads for both (default 2); both are pinned to the
#                       first N CPUs this script may run on (taskset)
#   --seed N            seed of both runs (default 1)
#   --tfdata-autotune-off
#                       pass that flag to the reference (see anchors/README.md:
#                       same losses, no idle seconds at its epoch boundaries)
#   --keep DIR          copy both JSON files and logs into DIR
#   --no-build          do not run `cargo build --release` first
#
# Environment: REF_VENV, the reference's Python environment (default
# data/ref-venv, created with ../shared/anchors/setup-venv when missing).
# XLA_FLAGS, if set, is passed through to the reference unchanged.
#
# JAX compiles during the reference's first epoch, so the comparison uses the
# median step time of epochs 2+ and the mean epoch time of epochs 2+ (epoch 1
# is shown apart). Epoch times include the val_loss pass on both sides.
set -euo pipefail

die() {
  echo "compare_reference: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

ref_epochs=2
seqrec_epochs=2
threads=2
seed=1
keep=""
build=1
ref_extra=()
data_arg=""

while (($#)); do
  case $1 in
    --ref-epochs) ref_epochs=${2:?--ref-epochs needs a number}; shift 2 ;;
    --seqrec-epochs) seqrec_epochs=${2:?--seqrec-epochs needs a number}; shift 2 ;;
    --threads) threads=${2:?--threads needs a number}; shift 2 ;;
    --seed) seed=${2:?--seed needs a number}; shift 2 ;;
    --keep) keep=${2:?--keep needs a folder}; shift 2 ;;
    --tfdata-autotune-off) ref_extra+=(--tfdata-autotune-off); shift ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [[ -z $data_arg ]] || die "one DATA_DIR at most (got '$data_arg' and '$1')"
      data_arg=$1; shift ;;
  esac
done
for v in ref_epochs seqrec_epochs threads seed; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "--${v//_/-}: expected a whole number, found '${!v}'"
done
((ref_epochs >= 1 && seqrec_epochs >= 1 && threads >= 1)) || die "epochs and threads must be at least 1"

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null) ||
  root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
shared="$root/../shared"
ref_script="$shared/anchors/keras_rs_gru4rec.py"
[[ -f $ref_script ]] || die "$ref_script not found (the shared folder is expected next to the repository)"

# --- a data folder given: check it before anything slow ----------------------
data=""
if [[ -n $data_arg ]]; then
  data=$(cd "$data_arg" 2>/dev/null && pwd) || die "$data_arg: no such folder"
  for f in ratings.dat movies.dat; do
    [[ -f $data/$f ]] || die "$data has no $f (the reference reads MovieLens-1M format: ratings.dat and movies.dat)"
  done
fi

# --- seqrec -----------------------------------------------------------------
if ((build)); then
  echo "== cargo build --release" >&2
  cargo build --release --quiet || die "cargo build --release failed"
fi
seqrec="$root/target/release/seqrec"
[[ -x $seqrec ]] || die "$seqrec not found (run cargo build --release)"

# --- the reference's environment --------------------------------------------
venv=${REF_VENV:-$root/data/ref-venv}
if [[ ! -x $venv/bin/python ]]; then
  echo "== no reference environment at $venv: creating it with setup-venv (a few minutes)" >&2
  mkdir -p "$(dirname "$venv")"
  "$shared/anchors/setup-venv" "$venv" || die "setup-venv $venv failed"
fi
py="$venv/bin/python"
"$py" -c 'import keras, keras_rs, jax' 2>/dev/null ||
  die "$venv does not import keras, keras_rs and jax; remove it or set REF_VENV to a working one"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/seqrec-compare.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- data -------------------------------------------------------------------
if [[ -n $data_arg ]]; then
  data_label=$data
else
  data="$tmp/data"
  echo "== synthetic ML-1M-shaped data: seqrec synth" >&2
  "$seqrec" synth "$data" --quiet >"$tmp/synth.log" 2>&1 || {
    cat "$tmp/synth.log" >&2
    die "seqrec synth failed"
  }
  data_label="synthetic ML-1M-shaped (seqrec synth, default size)"
fi

# --- pinning ----------------------------------------------------------------
cpus=$("$py" -c 'import os,sys; c=sorted(os.sched_getaffinity(0)); print(",".join(map(str,c[:int(sys.argv[1])])) if len(c)>=int(sys.argv[1]) else "")' "$threads")
pin=()
if [[ -z $cpus ]]; then
  echo "== warning: fewer than $threads CPUs available; running unpinned" >&2
elif command -v taskset >/dev/null; then
  pin=(taskset -c "$cpus")
else
  echo "== warning: taskset not found; running unpinned" >&2
fi
export OMP_NUM_THREADS=$threads TF_NUM_INTRAOP_THREADS=$threads TF_NUM_INTEROP_THREADS=$threads

busy=$(awk '{print $1}' /proc/loadavg 2>/dev/null || echo "?")
echo "== data: $data_label" >&2
echo "== threads: $threads, CPUs: ${cpus:-any}, load average before: $busy" >&2

# --- seqrec run -------------------------------------------------------------
# Runs a command and writes, to the file named first, the cores other
# processes kept busy meanwhile (/proc/stat minus the command's own CPU time).
cat >"$tmp/measure.py" <<'PY'
import os, resource, subprocess, sys, time
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")
b0, t0 = busy(), time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall, ru = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write("%.3f\n" % (max(0.0, busy() - b0 - ru.ru_utime - ru.ru_stime) / wall))
sys.exit(rc)
PY

echo "== seqrec: $seqrec_epochs epochs" >&2
if ! "$py" "$tmp/measure.py" "$tmp/seqrec.other" ${pin[@]+"${pin[@]}"} "$seqrec" --quiet train "$data" --out "$tmp/model.safetensors" --json \
  --threads "$threads" --epochs "$seqrec_epochs" --seed "$seed" >"$tmp/seqrec.json" 2>"$tmp/seqrec.log"; then
  tail -n 30 "$tmp/seqrec.log" >&2
  die "seqrec train failed"
fi

# --- reference run ----------------------------------------------------------
echo "== reference (Keras-RS on JAX): $ref_epochs epochs, ~$((ref_epochs * 55 + 30)) s" >&2
set +e
PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=${KERAS_BACKEND:-jax} \
  ${pin[@]+"${pin[@]}"} "$py" "$ref_script" "$data" --seed "$seed" --epochs "$ref_epochs" \
  --json "$tmp/ref.json" ${ref_extra[@]+"${ref_extra[@]}"} 2>&1 | tee "$tmp/ref.log" | grep --line-buffered '^\[timer\]' >&2
ref_rc=${PIPESTATUS[0]}
set -e
if ((ref_rc != 0)) || [[ ! -s $tmp/ref.json ]]; then
  tail -n 40 "$tmp/ref.log" >&2
  die "the reference failed (exit status $ref_rc)"
fi

if [[ -n $keep ]]; then
  mkdir -p "$keep"
  cp "$tmp/seqrec.json" "$tmp/seqrec.log" "$tmp/seqrec.other" "$tmp/ref.json" "$tmp/ref.log" "$keep/"
  echo "== JSON and logs copied to $keep" >&2
fi

# --- the table --------------------------------------------------------------
"$py" - "$tmp/seqrec.json" "$tmp/ref.json" "$data_label" "$threads" "$seed" "$tmp/seqrec.other" <<'PY'
import json, statistics, sys
s_other = float(open(sys.argv[6]).read())

s = json.load(open(sys.argv[1]))
r = json.load(open(sys.argv[2]))
data_label, threads, seed = sys.argv[3], sys.argv[4], sys.argv[5]
se = s["epochs"]
re_ = r["training"]["epochs"]

def later(eps, key, fallback_key=None):
    """Values of epochs 2+ (or epoch 1 if that is all there is)."""
    vals = [e.get(key) for e in eps[1:] if e.get(key) is not None]
    if vals:
        return vals, False
    e = eps[0]
    v = e.get(fallback_key or key) if fallback_key else e.get(key)
    return ([v] if v is not None else []), True

s_step, s_fb = later(se, "step_ms_median")
r_step, r_fb = later(re_, "step_ms_median", "step_ms_median_excl_first_last")
s_ep, s_epfb = later(se, "seconds")
r_ep, r_epfb = later(re_, "epoch_s")
r_train, _ = later(re_, "train_s")

def fmt(v, p=1):
    return "n/a" if v is None else f"{v:.{p}f}"

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.1f}x"

med = lambda v: statistics.median(v) if v else None
mean = lambda v: statistics.fmean(v) if v else None

rows = []
note = lambda fb: " *" if fb else ""
rows.append(("step time, median (ms)" + note(s_fb or r_fb), med(r_step), med(s_step), 1))
rows.append(("epoch time, epochs 2+ (s)" + note(s_epfb or r_epfb), mean(r_ep), mean(s_ep), 2))
rows.append(("epoch 1 time (s)", re_[0].get("epoch_s"), se[0].get("seconds"), 2))
rows.append(("data pipeline (s)", r["data"].get("pipeline_total_s"), s.get("data_seconds"), 2))
rows.append(("peak memory (MiB)", r["training"].get("peak_rss_mib_after_fit"), s.get("peak_memory_mib"), 0))

w = 32
print()
print(f"data: {data_label}")
print(f"      {s.get('train_examples')} train / {s.get('test_examples')} test examples, "
      f"{s.get('steps_per_epoch')} steps per epoch (reference: {r['data'].get('train_steps_per_epoch')})")
print(f"threads: {threads} (seqrec reports {s.get('threads')}), seed {seed}; "
      f"reference {r.get('backend')} {r['versions'].get('jax', '')}, keras {r['versions'].get('keras')}, "
      f"epochs: reference {len(re_)}, seqrec {len(se)}")
print()
print(f"{'':{w}} {'reference':>10} {'seqrec':>10} {'ref/seqrec':>11}")
for name, a, b, p in rows:
    print(f"{name:{w}} {fmt(a, p):>10} {fmt(b, p):>10} {ratio(a, b):>11}")
print(f"{'  ref. epoch, training only':{w}} {fmt(mean(r_train), 2):>10}")
r_first, _ = later(re_, "first_step_s")
print(f"{'  ref. first step, epochs 2+ (s)':{w}} {fmt(mean(r_first), 2):>10}   (tf.data's idle wait, see below)")
print()
print(f"{'val_loss':{w}} {'reference':>10} {'seqrec':>10} {'seqrec-ref':>11}")
for i in range(max(len(re_), len(se))):
    a = re_[i].get("val_loss") if i < len(re_) else None
    b = se[i].get("val_loss") if i < len(se) else None
    d = f"{b - a:+.4f}" if a is not None and b is not None else ""
    print(f"{'  epoch %d' % (i + 1):{w}} {fmt(a, 4):>10} {fmt(b, 4):>10} {d:>11}")
print()
print("step time: median over the steps of epochs 2+ (reference: its per-step callback; seqrec: batch")
print("fill + forward/backward + AdamW). Epoch times include the val_loss pass. Peak memory: reference")
print("process RSS after fit(), seqrec process peak RSS (VmHWM). The reference's epochs 2+ open with")
print("tf.data's autotune idle wait (anchors/README.md), counted in its epoch time, not in its step median;")
print("--tfdata-autotune-off removes it (same losses).")
if s_fb or r_fb or s_epfb or r_epfb:
    print("* only one epoch was run on a side: its epoch-1 figure is used (includes JAX compilation;")
    print("  for the reference's step time, the median without its first and last step).")
other = [e.get("other_busy_cores") for e in re_ if e.get("other_busy_cores") is not None]
r_other = max(other) if other else None
print(f"other processes' CPU use (cores): during seqrec's run {s_other:.2f}, "
      f"during the reference's epochs up to {fmt(r_other, 2)}")
if s_other > 0.25 or (r_other or 0) > 0.25:
    print("warning: the machine was not idle; the times above are inflated. Rerun on an idle machine.")
PY
