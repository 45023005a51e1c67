// Routing policies: per request, where prefill runs and which decode worker takes over.
//
// A Policy is pure and deterministic: Route() reads the request, a ClusterState snapshot and the
// injected time, and returns a Decision; the only state a policy keeps is its own (round-robin
// cursors, the threshold controller), so the same sequence of calls yields the same decisions in
// the live router and in the simulator. Policies never perform I/O and never read a clock.
//
// The caller owns bookkeeping between telemetry updates: after routing, it should charge the
// decision to its snapshot (queue depth, backlog, running) so that a burst of requests between
// two heartbeats does not pile onto one worker.
//
//   PRFAAS_ASSIGN_OR_RETURN(auto policy, MakePolicy("prfaas", PolicyConfig{}));
//   Decision d = policy->Route(request, state, now);
//   if (!d.ok()) return Unavailable(d.explanation);
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "router/policy/threshold_controller.h"
#include "router/state/cluster_state.h"

namespace prfaas::router {

struct RequestInfo {
  uint64_t request_id = 0;
  uint32_t prompt_tokens = 0;
  uint32_t expected_output_tokens = 0;     // max_tokens or an estimate; 0 = unknown
  std::span<const uint64_t> block_hashes;  // chained hashes of the prompt's full blocks
  ClusterIndex home_cluster = kNoCluster;  // restrict decode to this PD cluster, if set
};

enum class PrefillPath : uint8_t {
  kNone,          // not routed: no eligible worker (see reason)
  kLocalPd,       // prefill on a PD-cluster prefill worker, KV over the intra-cluster transport
  kRemotePrfaas,  // prefill on a PrfaaS worker, KV over the inter-cluster link
  kColocated,     // prefill and decode on the same worker (role both)
};
std::string_view PrefillPathName(PrefillPath path);  // "none" | "local-pd" | "prfaas" | "colocated"

// Machine-readable reason for a decision (stable names: metrics labels, prfaasctl -o json).
enum class Reason : uint8_t {
  kShortUncached,      // uncached length <= t: stay local
  kLongUncached,       // uncached length > t: offload
  kRemoteUnavailable,  // wanted PrfaaS, but no PrfaaS worker / link: local fallback
  kLocalUnavailable,   // wanted local, but no PD prefill worker: PrfaaS fallback
  kLinkDown,           // offload disabled because the link is down
  kRoundRobin,
  kLeastLoaded,
  kCacheAffinity,  // cache-aware baseline picked the longest match
  kLoadImbalance,  // cache-aware baseline fell back to least loaded
  kKvCost,
  kAllRemote,    // naive heterogeneous: every prefill remote
  kHomogeneous,  // homogeneous PD: every prefill local
  kNoDecodeWorker,
  kNoPrefillWorker,
};
std::string_view ReasonName(Reason reason);  // e.g. "long_uncached"

// Best cached prefix per cluster, as the policy saw it.
struct ClusterCacheHit {
  ClusterIndex cluster = kNoCluster;
  WorkerIndex best_worker = kNoWorker;  // eligible prefill worker with the longest effective hit
  uint32_t attention_tokens = 0;        // its attention prefix
  uint32_t effective_tokens = 0;        // its usable hybrid prefix (what prefill can skip)
};

struct Decision {
  PrefillPath path = PrefillPath::kNone;
  WorkerIndex prefill_worker = kNoWorker;
  WorkerIndex decode_worker = kNoWorker;
  ClusterIndex prefill_cluster = kNoCluster;
  ClusterIndex decode_cluster = kNoCluster;

  uint32_t threshold = kNoOffload;  // t in force (kNoOffload for policies without one)
  PlacementMode placement = PlacementMode::kScarce;
  uint32_t prompt_tokens = 0;
  uint32_t cached_tokens = 0;             // effective hit on the chosen prefill worker
  uint32_t uncached_tokens = 0;           // prompt - cached: what prefill computes
  uint32_t decision_uncached_tokens = 0;  // the uncached length the threshold was compared with
  std::vector<ClusterCacheHit> cache_by_cluster;

  // Abundant-bandwidth placement: copy the prefix held by `cache_source_worker` (another cluster)
  // to the prefill worker before prefill; the executor may skip it (prefill then recomputes).
  WorkerIndex cache_source_worker = kNoWorker;
  uint32_t cache_transfer_tokens = 0;

  // Link state that informed the decision (PrfaaS -> decode cluster), if any.
  double link_utilisation = 0;
  bool link_up = true;

  Reason reason = Reason::kNoPrefillWorker;
  std::string explanation;  // one human-readable paragraph for prfaasctl explain

  bool ok() const { return path != PrefillPath::kNone; }
};

// Renders a decision with worker and cluster names, e.g. for logs and `prfaasctl explain`.
std::string DescribeDecision(const Decision& d, const ClusterState& state);

// The same as a JSON object (one line) for `prfaasctl explain -o json` and decision logs: path,
// reason, workers and clusters by name, threshold ("inf" as null), placement, token counts,
// per-cluster cache hits, cache transfer, link state and the explanation.
std::string DecisionJson(const Decision& d, const ClusterState& state);

// Knobs shared by the policies. Defaults follow DESIGN §6 and docs/routing.md.
struct PolicyConfig {
  ThresholdControllerConfig threshold;  // PrfaaS policy only
  // Load guard (cache-affine choice): a worker is "far above the others" when its prefill backlog
  // exceeds the least-loaded eligible worker's by more than guard_abs_tokens AND by more than
  // guard_rel times. Such a worker is skipped even when it holds the longest prefix.
  uint64_t guard_abs_tokens = 16384;
  double guard_rel = 2.0;
  // Abundant mode: a cross-cluster cache transfer is proposed only if it saves this many tokens.
  uint32_t min_cache_transfer_tokens = 4096;
  // SGLang-style cache-aware baseline (its defaults).
  double sglang_balance_abs = 64;  // requests
  double sglang_balance_rel = 1.5;
  double sglang_cache_threshold = 0.3;  // min match ratio to follow the cache
  // Dynamo-style KV-cost baseline: cost = prefill_load_scale * adjusted prefill blocks + decode.
  double kv_cost_prefill_load_scale = 1.0;
};

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;

  virtual Decision Route(const RequestInfo& request, const ClusterState& state, TimePoint now) = 0;

  // Periodic hook (monitoring tick) for policies with a control loop. Route() also ticks lazily,
  // so calling this is optional; it keeps t fresh while no requests arrive.
  virtual void Tick(const ClusterState& state, TimePoint now) { (void)state, (void)now; }

  // The threshold controller, for policies that have one (prfaas); nullptr otherwise.
  virtual ThresholdController* threshold_controller() { return nullptr; }
};

// Names: "prfaas", "round-robin", "least-loaded", "cache-aware", "kv-cost", "naive-hetero",
// "homogeneous-pd".
std::vector<std::string_view> PolicyNames();
Result<std::unique_ptr<Policy>> MakePolicy(std::string_view name, const PolicyConfig& config = {});

}  // namespace prfaas::router
