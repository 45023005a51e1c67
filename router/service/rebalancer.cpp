#include "router/service/rebalancer.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "router/service/role_switch.h"

namespace prfaas::router {

namespace {

// A PD cluster as the planner sees it, read from the directory under its lock.
struct PdCluster {
  ClusterIndex index = 0;
  std::string name;
  int n_p = 0, n_d = 0;
  double egress_bps = 0;  // PrfaaS -> this cluster, links that are up
  bool has_link = false;  // some PrfaaS -> this cluster link is configured (up or down)
  std::vector<std::string> decode_ids;   // convertible to prefill, least loaded first
  std::vector<std::string> prefill_ids;  // convertible to decode, least loaded first
};

struct Snapshot {
  int n_prfaas = 0;
  uint32_t threshold = kNoOffload;
  std::vector<PdCluster> pd;
};

Snapshot Read(WorkerDirectory& directory) {
  Snapshot snap;
  directory.Inspect([&](const ClusterState& s, const CacheIndex&, Policy& p) {
    if (const ThresholdController* tc = p.threshold_controller()) snap.threshold = tc->threshold();
    std::vector<int> pd_slot(s.clusters.size(), -1);
    for (ClusterIndex c = 0; c < s.clusters.size(); ++c) {
      if (s.clusters[c].kind != ClusterKind::kPd) continue;
      pd_slot[c] = static_cast<int>(snap.pd.size());
      snap.pd.push_back(PdCluster{.index = c, .name = s.clusters[c].name});
    }
    std::vector<std::pair<uint64_t, const WorkerView*>> decode, prefill;
    for (const WorkerView& w : s.workers) {
      if (!w.healthy || w.draining) continue;
      if (s.clusters[w.cluster].kind == ClusterKind::kPrfaas) {
        snap.n_prfaas += w.CanPrefill() ? 1 : 0;
        continue;
      }
      PdCluster& pc = snap.pd[static_cast<size_t>(pd_slot[w.cluster])];
      if (w.role == WorkerRole::kPrefill) {
        ++pc.n_p;
        prefill.emplace_back(w.queue_depth, &w);
      } else if (w.role == WorkerRole::kDecode) {
        ++pc.n_d;
        decode.emplace_back(uint64_t{w.running} + w.waiting, &w);
      }
    }
    std::stable_sort(decode.begin(), decode.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::stable_sort(prefill.begin(), prefill.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [load, w] : decode) {
      snap.pd[static_cast<size_t>(pd_slot[w->cluster])].decode_ids.push_back(w->id);
    }
    for (const auto& [load, w] : prefill) {
      snap.pd[static_cast<size_t>(pd_slot[w->cluster])].prefill_ids.push_back(w->id);
    }
    for (const LinkView& l : s.links) {
      if (s.clusters[l.src].kind != ClusterKind::kPrfaas || pd_slot[l.dst] < 0) continue;
      PdCluster& pc = snap.pd[static_cast<size_t>(pd_slot[l.dst])];
      pc.has_link = true;
      pc.egress_bps += l.up ? l.nominal_bps : 0;
    }
  });
  return snap;
}

}  // namespace

Result<std::unique_ptr<Rebalancer>> Rebalancer::Create(Options options, WorkerDirectory& directory,
                                                       metrics::Registry& registry) {
  if (options.interval.count() < 0) return InvalidArgument("planner.interval must be >= 0");
  if (options.output_tokens <= 0 || options.decode_step_ms <= 0 || options.max_batch <= 0) {
    return InvalidArgument("planner: output tokens, decode step and max batch must be > 0");
  }
  if (options.min_gain < 0) return InvalidArgument("planner.min_gain must be >= 0");
  auto parse = [](const std::string& text, const char* key) -> Result<Profile> {
    auto p = Profile::Parse(text);
    if (!p.ok()) return p.status().WithContext(key);
    return p;
  };
  Profile prfaas, pd, kv;
  // Required when the periodic loop is on; RunOnce() by hand may also be given them.
  if (options.interval.count() > 0 || !options.prfaas_profile.empty()) {
    PRFAAS_ASSIGN_OR_RETURN(prfaas, parse(options.prfaas_profile, "planner.prfaas_profile"));
    PRFAAS_ASSIGN_OR_RETURN(pd, parse(options.pd_profile, "planner.pd_profile"));
    PRFAAS_ASSIGN_OR_RETURN(Profile mib, parse(options.kv_profile_mib, "planner.kv_profile_mib"));
    kv = mib.Scaled(1024.0 * 1024.0);
  }
  return std::unique_ptr<Rebalancer>(new Rebalancer(
      std::move(options), directory, registry, std::move(prfaas), std::move(pd), std::move(kv)));
}

Rebalancer::Rebalancer(Options options, WorkerDirectory& directory, metrics::Registry& registry,
                       Profile prfaas, Profile pd, Profile kv)
    : options_(std::move(options)),
      directory_(directory),
      prfaas_profile_(std::move(prfaas)),
      pd_profile_(std::move(pd)),
      kv_profile_(std::move(kv)),
      threshold_gauge_(registry.Gauge("prfaas_router_planner_threshold_tokens",
                                      "Threshold t recommended by the long-timescale planner.")),
      prefill_workers_gauge_(
          registry.Gauge("prfaas_router_planner_prefill_workers",
                         "Prefill-role workers the planner recommends for a PD cluster (N_p).",
                         {"target_cluster"})),
      flips_(registry.Counter("prfaas_router_role_flips_total",
                              "Worker role changes applied by the rebalancer, by new role.",
                              {"target_cluster", "role"})) {}

Rebalancer::~Rebalancer() {
  Stop();
}

void Rebalancer::Start() {
  if (options_.interval.count() == 0 || thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, options_.interval, [this] { return stopping_; })) {
      lock.unlock();
      if (auto r = RunOnce(); !r.ok()) spdlog::warn("rebalancer: {}", r.status().ToString());
      lock.lock();
    }
  });
}

