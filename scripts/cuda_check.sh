#!/usr/bin/env bash
# Builds limpq's fake-quant kernels and its c10d layer against a CUDA
# LibTorch and runs their GPU tests (kernel against reference; two-process
# Gloo collectives and SyncBatchNorm; SyncBatchNorm on the GPU) and the
# kernel benchmark. Needs only LibTorch, CUDA's nvcc, CMake, Ninja and a
# GoogleTest source tree, so it runs on a bare GPU machine:
#
#   GLOO_INCLUDE_DIR=... scripts/cuda_check.sh [GTEST_SOURCE_DIR] [BUILD_DIR]
#
# LibTorch is found through CMAKE_PREFIX_PATH or, failing that, the Python
# torch package. CUDA_ARCH (default: 90) picks the GPU architecture. The
# c10d headers include Gloo's and NCCL's: pip's torch ships neither, so
# GLOO_INCLUDE_DIR names a Gloo include folder (Debian's libgloo-dev
# /usr/include works) and nccl.h is looked up in the Python environment.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
gtest=${1:-/usr/src/googletest}
build=${2:-$here/build-cuda}
prefix=${CMAKE_PREFIX_PATH:-$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')}

if [ -n "${GLOO_INCLUDE_DIR:-}" ]; then export CXXFLAGS="${CXXFLAGS:-} -isystem $GLOO_INCLUDE_DIR"; fi
nccl_h=$(python3 -c 'import os, nvidia; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null | xargs -I{} find {} -name nccl.h 2>/dev/null | head -1 || true)
if [ -n "$nccl_h" ]; then export CXXFLAGS="${CXXFLAGS:-} -isystem $(dirname "$nccl_h")"; fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  -DLIMPQ_KERNELS_ONLY=ON -DLIMPQ_GTEST_SOURCE_DIR="$gtest" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}"
cmake --build "$build" -j "$(nproc)"
status=0
"$build/tests/quant_cuda_test" || status=$?
"$build/tests/dist_smoke_test" || status=$?
"$build/bench/limpq_lsq_cuda_bench" "${BENCH_REPEATS:-50}" || status=$?
exit $status
