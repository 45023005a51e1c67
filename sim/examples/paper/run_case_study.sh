#!/usr/bin/env bash
# Reproduces the paper case study (arXiv 2604.15039 §4) and the same comparison on the Mooncake
# conversation trace. Usage (from the repository root):
#
#   sim/examples/paper/run_case_study.sh [SIM_BINARY] [OUT_DIR]
#
# SIM_BINARY defaults to `prfaas` (any binary with the `sim` subcommand works, e.g.
# build-sim-rel/sim/prfaas_sim_tool). Results: OUT_DIR/{paper,paper-ttft,mooncake}/summary.json
# plus SVG plots; the tables are printed to stdout. Takes about a minute in a release build.
set -euo pipefail
BIN=${1:-prfaas}
OUT=${2:-out/case-study}
DIR=$(cd "$(dirname "$0")" && pwd)
TOPOS=(-t "$DIR/prfaas_pd.yaml" -t "$DIR/homogeneous_pd.yaml" -t "$DIR/naive_hetero.yaml")
TRACE=${MOONCAKE_TRACE:-../shared/data/traces/mooncake/conversation_trace.jsonl}

echo "== paper workload: max sustainable rate (p90 queueing wait <= 10 s), 4000 requests"
"$BIN" sim "${TOPOS[@]}" --synthetic -n 4000 --seed 1 --find-max-rate --rate-lo 0.5 --rate-hi 8 \
  --search-iters 12 --no-requests -o "$OUT/paper"

echo "== paper workload: TTFT at a common offered load of 1.5 req/s"
"$BIN" sim "${TOPOS[@]}" --synthetic -n 4000 --seed 1 --rate 1.5 -o "$OUT/paper-ttft"

echo "== Mooncake conversation trace (12,031 requests, 3 s buckets jittered): max rate by rescaling"
"$BIN" sim "${TOPOS[@]}" --trace "$TRACE" --format mooncake --jitter 3 --seed 1 --find-max-rate \
  --rate-lo 0.5 --rate-hi 12 --search-iters 12 --no-requests -o "$OUT/mooncake"

echo "== Mooncake at its native rate (3.4 req/s)"
"$BIN" sim "${TOPOS[@]}" --trace "$TRACE" --format mooncake --jitter 3 --seed 1 -o "$OUT/mooncake-native"
