#include "router/registry/directory.h"

#include <algorithm>
#include <utility>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "prfaas/v1/common.pb.h"
#include "prfaas/v1/router.pb.h"
#include "router/policy/placement.h"

namespace prfaas::router {

TimePoint Now() {
  return std::chrono::duration_cast<TimePoint>(SteadyClock::now().time_since_epoch());
}

Result<WorkerRole> ParseWorkerRole(std::string_view name) {
  if (name == "prefill") return WorkerRole::kPrefill;
  if (name == "decode") return WorkerRole::kDecode;
  if (name == "both") return WorkerRole::kBoth;
  return InvalidArgument(fmt::format("unknown role '{}' (want prefill | decode | both)", name));
}

Result<ClusterKind> ParseClusterKind(std::string_view name) {
  if (name == "pd") return ClusterKind::kPd;
  if (name == "prfaas") return ClusterKind::kPrfaas;
  return InvalidArgument(fmt::format("unknown cluster kind '{}' (want pd | prfaas)", name));
}

Result<WorkerInfo> ParseWorkerSpec(std::string_view spec) {
  WorkerInfo info;
  info.is_static = true;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    if (comma == std::string_view::npos) comma = spec.size();
    std::string_view item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return InvalidArgument(fmt::format("worker spec '{}': '{}' is not key=value", spec, item));
    }
    std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key == "id") {
      info.id = value;
    } else if (key == "cluster") {
      info.cluster = value;
    } else if (key == "kind") {
      PRFAAS_ASSIGN_OR_RETURN(info.cluster_kind, ParseClusterKind(value));
    } else if (key == "role") {
      PRFAAS_ASSIGN_OR_RETURN(info.role, ParseWorkerRole(value));
    } else if (key == "grpc") {
      info.grpc_endpoint = value;
    } else if (key == "transport") {
      info.transport_endpoint = value;
    } else {
      return InvalidArgument(fmt::format("worker spec '{}': unknown key '{}'", spec, key));
    }
  }
  if (info.id.empty() || info.cluster.empty() || info.grpc_endpoint.empty()) {
    return InvalidArgument(
        fmt::format("worker spec '{}': id, cluster and grpc are required", spec));
  }
  return info;
}

Result<LinkSpec> ParseLinkSpec(std::string_view spec) {
  LinkSpec link;
  size_t a = spec.find(':');
  size_t b = a == std::string_view::npos ? a : spec.find(':', a + 1);
  if (b == std::string_view::npos) {
    return InvalidArgument(fmt::format("link spec '{}': want src:dst:gbps", spec));
  }
  link.src = spec.substr(0, a);
  link.dst = spec.substr(a + 1, b - a - 1);
  try {
    size_t used = 0;
    std::string num(spec.substr(b + 1));
    link.gbps = std::stod(num, &used);
    if (used != num.size() || link.gbps < 0) throw std::invalid_argument("bad");
  } catch (const std::exception&) {
    return InvalidArgument(fmt::format("link spec '{}': capacity is not a number >= 0", spec));
  }
  if (link.src.empty() || link.dst.empty()) {
    return InvalidArgument(fmt::format("link spec '{}': empty cluster name", spec));
  }
  return link;
}

Result<std::unique_ptr<WorkerDirectory>> WorkerDirectory::Create(Options options) {
  if (options.block_size <= 0) return InvalidArgument("block size must be > 0");
  PRFAAS_ASSIGN_OR_RETURN(auto policy, MakePolicy(options.policy, options.policy_config));
  return std::unique_ptr<WorkerDirectory>(new WorkerDirectory(options, std::move(policy)));
}

WorkerDirectory::WorkerDirectory(Options options, std::unique_ptr<Policy> policy)
    : options_(std::move(options)),
      cache_(CacheIndex::Options{.hybrid = options_.hybrid, .expected_blocks = 0}),
      policy_(std::move(policy)),
      policy_name_(options_.policy) {
  state_.model.block_tokens = static_cast<uint32_t>(options_.block_size);
  state_.cache = &cache_;
  if (metrics::Registry* reg = options_.registry) {
    lookup_tokens_ = &reg->Counter(
        "prfaas_router_cache_lookup_tokens_total",
        "Prompt tokens looked up in the global cache index, per cluster.", {"target_cluster"});
    hit_tokens_ = &reg->Counter(
        "prfaas_router_cache_hit_tokens_total",
        "Looked-up tokens the cluster's best worker holds: attention prefix and usable hit.",
        {"target_cluster", "kind"});
    cache_events_ = &reg->Counter("prfaas_router_cache_events_total",
                                  "Block entries stored in / evicted from the global cache index.",
                                  {"target_cluster", "event"});
  }
}

