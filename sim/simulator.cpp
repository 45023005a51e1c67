#include "sim/simulator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <functional>
#include <queue>

#include "router/planner/model.h"
#include "router/policy/policy.h"
#include "router/state/cache_index.h"
#include "router/state/cluster_state.h"
#include "sim/link.h"
#include "sim/prefix_cache.h"

namespace prfaas::sim {
namespace {

namespace rt = prfaas::router;

enum class Ev : uint8_t {
  kArrival,
  kEnqueuePrefill,
  kPrefillDone,
  kLink,
  kTransferArrive,
  kDecodeBoundary,
  kTick,
  kCapacity,
  kRebalance,
};

struct Event {
  double t;
  uint64_t seq;
  Ev type;
  uint32_t a;
  uint64_t b;
};

struct EventLater {
  bool operator()(const Event& x, const Event& y) const {
    return x.t != y.t ? x.t > y.t : x.seq > y.seq;
  }
};

struct PrefillWorker {
  rt::WorkerIndex widx = 0;
  int cluster = 0;
  const CostModel* cost = nullptr;
  int64_t max_batch_tokens = 0;
  std::deque<uint32_t> queue;
  std::vector<uint32_t> running;
  std::vector<PrefillItem> items;  // scratch
  bool busy = false;
  std::unique_ptr<PrefixCache> cache;
  int64_t cache_blocks = 0;
  int64_t checkpoint_every = 0;  // blocks
};

struct DecodeWorker {
  rt::WorkerIndex widx = 0;
  int cluster = 0;
  const CostModel* cost = nullptr;
  int max_batch = 0;
  double kv_capacity = 0;  // 0 = unlimited
  double kv_reserved = 0;
  std::deque<uint32_t> waiting;  // bundle installed, waiting for a batch slot
  // (finish step, request): a sequence leaves after the step with that absolute index.
  std::priority_queue<std::pair<int64_t, uint32_t>, std::vector<std::pair<int64_t, uint32_t>>,
                      std::greater<>>
      active;
  int64_t steps = 0;    // committed steps since start
  int64_t ctx_sum = 0;  // Σ context tokens of active sequences
  bool running = false;
  double seg_start = 0, tau = 0;
  int64_t seg_len = 0;
  uint64_t version = 0;
  std::unique_ptr<PrefixCache> cache;
  int64_t cache_blocks = 0;
  uint32_t assigned = 0;  // routed here and not finished (a draining worker waits for 0)
};

// A routed request as the long-timescale controller sees it.
struct RoutedSample {
  uint32_t uncached;  // after the router's prefix match
  uint32_t input, output;
};

// A role flip waiting for its worker to drain.
struct PendingFlip {
  rt::WorkerIndex worker;
  bool to_prefill;
  double advised_s;
};

struct ReqState {
  int32_t link = -1;
  uint32_t flow = 0;
  bool prefill_done = false;
  bool transfer_done = false;
  bool has_flow = false;
  double kv_reserve = 0;
  uint32_t uncached = 0;
};

class Sim {
 public:
  Sim(const Topology& topo, const Trace& trace, const SimOptions& opts)
      : topo_(topo), trace_(trace), opts_(opts) {}

  Result<SimResult> Run();

 private:
  Status Build();
  void Push(double t, Ev type, uint32_t a = 0, uint64_t b = 0) {
    heap_.push(Event{t, seq_++, type, a, b});
  }
  std::span<const uint64_t> Chain(uint32_t i) const {
    const auto& r = trace_.requests[i];
    size_t full = static_cast<size_t>(r.input_tokens / block_);
    return std::span<const uint64_t>(r.block_hashes.data(), std::min(full, r.block_hashes.size()));
  }
  int LinkFor(int src_cluster, int dst_cluster) const {
    for (size_t l = 0; l < link_ends_.size(); ++l) {
      if (link_ends_[l].first == src_cluster && link_ends_[l].second == dst_cluster) {
        return static_cast<int>(l);
      }
    }
    return -1;
  }
  void ScheduleLink(int l) {
    double t = links_[l]->NextCompletion();
    if (std::isfinite(t))
      Push(std::max(t, now_), Ev::kLink, static_cast<uint32_t>(l), links_[l]->version());
  }

  void OnArrival(uint32_t i);
  bool TryRoute(uint32_t i);  // false: not routed (reason in the record)
  void DrainPending();
  void StartPrefill(PrefillWorker& pw);
  void OnPrefillDone(PrefillWorker& pw);
  void OnLink(int l, uint64_t version);
  void OnTransferArrive(uint32_t i);
  void AdmitDecode(uint32_t i);
  void KickDecode(DecodeWorker& dw);
  void OnDecodeBoundary(DecodeWorker& dw, uint64_t version);
  void StartSegment(DecodeWorker& dw);
  void Join(DecodeWorker& dw, uint32_t i);
  void Finish(DecodeWorker& dw, uint32_t i);
  void OnTick();
  void OnRebalance();
  Result<rt::PlannerInputs> PlannerInputsNow() const;
  void CheckFlips();
  void SetIntraCapacity(int cluster);
  int CountRole(int cluster, rt::WorkerRole role) const;
  void RefreshLinkViews(bool rates);
  void MirrorCache(rt::WorkerIndex w, const PrefixCache::Evicted& added,
                   const PrefixCache::Evicted& ev);

  const Topology& topo_;
  const Trace& trace_;
  SimOptions opts_;
  int64_t block_ = 512;

  std::priority_queue<Event, std::vector<Event>, EventLater> heap_;
  uint64_t seq_ = 0;
  double now_ = 0;

