// Building blocks shared by the policies: per-request cache view, eligibility, cache-affine
// prefill choice with load guards, decode choice, round-robin cursors and signal aggregation.
// Pure functions over a ClusterState; exposed for the policies and their tests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "router/policy/policy.h"
#include "router/state/cache_index.h"

namespace prfaas::router {

// Per-request cache view: effective / attention hit in tokens for every worker (0 when it holds
// nothing). Cached tokens are capped at prompt - 1: prefill must compute at least the last token
// to produce logits.
struct RouteContext {
  const RequestInfo* request = nullptr;
  const ClusterState* state = nullptr;
  std::vector<uint32_t> cached;     // effective hybrid hit, tokens, per worker
  std::vector<uint32_t> attention;  // attention prefix, tokens, per worker

  static RouteContext Build(const RequestInfo& request, const ClusterState& state);
  uint32_t uncached(WorkerIndex w) const { return request->prompt_tokens - cached[w]; }
};

// Best effective hit per cluster among prefill-capable workers (ignores load).
std::vector<ClusterCacheHit> CacheByCluster(const RouteContext& ctx);

// Prefill-capable workers of `cluster` (kNoCluster = every cluster) that pass the load guard:
// a worker whose backlog exceeds the least-loaded candidate's by more than guard_abs_tokens AND
// guard_rel times is left out.
std::vector<WorkerIndex> GuardedPrefillCandidates(const ClusterState& state, ClusterIndex cluster,
                                                  const PolicyConfig& config);

// Cache-affine choice with load guard: among the guarded candidates of `cluster`, the worker
// minimising (prefill backlog + uncached tokens on it) — a cache hit counts as work saved, never
// as a reason to queue behind a busy worker. Ties: longer hit, then lower index. kNoWorker if none.
WorkerIndex ChooseCacheAffine(const RouteContext& ctx, ClusterIndex cluster,
                              const PolicyConfig& config);

// True when `w` can admit a new sequence of this request's size (batch cap, state slots, KV).
bool HasDecodeCapacity(const ClusterState& state, const RequestInfo& request, WorkerIndex w);

// True when `w` may decode this request under the baselines' rule: a decode-capable worker of a
// PD cluster (the request's home cluster when it has one) with capacity for it.
bool IsBaselineDecodeCandidate(const ClusterState& state, const RequestInfo& request,
                               WorkerIndex w);

// Decode choice: decode-capable workers with capacity in PD clusters (only `cluster` unless it is
// kNoCluster); least batch load, then most free KV, then lower index. kNoWorker if none.
WorkerIndex ChooseDecode(const ClusterState& state, const RequestInfo& request,
                         ClusterIndex cluster);

// Least-loaded prefill worker (queue depth, then backlog tokens, then lower index) among the
// prefill-capable workers that pass `filter`: any cluster, PrfaaS clusters only, or PD clusters
// only. kNoWorker if none.
enum class KindFilter : uint8_t { kAny, kPrfaasOnly, kPdOnly };
WorkerIndex LeastLoadedPrefill(const ClusterState& state, KindFilter filter);

// Round-robin cursor over worker indices: returns the next index after the previous pick that
// satisfies `eligible`, wrapping around; kNoWorker if none. Deterministic for a given sequence.
class RoundRobinCursor {
 public:
  template <typename Pred>
  WorkerIndex Next(size_t n_workers, Pred eligible) {
    for (size_t k = 0; k < n_workers; ++k) {
      const size_t w = (next_ + k) % n_workers;
      if (eligible(static_cast<WorkerIndex>(w))) {
        next_ = w + 1;
        return static_cast<WorkerIndex>(w);
      }
    }
    return kNoWorker;
  }

 private:
  size_t next_ = 0;
};

// Aggregates link/queue signals over every PrfaaS -> PD link (worst link wins) and the prefill
// queues of both cluster kinds. A PrfaaS cluster with no configured link counts as reachable with
// unknown telemetry.
LinkSignals SignalsFrom(const ClusterState& state);

// Fills path / clusters / cached / uncached fields of `d` from the chosen workers.
void FillPlacement(const RouteContext& ctx, WorkerIndex prefill, WorkerIndex decode, Decision* d);

// "<why>. Prefill on W (cluster, cached c, computes u, queue q). Decode on D (batch r+w/max)."
std::string BasicExplanation(const RouteContext& ctx, const Decision& d, std::string_view why);

// Completes a baseline decision: decode choice, placement fields, reason and explanation, or a
// rejection when either worker is missing. Baselines have no threshold (kNoOffload).
Decision FinishBaseline(const RouteContext& ctx, WorkerIndex prefill, WorkerIndex decode,
                        Reason reason, std::string_view why);

// A rejected decision with reason and explanation.
Decision Reject(Reason reason, std::string explanation);

}  // namespace prfaas::router
