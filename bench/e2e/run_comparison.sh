#!/usr/bin/env bash
# CPU end-to-end comparison of issue #8 item 4, recorded in bench/results/e2e-cpu.md.
#
#   bench/e2e/run_comparison.sh [BUILD_DIR] [OUT_DIR]        (from the repository root)
#
# 1. Cuts a slice of the Mooncake conversation trace (bench/e2e/make_slice.py: COUNT requests,
#    jittered, rescaled to RATE req/s, lengths x SCALE, prompts capped at MAX_INPUT).
# 2. Measures, back to back, `prfaas up` (PrfaaS cluster: 1 prefill worker; PD cluster: 1 prefill +
#    1 decode; the router; model models/kjv-tiny) replaying the slice with `prfaas bench` under
#      homogeneous  policy homogeneous-pd: no offload, the PD cluster does everything;
#      all-remote   policy naive-hetero: every prefill on the PrfaaS worker;
#      prfaas       policy prfaas: offload when the uncached prompt exceeds THRESHOLD tokens
#                   (pinned with `prfaasctl threshold set` unless PIN_THRESHOLD=0).
#    After each run it saves the router's and every worker's /metrics.
# 3. Profiles one worker of the same build and model with `prfaas bench profile`.
# 4. Simulates the same topology and slice with `prfaas sim`, calibrated with that profile, and
#    prints measured vs simulated (bench/e2e/compare.py), also into OUT_DIR/comparison.md.
# Needs the targets prfaas, prfaasctl and prfaas_sim_tool in BUILD_DIR. Output per configuration
# in OUT_DIR/<config>/: up.yaml, logs/, bench.json, requests.jsonl, metrics-*.txt, uptime-*.txt,
# threshold.txt, sim*.yaml, sim*.json.
# Every engine process runs single-threaded (OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1), so the
# three engines contend for the 2 cores of the dev VM as processes, not as thread pools.
set -euo pipefail
BUILD=${1:-build-sim-rel}
OUT=${2:-/tmp/prfaas-e2e-cpu}
PRFAAS=$BUILD/apps/prfaas
TRACE=${MOONCAKE_TRACE:-/work/shared/data/traces/mooncake/conversation_trace.jsonl}
COUNT=${COUNT:-100}
RATE=${RATE:-0.5}
SCALE=${SCALE:-0.03125}
MAX_INPUT=${MAX_INPUT:-1024}
THRESHOLD=${THRESHOLD:-512}
PORT=${PORT:-18000}
CONFIGS=${CONFIGS:-homogeneous all-remote prfaas}
SKIP_MEASURE=${SKIP_MEASURE:-0}  # 1: reuse OUT_DIR's measurements and profile, re-simulate only
PIN_THRESHOLD=${PIN_THRESHOLD:-1}  # 1: t fixed at THRESHOLD in the prfaas run (live and simulated)
CTL=$BUILD/router/ctl/prfaasctl
BLOCK=$(/usr/bin/python3 -c "print(int(512 * $SCALE))")
MODEL=$(realpath models/kjv-tiny)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
[[ -x $PRFAAS && -x $CTL ]] || { echo "build the prfaas and prfaasctl targets first" >&2; exit 1; }

policy_of() {
  case $1 in
    homogeneous) echo homogeneous-pd ;;
    all-remote) echo naive-hetero ;;
    prfaas) echo prfaas ;;
    *) echo "unknown config $1" >&2; exit 1 ;;
  esac
}

/usr/bin/python3 bench/e2e/make_slice.py --trace "$TRACE" --out "$OUT/slice.jsonl" \
  --count "$COUNT" --rate "$RATE" --scale "$SCALE" --max-input "$MAX_INPUT"

wait_banner() {  # up.log, seconds: `prfaas up` prints its banner once every worker is ready
  for _ in $(seq 1 "$2"); do
    grep -q "prfaas is up" "$1" 2>/dev/null && return 0
    sleep 1
  done
  return 1
}

