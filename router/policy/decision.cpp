#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "router/policy/policy.h"

namespace prfaas::router {

std::string_view PrefillPathName(PrefillPath path) {
  switch (path) {
    case PrefillPath::kNone: return "none";
    case PrefillPath::kLocalPd: return "local-pd";
    case PrefillPath::kRemotePrfaas: return "prfaas";
    case PrefillPath::kColocated: return "colocated";
  }
  return "?";
}

std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kShortUncached: return "short_uncached";
    case Reason::kLongUncached: return "long_uncached";
    case Reason::kRemoteUnavailable: return "remote_unavailable";
    case Reason::kLocalUnavailable: return "local_unavailable";
    case Reason::kLinkDown: return "link_down";
    case Reason::kRoundRobin: return "round_robin";
    case Reason::kLeastLoaded: return "least_loaded";
    case Reason::kCacheAffinity: return "cache_affinity";
    case Reason::kLoadImbalance: return "load_imbalance";
    case Reason::kKvCost: return "kv_cost";
    case Reason::kAllRemote: return "all_remote";
    case Reason::kHomogeneous: return "homogeneous";
    case Reason::kNoDecodeWorker: return "no_decode_worker";
    case Reason::kNoPrefillWorker: return "no_prefill_worker";
  }
  return "?";
}

std::string_view PlacementModeName(PlacementMode mode) {
  switch (mode) {
    case PlacementMode::kAuto: return "auto";
    case PlacementMode::kScarce: return "scarce";
    case PlacementMode::kAbundant: return "abundant";
  }
  return "?";
}

namespace {
std::string WorkerName(const ClusterState& s, WorkerIndex w) {
  if (w == kNoWorker || w >= s.workers.size()) return "-";
  return s.workers[w].id;
}
std::string ClusterName(const ClusterState& s, ClusterIndex c) {
  if (c == kNoCluster || c >= s.clusters.size()) return "-";
  return s.clusters[c].name;
}
std::string ThresholdText(uint32_t t) {
  return t == kNoOffload ? "inf" : fmt::format("{}", t);
}
}  // namespace

std::string DescribeDecision(const Decision& d, const ClusterState& state) {
  std::string out =
      fmt::format("path={} reason={} prefill={}@{} decode={}@{} t={} mode={}",
                  PrefillPathName(d.path), ReasonName(d.reason),
                  WorkerName(state, d.prefill_worker), ClusterName(state, d.prefill_cluster),
                  WorkerName(state, d.decode_worker), ClusterName(state, d.decode_cluster),
                  ThresholdText(d.threshold), PlacementModeName(d.placement));
  out += fmt::format(" prompt={} cached={} uncached={}", d.prompt_tokens, d.cached_tokens,
                     d.uncached_tokens);
  for (const ClusterCacheHit& h : d.cache_by_cluster) {
    out += fmt::format(" cache[{}]={}/{}", ClusterName(state, h.cluster), h.effective_tokens,
                       h.attention_tokens);
  }
  if (d.cache_source_worker != kNoWorker) {
    out += fmt::format(" cache_transfer={}:{}", WorkerName(state, d.cache_source_worker),
                       d.cache_transfer_tokens);
  }
  out += " | ";
  out += d.explanation;
  return out;
}

std::string DecisionJson(const Decision& d, const ClusterState& state) {
  auto name_or_null = [](const std::string& n) {
    return n == "-" ? nlohmann::json(nullptr) : nlohmann::json(n);
  };
  nlohmann::json cache = nlohmann::json::array();
  for (const ClusterCacheHit& h : d.cache_by_cluster) {
    cache.push_back({{"cluster", name_or_null(ClusterName(state, h.cluster))},
                     {"best_worker", name_or_null(WorkerName(state, h.best_worker))},
                     {"attention_tokens", h.attention_tokens},
                     {"effective_tokens", h.effective_tokens}});
  }
  nlohmann::json j{
      {"path", PrefillPathName(d.path)},
      {"reason", ReasonName(d.reason)},
      {"prefill_worker", name_or_null(WorkerName(state, d.prefill_worker))},
      {"prefill_cluster", name_or_null(ClusterName(state, d.prefill_cluster))},
      {"decode_worker", name_or_null(WorkerName(state, d.decode_worker))},
      {"decode_cluster", name_or_null(ClusterName(state, d.decode_cluster))},
      {"threshold_tokens",
       d.threshold == kNoOffload ? nlohmann::json(nullptr) : nlohmann::json(d.threshold)},
      {"placement", PlacementModeName(d.placement)},
      {"prompt_tokens", d.prompt_tokens},
      {"cached_tokens", d.cached_tokens},
      {"uncached_tokens", d.uncached_tokens},
      {"decision_uncached_tokens", d.decision_uncached_tokens},
      {"cache_by_cluster", cache},
      {"cache_source_worker", name_or_null(WorkerName(state, d.cache_source_worker))},
      {"cache_transfer_tokens", d.cache_transfer_tokens},
      {"link_up", d.link_up},
      {"link_utilisation", d.link_utilisation},
      {"explanation", d.explanation},
  };
  return j.dump();
}

}  // namespace prfaas::router
