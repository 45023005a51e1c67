// Dynamo-style KV-cost baseline: prefill cost = prefill_load_scale * max(active prefill blocks +
// prompt blocks - overlap blocks, 0) + queued requests; decode cost = KV blocks in use (or the
// batch occupancy when KV capacity is not reported). Lowest cost wins, ties to the lower index.
// Lengths and links are ignored, as in Dynamo's KV router.
#include <fmt/format.h>

#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class KvCostPolicy final : public Policy {
 public:
  explicit KvCostPolicy(const PolicyConfig& config) : config_(config) {}
  std::string_view name() const override { return "kv-cost"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    const double block = state.model.block_tokens > 0 ? state.model.block_tokens : 1;
    const double prompt_blocks = req.prompt_tokens / block;
    WorkerIndex prefill = kNoWorker;
    double prefill_cost = 0;
    for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
      const WorkerView& wv = state.workers[w];
      if (!wv.CanPrefill()) continue;
      const double active = static_cast<double>(wv.prefill_backlog_tokens) / block;
      const double overlap = ctx.cached[w] / block;
      const double cost =
          config_.kv_cost_prefill_load_scale * std::max(active + prompt_blocks - overlap, 0.0) +
          wv.queue_depth;
      if (prefill == kNoWorker || cost < prefill_cost) {
        prefill = w;
        prefill_cost = cost;
      }
    }

    const double block_bytes = state.model.kv_bytes_per_token * block;
    WorkerIndex decode = kNoWorker;
    double decode_cost = 0;
    for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
      const WorkerView& wv = state.workers[w];
      if (!wv.CanDecode() || state.clusters[wv.cluster].kind != ClusterKind::kPd) continue;
      if (req.home_cluster != kNoCluster && wv.cluster != req.home_cluster) continue;
      if (!HasDecodeCapacity(state, req, w)) continue;
      const double cost =
          wv.kv_capacity_bytes > 0 && block_bytes > 0
              ? static_cast<double>(wv.kv_capacity_bytes -
                                    std::min(wv.free_kv_bytes, wv.kv_capacity_bytes)) /
                    block_bytes
              : static_cast<double>(wv.running + wv.waiting);
      if (decode == kNoWorker || cost < decode_cost) {
        decode = w;
        decode_cost = cost;
      }
    }
    return FinishBaseline(
        ctx, prefill, decode, Reason::kKvCost,
        fmt::format("lowest KV cost (prefill {:.1f}, decode {:.1f})", prefill_cost, decode_cost));
  }

 private:
  PolicyConfig config_;
};

}  // namespace

std::unique_ptr<Policy> MakeKvCostPolicy(const PolicyConfig& config) {
  return std::make_unique<KvCostPolicy>(config);
}

}  // namespace prfaas::router
