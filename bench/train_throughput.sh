#!/usr/bin/env bash
# resnet20 training throughput (batch 128, 1x28x28, full precision): limpq
# against the minimal PyTorch-Python script with the same thread count,
# measured in one run, interleaved over ROUNDS rounds; prints the medians and
# their ratio.
#
#   bench/train_throughput.sh [THREADS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
ROUNDS=${2:-3}
PY=/usr/bin/python3
BENCH=${LIMPQ_BUILD_DIR:-build}/bench/limpq_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build build" >&2; exit 1; }

limpq=() pytorch=()
for ((r = 1; r <= ROUNDS; r++)); do
  l=$(LIMPQ_THREADS=$THREADS "$BENCH" --benchmark_filter='TrainStep/resnet20_fp32' --benchmark_format=json 2>/dev/null |
      $PY -c "import json,sys; print(json.load(sys.stdin)['benchmarks'][0]['images_per_second'])")
  p=$($PY bench/pytorch_resnet20.py --threads "$THREADS" --steps 40 |
      $PY -c "import json,sys; print(json.load(sys.stdin)['images_per_second'])")
  limpq+=("$l"); pytorch+=("$p")
  printf 'round %d: limpq %.1f img/s, pytorch %.1f img/s\n' "$r" "$l" "$p"
done
$PY - "${limpq[*]}" "${pytorch[*]}" "$THREADS" <<'PYEOF'
import statistics, sys
l = [float(v) for v in sys.argv[1].split()]
p = [float(v) for v in sys.argv[2].split()]
ml, mp = statistics.median(l), statistics.median(p)
print(f"threads {sys.argv[3]}: limpq median {ml:.1f} img/s, PyTorch-Python median {mp:.1f} img/s, ratio {ml / mp:.3f}")
PYEOF
