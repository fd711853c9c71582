#!/usr/bin/env bash
# Builds limpq against a CUDA LibTorch on a bare GPU machine and runs its GPU
# checks:
#
#   GLOO_INCLUDE_DIR=... [LIMPQ_DEPS_PREFIX=...] scripts/cuda_check.sh [GTEST_SOURCE_DIR] [BUILD_DIR]
#
# Without LIMPQ_DEPS_PREFIX: the fake-quant kernels and the c10d layer
# (LIMPQ_KERNELS_ONLY; needs only LibTorch, nvcc, CMake, Ninja and a
# GoogleTest source tree), their tests (kernel against reference; two-process
# Gloo collectives and SyncBatchNorm; SyncBatchNorm on the GPU) and the
# kernel benchmark.
#
# With LIMPQ_DEPS_PREFIX (a prefix made by scripts/gpu_deps.sh): the training
# core (LIMPQ_CORE_ONLY: quantizers, layers, models), the same tests plus the
# quantized networks trained on the GPU against the CPU, the kernel benchmark
# and the resnet20 train-step throughput on the GPU against PyTorch-Python
# (bench/train_throughput.sh; ROUNDS rounds at each side in SIDES).
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

config=-DLIMPQ_KERNELS_ONLY=ON
if [ -n "${LIMPQ_DEPS_PREFIX:-}" ]; then
  config=-DLIMPQ_CORE_ONLY=ON
  prefix="$prefix;$LIMPQ_DEPS_PREFIX"
fi

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" \
  "$config" -DLIMPQ_GTEST_SOURCE_DIR="$gtest" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}"
cmake --build "$build" -j "$(nproc)"
status=0
"$build/tests/quant_cuda_test" || status=$?
"$build/tests/dist_smoke_test" || status=$?
if [ -n "${LIMPQ_DEPS_PREFIX:-}" ]; then "$build/tests/models_cuda_test" || status=$?; fi
"$build/bench/limpq_lsq_cuda_bench" "${BENCH_REPEATS:-50}" || status=$?
if [ -n "${LIMPQ_DEPS_PREFIX:-}" ]; then
  for side in ${SIDES:-28}; do
    LIMPQ_BENCH_DEVICE=cuda PYTHON=python3 PY_STEPS=${PY_STEPS:-200} LIMPQ_BUILD_DIR="$build" \
      "$here/bench/train_throughput.sh" "$(nproc)" "${ROUNDS:-3}" "$side" || status=$?
  done
fi
exit $status
