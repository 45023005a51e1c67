#include "router/policy/placement.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

namespace prfaas::router {

RouteContext RouteContext::Build(const RequestInfo& request, const ClusterState& state) {
  RouteContext ctx;
  ctx.request = &request;
  ctx.state = &state;
  ctx.cached.assign(state.workers.size(), 0);
  ctx.attention.assign(state.workers.size(), 0);
  if (state.cache == nullptr || request.block_hashes.empty() || request.prompt_tokens == 0) {
    return ctx;
  }
  // Hashes beyond the prompt (a caller passing a longer chain) must not count as cached.
  const uint64_t block = state.model.block_tokens;
  const uint32_t cap = request.prompt_tokens - 1;
  std::vector<WorkerHit> hits;
  state.cache->Match(request.block_hashes, &hits);
  for (const WorkerHit& h : hits) {
    if (h.worker >= state.workers.size()) continue;  // index ahead of the snapshot
    ctx.attention[h.worker] =
        static_cast<uint32_t>(std::min<uint64_t>(h.attention_blocks * block, cap));
    ctx.cached[h.worker] =
        static_cast<uint32_t>(std::min<uint64_t>(h.effective_blocks * block, cap));
  }
  return ctx;
}

std::vector<ClusterCacheHit> CacheByCluster(const RouteContext& ctx) {
  const ClusterState& s = *ctx.state;
  std::vector<ClusterCacheHit> out(s.clusters.size());
  for (ClusterIndex c = 0; c < out.size(); ++c) out[c].cluster = c;
  for (WorkerIndex w = 0; w < s.workers.size(); ++w) {
    const WorkerView& wv = s.workers[w];
    if (!wv.CanPrefill() || wv.cluster >= out.size()) continue;
    ClusterCacheHit& h = out[wv.cluster];
    if (h.best_worker == kNoWorker || ctx.cached[w] > h.effective_tokens) {
      h.best_worker = w;
      h.effective_tokens = ctx.cached[w];
      h.attention_tokens = ctx.attention[w];
    }
  }
  return out;
}

std::vector<WorkerIndex> GuardedPrefillCandidates(const ClusterState& state, ClusterIndex cluster,
                                                  const PolicyConfig& config) {
  std::vector<WorkerIndex> out;
  uint64_t min_backlog = std::numeric_limits<uint64_t>::max();
  for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
    const WorkerView& wv = state.workers[w];
    if (!wv.CanPrefill() || (cluster != kNoCluster && wv.cluster != cluster)) continue;
    out.push_back(w);
    min_backlog = std::min(min_backlog, wv.prefill_backlog_tokens);
  }
  std::erase_if(out, [&](WorkerIndex w) {
    const double b = static_cast<double>(state.workers[w].prefill_backlog_tokens);
    const double m = static_cast<double>(min_backlog);
    return b > m + static_cast<double>(config.guard_abs_tokens) && b > m * config.guard_rel;
  });
  return out;
}

WorkerIndex ChooseCacheAffine(const RouteContext& ctx, ClusterIndex cluster,
                              const PolicyConfig& config) {
  WorkerIndex best = kNoWorker;
  uint64_t best_cost = 0;
  for (WorkerIndex w : GuardedPrefillCandidates(*ctx.state, cluster, config)) {
    const uint64_t cost = ctx.state->workers[w].prefill_backlog_tokens + ctx.uncached(w);
    if (best == kNoWorker || cost < best_cost ||
        (cost == best_cost && ctx.cached[w] > ctx.cached[best])) {
      best = w;
      best_cost = cost;
    }
  }
  return best;
}

bool IsBaselineDecodeCandidate(const ClusterState& state, const RequestInfo& request,
                               WorkerIndex w) {
  const WorkerView& wv = state.workers[w];
  return wv.CanDecode() && state.clusters[wv.cluster].kind == ClusterKind::kPd &&
         (request.home_cluster == kNoCluster || wv.cluster == request.home_cluster) &&
         HasDecodeCapacity(state, request, w);
}

