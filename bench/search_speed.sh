#!/usr/bin/env bash
# Policy-search speed and exactness (bench/search_bench.cpp): limpq's exact
# solver and CBC on trained-like files of resnet18, resnet50 and
# mobilenet_v2 at 224x224 (SEEDS seeds each) and on any indicators files
# given, against the same ILP built with python3-pulp and solved by CBC (the
# authors' way) on the both-constraints budget, in one run.
#
#   bench/search_speed.sh [REPEATS] [INDICATORS.json ...]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-11}
shift || true
BENCH=${LIMPQ_BUILD_DIR:-build}/bench/limpq_search_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build build" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# limpq first, to the end, then PuLP: a pipe would run the two side by side
# on the same cores and slow both.
"$BENCH" "$dir" "$REPEATS" "${SEEDS:-3}" "$@" > "$dir/limpq.jsonl"
while read -r line; do
  echo "limpq: $line"
  # The authors' formulation on the both-constraints budget of each file.
  budget=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1]).get('budget', ''))" "$line")
  case "$budget" in
    W3A4+CR*)
      ind=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['indicators'])" "$line")
      echo "pulp:  $(/usr/bin/python3 bench/pulp_search.py "$ind" --bitops W3A4 --cr "${budget#W3A4+CR}" --repeats 5)"
      ;;
  esac
done < "$dir/limpq.jsonl"
