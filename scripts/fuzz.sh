#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UndefinedBehavior-
# Sanitizer) in build-fuzz/ and runs each for SECONDS (default 60) on its
# seed corpus under fuzz/corpus/. Any crash or sanitizer report fails.
#
#   scripts/fuzz.sh [SECONDS] [TARGETS]
#
# TARGETS is a ctest regular expression over the target names (default: all),
# e.g. 'fuzz_(onnx|config)$'. CTEST_PARALLEL_LEVEL=N runs N targets at once.
# Each target's full output goes to build-fuzz/fuzz-logs/<target>.log; the
# last lines printed are each target's executions and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${2:-.}
if ! command -v clang++ >/dev/null || ! dpkg-query -W libclang-rt-14-dev >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y --no-install-recommends clang libclang-rt-14-dev
fi
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ \
  -DLIMPQ_FUZZ=ON -DLIMPQ_FUZZ_SECONDS="$seconds" >/dev/null
listing=$(ctest --test-dir build-fuzz -L fuzz -R "$targets" -N)
mapfile -t names < <(sed -n 's/^ *Test *#[0-9]*: *//p' <<< "$listing")
[ ${#names[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz target matches '$targets'" >&2; exit 2; }
cmake --build build-fuzz --target "${names[@]}"
logs=build-fuzz/fuzz-logs
mkdir -p "$logs"
status=0
log="$logs/ctest-$$.log"
ctest --test-dir build-fuzz -L fuzz -R "$targets" --output-on-failure -V > "$log" 2>&1 || status=$?
for name in "${names[@]}"; do
  # ctest -V prefixes each line of test N's output with "N: ".
  number=$(sed -n "s/^ *Test *#\([0-9]*\): *$name\$/\1/p" <<< "$listing")
  sed -n "s/^$number: //p" "$log" > "$logs/$name.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$name.log" | tail -n1)
  corpus=$(ls "build-fuzz/fuzz/corpus/${name#fuzz_}" 2>/dev/null | wc -l)
  # ctest's own line: "1/2 Test #9: fuzz_onnx .....***Failed    5.20 sec".
  result=$(sed -n "s/^.*Test *#$number: $name [ .*]*\([A-Za-z]*\) *\([0-9.]*\) sec.*/\1 after \2 s/p" "$log")
  echo "$name: ${result:-not run}, ${runs:-?} executions, working corpus $corpus files"
done
grep -E "tests passed|tests failed" "$log" || true
exit $status