bool HasDecodeCapacity(const ClusterState& state, const RequestInfo& request, WorkerIndex w) {
  const WorkerView& wv = state.workers[w];
  if (wv.max_batch > 0 && wv.running + wv.waiting >= wv.max_batch) return false;
  if (wv.state_slots_known && wv.free_state_slots == 0) return false;
  if (wv.kv_capacity_bytes > 0 && state.model.kv_bytes_per_token > 0) {
    const double need =
        state.model.kv_bytes_per_token * (static_cast<double>(request.prompt_tokens) +
                                          static_cast<double>(request.expected_output_tokens));
    if (static_cast<double>(wv.free_kv_bytes) < need) return false;
  }
  return true;
}

WorkerIndex ChooseDecode(const ClusterState& state, const RequestInfo& request,
                         ClusterIndex cluster) {
  WorkerIndex best = kNoWorker;
  for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
    const WorkerView& wv = state.workers[w];
    if (!wv.CanDecode() || wv.cluster >= state.clusters.size()) continue;
    if (state.clusters[wv.cluster].kind != ClusterKind::kPd) continue;
    if (cluster != kNoCluster && wv.cluster != cluster) continue;
    if (!HasDecodeCapacity(state, request, w)) continue;
    if (best == kNoWorker) {
      best = w;
      continue;
    }
    const WorkerView& bv = state.workers[best];
    const double load = wv.DecodeLoad(), best_load = bv.DecodeLoad();
    if (load < best_load || (load == best_load && wv.free_kv_bytes > bv.free_kv_bytes)) best = w;
  }
  return best;
}

WorkerIndex LeastLoadedPrefill(const ClusterState& state, KindFilter filter) {
  WorkerIndex best = kNoWorker;
  for (WorkerIndex w = 0; w < state.workers.size(); ++w) {
    const WorkerView& wv = state.workers[w];
    if (!wv.CanPrefill() || wv.cluster >= state.clusters.size()) continue;
    const ClusterKind kind = state.clusters[wv.cluster].kind;
    if (filter == KindFilter::kPrfaasOnly && kind != ClusterKind::kPrfaas) continue;
    if (filter == KindFilter::kPdOnly && kind != ClusterKind::kPd) continue;
    if (best == kNoWorker) {
      best = w;
      continue;
    }
    const WorkerView& bv = state.workers[best];
    if (wv.queue_depth < bv.queue_depth ||
        (wv.queue_depth == bv.queue_depth &&
         wv.prefill_backlog_tokens < bv.prefill_backlog_tokens)) {
      best = w;
    }
  }
  return best;
}

LinkSignals SignalsFrom(const ClusterState& state) {
  LinkSignals s;
  bool any_prfaas = false, any_path_up = false;
  for (ClusterIndex c = 0; c < state.clusters.size(); ++c) {
    if (state.clusters[c].kind != ClusterKind::kPrfaas) continue;
    for (ClusterIndex d = 0; d < state.clusters.size(); ++d) {
      if (state.clusters[d].kind != ClusterKind::kPd) continue;
      any_prfaas = true;
      const LinkView* l = state.FindLink(c, d);
      if (l == nullptr) {
        any_path_up = true;  // not configured: reachable, no telemetry
        continue;
      }
      if (!l->up) continue;
      any_path_up = true;
      const double util = l->utilisation > 0
                              ? l->utilisation
                              : (l->nominal_bps > 0 ? l->goodput_bps / l->nominal_bps : 0.0);
      s.utilisation = std::max(s.utilisation, util);
      s.backlog_seconds = std::max(s.backlog_seconds, l->BacklogSeconds());
      s.retransmit_rate = std::max(s.retransmit_rate, l->retransmit_rate);
      if (l->base_rtt_s > 0 && l->rtt_s > 0) {
        s.rtt_ratio = std::max(s.rtt_ratio, l->rtt_s / l->base_rtt_s);
      }
    }
  }
  s.link_up = !any_prfaas || any_path_up;

  double prfaas_q = 0, pd_q = 0;
  int prfaas_n = 0, pd_n = 0;
  for (const WorkerView& wv : state.workers) {
    if (!wv.CanPrefill() || wv.cluster >= state.clusters.size()) continue;
    if (state.clusters[wv.cluster].kind == ClusterKind::kPrfaas) {
      prfaas_q += wv.queue_depth;
      ++prfaas_n;
    } else {
      pd_q += wv.queue_depth;
      ++pd_n;
    }
  }
  s.prfaas_queue_per_worker = prfaas_n > 0 ? prfaas_q / prfaas_n : 0.0;
  s.pd_queue_per_worker = pd_n > 0 ? pd_q / pd_n : 0.0;
  return s;
}

