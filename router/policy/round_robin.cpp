// Round-robin baseline: prefill and decode each cycle over their eligible workers, ignoring
// caches, lengths and load (prefill over every cluster, decode over PD clusters).
#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class RoundRobinPolicy final : public Policy {
 public:
  std::string_view name() const override { return "round-robin"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    const size_t n = state.workers.size();
    const WorkerIndex decode =
        decode_.Next(n, [&](WorkerIndex w) { return IsBaselineDecodeCandidate(state, req, w); });
    const WorkerIndex prefill =
        prefill_.Next(n, [&](WorkerIndex w) { return state.workers[w].CanPrefill(); });
    return FinishBaseline(ctx, prefill, decode, Reason::kRoundRobin, "round-robin");
  }

 private:
  RoundRobinCursor prefill_, decode_;
};

}  // namespace

std::unique_ptr<Policy> MakeRoundRobinPolicy(const PolicyConfig&) {
  return std::make_unique<RoundRobinPolicy>();
}

}  // namespace prfaas::router
