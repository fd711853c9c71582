#!/usr/bin/env bash
# resnet20 training-step throughput (batch 128, 1xSIDExSIDE), measured in one run,
# interleaved over ROUNDS rounds, medians reported:
#   limpq fp32            vs  PyTorch-Python fp32     (issue: limpq not slower)
#   limpq W4A4 LSQ QAT    vs  limpq fp32              (QAT step cost, bar <= 1.3x)
#   limpq W4A4 LSQ QAT    vs  PyTorch-Python LSQ QAT  (bar >= 1.4x faster)
# The W4A4 reference row is limpq with the composed-op LSQ instead of the
# fused kernel; the *_cl rows train channels-last (run.channels_last).
# limpq keeps freed memory for reuse (util::retain_freed_memory); the *_glibc
# rows measure limpq with glibc's default allocator settings instead, and the
# pytorch_*_retain rows give PyTorch-Python the same settings through glibc's
# environment variables, so the allocator's share of any gap is visible.
#
# SIDE is 28 (Fashion-MNIST, the default) or 32 (the CIFAR-sized input of the
# brief's step timings).
#
#   bench/train_throughput.sh [THREADS] [ROUNDS] [SIDE]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
ROUNDS=${2:-3}
SIDE=${3:-28}
PY=/usr/bin/python3
BENCH=${LIMPQ_BUILD_DIR:-build}/bench/limpq_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build build" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((r = 1; r <= ROUNDS; r++)); do
  LIMPQ_THREADS=$THREADS "$BENCH" --benchmark_filter="TrainStep/resnet20_.*/side:$SIDE/" --benchmark_min_time=3 \
      --benchmark_format=json 2>/dev/null |
    $PY -c "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    print('limpq_' + b['name'].split('/')[1].replace('resnet20_', ''), b['images_per_second'])" >> "$results"
  LIMPQ_RETAIN_MEMORY=0 LIMPQ_THREADS=$THREADS "$BENCH" --benchmark_filter="TrainStep/resnet20_(fp32|W4A4)/.*side:$SIDE/" \
      --benchmark_min_time=3 --benchmark_format=json 2>/dev/null |
    $PY -c "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    print('limpq_' + b['name'].split('/')[1].replace('resnet20_', '') + '_glibc', b['images_per_second'])" >> "$results"
  for q in fp32 W4A4; do
    arg=(); [ "$q" != fp32 ] && arg=(--quant "$q")
    $PY bench/pytorch_resnet20.py --threads "$THREADS" --size "$SIDE" --steps 20 "${arg[@]}" |
      $PY -c "import json,sys; print('pytorch_$q', json.load(sys.stdin)['images_per_second'])" >> "$results"
    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 \
      $PY bench/pytorch_resnet20.py --threads "$THREADS" --size "$SIDE" --steps 20 "${arg[@]}" |
      $PY -c "import json,sys; print('pytorch_${q}_retain', json.load(sys.stdin)['images_per_second'])" >> "$results"
  done
  echo "round $r done" >&2
done
$PY - "$results" "$THREADS" "$SIDE" <<'PYEOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, value = line.split()
    runs[name].append(float(value))
m = {k: statistics.median(v) for k, v in runs.items()}
print(f"side {sys.argv[3]}, threads {sys.argv[2]}, medians of {len(runs['limpq_fp32'])} rounds (images/s):")
for k in sorted(m):
    print(f"  {k:28s} {m[k]:8.1f}   ({', '.join(f'{v:.1f}' for v in runs[k])})")
print(f"limpq fp32 / PyTorch fp32           = {m['limpq_fp32'] / m['pytorch_fp32']:.3f}   (>= 1 wanted)")
print(f"limpq W4A4 step cost / limpq fp32   = {m['limpq_fp32'] / m['limpq_W4A4']:.3f}x  (<= 1.3 wanted)")
print(f"limpq W4A4 / PyTorch LSQ W4A4       = {m['limpq_W4A4'] / m['pytorch_W4A4']:.3f}x  (>= 1.4 wanted)")
print(f"limpq W4A4 reference / limpq fp32   = {m['limpq_fp32'] / m['limpq_W4A4_reference']:.3f}x  (composed ops)")
print(f"limpq W4A4 / PyTorch LSQ W4A4, both glibc defaults    = {m['limpq_W4A4_glibc'] / m['pytorch_W4A4']:.3f}x")
print(f"limpq W4A4 / PyTorch LSQ W4A4, both retaining memory  = {m['limpq_W4A4'] / m['pytorch_W4A4_retain']:.3f}x")
print(f"retaining memory, limpq fp32 {m['limpq_fp32'] / m['limpq_fp32_glibc']:.3f}x, W4A4 {m['limpq_W4A4'] / m['limpq_W4A4_glibc']:.3f}x; "
      f"PyTorch fp32 {m['pytorch_fp32_retain'] / m['pytorch_fp32']:.3f}x, W4A4 {m['pytorch_W4A4_retain'] / m['pytorch_W4A4']:.3f}x")
print(f"limpq channels-last / NCHW, fp32     = {m['limpq_fp32_cl'] / m['limpq_fp32']:.3f}x; W4A4 {m['limpq_W4A4_cl'] / m['limpq_W4A4']:.3f}x")
PYEOF