  std::vector<std::unique_ptr<CostModel>> costs_;  // per cluster
  std::vector<PrefillWorker> prefill_;
  std::vector<DecodeWorker> decode_;
  // Router worker index -> its prefill / decode slot, -1 if it has none. PD workers have both
  // (the long-timescale controller may flip them); the role in force is state_.workers[w].role.
  std::vector<int32_t> pslot_, dslot_;
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<std::pair<int, int>> link_ends_;  // (src cluster, dst cluster); intra: (c, c)
  std::vector<int> link_view_;                  // sim link -> index in state_.links, or -1
  std::vector<double> link_carried_at_tick_;
  std::vector<std::vector<double>> link_capacity_series_;

  rt::ClusterState state_;
  std::unique_ptr<rt::CacheIndex> index_;
  std::unique_ptr<rt::Policy> policy_;
  double last_tick_ = 0;

  // Long-timescale controller.
  int rb_prfaas_ = -1, rb_pd_ = -1;   // the clusters it plans for
  std::vector<RoutedSample> routed_;  // since the last run
  std::vector<PendingFlip> flips_;
  std::vector<int> intra_link_;  // cluster -> its intra-cluster link, -1 if none

  std::vector<ReqState> rs_;
  SimResult out_;
  size_t next_arrival_ = 0;
  size_t finished_ = 0;
  size_t dropped_ = 0;
  std::deque<uint32_t> pending_;          // router admission queue: waiting for decode capacity
  PrefixCache::Evicted added_, evicted_;  // scratch
  bool reserve_at_route_ = true;
  bool drain_pending_ = false;
};

Status Sim::Build() {
  block_ = std::max<int32_t>(trace_.block_tokens, 1);
  bool hybrid = topo_.model.state_bytes_per_seq > 0;
  index_ = std::make_unique<rt::CacheIndex>(rt::CacheIndex::Options{hybrid, 0});
  state_.cache = index_.get();
  state_.model.block_tokens = static_cast<uint32_t>(block_);
  state_.model.kv_bytes_per_token = topo_.model.kv_bytes_per_token;
  state_.model.state_bytes = topo_.model.state_bytes_per_seq;

  for (size_t c = 0; c < topo_.clusters.size(); ++c) {
    const ClusterSpec& cs = topo_.clusters[c];
    if (cs.checkpoint_tokens % block_ != 0) {
      return InvalidArgument(
          "cluster '" + cs.name + "': checkpoint_tokens " + std::to_string(cs.checkpoint_tokens) +
          " is not a multiple of the trace's block size " + std::to_string(block_));
    }
    PRFAAS_ASSIGN_OR_RETURN(auto cost, MakeCostModel(topo_, cs));
    costs_.push_back(std::move(cost));
    state_.clusters.push_back(rt::ClusterView{cs.name, cs.kind == ClusterKind::kPrfaas
                                                           ? rt::ClusterKind::kPrfaas
                                                           : rt::ClusterKind::kPd});
    const bool pd = cs.kind == ClusterKind::kPd;
    for (int k = 0; k < cs.workers; ++k) {
      bool pre = k < cs.prefill_workers;
      rt::WorkerView wv;
      wv.id = cs.name + (pre ? "/prefill-" : "/decode-") +
              std::to_string(pre ? k : k - cs.prefill_workers);
      wv.cluster = static_cast<rt::ClusterIndex>(c);
      wv.role = pre ? rt::WorkerRole::kPrefill : rt::WorkerRole::kDecode;
      auto widx = static_cast<rt::WorkerIndex>(state_.workers.size());
      pslot_.push_back(-1);
      dslot_.push_back(-1);
      // A PD worker can hold either role over the run, so it has both halves; only the half of
      // its current role receives work.
      if (pre || pd) {
        PrefillWorker pw;
        pw.widx = widx;
        pw.cluster = static_cast<int>(c);
        pw.cost = costs_.back().get();
        pw.max_batch_tokens = cs.max_prefill_batch_tokens;
        pw.cache_blocks = cs.prefill_cache_blocks;
        pw.checkpoint_every = cs.checkpoint_tokens / block_;
        pw.cache =
            std::make_unique<PrefixCache>(cs.prefill_cache_blocks, hybrid, pw.checkpoint_every);
        pslot_.back() = static_cast<int32_t>(prefill_.size());
        prefill_.push_back(std::move(pw));
      }
      if (pd) {
        DecodeWorker dw;
        dw.widx = widx;
        dw.cluster = static_cast<int>(c);
        dw.cost = costs_.back().get();
        dw.max_batch = cs.max_decode_batch;
        dw.kv_capacity = cs.decode_kv_gib * 1024.0 * 1024 * 1024;
        dw.cache_blocks = cs.decode_cache_blocks;
        dw.cache = std::make_unique<PrefixCache>(cs.decode_cache_blocks, false);
        wv.max_batch = static_cast<uint32_t>(cs.max_decode_batch);
        if (dw.kv_capacity > 0) {
          wv.kv_capacity_bytes = static_cast<uint64_t>(dw.kv_capacity);
          wv.free_kv_bytes = wv.kv_capacity_bytes;
        }
        dslot_.back() = static_cast<int32_t>(decode_.size());
        decode_.push_back(std::move(dw));
      }
      out_.worker_names.push_back(wv.id);
      state_.workers.push_back(std::move(wv));
    }
  }

  // Inter-cluster links (visible to the policy), then one intra-cluster link per PD cluster.
  for (const auto& ls : topo_.links) {
    int src = topo_.ClusterIndex(ls.from), dst = topo_.ClusterIndex(ls.to);
    links_.push_back(std::make_unique<Link>(ls.from + "->" + ls.to, ls.gbps * 1e9, ls.rtt_ms / 1e3,
                                            ls.per_flow_gbps * 1e9, opts_.bucket_s));
    link_ends_.emplace_back(src, dst);
    rt::LinkView lv;
    lv.src = static_cast<rt::ClusterIndex>(src);
    lv.dst = static_cast<rt::ClusterIndex>(dst);
    lv.nominal_bps = ls.gbps * 1e9;
    lv.rtt_s = lv.base_rtt_s = ls.rtt_ms / 1e3;
    link_view_.push_back(static_cast<int>(state_.links.size()));
    state_.links.push_back(lv);
    for (size_t j = 0; j < ls.schedule.size(); ++j) {
      Push(ls.schedule[j].at_s, Ev::kCapacity, static_cast<uint32_t>(links_.size() - 1),
           static_cast<uint64_t>(ls.schedule[j].gbps * 1e9));
    }
  }
  intra_link_.assign(topo_.clusters.size(), -1);
  for (size_t c = 0; c < topo_.clusters.size(); ++c) {
    const ClusterSpec& cs = topo_.clusters[c];
    if (cs.kind != ClusterKind::kPd) continue;
    double cap = cs.intra_gbps * 1e9 * std::max(cs.prefill_workers, 1);
    intra_link_[c] = static_cast<int>(links_.size());
    links_.push_back(std::make_unique<Link>(cs.name + "-intra", cap, 20e-6, cs.intra_gbps * 1e9,
                                            opts_.bucket_s));
    link_ends_.emplace_back(static_cast<int>(c), static_cast<int>(c));
    link_view_.push_back(-1);
  }
  link_carried_at_tick_.assign(links_.size(), 0.0);
  link_capacity_series_.resize(links_.size());

  rt::PolicyConfig cfg;
  cfg.threshold.base_threshold =
      static_cast<uint32_t>(std::clamp(topo_.policy.threshold, 0.0, 4e9));
  double period = topo_.policy.controller_period_s;
  if (period > 0) {
    cfg.threshold.tick = std::chrono::milliseconds(static_cast<int64_t>(period * 1000));
  }
  auto param = [&](const char* k, double fallback) {
    auto it = topo_.policy.params.find(k);
    return it == topo_.policy.params.end() ? fallback : it->second;
  };
  cfg.threshold.max_threshold =
      static_cast<uint32_t>(param("max_threshold", std::max<double>(cfg.threshold.max_threshold,
                                                                    cfg.threshold.base_threshold)));
  cfg.threshold.min_threshold =
      static_cast<uint32_t>(param("min_threshold", std::min<double>(cfg.threshold.min_threshold,
                                                                    cfg.threshold.base_threshold)));
  cfg.threshold.raise_factor = param("raise_factor", cfg.threshold.raise_factor);
  cfg.threshold.lower_factor = param("lower_factor", cfg.threshold.lower_factor);
  cfg.threshold.utilisation_high = param("utilisation_high", cfg.threshold.utilisation_high);
  cfg.threshold.utilisation_low = param("utilisation_low", cfg.threshold.utilisation_low);
  cfg.threshold.prfaas_queue_high = param("prfaas_queue_high", cfg.threshold.prfaas_queue_high);
  cfg.threshold.pd_queue_high = param("pd_queue_high", cfg.threshold.pd_queue_high);
  cfg.guard_abs_tokens =
      static_cast<uint64_t>(param("guard_abs_tokens", static_cast<double>(cfg.guard_abs_tokens)));
  cfg.guard_rel = param("guard_rel", cfg.guard_rel);
  auto made = rt::MakePolicy(topo_.policy.name, cfg);
  if (!made.ok()) return made.status().WithContext("policy");
  policy_ = std::move(made).value();
  if (!topo_.policy.adaptive) {
    if (auto* tc = policy_->threshold_controller()) tc->SetManual(cfg.threshold.base_threshold);
  }
  reserve_at_route_ = topo_.policy.reserve_decode_at != "handoff";
  if (topo_.policy.rebalance_period_s > 0) {
    for (size_t c = 0; c < topo_.clusters.size(); ++c) {
      int& slot = topo_.clusters[c].kind == ClusterKind::kPrfaas ? rb_prfaas_ : rb_pd_;
      if (slot >= 0) {
        return InvalidArgument(
            "policy.rebalance plans one prfaas and one pd cluster; the topology has more");
      }
      slot = static_cast<int>(c);
    }
    if (rb_prfaas_ < 0 || rb_pd_ < 0) {
      return InvalidArgument("policy.rebalance needs one prfaas and one pd cluster");
    }
    if (topo_.clusters[static_cast<size_t>(rb_pd_)].workers < 2) {
      return InvalidArgument("policy.rebalance needs at least two workers in the pd cluster");
    }
  }
  out_.policy = std::string(policy_->name());
  out_.policy_library = "router/policy (prfaas_router_policy)";
  return Status::Ok();
}

void Sim::MirrorCache(rt::WorkerIndex w, const PrefixCache::Evicted& added,
                      const PrefixCache::Evicted& ev) {
  if (!ev.blocks.empty()) index_->RemoveBlocks(w, ev.blocks);
  if (!ev.checkpoints.empty()) index_->RemoveCheckpoints(w, ev.checkpoints);
  if (!added.blocks.empty()) index_->AddBlocks(w, added.blocks);
  if (!added.checkpoints.empty()) index_->AddCheckpoints(w, added.checkpoints);
}

void Sim::RefreshLinkViews(bool rates) {
  double dt = now_ - last_tick_;
  for (size_t l = 0; l < links_.size(); ++l) {
    int v = link_view_[l];
    Link& lk = *links_[l];
    lk.Advance(now_);
    if (v < 0) continue;
    rt::LinkView& lv = state_.links[static_cast<size_t>(v)];
    lv.backlog_bytes = static_cast<uint64_t>(lk.backlog_bytes());
    lv.up = lk.capacity_bps() > 0;
    lv.nominal_bps = lk.capacity_bps();
    if (rates && dt > 0) {
      lv.goodput_bps = (lk.bytes_carried() - link_carried_at_tick_[l]) * 8 / dt;
      lv.utilisation = lk.capacity_bps() > 0 ? lv.goodput_bps / lk.capacity_bps() : 0;
    }
  }
  if (rates) {
    for (size_t l = 0; l < links_.size(); ++l)
      link_carried_at_tick_[l] = links_[l]->bytes_carried();
  }
}

void Sim::OnArrival(uint32_t i) {
  const TraceRequest& r = trace_.requests[i];
  RequestRecord& rec = out_.records[i];
  rec.id = i;
  rec.arrival_s = r.arrival_s;
  rec.input_tokens = r.input_tokens;
  rec.output_tokens = r.output_tokens;
  // FIFO admission: while earlier requests wait for decode capacity, later ones queue behind.
  if (!pending_.empty()) {
    pending_.push_back(i);
  } else if (!TryRoute(i)) {
    if (rec.reason == static_cast<uint8_t>(rt::Reason::kNoDecodeWorker)) {
      pending_.push_back(i);
    } else {
      ++dropped_;
    }
  }
}

void Sim::DrainPending() {
  while (!pending_.empty() && TryRoute(pending_.front())) pending_.pop_front();
}

bool Sim::TryRoute(uint32_t i) {
  const TraceRequest& r = trace_.requests[i];
  RequestRecord& rec = out_.records[i];
  rt::RequestInfo info;
  info.request_id = i;
  info.prompt_tokens = static_cast<uint32_t>(std::min<int64_t>(r.input_tokens, UINT32_MAX));
  info.expected_output_tokens =
      static_cast<uint32_t>(std::min<int64_t>(r.output_tokens, UINT32_MAX));
  info.block_hashes = Chain(i);
  RefreshLinkViews(false);
  rt::Decision d = policy_->Route(info, state_, rt::TimePoint(static_cast<int64_t>(now_ * 1e9)));
  rec.path = static_cast<uint8_t>(d.path);
  rec.reason = static_cast<uint8_t>(d.reason);
  rec.threshold = d.threshold;
  auto can = [&](rt::WorkerIndex w, const std::vector<int32_t>& slot, rt::WorkerRole not_role) {
    return w < slot.size() && slot[w] >= 0 && state_.workers[w].role != not_role;
  };
  if (!d.ok() || !can(d.prefill_worker, pslot_, rt::WorkerRole::kDecode) ||
      !can(d.decode_worker, dslot_, rt::WorkerRole::kPrefill)) {
    if (d.ok()) rec.reason = static_cast<uint8_t>(rt::Reason::kNoPrefillWorker);  // not executable
    return false;
  }
  rec.routed_s = now_;
  rec.prefill_worker = static_cast<int32_t>(d.prefill_worker);
  rec.decode_worker = static_cast<int32_t>(d.decode_worker);
  out_.prefill_lookup_tokens += r.input_tokens;

  ReqState& s = rs_[i];
  s.uncached = d.uncached_tokens;
  // The live router charges a decision to its snapshot until the next heartbeat; the simulator's
  // snapshot is exact, so it charges the real queue and reservation.
  rt::WorkerView& pwv = state_.workers[d.prefill_worker];
  pwv.queue_depth += 1;
  pwv.prefill_backlog_tokens += s.uncached;
  rt::WorkerView& dwv = state_.workers[d.decode_worker];
  if (reserve_at_route_) dwv.waiting += 1;
  DecodeWorker& dw = decode_[static_cast<size_t>(dslot_[d.decode_worker])];
  dw.assigned += 1;
  if (rb_pd_ >= 0) {
    routed_.push_back(
        RoutedSample{d.uncached_tokens, info.prompt_tokens, info.expected_output_tokens});
  }
  if (dw.kv_capacity > 0) {
    s.kv_reserve =
        topo_.model.kv_bytes_per_token * static_cast<double>(r.input_tokens + r.output_tokens) +
        topo_.model.state_bytes_per_seq;
    dw.kv_reserved += s.kv_reserve;
    dwv.free_kv_bytes = static_cast<uint64_t>(std::max(0.0, dw.kv_capacity - dw.kv_reserved));
  }

  PrefillWorker& pw = prefill_[static_cast<size_t>(pslot_[d.prefill_worker])];
  double delay = 0;
  if (pw.cluster != dw.cluster) {
    int l = LinkFor(pw.cluster, dw.cluster);
    if (l >= 0) delay = links_[static_cast<size_t>(l)]->rtt_s() / 2;  // request travels to PrfaaS
  }
  if (delay > 0) {
    Push(now_ + delay, Ev::kEnqueuePrefill, i);
  } else {
    rec.prefill_enqueue_s = now_;
    pw.queue.push_back(i);
    if (!pw.busy) StartPrefill(pw);
  }
  return true;
}

void Sim::StartPrefill(PrefillWorker& pw) {
  pw.running.clear();
  pw.items.clear();
  int64_t tokens = 0;
  while (!pw.queue.empty()) {
    uint32_t i = pw.queue.front();
    const TraceRequest& r = trace_.requests[i];
    // The hit is re-checked now: blocks the router counted on may have been evicted since.
    PrefixCache::Hit h = pw.cache->Lookup(Chain(i), /*touch=*/true);
    int64_t cached =
        std::min<int64_t>(static_cast<int64_t>(h.effective_blocks) * block_, r.input_tokens - 1);
    cached = std::max<int64_t>(cached, 0);
    int64_t fresh = r.input_tokens - cached;
    if (!pw.running.empty() && tokens + fresh > pw.max_batch_tokens) break;
    pw.queue.pop_front();
    tokens += fresh;
    out_.records[i].cached_tokens = cached;
    pw.running.push_back(i);
    pw.items.push_back(PrefillItem{cached, fresh});
  }
  if (pw.running.empty()) return;
  double dur = pw.cost->PrefillSeconds(pw.items);
  pw.busy = true;
  for (uint32_t i : pw.running) {
    RequestRecord& rec = out_.records[i];
    const TraceRequest& r = trace_.requests[i];
    rec.prefill_start_s = now_;
    out_.prefill_hit_tokens += rec.cached_tokens;
    DecodeWorker& dw = decode_[static_cast<size_t>(dslot_[static_cast<size_t>(rec.decode_worker)])];
    PrefixCache::Hit dh = dw.cache->Lookup(Chain(i), true);
    rec.decode_cached_tokens =
        std::min<int64_t>(static_cast<int64_t>(dh.attention_blocks) * block_, r.input_tokens);
    out_.decode_hit_tokens += rec.decode_cached_tokens;
    rec.transfer_bytes = topo_.model.TransferBytes(r.input_tokens - rec.decode_cached_tokens);
    ReqState& s = rs_[i];
    int l = LinkFor(pw.cluster, dw.cluster);
    if (l < 0) {
      // No link configured between the clusters: treat the hand-off as free (documented).
      s.transfer_done = true;
      rec.transfer_end_s = now_ + dur;
      continue;
    }
    Link& lk = *links_[static_cast<size_t>(l)];
    lk.Advance(now_);
    // Layer-wise pipelining: the flow cannot outrun the prefill that produces its bytes.
    s.flow = lk.AddFlow(rec.transfer_bytes, rec.transfer_bytes * 8 / dur, i);
    s.link = l;
    s.has_flow = true;
    ScheduleLink(l);
  }
  Push(now_ + dur, Ev::kPrefillDone, static_cast<uint32_t>(&pw - prefill_.data()));
}

void Sim::OnPrefillDone(PrefillWorker& pw) {
  rt::WorkerView& wv = state_.workers[pw.widx];
  for (uint32_t i : pw.running) {
    RequestRecord& rec = out_.records[i];
    ReqState& s = rs_[i];
    rec.prefill_end_s = now_;
    const DecodeWorker& dw =
        decode_[static_cast<size_t>(dslot_[static_cast<size_t>(rec.decode_worker)])];
    double back = 0;
    if (pw.cluster != dw.cluster) {
      int l = LinkFor(pw.cluster, dw.cluster);
      if (l >= 0) back = links_[static_cast<size_t>(l)]->rtt_s() / 2;
    }
    rec.first_token_s = now_ + back;
    added_.clear();
    evicted_.clear();
    pw.cache->Insert(Chain(i), &added_, &evicted_);
    MirrorCache(pw.widx, added_, evicted_);
    wv.queue_depth -= 1;
    wv.prefill_backlog_tokens -= std::min<uint64_t>(wv.prefill_backlog_tokens, s.uncached);
    s.prefill_done = true;
    if (s.has_flow) {
      Link& lk = *links_[static_cast<size_t>(s.link)];
      lk.Advance(now_);
      lk.SetFlowCap(s.flow, Link::kInf);
      ScheduleLink(s.link);
    } else if (s.transfer_done) {
      AdmitDecode(i);
    }
  }
  pw.running.clear();
  pw.busy = false;
  if (!pw.queue.empty()) StartPrefill(pw);
}

void Sim::OnLink(int l, uint64_t version) {
  Link& lk = *links_[static_cast<size_t>(l)];
  if (version != lk.version()) return;  // rates changed since this was scheduled
  lk.Advance(now_);
  for (uint64_t tag : lk.TakeCompleted()) {
    rs_[tag].has_flow = false;
    Push(now_ + lk.rtt_s() / 2, Ev::kTransferArrive, static_cast<uint32_t>(tag));
  }
  ScheduleLink(l);
}

void Sim::OnTransferArrive(uint32_t i) {
  ReqState& s = rs_[i];
  s.transfer_done = true;
  out_.records[i].transfer_end_s = now_;
  if (s.prefill_done) AdmitDecode(i);
}

void Sim::AdmitDecode(uint32_t i) {
  DecodeWorker& dw =
      decode_[static_cast<size_t>(dslot_[static_cast<size_t>(out_.records[i].decode_worker)])];
  if (!reserve_at_route_) state_.workers[dw.widx].waiting += 1;
  dw.waiting.push_back(i);
  KickDecode(dw);
}

void Sim::KickDecode(DecodeWorker& dw) {
  if (!dw.running) {
    while (!dw.waiting.empty() && static_cast<int>(dw.active.size()) < dw.max_batch) {
      uint32_t i = dw.waiting.front();
      dw.waiting.pop_front();
      Join(dw, i);
    }
    StartSegment(dw);
    return;
  }
  if (static_cast<int>(dw.active.size()) >= dw.max_batch) return;  // joins when a slot frees
  // Join at the end of the step in progress: cut the segment there.
  double elapsed = now_ - dw.seg_start;
  int64_t k = static_cast<int64_t>(std::ceil(elapsed / dw.tau - 1e-9));
  if (k >= dw.seg_len) return;  // the segment ends at that boundary anyway
  ++dw.version;
  Push(dw.seg_start + static_cast<double>(k) * dw.tau, Ev::kDecodeBoundary,
       static_cast<uint32_t>(&dw - decode_.data()), dw.version);
}

void Sim::Join(DecodeWorker& dw, uint32_t i) {
  RequestRecord& rec = out_.records[i];
  rt::WorkerView& wv = state_.workers[dw.widx];
  wv.waiting -= 1;
  rec.decode_start_s = now_;
  if (rec.output_tokens <= 1) {  // the prefill's token was the whole answer
    Finish(dw, i);
    return;
  }
  wv.running += 1;
  dw.ctx_sum += rec.input_tokens + 1;
  dw.active.emplace(dw.steps + rec.output_tokens - 1, i);
}

void Sim::Finish(DecodeWorker& dw, uint32_t i) {
  RequestRecord& rec = out_.records[i];
  rec.finish_s = now_;
  ++finished_;
  dw.assigned -= 1;
  rt::WorkerView& wv = state_.workers[dw.widx];
  if (dw.kv_capacity > 0) {
    dw.kv_reserved -= rs_[i].kv_reserve;
    wv.free_kv_bytes = static_cast<uint64_t>(std::max(0.0, dw.kv_capacity - dw.kv_reserved));
  }
  added_.clear();
  evicted_.clear();
  dw.cache->Insert(Chain(i), &added_, &evicted_);
  drain_pending_ = true;  // capacity freed: retry the admission queue after this event
}

void Sim::StartSegment(DecodeWorker& dw) {
  if (dw.active.empty()) {
    dw.running = false;
    return;
  }
  dw.running = true;
  dw.seg_start = now_;
  dw.seg_len = std::max<int64_t>(dw.active.top().first - dw.steps, 1);
  int b = static_cast<int>(dw.active.size());
  // Context grows by b tokens per step; the midpoint makes the segment exact for costs linear in
  // context.
  int64_t mid_ctx = dw.ctx_sum + static_cast<int64_t>(b) * dw.seg_len / 2;
  dw.tau = dw.cost->DecodeStepSeconds(b, mid_ctx);
  ++dw.version;
  Push(now_ + static_cast<double>(dw.seg_len) * dw.tau, Ev::kDecodeBoundary,
       static_cast<uint32_t>(&dw - decode_.data()), dw.version);
}

void Sim::OnDecodeBoundary(DecodeWorker& dw, uint64_t version) {
  if (version != dw.version) return;
  int64_t k = std::llround((now_ - dw.seg_start) / dw.tau);
  k = std::clamp<int64_t>(k, 0, dw.seg_len);
  dw.steps += k;
  dw.ctx_sum += k * static_cast<int64_t>(dw.active.size());
  rt::WorkerView& wv = state_.workers[dw.widx];
  while (!dw.active.empty() && dw.active.top().first <= dw.steps) {
    uint32_t i = dw.active.top().second;
    dw.active.pop();
    const RequestRecord& rec = out_.records[i];
    dw.ctx_sum -= rec.input_tokens + rec.output_tokens;
    wv.running -= 1;
    Finish(dw, i);
  }
  while (!dw.waiting.empty() && static_cast<int>(dw.active.size()) < dw.max_batch) {
    uint32_t i = dw.waiting.front();
    dw.waiting.pop_front();
    Join(dw, i);
  }
  StartSegment(dw);
}

void Sim::OnTick() {
  RefreshLinkViews(true);
  last_tick_ = now_;
  policy_->Tick(state_, rt::TimePoint(static_cast<int64_t>(now_ * 1e9)));
  if (auto* tc = policy_->threshold_controller()) {
    out_.threshold_series.emplace_back(now_, tc->threshold());
  }
}

int Sim::CountRole(int cluster, rt::WorkerRole role) const {
  int n = 0;
  for (const rt::WorkerView& w : state_.workers) {
    n += static_cast<int>(w.cluster) == cluster && w.role == role;
  }
  return n;
}

void Sim::SetIntraCapacity(int cluster) {
  int l = intra_link_[static_cast<size_t>(cluster)];
  if (l < 0) return;
  const ClusterSpec& cs = topo_.clusters[static_cast<size_t>(cluster)];
  Link& lk = *links_[static_cast<size_t>(l)];
  lk.Advance(now_);
  lk.SetCapacity(cs.intra_gbps * 1e9 * std::max(CountRole(cluster, rt::WorkerRole::kPrefill), 1));
  ScheduleLink(l);
}

// The planner's inputs as the live rebalancer assembles them (router/service/rebalancer.cpp): the
// uncached lengths routed since the last run and the worker counts; where the live router has
// configured profiles and decode constants, the simulator takes the clusters' cost models
// (prefill time and transfer size by length; the decode step at BS_max and the samples' mean
// lengths) and the link's capacity now.
Result<rt::PlannerInputs> Sim::PlannerInputsNow() const {
  const ClusterSpec& pd = topo_.clusters[static_cast<size_t>(rb_pd_)];
  const ClusterSpec& pf = topo_.clusters[static_cast<size_t>(rb_prfaas_)];
  std::vector<double> lengths;
  lengths.reserve(routed_.size());
  double in_sum = 0, out_sum = 0, hi = 1;
  for (const RoutedSample& r : routed_) {
    lengths.push_back(std::max<double>(r.uncached, 1));
    in_sum += r.input;
    out_sum += r.output;
    hi = std::max(hi, lengths.back());
  }
  const double n = static_cast<double>(routed_.size());
  PRFAAS_ASSIGN_OR_RETURN(rt::LengthDistribution dist,
                          rt::LengthDistribution::Empirical(std::move(lengths)));
  // Curves on a geometric grid up to the longest sample: the planner interpolates between them.
  std::vector<std::pair<double, double>> t_pf, t_pd, kv;
  const CostModel& cost_pf = *costs_[static_cast<size_t>(rb_prfaas_)];
  const CostModel& cost_pd = *costs_[static_cast<size_t>(rb_pd_)];
  for (double l = 1; l < 2 * hi; l *= 1.5) {
    PrefillItem it{0, static_cast<int64_t>(std::ceil(l))};
    t_pf.emplace_back(l, cost_pf.PrefillSeconds({&it, 1}));
    t_pd.emplace_back(l, cost_pd.PrefillSeconds({&it, 1}));
    kv.emplace_back(l, topo_.model.TransferBytes(it.new_tokens));
  }
  rt::PlannerInputs in{.lengths = std::move(dist)};
  PRFAAS_ASSIGN_OR_RETURN(in.prfaas_prefill_s, rt::Profile::FromPoints(std::move(t_pf)));
  PRFAAS_ASSIGN_OR_RETURN(in.pd_prefill_s, rt::Profile::FromPoints(std::move(t_pd)));
  PRFAAS_ASSIGN_OR_RETURN(in.kv_bytes, rt::Profile::FromPoints(std::move(kv)));
  in.output_tokens = std::max(out_sum / n, 1.0);
  const double mean_ctx = in_sum / n + in.output_tokens / 2;
  in.max_batch = pd.max_decode_batch;
  in.decode_step_s = cost_pd.DecodeStepSeconds(
      pd.max_decode_batch, static_cast<int64_t>(mean_ctx * pd.max_decode_batch));
  in.n_prfaas = pf.prefill_workers;
  in.n_pd = pd.workers;
  in.n_homogeneous = std::max(pd.workers, 2);
  const int l = LinkFor(rb_prfaas_, rb_pd_);
  in.egress_bps = l >= 0 ? links_[static_cast<size_t>(l)]->capacity_bps() : 0;
  in.t_step = std::max(1.0, (in.lengths.hi() - in.lengths.lo()) / 200.0);  // as the live one
  return in;
}

void Sim::OnRebalance() {
  // One change at a time: while a flip drains, samples accumulate for the next run. A link that
  // is down (no egress) is the short-timescale controller's business.
  if (!flips_.empty() || routed_.size() < static_cast<size_t>(topo_.policy.rebalance_min_samples)) {
    return;
  }
  auto in = PlannerInputsNow();
  if (!in.ok() || !(in->egress_bps > 0)) return;
  routed_.clear();
  const int n_p = CountRole(rb_pd_, rt::WorkerRole::kPrefill);
  if (n_p < 1 || n_p >= in->n_pd) return;
  rt::ThresholdController* tc = policy_->threshold_controller();
  const double current_t = tc == nullptr || tc->threshold() == rt::kNoOffload
                               ? in->lengths.hi()
                               : static_cast<double>(tc->threshold());
  auto advice = rt::AdviseRoles(*in, n_p, current_t, topo_.policy.rebalance_min_gain);
  if (!advice.ok()) return;
  // The planner's t becomes the short-timescale controller's base on every run, as live.
  if (tc != nullptr) {
    tc->SetBaseThreshold(static_cast<uint32_t>(
        std::clamp(advice->target_threshold, 0.0, static_cast<double>(rt::kNoOffload - 1))));
  }
  RebalanceAdvice rec{now_,
                      advice->current_n_p,
                      advice->target_n_p,
                      advice->target_threshold,
                      advice->current_lambda,
                      advice->target_lambda,
                      advice->flip,
                      advice->summary};
  out_.rebalances.push_back(std::move(rec));
  if (!advice->flip) return;

  // Drain the least-loaded workers of the role that shrinks (ties: the highest index, so the
  // original prefill-first order is disturbed least); they take the new role once idle.
  const bool to_prefill = advice->target_n_p > n_p;
  const rt::WorkerRole from = to_prefill ? rt::WorkerRole::kDecode : rt::WorkerRole::kPrefill;
  std::vector<std::pair<uint64_t, rt::WorkerIndex>> candidates;
  for (rt::WorkerIndex w = 0; w < state_.workers.size(); ++w) {
    const rt::WorkerView& wv = state_.workers[w];
    if (static_cast<int>(wv.cluster) != rb_pd_ || wv.role != from || wv.draining) continue;
    uint64_t load =
        to_prefill ? decode_[static_cast<size_t>(dslot_[w])].assigned : wv.prefill_backlog_tokens;
    candidates.emplace_back(load, UINT32_MAX - w);
  }
  std::sort(candidates.begin(), candidates.end());
  const size_t count = static_cast<size_t>(std::abs(advice->target_n_p - n_p));
  for (size_t k = 0; k < count && k < candidates.size(); ++k) {
    rt::WorkerIndex w = UINT32_MAX - candidates[k].second;
    state_.workers[w].draining = true;
    flips_.push_back(PendingFlip{w, to_prefill, now_});
  }
  CheckFlips();
}

// Completes the flips whose workers have drained: a prefill worker with nothing queued or
// running, a decode worker with no sequence routed to it. Its caches start empty in the new role
// (the router's index forgets the old prefill blocks).
void Sim::CheckFlips() {
  for (size_t k = 0; k < flips_.size();) {
    const PendingFlip f = flips_[k];
    rt::WorkerView& wv = state_.workers[f.worker];
    PrefillWorker& pw = prefill_[static_cast<size_t>(pslot_[f.worker])];
    DecodeWorker& dw = decode_[static_cast<size_t>(dslot_[f.worker])];
    const bool idle = f.to_prefill ? dw.assigned == 0 && dw.active.empty() && dw.waiting.empty()
                                   : wv.queue_depth == 0 && !pw.busy && pw.queue.empty();
    if (!idle) {
      ++k;
      continue;
    }
    if (f.to_prefill) {
      dw.cache = std::make_unique<PrefixCache>(dw.cache_blocks, false);
      wv.role = rt::WorkerRole::kPrefill;
    } else {
      index_->RemoveWorker(f.worker);
      pw.cache = std::make_unique<PrefixCache>(pw.cache_blocks, state_.model.state_bytes > 0,
                                               pw.checkpoint_every);
      wv.role = rt::WorkerRole::kDecode;
      drain_pending_ = true;  // new decode capacity for the admission queue
    }
    wv.draining = false;
    out_.role_flips.push_back(
        RoleFlip{f.advised_s, now_, static_cast<int32_t>(f.worker), f.to_prefill});
    SetIntraCapacity(static_cast<int>(wv.cluster));
    flips_.erase(flips_.begin() + static_cast<std::ptrdiff_t>(k));
  }
}

Result<SimResult> Sim::Run() {
  PRFAAS_RETURN_IF_ERROR(Build());
  const size_t n = trace_.requests.size();
  out_.name = topo_.name;
  out_.bucket_s = opts_.bucket_s;
  out_.records.resize(n);
  rs_.resize(n);
  if (n > 0) Push(trace_.requests[0].arrival_s, Ev::kArrival, 0);
  double period = topo_.policy.controller_period_s;
  if (period > 0) Push(period, Ev::kTick);
  const double rb_period = topo_.policy.rebalance_period_s;
  if (rb_pd_ >= 0) Push(rb_period, Ev::kRebalance);

  uint64_t events = 0;
  while (!heap_.empty()) {
    Event e = heap_.top();
    heap_.pop();
    if (opts_.max_time_s > 0 && e.t > opts_.max_time_s) break;
    now_ = e.t;
    ++events;
    switch (e.type) {
      case Ev::kArrival:
        OnArrival(e.a);
        ++next_arrival_;
        if (next_arrival_ < n)
          Push(trace_.requests[next_arrival_].arrival_s, Ev::kArrival,
               static_cast<uint32_t>(next_arrival_));
        break;
      case Ev::kEnqueuePrefill: {
        RequestRecord& rec = out_.records[e.a];
        rec.prefill_enqueue_s = now_;
        PrefillWorker& pw =
            prefill_[static_cast<size_t>(pslot_[static_cast<size_t>(rec.prefill_worker)])];
        pw.queue.push_back(e.a);
        if (!pw.busy) StartPrefill(pw);
        break;
      }
      case Ev::kPrefillDone: OnPrefillDone(prefill_[e.a]); break;
      case Ev::kLink: OnLink(static_cast<int>(e.a), e.b); break;
      case Ev::kTransferArrive: OnTransferArrive(e.a); break;
      case Ev::kDecodeBoundary: OnDecodeBoundary(decode_[e.a], e.b); break;
      case Ev::kTick:
        OnTick();
        if (finished_ + dropped_ < n) Push(now_ + period, Ev::kTick);
        drain_pending_ = !pending_.empty();
        break;
      case Ev::kRebalance:
        OnRebalance();
        if (finished_ + dropped_ < n) Push(now_ + rb_period, Ev::kRebalance);
        break;
      case Ev::kCapacity: {
        Link& lk = *links_[e.a];
        lk.Advance(now_);
        lk.SetCapacity(static_cast<double>(e.b));
        ScheduleLink(static_cast<int>(e.a));
        break;
      }
    }
    if (!flips_.empty()) CheckFlips();
    if (drain_pending_) {
      drain_pending_ = false;
      DrainPending();
    }
    // Sample link capacities per bucket for the utilisation plot.
    size_t bucket = static_cast<size_t>(now_ / opts_.bucket_s);
    for (size_t l = 0; l < links_.size(); ++l) {
      auto& series = link_capacity_series_[l];
      while (series.size() <= bucket) series.push_back(links_[l]->capacity_bps());
    }
  }
  for (auto& lk : links_) lk->Advance(now_);
  out_.end_time_s = now_;
  out_.events = events;
  for (size_t l = 0; l < links_.size(); ++l) {
    LinkSeries ls;
    ls.name = links_[l]->name();
    ls.nominal_bps = link_view_[l] >= 0
                         ? state_.links[static_cast<size_t>(link_view_[l])].nominal_bps
                         : links_[l]->capacity_bps();
    if (link_view_[l] >= 0) ls.nominal_bps = topo_.links[l].gbps * 1e9;
    ls.bytes = links_[l]->bytes_carried();
    ls.bucket_bytes = links_[l]->bucket_bytes();
    ls.bucket_capacity_bps = link_capacity_series_[l];
    out_.links.push_back(std::move(ls));
  }
  return std::move(out_);
}

}  // namespace

Result<SimResult> RunSimulation(const Topology& topo, const Trace& trace, const SimOptions& opts) {
  Sim sim(topo, trace, opts);
  return sim.Run();
}

}  // namespace prfaas::sim