ClusterIndex WorkerDirectory::ClusterFor(const std::string& name, std::optional<ClusterKind> kind) {
  for (size_t c = 0; c < state_.clusters.size(); ++c) {
    if (state_.clusters[c].name == name) {
      if (kind) state_.clusters[c].kind = *kind;
      return static_cast<ClusterIndex>(c);
    }
  }
  state_.clusters.push_back(ClusterView{name, kind.value_or(ClusterKind::kPd)});
  return static_cast<ClusterIndex>(state_.clusters.size() - 1);
}

WorkerIndex WorkerDirectory::FindLocked(std::string_view id) const {
  auto it = by_id_.find(std::string(id));
  return it == by_id_.end() ? kNoWorker : it->second;
}

Result<WorkerIndex> WorkerDirectory::Register(const WorkerInfo& info, TimePoint now) {
  if (info.id.empty() || info.cluster.empty() || info.grpc_endpoint.empty()) {
    return InvalidArgument("registration needs worker_id, cluster and grpc_endpoint");
  }
  std::lock_guard lock(mu_);
  ClusterIndex c = ClusterFor(info.cluster, info.cluster_kind);
  WorkerIndex w = FindLocked(info.id);
  if (w == kNoWorker) {
    w = static_cast<WorkerIndex>(state_.workers.size());
    state_.workers.emplace_back();
    extra_.emplace_back();
    by_id_[info.id] = w;
  } else if (extra_[w].info.grpc_endpoint != info.grpc_endpoint) {
    cache_.RemoveWorker(w);  // a restarted worker comes back with an empty cache
    extra_[w].channel.reset();
  }
  WorkerView& view = state_.workers[w];
  view.id = info.id;
  view.cluster = c;
  view.role = info.role;
  view.max_batch = options_.max_batch;
  view.healthy = true;
  Extra& ex = extra_[w];
  ex.info = info;
  ex.last_heartbeat = now;
  ex.heartbeat_expired = false;
  ex.down_for_failure = false;
  spdlog::info("worker {} registered: cluster {} ({}), role {}, grpc {}", info.id, info.cluster,
               ClusterKindName(info.cluster_kind), WorkerRoleName(info.role), info.grpc_endpoint);
  return w;
}

void WorkerDirectory::AddLink(const LinkSpec& link) {
  std::lock_guard lock(mu_);
  // Unknown clusters are created as PD; a later registration fixes the kind. A known cluster
  // keeps the kind its workers gave it.
  ClusterIndex src = ClusterFor(link.src, std::nullopt);
  ClusterIndex dst = ClusterFor(link.dst, std::nullopt);
  for (auto& l : state_.links) {
    if (l.src == src && l.dst == dst) {
      l.nominal_bps = link.gbps * 1e9;
      return;
    }
  }
  LinkView view;
  view.src = src;
  view.dst = dst;
  view.nominal_bps = link.gbps * 1e9;
  state_.links.push_back(view);
}

void WorkerDirectory::SyncLoadLocked(WorkerIndex w) {
  WorkerView& v = state_.workers[w];
  const Extra& ex = extra_[w];
  v.queue_depth = std::max(ex.reported_queue, ex.inflight_prefill);
  v.prefill_backlog_tokens = ex.inflight_prefill_tokens;
  v.waiting = std::max(ex.reported_waiting, ex.inflight_decode);
}

Status WorkerDirectory::ApplyLoad(std::string_view worker_id, const v1::LoadReport& load,
                                  TimePoint now) {
  std::lock_guard lock(mu_);
  WorkerIndex w = FindLocked(worker_id);
  if (w == kNoWorker) return NotFound(fmt::format("worker '{}' is not registered", worker_id));
  Extra& ex = extra_[w];
  WorkerView& v = state_.workers[w];
  ex.last_heartbeat = now;
  ex.heartbeat_expired = false;
  ex.down_for_failure = false;  // a live heartbeat clears a failure mark
  ex.reported_queue = static_cast<uint32_t>(std::max(0, load.queue_depth()));
  ex.reported_waiting = static_cast<uint32_t>(std::max(0, load.waiting()));
  v.running = static_cast<uint32_t>(std::max(0, load.running()));
  v.free_kv_bytes = static_cast<uint64_t>(std::max<int64_t>(0, load.kv_free_bytes()));
  v.kv_capacity_bytes = static_cast<uint64_t>(std::max<int64_t>(0, load.kv_total_bytes()));
  v.state_slots_known = load.state_total_slots() > 0;
  v.free_state_slots = static_cast<uint32_t>(std::max<int64_t>(0, load.state_free_slots()));
  SyncLoadLocked(w);
  for (const auto& t : load.links()) {
    auto& tel = ex.links[t.peer_cluster()];
    const double dt = std::chrono::duration<double>(now - tel.at).count();
    if (tel.retransmits_total >= 0 && dt > 0 && t.retransmits_total() >= tel.retransmits_total) {
      // Segments sent approximated from goodput at a 1448-byte MSS.
      const double segs = std::max(1.0, t.goodput_bytes_per_second() * dt / 1448.0);
      tel.retx_rate = static_cast<double>(t.retransmits_total() - tel.retransmits_total) / segs;
    }
    tel.retransmits_total = t.retransmits_total();
    tel.goodput_Bps = t.goodput_bytes_per_second();
    tel.rtt_s = t.rtt_seconds();
    tel.backlog_bytes = t.bytes_in_flight() + t.queued_bytes();
    tel.at = now;
  }
  UpdateHealthLocked(w, now);
  if (load.links_size() > 0) RecomputeLinksLocked();
  return Status::Ok();
}

