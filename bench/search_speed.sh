#!/usr/bin/env bash
# Policy-search speed (W3A4 BitOps + CR 12.2, 25 (w, a) pairs per layer):
# limpq's exact branch and bound and CBC against the same ILP built with
# python3-pulp and solved by CBC, on the same indicators files, in one run.
#
#   bench/search_speed.sh [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-51}
BENCH=${LIMPQ_BUILD_DIR:-build}/bench/limpq_search_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build build" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$BENCH" "$dir" "$REPEATS" | while read -r line; do
  echo "limpq: $line"
  ind=$(/usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])['indicators'])" "$line")
  echo "pulp:  $(/usr/bin/python3 bench/pulp_search.py "$ind" --bitops W3A4 --cr 12.2 --repeats 5)"
done
