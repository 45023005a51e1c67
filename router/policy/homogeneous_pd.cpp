// Homogeneous PD baseline (paper §4.1 a): the PrfaaS clusters do not exist for this policy; every
// prefill runs in the decode worker's PD cluster, placed like prfaas places local work
// (cache-affine with load guards), so the difference to "prfaas" is exactly the offload.
#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class HomogeneousPdPolicy final : public Policy {
 public:
  explicit HomogeneousPdPolicy(const PolicyConfig& config) : config_(config) {}
  std::string_view name() const override { return "homogeneous-pd"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    const WorkerIndex decode = ChooseDecode(state, req, req.home_cluster);
    const WorkerIndex prefill =
        decode == kNoWorker ? kNoWorker
                            : ChooseCacheAffine(ctx, state.workers[decode].cluster, config_);
    return FinishBaseline(ctx, prefill, decode, Reason::kHomogeneous,
                          "homogeneous PD: prefill in the local PD cluster (cache-affine, "
                          "load-guarded)");
  }

 private:
  PolicyConfig config_;
};

}  // namespace

std::unique_ptr<Policy> MakeHomogeneousPdPolicy(const PolicyConfig& config) {
  return std::make_unique<HomogeneousPdPolicy>(config);
}

}  // namespace prfaas::router
