// Simulator: the discrete-event replay of a Trace against a Topology, routing every request
// through the router's policy library (router/policy) exactly as the live router does.
//
// Model (docs/simulator.md has the full description):
//  * arrival → the policy reads a router::ClusterState snapshot the simulator keeps exact
//    (queues, backlogs, decode occupancy, link utilisation/backlog) and the router::CacheIndex,
//    which mirrors every worker's PrefixCache through stored/evicted events;
//  * prefill workers run FIFO batches up to a token budget; cost from the cluster's CostModel;
//  * the KV + state hand-off is a flow on the intra-cluster link or the inter-cluster link,
//    starting with the prefill (layer-wise pipelining caps it at the production rate) and
//    arriving rtt/2 after its last byte; the first token (TTFT) returns when prefill ends;
//  * decode workers run continuous batching (≤ max_decode_batch sequences, KV within budget);
//    steps are advanced in segments between batch changes, so cost is per event, not per token;
//  * the policy's Tick (threshold controller, short timescale) and the planner's role rebalancer
//    (router::AdviseRoles, long timescale: drains and flips PD workers between prefill and
//    decode) run on their own timers; link capacities follow their bandwidth schedules.
// Deterministic: same inputs and seed → identical outputs (ties broken by event sequence).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/topology.h"
#include "sim/trace.h"

namespace prfaas::sim {

struct SimOptions {
  double bucket_s = 10;   // width of time-series buckets (throughput, link utilisation)
  double max_time_s = 0;  // > 0: stop simulating at this time (unfinished stay open)
};

struct RequestRecord {
  uint64_t id = 0;
  double arrival_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  int64_t cached_tokens = 0;         // prefix reused at the prefill worker
  int64_t decode_cached_tokens = 0;  // prefix already at the decode worker (not transferred)
  uint8_t path = 0;                  // router::PrefillPath
  uint8_t reason = 0;                // router::Reason
  int32_t prefill_worker = -1;
  int32_t decode_worker = -1;
  uint32_t threshold = 0;
  double transfer_bytes = 0;
  double routed_s = -1;           // the policy placed it (later than arrival when it waited
                                  // in the router's admission queue for decode capacity)
  double prefill_enqueue_s = -1;  // reached the prefill worker's queue
  double prefill_start_s = -1;
  double prefill_end_s = -1;
  double first_token_s = -1;   // first token back at the router (TTFT point)
  double transfer_end_s = -1;  // KV + state installed at the decode worker
  double decode_start_s = -1;  // joined the continuous batch
  double finish_s = -1;        // last token

  bool done() const { return finish_s >= 0; }
  double ttft() const { return first_token_s - arrival_s; }
  // Mean time per output token after the first (0 for single-token outputs).
  double tpot() const {
    return output_tokens > 1 ? (finish_s - first_token_s) / static_cast<double>(output_tokens - 1)
                             : 0;
  }
};

struct LinkSeries {
  std::string name;
  double nominal_bps = 0;
  double bytes = 0;
  std::vector<double> bucket_bytes;
  std::vector<double> bucket_capacity_bps;  // capacity at each bucket start
};

// A worker role change applied by the long-timescale controller (when the drain completed).
struct RoleFlip {
  double advised_s = 0;  // the rebalancer decided
  double done_s = 0;     // the worker finished draining and took its new role
  int32_t worker = -1;   // router::WorkerIndex
  bool to_prefill = false;
};

// One long-timescale controller decision (router::AdviseRoles), flip or not.
struct RebalanceAdvice {
  double at_s = 0;
  int current_n_p = 0, target_n_p = 0;
  double target_threshold = 0;
  double current_lambda = 0, target_lambda = 0;
  bool flip = false;
  std::string summary;
};

struct SimResult {
  std::string name;
  std::string policy;
  std::vector<RequestRecord> records;  // indexed by request id
  std::vector<LinkSeries> links;
  std::vector<std::pair<double, uint32_t>> threshold_series;  // (time, t) at each controller tick
  std::vector<RebalanceAdvice> rebalances;  // every long-timescale controller decision
  std::vector<RoleFlip> role_flips;         // applied flips, in completion order
  std::vector<std::string> worker_names;    // index = router::WorkerIndex
  double bucket_s = 10;
  double end_time_s = 0;
  int64_t prefill_lookup_tokens = 0;  // Σ prompt tokens routed
  int64_t prefill_hit_tokens = 0;     // Σ cached tokens reused at prefill
  int64_t decode_hit_tokens = 0;
  uint64_t events = 0;
  std::string policy_library;  // which routing code ran
};

// Runs one simulation. The trace must be sorted by arrival (loaders guarantee it).
Result<SimResult> RunSimulation(const Topology& topo, const Trace& trace, const SimOptions& opts);

}  // namespace prfaas::sim