void FillPlacement(const RouteContext& ctx, WorkerIndex prefill, WorkerIndex decode, Decision* d) {
  const ClusterState& s = *ctx.state;
  d->prompt_tokens = ctx.request->prompt_tokens;
  d->prefill_worker = prefill;
  d->decode_worker = decode;
  d->prefill_cluster = s.workers[prefill].cluster;
  d->decode_cluster = s.workers[decode].cluster;
  d->cached_tokens = ctx.cached[prefill];
  d->uncached_tokens = ctx.uncached(prefill);
  if (prefill == decode) {
    d->path = PrefillPath::kColocated;
  } else if (s.clusters[d->prefill_cluster].kind == ClusterKind::kPrfaas) {
    d->path = PrefillPath::kRemotePrfaas;
  } else {
    d->path = PrefillPath::kLocalPd;
  }
  if (d->path == PrefillPath::kRemotePrfaas) {
    if (const LinkView* l = s.FindLink(d->prefill_cluster, d->decode_cluster)) {
      d->link_up = l->up;
      d->link_utilisation = l->utilisation;
    }
  }
}

Decision Reject(Reason reason, std::string explanation) {
  Decision d;
  d.path = PrefillPath::kNone;
  d.reason = reason;
  d.explanation = std::move(explanation);
  return d;
}

}  // namespace prfaas::router

namespace prfaas::router {

std::string BasicExplanation(const RouteContext& ctx, const Decision& d, std::string_view why) {
  const ClusterState& s = *ctx.state;
  const WorkerView& p = s.workers[d.prefill_worker];
  const WorkerView& dv = s.workers[d.decode_worker];
  return fmt::format(
      "prompt {} tokens; {}. Prefill on {} ({}, cached {}, computes {}, backlog {} tokens, queue "
      "{}). Decode on {} (batch {}+{}/{}).",
      d.prompt_tokens, why, p.id, s.clusters[p.cluster].name, d.cached_tokens, d.uncached_tokens,
      p.prefill_backlog_tokens, p.queue_depth, dv.id, dv.running, dv.waiting,
      dv.max_batch == 0 ? std::string("?") : fmt::format("{}", dv.max_batch));
}

Decision FinishBaseline(const RouteContext& ctx, WorkerIndex prefill, WorkerIndex decode,
                        Reason reason, std::string_view why) {
  if (decode == kNoWorker) {
    return Reject(Reason::kNoDecodeWorker,
                  "no healthy decode worker with free batch/KV/state capacity in a PD cluster");
  }
  if (prefill == kNoWorker) return Reject(Reason::kNoPrefillWorker, "no healthy prefill worker");
  Decision d;
  FillPlacement(ctx, prefill, decode, &d);
  d.reason = reason;
  d.threshold = kNoOffload;
  d.decision_uncached_tokens = d.uncached_tokens;
  d.cache_by_cluster = CacheByCluster(ctx);
  d.explanation = BasicExplanation(ctx, d, why);
  return d;
}

}  // namespace prfaas::router