void WorkerDirectory::RecomputeLinksLocked() {
  for (auto& l : state_.links) {
    double goodput = 0, rtt = 0, retx = 0;
    uint64_t backlog = 0;
    for (size_t w = 0; w < extra_.size(); ++w) {
      if (state_.workers[w].cluster != l.src) continue;
      auto it = extra_[w].links.find(state_.clusters[l.dst].name);
      if (it == extra_[w].links.end()) continue;
      goodput += it->second.goodput_Bps * 8;
      rtt = std::max(rtt, it->second.rtt_s);
      retx = std::max(retx, it->second.retx_rate);
      backlog += static_cast<uint64_t>(std::max<int64_t>(0, it->second.backlog_bytes));
    }
    l.goodput_bps = goodput;
    l.rtt_s = rtt;
    if (rtt > 0 && (l.base_rtt_s == 0 || rtt < l.base_rtt_s)) l.base_rtt_s = rtt;
    l.retransmit_rate = retx;
    l.backlog_bytes = backlog;
    l.utilisation = l.nominal_bps > 0 ? goodput / l.nominal_bps : 0;
  }
}

Status WorkerDirectory::ApplyCache(std::string_view worker_id, const v1::CacheEvent& event) {
  std::lock_guard lock(mu_);
  WorkerIndex w = FindLocked(worker_id);
  if (w == kNoWorker) return NotFound(fmt::format("worker '{}' is not registered", worker_id));
  std::span<const uint64_t> hashes(event.block_hashes().data(),
                                   static_cast<size_t>(event.block_hashes_size()));
  if (cache_events_ != nullptr) {
    const std::string& cluster = state_.clusters[state_.workers[w].cluster].name;
    switch (event.kind()) {
      case v1::CacheEvent::KIND_ATTN_STORED:
      case v1::CacheEvent::KIND_CHECKPOINT_STORED:
        cache_events_->WithLabels({cluster, "stored"}).Inc(static_cast<double>(hashes.size()));
        break;
      case v1::CacheEvent::KIND_ATTN_EVICTED:
      case v1::CacheEvent::KIND_CHECKPOINT_EVICTED:
        cache_events_->WithLabels({cluster, "evicted"}).Inc(static_cast<double>(hashes.size()));
        break;
      case v1::CacheEvent::KIND_CLEARED: {
        const WorkerEntries held = cache_.entries_of(w);
        cache_events_->WithLabels({cluster, "evicted"})
            .Inc(static_cast<double>(held.attention + held.checkpoints));
        break;
      }
      default: break;
    }
  }
  switch (event.kind()) {
    case v1::CacheEvent::KIND_ATTN_STORED: cache_.AddBlocks(w, hashes); break;
    case v1::CacheEvent::KIND_ATTN_EVICTED: cache_.RemoveBlocks(w, hashes); break;
    case v1::CacheEvent::KIND_CHECKPOINT_STORED: cache_.AddCheckpoints(w, hashes); break;
    case v1::CacheEvent::KIND_CHECKPOINT_EVICTED: cache_.RemoveCheckpoints(w, hashes); break;
    case v1::CacheEvent::KIND_CLEARED: cache_.RemoveWorker(w); break;
    default: return InvalidArgument(fmt::format("cache event kind {} unknown", int(event.kind())));
  }
  return Status::Ok();
}

