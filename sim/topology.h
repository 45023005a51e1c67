// Simulated deployment, read from a topology YAML file (format in docs/simulator.md):
// clusters of workers, the links between clusters, the model, SLOs and the routing policy.
//
//   model: {preset: paper-1t}            # or {config: path/to/config.json}
//   clusters:
//     - {name: prfaas, kind: prfaas, hardware: H200, workers: 4, gpus_per_worker: 8,
//        prefill_workers: 4, profile: h200.json}
//     - {name: pd, kind: pd, hardware: H20, workers: 8, prefill_workers: 3, decode_workers: 5}
//   links:
//     - {from: prfaas, to: pd, gbps: 100, rtt_ms: 5,
//        schedule: [{at_s: 600, gbps: 40}, {at_s: 900, gbps: 100}]}
//   slo: {ttft_s: 10, tpot_ms: 25}
//   policy: {name: prfaas, threshold: 19400}
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/cost_model.h"
#include "sim/model.h"

namespace prfaas::sim {

enum class ClusterKind { kPrfaas, kPd };

struct ClusterSpec {
  std::string name;
  ClusterKind kind = ClusterKind::kPd;
  std::string hardware = "H20";
  int workers = 1;
  int gpus_per_worker = 8;
  int prefill_workers = 0;  // role split; prefill + decode == workers
  int decode_workers = 0;
  std::string profile;  // optional prfaas-profile/1 JSON; else the analytic model
  double profile_scale = 1.0;
  // Prefill batching: a batch takes queued requests until this many new tokens (>= 1 request).
  int64_t max_prefill_batch_tokens = 16384;
  // Decode continuous batching: at most this many running sequences per worker, and KV+state
  // of running sequences within `decode_kv_gib` (0 = derive from HBM minus weights).
  int max_decode_batch = 64;
  double decode_kv_gib = 0;
  // Prefix cache capacity per worker in cache blocks (0 = no prefix cache).
  int64_t prefill_cache_blocks = 0;
  int64_t decode_cache_blocks = 0;
  // State checkpoints of the prefill prefix cache every this many tokens, a multiple of the trace
  // block (the live worker's --checkpoint-interval); 0 = one at the end of each stored prompt.
  int64_t checkpoint_tokens = 0;
  double intra_gbps = 800;  // per-worker intra-cluster (RDMA) bandwidth for PD hand-off
};

struct BandwidthStep {
  double at_s = 0;
  double gbps = 0;
};

struct LinkSpec {
  std::string from, to;
  double gbps = 100;
  double rtt_ms = 1;
  double per_flow_gbps = 0;             // 0 = a single transfer may use the whole link
  std::vector<BandwidthStep> schedule;  // capacity changes over time, sorted by at_s
};

struct SloSpec {
  double ttft_s = 10;
  double tpot_ms = 100;
};

struct PolicySpec {
  std::string name = "prfaas";
  double threshold = 16384;        // offload iff uncached prefill length > threshold
  double controller_period_s = 5;  // short-timescale controller tick (0 = off)
  bool adaptive = true;            // false: pin t (the controller does not move it)
  // When a request takes its decode slot: "route" (the live design: the decode stream is opened
  // before prefill, so the slot is held through prefill and transfer) or "handoff" (taken when
  // the KV arrives; the paper's model, where decode capacity only counts decoding).
  std::string reserve_decode_at = "route";
  // Free-form knobs passed through to the policy library.
  std::map<std::string, double> params;
  // Long-timescale controller, the planner's role rebalancer as the live router runs it
  // (router/service/rebalancer.h), on its own timer: every `rebalance_period_s` (0 = off) it
  // takes the uncached lengths routed since its last run (once there are `rebalance_min_samples`),
  // asks router::AdviseRoles for the best t and N_p/N_d, hands t to the threshold controller as its
  // base, and when the split gains at least `rebalance_min_gain` drains and flips PD workers
  // between prefill and decode. Needs one prfaas and one pd cluster.
  double rebalance_period_s = 0;
  double rebalance_min_gain = 0.05;
  int rebalance_min_samples = 32;
};

struct Topology {
  std::string name;
  ModelSpec model;
  std::vector<ClusterSpec> clusters;
  std::vector<LinkSpec> links;
  SloSpec slo;
  PolicySpec policy;

  int ClusterIndex(const std::string& name) const;
};

Result<Topology> LoadTopology(const std::string& path);
// `base_dir` resolves relative paths (profiles, config.json) in the YAML.
Result<Topology> ParseTopology(const std::string& yaml_text, const std::string& name,
                               const std::string& base_dir);

// Builds the cost model of one cluster's workers (profile if given, else analytic).
Result<std::unique_ptr<CostModel>> MakeCostModel(const Topology& topo, const ClusterSpec& c);

}  // namespace prfaas::sim
