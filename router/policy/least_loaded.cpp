// Least-loaded baseline: prefill on the worker with the shortest queue (any cluster), decode on
// the least-occupied decode worker; caches and lengths are ignored.
#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class LeastLoadedPolicy final : public Policy {
 public:
  std::string_view name() const override { return "least-loaded"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    return FinishBaseline(ctx, LeastLoadedPrefill(state, KindFilter::kAny),
                          ChooseDecode(state, req, req.home_cluster), Reason::kLeastLoaded,
                          "least-loaded prefill (queue depth, then backlog)");
  }
};

}  // namespace

std::unique_ptr<Policy> MakeLeastLoadedPolicy(const PolicyConfig&) {
  return std::make_unique<LeastLoadedPolicy>();
}

}  // namespace prfaas::router