void WorkerDirectory::UpdateHealthLocked(WorkerIndex w, TimePoint now) {
  Extra& ex = extra_[w];
  if (!ex.info.is_static && now - ex.last_heartbeat > options_.heartbeat_timeout) {
    if (!ex.heartbeat_expired) {
      spdlog::warn("worker {} missed heartbeats for {} ms: marked down", ex.info.id,
                   options_.heartbeat_timeout.count());
    }
    ex.heartbeat_expired = true;
  }
  if (ex.down_for_failure && now >= ex.down_until) ex.down_for_failure = false;
  state_.workers[w].healthy = !ex.heartbeat_expired && !ex.down_for_failure;
}

void WorkerDirectory::Refresh(TimePoint now) {
  std::lock_guard lock(mu_);
  for (WorkerIndex w = 0; w < extra_.size(); ++w) UpdateHealthLocked(w, now);
}

void WorkerDirectory::MarkFailed(WorkerIndex w, TimePoint now, std::string_view why) {
  std::lock_guard lock(mu_);
  if (w >= extra_.size()) return;
  spdlog::warn("worker {} marked down for {} ms: {}", extra_[w].info.id,
               options_.failure_cooldown.count(), why);
  extra_[w].down_for_failure = true;
  extra_[w].down_until = now + options_.failure_cooldown;
  UpdateHealthLocked(w, now);
}

Status WorkerDirectory::SetDraining(std::string_view worker_id, bool draining) {
  std::lock_guard lock(mu_);
  WorkerIndex w = FindLocked(worker_id);
  if (w == kNoWorker) return NotFound(fmt::format("no worker '{}'", worker_id));
  state_.workers[w].draining = draining;
  return Status::Ok();
}

Status WorkerDirectory::SetRole(std::string_view worker_id, WorkerRole role) {
  std::lock_guard lock(mu_);
  WorkerIndex w = FindLocked(worker_id);
  if (w == kNoWorker) return NotFound(fmt::format("no worker '{}'", worker_id));
  state_.workers[w].role = role;
  extra_[w].info.role = role;
  return Status::Ok();
}

Decision WorkerDirectory::Route(const RequestInfo& request, const std::vector<WorkerIndex>& exclude,
                                TimePoint now, bool charge) {
  std::lock_guard lock(mu_);
  for (WorkerIndex w = 0; w < extra_.size(); ++w) UpdateHealthLocked(w, now);
  std::vector<WorkerIndex> flipped;
  for (WorkerIndex w : exclude) {
    if (w < state_.workers.size() && state_.workers[w].healthy) {
      state_.workers[w].healthy = false;
      flipped.push_back(w);
    }
  }
  Decision d = policy_->Route(request, state_, now);
  for (WorkerIndex w : flipped) state_.workers[w].healthy = true;
  if (charge) CountLookupLocked(request);
  if (charge && d.ok()) {
    constexpr size_t kMaxLengths = 100000;
    if (uncached_lengths_.size() >= kMaxLengths) {
      uncached_lengths_.erase(uncached_lengths_.begin(),
                              uncached_lengths_.begin() + kMaxLengths / 2);
    }
    uncached_lengths_.push_back(d.uncached_tokens);
    if (d.prefill_worker != kNoWorker && d.path != PrefillPath::kColocated) {
      extra_[d.prefill_worker].inflight_prefill += 1;
      extra_[d.prefill_worker].inflight_prefill_tokens += d.uncached_tokens;
      SyncLoadLocked(d.prefill_worker);
    }
    if (d.decode_worker != kNoWorker) {
      extra_[d.decode_worker].inflight_decode += 1;
      SyncLoadLocked(d.decode_worker);
    }
  }
  return d;
}

Decision WorkerDirectory::RouteDecodeOnly(const RequestInfo& request,
                                          const std::vector<WorkerIndex>& exclude, TimePoint now) {
  std::lock_guard lock(mu_);
  for (WorkerIndex w = 0; w < extra_.size(); ++w) UpdateHealthLocked(w, now);
  std::vector<WorkerIndex> flipped;
  for (WorkerIndex w : exclude) {
    if (w < state_.workers.size() && state_.workers[w].healthy) {
      state_.workers[w].healthy = false;
      flipped.push_back(w);
    }
  }
  const WorkerIndex dw = ChooseDecode(state_, request, kNoCluster);
  for (WorkerIndex w : flipped) state_.workers[w].healthy = true;
  Decision d;
  d.prompt_tokens = request.prompt_tokens;
  d.uncached_tokens = request.prompt_tokens;
  if (dw == kNoWorker) {
    d.reason = Reason::kNoDecodeWorker;
    d.explanation = "no healthy decode worker with free capacity";
    return d;
  }
  d.path = PrefillPath::kColocated;
  d.reason = Reason::kRemoteUnavailable;
  d.decode_worker = d.prefill_worker = dw;
  d.decode_cluster = d.prefill_cluster = state_.workers[dw].cluster;
  d.explanation = fmt::format("local prefill on decode worker {}", state_.workers[dw].id);
  extra_[dw].inflight_decode += 1;
  SyncLoadLocked(dw);
  return d;
}

