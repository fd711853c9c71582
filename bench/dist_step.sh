#!/usr/bin/env bash
# Data-parallel step time and traffic (issue 7): resnet20 on Fashion-MNIST,
# global batch 128, one process against `limpq launch --nproc 2` (64 per worker,
# one thread each, Gloo over loopback); and the bytes all-reduced per step
# for resnet20 and resnet50 (from metrics.jsonl).
#
#   bench/dist_step.sh [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-20}
LIMPQ=${LIMPQ_BUILD_DIR:-build}/limpq
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(--dataset fashion-mnist --limit $((STEPS * 128)) --test-limit 256 --epochs 1 --warmup-epochs 0
        --progress false --workers 1)
seconds() { /usr/bin/python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['$2'])" "$1/metrics.jsonl"; }

"$LIMPQ" train "${common[@]}" --batch-size 128 --threads 2 --out-dir "$out/one" >/dev/null 2>&1
"$LIMPQ" launch --nproc 2 -- limpq train "${common[@]}" --batch-size 64 --threads 1 --out-dir "$out/two" >/dev/null 2>&1
one=$(seconds "$out/one" train_seconds)
two=$(seconds "$out/two" train_seconds)
/usr/bin/python3 - "$one" "$two" "$STEPS" <<'PY'
import sys
one, two, steps = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"resnet20, global batch 128, {steps} steps: 1 process x 2 threads {1000 * one / steps:.0f} ms/step, "
      f"2 workers x 1 thread {1000 * two / steps:.0f} ms/step (ratio {two / one:.2f})")
PY
for arch in resnet20 resnet50; do
  "$LIMPQ" launch --nproc 2 -- limpq train --dataset fashion-mnist --limit 32 --test-limit 16 --epochs 1 --batch-size 8 \
      --progress false --threads 1 --arch "$arch" --out-dir "$out/$arch" >/dev/null 2>&1
  bytes=$(seconds "$out/$arch" allreduce_bytes_per_step)
  echo "$arch: $bytes bytes all-reduced per step ($(/usr/bin/python3 -c "print(round($bytes / 2**20, 2))") MiB)"
done
