#!/usr/bin/env bash
# Packs prebuilt GPU test and benchmark binaries, with the shared libraries they need that a bare
# CUDA machine lacks, into .gpupack/pack.tar.xz (git-ignored) so `run` can carry them to the GPU
# machine. Binaries already packed stay packed (several calls add up).
# The GPU machine has the CUDA toolkit and driver but none of Debian's -dev packages, so the
# project (gRPC, spdlog, OpenBLAS, ...) cannot be built there; the CUDA libraries (cudart,
# cuBLAS/cuBLASLt, the driver) are taken from that machine instead of being carried.
#
# usage: bench/gpu/pack.sh BINARY...        (paths to executables built here with PRFAAS_CUDA=ON)
# PACK=DIR packs into DIR instead of .gpupack (two engineers' packs side by side; git-ignore DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
pack=${PACK:-.gpupack}
grep -qx "/$pack/" .git/info/exclude 2>/dev/null || echo "/$pack/" >>.git/info/exclude
mkdir -p "$pack/bin" "$pack/lib"
[[ -f $pack/pack.tar.xz ]] && tar -C "$pack" -xJf "$pack/pack.tar.xz" && rm -f "$pack/pack.tar.xz"
for bin in "$@"; do
  [[ -x "$bin" ]] || { echo "pack.sh: not an executable: $bin" >&2; exit 1; }
  cp -f "$bin" "$pack/bin/"
  # Libraries resolved here, minus the C runtime and the CUDA ones the GPU machine provides.
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnvidia*) ;;
      *) cp -fL "$lib" "$pack/lib/" ;;
    esac
  done
done
# The device tool carries at most 64 MiB (working tree included) and OpenBLAS alone is ~36 MiB,
# so what travels is one xz archive; bench/gpu/run.sh unpacks it on the GPU machine.
tar -C "$pack" -cJf "$pack.tar.xz.tmp" bin lib
rm -rf "$pack"/bin "$pack"/lib
mv "$pack.tar.xz.tmp" "$pack/pack.tar.xz"
du -sh "$pack"
