// Naive heterogeneous baseline (paper §4.1 b): every prefill runs on the PrfaaS cluster and every
// decode on the PD cluster, with no length threshold and no load balancing (round-robin on both
// sides). When no PrfaaS worker is reachable it falls back to a local prefill so that the baseline
// stays comparable under failures.
#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

class NaiveHeteroPolicy final : public Policy {
 public:
  std::string_view name() const override { return "naive-hetero"; }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint) override {
    const RouteContext ctx = RouteContext::Build(req, state);
    const size_t n = state.workers.size();
    const WorkerIndex decode =
        decode_.Next(n, [&](WorkerIndex w) { return IsBaselineDecodeCandidate(state, req, w); });
    const ClusterIndex dc = decode == kNoWorker ? kNoCluster : state.workers[decode].cluster;
    const WorkerIndex remote = prefill_.Next(n, [&](WorkerIndex w) {
      const WorkerView& wv = state.workers[w];
      if (!wv.CanPrefill() || state.clusters[wv.cluster].kind != ClusterKind::kPrfaas) {
        return false;
      }
      const LinkView* link = dc == kNoCluster ? nullptr : state.FindLink(wv.cluster, dc);
      return link == nullptr || link->up;
    });
    if (remote != kNoWorker) {
      Decision d = FinishBaseline(ctx, remote, decode, Reason::kAllRemote,
                                  "naive heterogeneous: every prefill remote (round-robin)");
      d.threshold = 0;
      return d;
    }
    Decision d = FinishBaseline(ctx, LeastLoadedPrefill(state, KindFilter::kPdOnly), decode,
                                Reason::kRemoteUnavailable,
                                "naive heterogeneous: no PrfaaS worker reachable, local fallback");
    d.threshold = 0;
    return d;
  }

 private:
  RoundRobinCursor prefill_, decode_;
};

}  // namespace

std::unique_ptr<Policy> MakeNaiveHeteroPolicy(const PolicyConfig&) {
  return std::make_unique<NaiveHeteroPolicy>();
}

}  // namespace prfaas::router
