// PrfaaS selective offload (DESIGN §6, paper §3.3): offload a request to the PrfaaS cluster iff
// its uncached prefill length exceeds the threshold t kept by the ThresholdController.
#include <fmt/format.h>

#include "router/policy/placement.h"
#include "router/policy/policies.h"

namespace prfaas::router {
namespace {

std::string Name(const ClusterState& s, WorkerIndex w) {
  return w == kNoWorker ? std::string("-") : s.workers[w].id;
}

class PrfaasPolicy final : public Policy {
 public:
  explicit PrfaasPolicy(const PolicyConfig& config)
      : config_(config), controller_(config.threshold) {}

  std::string_view name() const override { return "prfaas"; }
  ThresholdController* threshold_controller() override { return &controller_; }

  void Tick(const ClusterState& state, TimePoint now) override {
    if (controller_.due(now)) controller_.Update(SignalsFrom(state), now);
  }

  Decision Route(const RequestInfo& req, const ClusterState& state, TimePoint now) override {
    Tick(state, now);
    const RouteContext ctx = RouteContext::Build(req, state);

    const WorkerIndex decode = ChooseDecode(state, req, req.home_cluster);
    if (decode == kNoWorker) {
      return Reject(Reason::kNoDecodeWorker,
                    "no healthy decode worker with free batch/KV/state capacity in a PD cluster");
    }
    const ClusterIndex dc = state.workers[decode].cluster;
    const uint32_t t = controller_.threshold();
    const PlacementMode mode = controller_.placement();

    // Candidate prefill workers: cache-affine (load-guarded) in the decode worker's PD cluster,
    // and the cheapest such worker over the PrfaaS clusters whose link to dc is up.
    const WorkerIndex local = ChooseCacheAffine(ctx, dc, config_);
    WorkerIndex remote = kNoWorker;
    uint64_t remote_cost = 0;
    bool saw_down_link = false;
    for (ClusterIndex c = 0; c < state.clusters.size(); ++c) {
      if (state.clusters[c].kind != ClusterKind::kPrfaas) continue;
      const LinkView* link = state.FindLink(c, dc);
      if (link != nullptr && !link->up) {
        saw_down_link = true;
        continue;
      }
      const WorkerIndex w = ChooseCacheAffine(ctx, c, config_);
      if (w == kNoWorker) continue;
      const uint64_t cost = state.workers[w].prefill_backlog_tokens + ctx.uncached(w);
      if (remote == kNoWorker || cost < remote_cost) {
        remote = w;
        remote_cost = cost;
      }
    }

    // The uncached length compared with t. Scarce bandwidth: each cluster's cache on its own
    // (the local one decides). Abundant: the global best prefix, wherever it lives.
    const uint32_t prompt = req.prompt_tokens;
    uint32_t l = local != kNoWorker ? ctx.uncached(local) : prompt;
    WorkerIndex holder = kNoWorker;
    if (mode == PlacementMode::kAbundant) {
      for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
        if (!state.workers[w].healthy || ctx.cached[w] == 0) continue;
        if (holder == kNoWorker || ctx.cached[w] > ctx.cached[holder]) holder = w;
      }
      if (holder != kNoWorker) l = std::min(l, prompt - ctx.cached[holder]);
    }
    const bool want_remote = t != kNoOffload && l > t;

