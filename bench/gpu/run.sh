#!/usr/bin/env bash
# The one script run on the GPU machine (issue 9). Checks the GPU, measures the ceilings (torch
# bf16 GEMM 8192^3, 2 GiB D2D copy), runs every packed GPU test (.gpupack/bin/gpu_*_test and
# *_gpu_test) and
# benchmark (.gpupack/bin/prfaas_bench_*), then every peer script (bench/gpu/peers/*.py; fla from
# .fla on PYTHONPATH), and prints the summary table last. Build and pack first, on the build
# machine: bench/gpu/build.sh (see bench/gpu/README.md for why the two steps).
#
# usage (repo root, GPU machine): bench/gpu/run.sh [OUTDIR]      (default: $OUT, else bench/gpu/out)
# Writes at most 8 flat files into OUTDIR (the device tool returns only 8): gpu.txt, ceilings.txt,
# tests.txt, bench.txt, peers.txt, raw.txt (files the benchmarks wrote, concatenated), table.md.
# PACK=DIR runs the binaries packed into DIR (default .gpupack; see pack.sh).
# ONLY=REGEX restricts tests, benchmarks and peers to file names matching it (one engineer's run).
# BENCH_TIMEOUT / PEER_TIMEOUT (seconds, default 900) bound each benchmark / peer script.
# Exit status: 0 when every test passed and every benchmark and peer exited 0, else 1.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-bench/gpu/out}}
mkdir -p "$out"
# bench/gpu/pack.sh ships binaries and libraries as one archive (the carry limit is 64 MiB).
pack=${PACK:-.gpupack}
if [[ -f $pack/pack.tar.xz ]]; then
  tar -C "$pack" -xJf "$pack/pack.tar.xz" || { echo "run.sh: cannot unpack $pack" >&2; exit 1; }
fi
export LD_LIBRARY_PATH=$PWD/$pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
[[ -d .fla ]] && export PYTHONPATH=$PWD/.fla${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
status=0
only=${ONLY:-}
wanted() { [[ -z $only || $(basename "$1") =~ $only ]]; }
note() { echo "== $*" | tee -a "$out/gpu.txt"; }

# 1. GPU present and usable.
{ date -u; nvidia-smi; } >"$out/gpu.txt" 2>&1 || { echo "run.sh: nvidia-smi failed" >&2; cat "$out/gpu.txt"; exit 1; }
$py -c 'import torch; assert torch.cuda.is_available(); p = torch.cuda.get_device_properties(0); print("torch", torch.__version__, p.name, p.multi_processor_count, "SMs")' >>"$out/gpu.txt" 2>&1 \
  || { note "torch cannot see the GPU"; status=1; }
head -20 "$out/gpu.txt"

# 2. Ceilings.
note "ceilings"
$py bench/gpu/ceilings.py 2>&1 | tee "$out/ceilings.txt" || status=1

# 3. Tests (each binary once; gtest prints one line per failing test with --gtest_brief).
: >"$out/tests.txt"
pass=0 fail=0
for t in "$pack"/bin/gpu_*_test "$pack"/bin/*_gpu_test; do
  [[ -x $t ]] && wanted "$t" || continue
  echo "### $t" >>"$out/tests.txt"
  if timeout 600 "$t" --gtest_brief=1 >>"$out/tests.txt" 2>&1; then
    pass=$((pass + 1)); echo "PASS $t" | tee -a "$out/tests.txt"
  else
    fail=$((fail + 1)); status=1; echo "FAIL $t" | tee -a "$out/tests.txt"
  fi
done
note "test binaries: $pass passed, $fail failed"

# 4. Our benchmarks (each may write raw files into raw/; concatenated below).
mkdir -p "$out/raw"
: >"$out/bench.txt"
for b in "$pack"/bin/prfaas_bench_*; do
  [[ -x $b ]] && wanted "$b" || continue
  echo "### $b" | tee -a "$out/bench.txt"
  timeout "${BENCH_TIMEOUT:-900}" "$b" "$out/raw" 2>&1 | tee -a "$out/bench.txt" || { status=1; echo "FAILED: $b" | tee -a "$out/bench.txt"; }
done

# 5. Peers.
: >"$out/peers.txt"
for p in bench/gpu/peers/*.py; do
  [[ -f $p ]] && wanted "$p" || continue
  echo "### $p" | tee -a "$out/peers.txt"
  timeout "${PEER_TIMEOUT:-900}" $py "$p" 2>&1 | tee -a "$out/peers.txt" || { status=1; echo "FAILED: $p" | tee -a "$out/peers.txt"; }
done

# Flatten raw files (the tool returns at most 8 files).
: >"$out/raw.txt"
for f in "$out"/raw/*; do
  [[ -f $f ]] || continue
  echo "### $(basename "$f")" >>"$out/raw.txt"
  cat "$f" >>"$out/raw.txt"
done
rm -rf "$out/raw"

# 6. Table, last.
$py bench/gpu/table.py "$out/ceilings.txt" "$out/bench.txt" "$out/peers.txt" >"$out/table.md"
echo
echo "== tests: $pass binaries passed, $fail failed (details: tests.txt)"
cat "$out/table.md"
exit $status
