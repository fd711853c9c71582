#!/usr/bin/env bash
# Sets up limpq on Debian 12: installs the Debian packages it needs when they
# are missing (as root directly, through sudo otherwise), then configures and
# builds into ./build. With --run, builds only the library and the CLI (the
# tests and benchmarks are built by scripts/test.sh), then runs the main job:
# `limpq run configs/quickstart.yaml` (the whole pipeline on Fashion-MNIST).
#
#   ./scripts/setup.sh          # install + build everything
#   ./scripts/setup.sh --run    # install + build the CLI + quick start job
set -euo pipefail
cd "$(dirname "$0")/.."

RUN=0
BUILD_DIR=${LIMPQ_BUILD_DIR:-build}
for arg in "$@"; do
  case "$arg" in
    --run) RUN=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (expected --run)" >&2; exit 2 ;;
  esac
done

PACKAGES=(
  # toolchain
  g++ cmake ninja-build ccache pkg-config git
  # libraries
  libtorch-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libspdlog-dev libfmt-dev
  libturbojpeg0-dev zlib1g-dev coinor-libcbc-dev libgloo-dev
  # BLAS behind LibTorch's linear layers and matrix products: without it
  # Debian's reference BLAS runs them (a width-192 ViT: 37 images/s against
  # 1,076 with OpenBLAS, 2 threads; convolutions go through oneDNN either way)
  libopenblas0-openmp
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev python3-torch python3-torchvision python3-pulp coinor-cbc
  # ONNX export (its check in ONNX Runtime needs Node.js and npm, below)
  libonnx-dev
  # headless rendering of `limpq report` in the tests
  chromium
  # data
  dataset-fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm by command, not package: another distribution of Node.js
# (e.g. NodeSource's, which bundles npm) serves as well.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
  fi
  echo "setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime for Node.js, pinned by package-lock.json. Its install script
# would download GPU binaries; the CPU ones ship in the package.
if [ ! -f node_modules/onnxruntime-node/package.json ]; then
  echo "setup.sh: installing onnxruntime-node (npm)"
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
fi

cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
if ((RUN)); then
  cmake --build "$BUILD_DIR" --target limpq_cli
else
  cmake --build "$BUILD_DIR"
fi

if ((RUN)); then
  # The whole pipeline; finished stages are reused when it is run again.
  "$BUILD_DIR/limpq" run configs/quickstart.yaml
fi
