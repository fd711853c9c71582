#!/usr/bin/env bash
# resnet20 training-step throughput (batch 128, 1xSIDExSIDE), measured in one
# run, interleaved over ROUNDS rounds, medians reported:
#   limpq fp32            vs  PyTorch-Python fp32     (issue 2: limpq not slower)
#   limpq W4A4 LSQ QAT    vs  limpq fp32              (QAT step cost, bar <= 1.3x)
#   limpq W4A4 LSQ QAT    vs  PyTorch-Python LSQ QAT  (bar >= 1.4x faster)
# limpq rows train as limpq does by default, channels-last. The
# PyTorch-Python baseline is the plain script, NCHW. Extra rows:
#   limpq_*_nchw          limpq in the NCHW layout
#   limpq_W4A4_reference  limpq with the composed-op LSQ instead of the kernel
#   pytorch_W4A4_cl       PyTorch-Python LSQ in channels-last (like for like)
#   limpq_W4A4_system     limpq with glibc's malloc defaults
#                         (LIMPQ_HOST_ALLOCATOR=system): limpq otherwise
#                         retains freed host memory instead of page-faulting
#                         its buffers back in every step
#   pytorch_W4A4*_retain  PyTorch-Python with glibc tuned the same way
#                         (GLIBC_TUNABLES, $RETAIN_TUNABLES below)
# SIDE is 28 (Fashion-MNIST, the default) or 32 (the CIFAR-sized input of the
# brief's step timings). LIMPQ_BENCH_DEVICE=cuda measures the same rows on the
# GPU (limpq_bench's "_cuda" rows, `pytorch_resnet20.py --device cuda`, each
# step ending in a device synchronize); PYTHON picks the interpreter whose
# torch runs the baseline (default /usr/bin/python3, Debian's), PY_STEPS its
# timed steps per row.
#
#   bench/train_throughput.sh [THREADS] [ROUNDS] [SIDE]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
ROUNDS=${2:-5}
SIDE=${3:-28}
DEVICE=${LIMPQ_BENCH_DEVICE:-cpu}
PY=${PYTHON:-/usr/bin/python3}
PY_STEPS=${PY_STEPS:-16}
case $DEVICE in
  cpu) SUFFIX= ;;
  cuda) SUFFIX=_cuda ;;
  *) echo "LIMPQ_BENCH_DEVICE must be cpu or cuda, got '$DEVICE'" >&2; exit 2 ;;
esac
BENCH=${LIMPQ_BUILD_DIR:-build}/bench/limpq_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build build" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# What limpq::util::retain_freed_host_memory() sets, as glibc tunables.
RETAIN_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824

limpq_rows() {  # FILTER [NAME_SUFFIX], environment passed through
  LIMPQ_THREADS="$THREADS" "$BENCH" --benchmark_filter="TrainStep/resnet20_($1)$SUFFIX/.*side:$SIDE/" \
      --benchmark_min_time=2 --benchmark_format=json 2>/dev/null |
    $PY -c "
import json, sys
for b in json.load(sys.stdin)['benchmarks']:
    name = b['name'].split('/')[1].replace('resnet20_', '')
    print('limpq_' + name.removesuffix('$SUFFIX') + '${2:-}', b['images_per_second'])" >> "$results"
}

pytorch_row() {  # NAME ARGS...
  local name=$1
  shift
  $PY bench/pytorch_resnet20.py --threads "$THREADS" --size "$SIDE" --steps "$PY_STEPS" --device "$DEVICE" "$@" |
    $PY -c "import json,sys; print('pytorch_$name', json.load(sys.stdin)['images_per_second'])" >> "$results"
}

for ((r = 1; r <= ROUNDS; r++)); do
  limpq_rows 'fp32|W4A4|W4A4_reference|fp32_nchw|W4A4_nchw'
  pytorch_row fp32
  pytorch_row W4A4 --quant W4A4
  pytorch_row W4A4_cl --quant W4A4 --channels-last
  if [ "$DEVICE" = cpu ]; then
    LIMPQ_HOST_ALLOCATOR=system limpq_rows 'W4A4' _system
    GLIBC_TUNABLES=$RETAIN_TUNABLES pytorch_row W4A4_retain --quant W4A4
    GLIBC_TUNABLES=$RETAIN_TUNABLES pytorch_row W4A4_cl_retain --quant W4A4 --channels-last
  fi
  echo "round $r done" >&2
done
$PY - "$results" "$THREADS" "$SIDE" "$DEVICE" <<'PYEOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, value = line.split()
    runs[name].append(float(value))
m = {k: statistics.median(v) for k, v in runs.items()}
print(f"{sys.argv[4]}, side {sys.argv[3]}, threads {sys.argv[2]}, medians of {len(runs['limpq_fp32'])} rounds (images/s):")
for k in sorted(m):
    print(f"  {k:28s} {m[k]:8.1f}   ({', '.join(f'{v:.1f}' for v in runs[k])})")
# Per-round ratios of the bar (the rounds share the machine's noise).
per_round = sorted(a / b for a, b in zip(runs['limpq_W4A4'], runs['pytorch_W4A4']))
print(f"limpq fp32 / PyTorch fp32                   = {m['limpq_fp32'] / m['pytorch_fp32']:.3f}   (>= 1 wanted)")
print(f"limpq W4A4 step cost / limpq fp32           = {m['limpq_fp32'] / m['limpq_W4A4']:.3f}x  (<= 1.3 wanted)")
print(f"limpq W4A4 / PyTorch LSQ W4A4               = {m['limpq_W4A4'] / m['pytorch_W4A4']:.3f}x  (>= 1.4 wanted); "
      f"per round {', '.join(f'{v:.2f}' for v in per_round)}")
print(f"  like for like, both channels-last         = {m['limpq_W4A4'] / m['pytorch_W4A4_cl']:.3f}x")
print(f"  limpq in NCHW / PyTorch LSQ (NCHW)       = {m['limpq_W4A4_nchw'] / m['pytorch_W4A4']:.3f}x")
if 'limpq_W4A4_system' in m:
    print(f"  both with glibc's malloc defaults         = {m['limpq_W4A4_system'] / m['pytorch_W4A4']:.3f}x")
    print(f"  both retaining freed memory               = {m['limpq_W4A4'] / m['pytorch_W4A4_retain']:.3f}x "
          f"(channels-last both: {m['limpq_W4A4'] / m['pytorch_W4A4_cl_retain']:.3f}x)")
    print(f"limpq retained / glibc-default malloc       = {m['limpq_W4A4'] / m['limpq_W4A4_system']:.3f}x (W4A4); "
          f"PyTorch {m['pytorch_W4A4_retain'] / m['pytorch_W4A4']:.3f}x")
print(f"limpq channels-last / NCHW                  = fp32 {m['limpq_fp32'] / m['limpq_fp32_nchw']:.3f}x, "
      f"W4A4 {m['limpq_W4A4'] / m['limpq_W4A4_nchw']:.3f}x")
print(f"limpq W4A4 composed-op reference / fp32     = {m['limpq_fp32'] / m['limpq_W4A4_reference']:.3f}x")
PYEOF