    WorkerIndex prefill = kNoWorker;
    Reason reason;
    std::string why;
    if (want_remote) {
      why = fmt::format("uncached {} > t={}: offload", l, t);
      if (remote != kNoWorker) {
        prefill = remote;
        reason = Reason::kLongUncached;
      } else {
        prefill = local;
        reason = saw_down_link ? Reason::kLinkDown : Reason::kRemoteUnavailable;
        why += saw_down_link ? ", but the link to the PrfaaS cluster is down: local fallback"
                             : ", but no PrfaaS prefill worker is available: local fallback";
      }
    } else {
      if (t == kNoOffload) {
        why = controller_.manual() ? "offload disabled by operator"
                                   : "offload disabled (link down): local";
        reason = controller_.manual() ? Reason::kShortUncached : Reason::kLinkDown;
      } else {
        why = fmt::format("uncached {} <= t={}: local", l, t);
        reason = Reason::kShortUncached;
      }
      prefill = local;
      if (local == kNoWorker && remote != kNoWorker) {
        prefill = remote;
        reason = Reason::kLocalUnavailable;
        why += ", but no PD prefill worker is available: PrfaaS fallback";
      }
    }
    if (prefill == kNoWorker) {
      return Reject(Reason::kNoPrefillWorker,
                    fmt::format("{}; no healthy prefill worker in {} or any reachable PrfaaS "
                                "cluster",
                                why, state.clusters[dc].name));
    }

    Decision d;
    FillPlacement(ctx, prefill, decode, &d);
    d.reason = reason;
    d.threshold = t;
    d.placement = mode;
    d.decision_uncached_tokens = l;
    d.cache_by_cluster = CacheByCluster(ctx);

    // Abundant bandwidth: pull a longer prefix from another cluster when it saves enough work.
    if (holder != kNoWorker && state.workers[holder].cluster != d.prefill_cluster &&
        ctx.cached[holder] >= ctx.cached[prefill] + config_.min_cache_transfer_tokens) {
      const LinkView* link = state.FindLink(state.workers[holder].cluster, d.prefill_cluster);
      if (link == nullptr || link->up) {
        d.cache_source_worker = holder;
        d.cache_transfer_tokens = ctx.cached[holder];
        d.uncached_tokens = prompt - ctx.cached[holder];
      }
    }

    d.explanation = Explain(ctx, d, why);
    return d;
  }

 private:
  std::string Explain(const RouteContext& ctx, const Decision& d, const std::string& why) const {
    const ClusterState& s = *ctx.state;
    std::string cache;
    for (const ClusterCacheHit& h : d.cache_by_cluster) {
      if (!cache.empty()) cache += ", ";
      cache += fmt::format("{} {}", s.clusters[h.cluster].name, h.effective_tokens);
      if (h.attention_tokens != h.effective_tokens) {
        cache += fmt::format(" (attention {}, state checkpoint limits reuse)", h.attention_tokens);
      }
    }
    const WorkerView& p = s.workers[d.prefill_worker];
    const WorkerView& dv = s.workers[d.decode_worker];
    std::string out = fmt::format(
        "prompt {} tokens; cached per cluster: {}; {} bandwidth mode; {}. Prefill on {} ({}, "
        "cached {}, computes {}, backlog {} tokens, queue {}). Decode on {} (batch {}+{}/{}, "
        "free KV {} MiB).",
        d.prompt_tokens, cache.empty() ? "none" : cache, PlacementModeName(d.placement), why, p.id,
        s.clusters[p.cluster].name, d.cached_tokens, d.uncached_tokens, p.prefill_backlog_tokens,
        p.queue_depth, dv.id, dv.running, dv.waiting,
        dv.max_batch == 0 ? std::string("?") : fmt::format("{}", dv.max_batch),
        dv.free_kv_bytes >> 20);
    if (d.cache_source_worker != kNoWorker) {
      out += fmt::format(" Copy the {}-token prefix from {} first.", d.cache_transfer_tokens,
                         Name(s, d.cache_source_worker));
    }
    if (d.path == PrefillPath::kRemotePrfaas) {
      out += fmt::format(" Link {}->{}: utilisation {:.2f}.", s.clusters[d.prefill_cluster].name,
                         s.clusters[d.decode_cluster].name, d.link_utilisation);
    }
    out += fmt::format(" Threshold controller: {}.", controller_.last_reason());
    return out;
  }

  PolicyConfig config_;
  ThresholdController controller_;
};

}  // namespace

std::unique_ptr<Policy> MakePrfaasPolicy(const PolicyConfig& config) {
  return std::make_unique<PrfaasPolicy>(config);
}

}  // namespace prfaas::router
