#!/usr/bin/env bash
# The README's main job, small enough for a few minutes on 2 cores:
# full-precision resnet20 on 12k Fashion-MNIST images -> joint indicator
# training -> ILP search at W3A3-level BitOps -> QAT fine-tuning under the
# searched policy -> evaluation on the 10k test images, next to uniform W3A3.
# Stages whose output exists are reused (rerunning continues where it stopped).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMPQ=${LIMPQ_BUILD_DIR:-build}/limpq
OUT=runs/quickstart
SMALL=(--limit 12000)

stage() { echo; echo "== $*"; }

stage "1/5 full-precision training"
if [ ! -f "$OUT/fp/done" ]; then
  resume=(); [ -f "$OUT/fp/checkpoint.pt" ] && resume=(--resume)
  "$LIMPQ" train --config configs/quickstart.yaml --out-dir "$OUT/fp" "${resume[@]}"
  touch "$OUT/fp/done"
fi

stage "2/5 joint indicator training"
if [ ! -f "$OUT/indicators/indicators.json" ]; then
  resume=(); [ -f "$OUT/indicators/checkpoint.pt" ] && resume=(--resume)
  "$LIMPQ" indicators --weights "$OUT/fp/checkpoint.pt" "${SMALL[@]}" --fraction 0.25 --epochs 1 \
    --out-dir "$OUT/indicators" "${resume[@]}"
fi

stage "3/5 policy search at W3A3-level BitOps"
"$LIMPQ" search --indicators "$OUT/indicators/indicators.json" --bitops W3A3 --out "$OUT/policy_W3A3.json" | tail -6

stage "4/5 fine-tuning: searched policy, and uniform W3A3 for comparison"
for run in searched uniform; do
  if [ ! -f "$OUT/qat_$run/done" ]; then
    if [ "$run" = searched ]; then quant=(--policy "$OUT/policy_W3A3.json"); else quant=(--uniform W3A3); fi
    resume=(); [ -f "$OUT/qat_$run/checkpoint.pt" ] && resume=(--resume)
    "$LIMPQ" finetune --weights "$OUT/fp/checkpoint.pt" "${quant[@]}" "${SMALL[@]}" --epochs 1 \
      --out-dir "$OUT/qat_$run" "${resume[@]}"
    touch "$OUT/qat_$run/done"
  fi
done

stage "5/5 evaluation on the test set"
printf '%-26s %10s %12s %8s\n' model GBitOps "weights KB" top1
for run in fp qat_uniform qat_searched; do
  "$LIMPQ" eval --checkpoint "$OUT/$run/checkpoint.pt" --json |
    /usr/bin/python3 -c "
import json, sys
r = json.load(sys.stdin)
name = {'fp': 'full precision', 'qat_uniform': 'uniform W3A3', 'qat_searched': 'limpq policy (W3A3 BitOps)'}['$run']
bitops = f\"{r['bitops'] / 1e9:10.4f}\" if 'bitops' in r else f\"{'32/32':>10}\"
size = f\"{r['size_bytes'] / 1e3:12.1f}\" if 'size_bytes' in r else f\"{'32-bit':>12}\"
print(f\"{name:26s} {bitops} {size} {r['top1']:7.2f}%\")"
done
