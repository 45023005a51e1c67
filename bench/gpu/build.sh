#!/usr/bin/env bash
# Step 1 of the GPU flow, on the BUILD machine (not the GPU machine, which has no Debian -dev
# packages): configures a Release CUDA build, builds every GPU test and benchmark target, and packs
# the binaries with their non-CUDA shared libraries into .gpupack/ (bench/gpu/pack.sh).
# usage: bench/gpu/build.sh [BUILD_DIR]     (default build-gpu; JOBS=n for ninja -j, default 2;
#                                            PACK=DIR packs into DIR instead of .gpupack)
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-build-gpu}
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPRFAAS_CUDA=ON \
  -DPRFAAS_ONLY="common;kernels;engine;transport;bench;tests" >/dev/null
# Every gpu_*_test under tests/gpu, every *_gpu_test under tests/unit (GPU parts of CPU modules,
# e.g. the transport's staging ring) and every prfaas_bench_* under bench/gpu (ninja output paths).
targets=$(ninja -C "$dir" -t targets all | awk -F: '{print $1}' |
  grep -E '^tests/gpu/.*/gpu_[A-Za-z0-9_]+_test$|^tests/unit/.*/[A-Za-z0-9_]+_gpu_test$|^bench/gpu/prfaas_bench_[A-Za-z0-9_]+$' | sort -u)
[[ -n $targets ]] || { echo "build.sh: no GPU targets (is PRFAAS_CUDA on and nvcc found?)" >&2; exit 1; }
ninja -C "$dir" -j "${JOBS:-2}" $targets
bins=()
for t in $targets; do bins+=("$dir/$t"); done
# Start from an empty pack so that stale binaries of removed targets do not run.
rm -rf "${PACK:-.gpupack}"
bench/gpu/pack.sh "${bins[@]}"
echo "packed: ${bins[*]}"
