#include "router/state/cluster_state.h"

#include <algorithm>

namespace prfaas::router {

std::string_view ClusterKindName(ClusterKind kind) {
  return kind == ClusterKind::kPrfaas ? "prfaas" : "pd";
}

std::string_view WorkerRoleName(WorkerRole role) {
  switch (role) {
    case WorkerRole::kPrefill: return "prefill";
    case WorkerRole::kDecode: return "decode";
    case WorkerRole::kBoth: return "both";
  }
  return "?";
}

double WorkerView::DecodeLoad() const {
  const double n = static_cast<double>(running) + static_cast<double>(waiting);
  return max_batch > 0 ? n / static_cast<double>(max_batch) : n;
}

double LinkView::BacklogSeconds() const {
  if (backlog_bytes == 0) return 0;
  // Fall back to the nominal rate when nothing has been measured yet; an unknown, empty link
  // with a backlog counts as one second per backlog (a strong "do not pile on" signal).
  const double rate = goodput_bps > 0 ? goodput_bps : nominal_bps;
  if (rate <= 0) return 1.0;
  return static_cast<double>(backlog_bytes) * 8.0 / rate;
}

const LinkView* ClusterState::FindLink(ClusterIndex src, ClusterIndex dst) const {
  auto it = std::find_if(links.begin(), links.end(),
                         [&](const LinkView& l) { return l.src == src && l.dst == dst; });
  return it == links.end() ? nullptr : &*it;
}

}  // namespace prfaas::router
