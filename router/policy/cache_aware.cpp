// SGLang-style cache-aware baseline (sgl-router `cache_aware`): the system is imbalanced iff
// max_load - min_load > balance_abs AND max_load > balance_rel * min_load (load = prefill queue
// depth). Imbalanced: least-loaded worker. Balanced: the worker with the longest prefix match if
// its match ratio exceeds cache_threshold, else the least-loaded worker. Prefill candidates span
// every cluster; the match uses the effective hybrid hit so the comparison with prfaas is fair.
#include <algorithm>

#include <fmt/format.h>

#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class CacheAwarePolicy final : public Policy {
 public:
  explicit CacheAwarePolicy(const PolicyConfig& config) : config_(config) {}
  std::string_view name() const override { return "cache-aware"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    const WorkerIndex decode = ChooseDecode(state, req, req.home_cluster);
    double min_load = 0, max_load = 0;
    bool any = false;
    WorkerIndex best_match = kNoWorker;
    for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
      const WorkerView& wv = state.workers[w];
      if (!wv.CanPrefill()) continue;
      const double load = wv.queue_depth;
      min_load = any ? std::min(min_load, load) : load;
      max_load = any ? std::max(max_load, load) : load;
      any = true;
      if (best_match == kNoWorker || ctx.cached[w] > ctx.cached[best_match] ||
          (ctx.cached[w] == ctx.cached[best_match] &&
           wv.queue_depth < state.workers[best_match].queue_depth)) {
        best_match = w;
      }
    }
    const WorkerIndex least = LeastLoadedPrefill(state, KindFilter::kAny);
    const bool imbalanced = max_load - min_load > config_.sglang_balance_abs &&
                            max_load > config_.sglang_balance_rel * min_load;
    if (imbalanced) {
      return FinishBaseline(
          ctx, least, decode, Reason::kLoadImbalance,
          fmt::format("load imbalanced (max {} vs min {}): least-loaded", max_load, min_load));
    }
    const double ratio = best_match == kNoWorker || req.prompt_tokens == 0
                             ? 0.0
                             : static_cast<double>(ctx.cached[best_match]) / req.prompt_tokens;
    if (ratio > config_.sglang_cache_threshold) {
      return FinishBaseline(ctx, best_match, decode, Reason::kCacheAffinity,
                            fmt::format("match ratio {:.2f} > {:.2f}: longest prefix", ratio,
                                        config_.sglang_cache_threshold));
    }
    return FinishBaseline(ctx, least, decode, Reason::kLeastLoaded,
                          fmt::format("match ratio {:.2f} <= {:.2f}: least-loaded", ratio,
                                      config_.sglang_cache_threshold));
  }

 private:
  PolicyConfig config_;
};

}  // namespace

std::unique_ptr<Policy> MakeCacheAwarePolicy(const PolicyConfig& config) {
  return std::make_unique<CacheAwarePolicy>(config);
}

}  // namespace prfaas::router