if [[ $SKIP_MEASURE != 1 ]]; then
  for cfg in $CONFIGS; do
    dir=$OUT/$cfg
    rm -rf "$dir" && mkdir -p "$dir/logs"
    cat >"$dir/up.yaml" <<YAML
model: $MODEL
policy: $(policy_of "$cfg")
threshold_tokens: $THRESHOLD
links: ["prfaas:pd:10"]
clusters:
  - name: prfaas
    kind: prfaas
    workers: [prefill]
  - name: pd
    kind: pd
    workers:
      - prefill
      - role: decode
        args: ["--kv-blocks", "4096", "--state-slots", "128"]
YAML
    # --port moves the API, admin and registry ports together (PORT, PORT+1, PORT+2).
    "$PRFAAS" up --config "$dir/up.yaml" --port "$PORT" --log-dir "$dir/logs" >"$dir/up.log" 2>&1 &
    up_pid=$!
    if ! wait_banner "$dir/up.log" 300; then
      echo "prfaas up did not come up for $cfg; see $dir/up.log" >&2
      kill -INT $up_pid 2>/dev/null || true
      exit 1
    fi
    sleep 3  # a heartbeat period, so the router sees every worker's capacity
    if [[ $cfg == prfaas && $PIN_THRESHOLD == 1 ]]; then
      # Pin t (prfaasctl threshold set): on loopback the short-timescale controller reads RTT
      # jitter of a loaded machine as link pressure and raises t to its 8x cap, which turns
      # selective offload into homogeneous PD (see bench/results/e2e-cpu.md).
      "$CTL" --router "127.0.0.1:$((PORT + 1))" threshold set "$THRESHOLD" >"$dir/threshold.txt"
    fi
    { date -u +%FT%TZ; uptime; } >"$dir/uptime-before.txt"
    echo "== $cfg: $(cat "$dir/uptime-before.txt" | tail -1)"
    "$PRFAAS" bench --url "http://127.0.0.1:$PORT" --trace "$OUT/slice.jsonl" --format mooncake \
      --block-tokens "$BLOCK" --model kjv-tiny --concurrency 256 --timeout 600 \
      --output-json "$dir/bench.json" \
      --requests-jsonl "$dir/requests.jsonl" --no-progress | tee "$dir/bench.txt"
    { date -u +%FT%TZ; uptime; } >"$dir/uptime-after.txt"
    curl -sf "http://127.0.0.1:$PORT/metrics" >"$dir/router-metrics.txt" || true
    "$CTL" --router "127.0.0.1:$((PORT + 1))" -o json threshold get >>"$dir/threshold.txt" 2>&1 ||
      true
    for ready in "$dir"/logs/*.ready.json; do
      w=$(basename "$ready" .ready.json)
      http=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['http_port'])" \
        "$ready")
      curl -sf "http://127.0.0.1:$http/metrics" >"$dir/metrics-$w.txt" || true
    done
    kill -INT $up_pid
    wait $up_pid || true
  done

fi
if [[ $SKIP_MEASURE != 1 && ${SKIP_PROFILE:-0} != 1 ]]; then
  # Profile: a worker serving both roles, same build, model and engine settings as above.
  echo "== profile"
  rm -rf "$OUT/profile-worker" && mkdir -p "$OUT/profile-worker"
  "$PRFAAS" worker --role both --cluster profile --cluster-kind pd --model "$MODEL" \
    --host 127.0.0.1 --grpc-port 0 --http-port 0 --transport-port 0 --kv-blocks 4096 \
    --state-slots 128 --prefix-cache-blocks 0 --ready-file "$OUT/profile-worker/ready.json" \
    >"$OUT/profile-worker/worker.log" 2>&1 &
  worker_pid=$!
  for _ in $(seq 1 60); do [[ -s $OUT/profile-worker/ready.json ]] && break; sleep 1; done
  grpc=$(/usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['grpc_port'])" \
    "$OUT/profile-worker/ready.json")
  { date -u +%FT%TZ; uptime; } >"$OUT/profile-uptime.txt"
  "$PRFAAS" bench profile --worker "127.0.0.1:$grpc" --lengths 16,64,128,256,512,768,1024 \
    --batches 1,2,4,8 --decode-context 32 --decode-tokens 64 --repeats 3 --model kjv-tiny \
    --hardware "cpu-1-thread" --gpus 1 --output "$OUT/profile.json"
  kill -INT $worker_pid
  wait $worker_pid || true
fi

# Simulation of the same topology and slice, calibrated with the profile. The workers' engine
# settings are the defaults of `prfaas worker`: prefill steps of 512 tokens, a 256-block (64
# tokens each) prefix cache with state checkpoints every 256 tokens; cache sizes are converted to
# the trace's blocks. Two predictions per configuration:
#   sim.json            the profile as measured;
#   sim-speed.json      each cluster's profile scaled by the speed its prefill worker actually got
#                       during that run (bench/e2e/speed_scale.py: the worker's own compute-time
#                       counters against the profile), which takes the other users' load on the
#                       shared cores out of the comparison and leaves the queueing model's error.
CACHE_BLOCKS=$((256 * 64 / BLOCK))
ADAPTIVE=true
[[ $PIN_THRESHOLD == 1 ]] && ADAPTIVE=false
write_sim() {  # dir, policy, prfaas profile_scale, pd profile_scale, file
  cat >"$5" <<YAML
name: $(basename "$1")
model: {config: $MODEL, dtype: fp32}
clusters:
  - {name: prfaas, kind: prfaas, workers: 1, profile: $OUT/profile.json, profile_scale: $3,
     max_prefill_batch_tokens: 512, prefill_cache_blocks: $CACHE_BLOCKS, checkpoint_tokens: 256}
  - {name: pd, kind: pd, workers: 2, prefill_workers: 1, decode_workers: 1,
     profile: $OUT/profile.json, profile_scale: $4, max_prefill_batch_tokens: 512,
     max_decode_batch: 64, prefill_cache_blocks: $CACHE_BLOCKS, checkpoint_tokens: 256,
     decode_cache_blocks: $CACHE_BLOCKS, intra_gbps: 10}
links:
  - {from: prfaas, to: pd, gbps: 10, rtt_ms: 0.1}
policy: {name: $2, threshold: $THRESHOLD, adaptive: $ADAPTIVE, controller_period_s: 0.2}
YAML
}
SIM=${SIM:-$BUILD/sim/prfaas_sim_tool}
for cfg in $CONFIGS; do
  dir=$OUT/$cfg
  scale() { [[ -f $dir/metrics-$1.txt ]] && /usr/bin/python3 bench/e2e/speed_scale.py \
    "$dir/metrics-$1.txt" "$OUT/profile.json" || echo 1.0; }
  s_prfaas=$(scale prfaas-prefill-0)
  s_pd=$(scale pd-prefill-0)
  echo "$cfg: prefill speed during the run vs profile: prfaas x$s_prfaas, pd x$s_pd" \
    | tee "$dir/speed.txt"
  write_sim "$dir" "$(policy_of "$cfg")" 1.0 1.0 "$dir/sim.yaml"
  write_sim "$dir" "$(policy_of "$cfg")" "$s_prfaas" "$s_pd" "$dir/sim-speed.yaml"
  for v in sim sim-speed; do
    "$SIM" sim -t "$dir/$v.yaml" --trace "$OUT/slice.jsonl" --format mooncake \
      --block-tokens "$BLOCK" --json -o "$dir/$v" >"$dir/$v.json"
  done
done
/usr/bin/python3 bench/e2e/compare.py "$OUT" $CONFIGS | tee "$OUT/comparison.md"