void WorkerDirectory::CountLookupLocked(const RequestInfo& request) {
  if (lookup_tokens_ == nullptr) return;
  const size_t n = state_.clusters.size();
  std::vector<uint32_t> attention(n, 0), usable(n, 0);
  cache_.Match(request.block_hashes, &hits_scratch_);
  for (const WorkerHit& hit : hits_scratch_) {
    const ClusterIndex c = state_.workers[hit.worker].cluster;
    attention[c] = std::max(attention[c], hit.attention_blocks);
    usable[c] = std::max(usable[c], hit.effective_blocks);
  }
  const uint64_t block = static_cast<uint64_t>(options_.block_size);
  auto tokens = [&](uint32_t blocks) {
    return static_cast<double>(std::min<uint64_t>(blocks * block, request.prompt_tokens));
  };
  for (ClusterIndex c = 0; c < n; ++c) {
    const std::string& name = state_.clusters[c].name;
    lookup_tokens_->WithLabels({name}).Inc(request.prompt_tokens);
    hit_tokens_->WithLabels({name, "attention"}).Inc(tokens(attention[c]));
    hit_tokens_->WithLabels({name, "checkpoint"}).Inc(tokens(usable[c]));
  }
}

std::vector<double> WorkerDirectory::TakeUncachedLengths() {
  std::lock_guard lock(mu_);
  return std::exchange(uncached_lengths_, {});
}

void WorkerDirectory::ReleasePrefill(WorkerIndex w, uint32_t uncached_tokens) {
  std::lock_guard lock(mu_);
  if (w >= extra_.size()) return;
  Extra& ex = extra_[w];
  ex.inflight_prefill -= std::min<uint32_t>(ex.inflight_prefill, 1);
  ex.inflight_prefill_tokens -= std::min<uint64_t>(ex.inflight_prefill_tokens, uncached_tokens);
  SyncLoadLocked(w);
}

void WorkerDirectory::ReleaseDecode(WorkerIndex w) {
  std::lock_guard lock(mu_);
  if (w >= extra_.size()) return;
  extra_[w].inflight_decode -= std::min<uint32_t>(extra_[w].inflight_decode, 1);
  SyncLoadLocked(w);
}

std::shared_ptr<grpc::Channel> WorkerDirectory::Channel(WorkerIndex w) {
  std::lock_guard lock(mu_);
  if (w >= extra_.size()) return nullptr;
  Extra& ex = extra_[w];
  if (!ex.channel) {
    grpc::ChannelArguments args;
    // Fail fast on a dead worker instead of waiting for long reconnect backoffs.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    ex.channel =
        grpc::CreateCustomChannel(ex.info.grpc_endpoint, grpc::InsecureChannelCredentials(), args);
  }
  return ex.channel;
}

std::string WorkerDirectory::WorkerId(WorkerIndex w) {
  std::lock_guard lock(mu_);
  return w < extra_.size() ? extra_[w].info.id : std::string("-");
}

std::string WorkerDirectory::GrpcEndpoint(WorkerIndex w) {
  std::lock_guard lock(mu_);
  return w < extra_.size() ? extra_[w].info.grpc_endpoint : std::string();
}

Result<WorkerIndex> WorkerDirectory::Find(std::string_view worker_id) {
  std::lock_guard lock(mu_);
  WorkerIndex w = FindLocked(worker_id);
  if (w == kNoWorker) return NotFound(fmt::format("no worker '{}'", worker_id));
  return w;
}

Status WorkerDirectory::SetPolicy(std::string_view name) {
  PRFAAS_ASSIGN_OR_RETURN(auto policy, MakePolicy(name, options_.policy_config));
  std::lock_guard lock(mu_);
  policy_ = std::move(policy);
  policy_name_ = std::string(name);
  return Status::Ok();
}

std::string WorkerDirectory::policy_name() {
  std::lock_guard lock(mu_);
  return policy_name_;
}

void WorkerDirectory::Inspect(
    const std::function<void(const ClusterState&, const CacheIndex&, Policy&)>& f) {
  std::lock_guard lock(mu_);
  f(state_, cache_, *policy_);
}

std::string WorkerDirectory::Describe(const Decision& d) {
  std::lock_guard lock(mu_);
  return DescribeDecision(d, state_);
}

}  // namespace prfaas::router
