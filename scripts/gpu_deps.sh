#!/usr/bin/env bash
# Copies the few libraries the training core needs besides LibTorch
# (yaml-cpp, CLI11, nlohmann-json, zlib, Google Benchmark) out of this
# Debian machine's installed packages into one relocatable prefix, to carry to
# a GPU machine that has LibTorch and CUDA but none of them:
#
#   scripts/gpu_deps.sh [PREFIX]          # default .deps/prefix (git-ignored)
#   ... then there: LIMPQ_DEPS_PREFIX=PREFIX/usr scripts/cuda_check.sh
#
# The packages' CMake files locate everything relative to themselves, so the
# prefix works wherever it lands. zlib's development symlink points into
# /lib here; the prefix gets its own copy of the library instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prefix=${1:-$here/.deps/prefix}
packages=(libyaml-cpp-dev libyaml-cpp0.7 nlohmann-json3-dev libcli11-dev zlib1g-dev
  libbenchmark-dev libbenchmark1debian)
arch=$(dpkg --print-architecture)
[ "$arch" = amd64 ] || { echo "gpu_deps: this copies amd64 libraries; this machine is $arch" >&2; exit 1; }
for p in "${packages[@]}"; do
  dpkg -s "$p" > /dev/null 2>&1 || { echo "gpu_deps: package $p is not installed (apt-get install $p)" >&2; exit 1; }
done
rm -rf "$prefix"
mkdir -p "$prefix"
for p in "${packages[@]}"; do
  dpkg -L "$p" | while read -r f; do
    case $f in /usr/share/doc/* | /usr/share/man/* | */pkgconfig/*) continue ;; esac
    if [ -f "$f" ] || [ -L "$f" ]; then
      mkdir -p "$prefix$(dirname "$f")"
      cp -a "$f" "$prefix$f"
    fi
  done
done
lib=$prefix/usr/lib/x86_64-linux-gnu
real=$(readlink -f /lib/x86_64-linux-gnu/libz.so.1)
rm -f "$lib/libz.so" "$lib/libz.a"
cp "$real" "$lib/"
ln -s "$(basename "$real")" "$lib/libz.so.1"
ln -s libz.so.1 "$lib/libz.so"
du -sh "$prefix"
