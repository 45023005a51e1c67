#!/usr/bin/env bash
# Simulator benchmarks recorded in bench/results/sim.md. Usage (from the repository root, with a
# Release build of prfaas_sim_tool):
#
#   bench/sim/run_bench.sh build-sim-rel/sim/prfaas_sim_tool [OUT_DIR]
#
# 1. Replays the 12,031-request Mooncake conversation trace through the PrfaaS-PD example
#    (target: < 2 s on one core).
# 2. Replays 1,000,000 synthetic requests (paper workload, Poisson 2 req/s; target: < 60 s).
# Both print wall/CPU time and peak RSS (GNU time).
set -euo pipefail
BIN=${1:?usage: run_bench.sh SIM_BINARY [OUT_DIR]}
OUT=${2:-/tmp/prfaas-sim-bench}
TRACE=${MOONCAKE_TRACE:-../shared/data/traces/mooncake/conversation_trace.jsonl}
EX=sim/examples/paper
mkdir -p "$OUT"
TIMEFMT='wall_s=%e user_s=%U sys_s=%S max_rss_kib=%M'

echo "== Mooncake conversation trace, prfaas-pd, per-request JSONL written"
/usr/bin/time -f "$TIMEFMT" taskset -c 0 "$BIN" sim -t $EX/prfaas_pd.yaml --trace "$TRACE" \
  --format mooncake --jitter 3 -o "$OUT/mooncake"

echo "== 1M synthetic requests (paper workload, 2 req/s), prfaas-pd, summary only"
/usr/bin/time -f "$TIMEFMT" taskset -c 0 "$BIN" sim -t $EX/prfaas_pd.yaml --synthetic -n 1000000 \
  --rate 2 --no-requests --bucket 100 -o "$OUT/synthetic-1m"
