#!/usr/bin/env bash
# Runs the default test suite (everything but the tests labelled "slow").
# Extra arguments go to ctest, e.g. ./scripts/test.sh -R Loader
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${LIMPQ_BUILD_DIR:-build}
cmake --build "$BUILD_DIR"
ctest --test-dir "$BUILD_DIR" -LE slow -j "$(nproc)" --output-on-failure "$@"