void Rebalancer::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Result<std::vector<Rebalancer::Outcome>> Rebalancer::RunOnce() {
  std::vector<double> fresh = directory_.TakeUncachedLengths();
  pending_.insert(pending_.end(), fresh.begin(), fresh.end());
  std::vector<Outcome> outcomes;
  if (pending_.size() < static_cast<size_t>(std::max(options_.min_samples, 1))) return outcomes;
  std::vector<double> lengths = std::exchange(pending_, {});
  for (double& l : lengths) l = std::max(l, 1.0);  // fully cached prompts still prefill a token

  const Snapshot snap = Read(directory_);
  if (snap.n_prfaas == 0) return outcomes;  // nothing to offload to: the split alone is moot
  PRFAAS_ASSIGN_OR_RETURN(LengthDistribution dist, LengthDistribution::Empirical(lengths));
  bool threshold_set = false;
  for (const PdCluster& pc : snap.pd) {
    if (pc.n_p + pc.n_d < 2) continue;  // one worker cannot be split
    PlannerInputs in{.lengths = dist,
                     .prfaas_prefill_s = prfaas_profile_,
                     .pd_prefill_s = pd_profile_,
                     .kv_bytes = kv_profile_,
                     .output_tokens = options_.output_tokens,
                     .decode_step_s = options_.decode_step_ms / 1000.0,
                     .max_batch = options_.max_batch,
                     .n_prfaas = snap.n_prfaas,
                     .n_pd = pc.n_p + pc.n_d,
                     // No link configured: bandwidth is not a constraint. Configured but down:
                     // (almost) none, so the planner keeps prefill local.
                     .egress_bps = !pc.has_link ? 1e15 : std::max(pc.egress_bps, 1.0),
                     .t_step = std::max(1.0, (dist.hi() - dist.lo()) / 200.0),
                     .n_homogeneous = pc.n_p + pc.n_d + snap.n_prfaas};
    const double current_t =
        snap.threshold == kNoOffload ? dist.hi() : static_cast<double>(snap.threshold);
    PRFAAS_ASSIGN_OR_RETURN(RoleAdvice advice,
                            AdviseRoles(in, std::max(pc.n_p, 1), current_t, options_.min_gain));
    Outcome out{.cluster = pc.name, .advice = advice};
    // Zero-valued series from the first run on, so rate() and alerts see the cluster.
    flips_.WithLabels({pc.name, "prefill"});
    flips_.WithLabels({pc.name, "decode"});
    prefill_workers_gauge_.WithLabels({pc.name}).Set(advice.target_n_p);
    if (!threshold_set) {  // one t for the router: the first PD cluster's (docs/metrics.md)
      threshold_gauge_.Get().Set(advice.target_threshold);
      threshold_set = true;
      if (options_.apply) {
        directory_.Inspect([&](const ClusterState&, const CacheIndex&, Policy& p) {
          if (ThresholdController* tc = p.threshold_controller()) {
            tc->SetBaseThreshold(static_cast<uint32_t>(
                std::clamp(advice.target_threshold, 0.0, double(kNoOffload - 1))));
          }
        });
      }
    }
    spdlog::info("rebalancer: {} N_p {} -> {}, t {:.0f} -> {:.0f}: {}", pc.name, pc.n_p,
                 advice.target_n_p, current_t, advice.target_threshold, advice.summary);
    if (options_.apply && advice.flip && advice.target_n_p != pc.n_p) {
      const bool to_prefill = advice.target_n_p > pc.n_p;
      const auto& candidates = to_prefill ? pc.decode_ids : pc.prefill_ids;
      const WorkerRole role = to_prefill ? WorkerRole::kPrefill : WorkerRole::kDecode;
      const int want = std::abs(advice.target_n_p - pc.n_p);
      for (size_t i = 0; i < candidates.size() && out.flips < want; ++i) {
        if (Status s = SwitchWorkerRole(directory_, candidates[i], role, options_.drain_deadline);
            !s.ok()) {
          spdlog::warn("rebalancer: role switch of {} failed: {}", candidates[i], s.ToString());
          continue;
        }
        flips_.WithLabels({pc.name, std::string(WorkerRoleName(role))}).Inc();
        ++out.flips;
      }
    }
    outcomes.push_back(std::move(out));
  }
  return outcomes;
}

}  // namespace prfaas::router
