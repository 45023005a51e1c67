#include "sim/link.h"

#include <algorithm>
#include <cmath>

namespace prfaas::sim {

namespace {
// A flow is complete when less than this many bytes remain (float residue of fluid steps).
constexpr double kDoneBytes = 1e-3;
}  // namespace

Link::Link(std::string name, double capacity_bps, double rtt_s, double per_flow_cap_bps,
           double bucket_s)
    : name_(std::move(name)),
      capacity_(capacity_bps),
      rtt_(rtt_s),
      per_flow_cap_(per_flow_cap_bps > 0 ? per_flow_cap_bps : kInf),
      bucket_s_(bucket_s > 0 ? bucket_s : 1.0) {}

void Link::Bin(double t0, double t1, double rate_bps) {
  if (rate_bps <= 0 || t1 <= t0) return;
  double bytes_per_s = rate_bps / 8;
  while (t0 < t1) {
    size_t b = static_cast<size_t>(t0 / bucket_s_);
    double end = std::min(t1, (static_cast<double>(b) + 1) * bucket_s_);
    if (end <= t0) end = t1;  // float guard at bucket edges
    if (buckets_.size() <= b) buckets_.resize(b + 1, 0.0);
    buckets_[b] += bytes_per_s * (end - t0);
    t0 = end;
  }
}

void Link::Advance(double now) {
  if (now <= now_) return;
  double dt = now - now_;
  if (total_rate_ > 0) {
    for (auto& f : flows_) {
      if (!f.active || f.rate <= 0) continue;
      f.remaining -= f.rate / 8 * dt;
      if (f.remaining < 0) f.remaining = 0;
    }
    carried_ += total_rate_ / 8 * dt;
    Bin(now_, now, total_rate_);
  }
  now_ = now;
}

uint32_t Link::AddFlow(double bytes, double cap_bps, uint64_t tag) {
  uint32_t id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = static_cast<uint32_t>(flows_.size());
    flows_.emplace_back();
  }
  flows_[id] = Flow{std::max(bytes, 0.0), cap_bps > 0 ? cap_bps : kInf, 0, tag, true};
  ++active_;
  Recompute();
  return id;
}

void Link::SetFlowCap(uint32_t id, double cap_bps) {
  if (id >= flows_.size() || !flows_[id].active) return;
  flows_[id].cap = cap_bps > 0 ? cap_bps : kInf;
  Recompute();
}

void Link::SetCapacity(double bps) {
  capacity_ = std::max(bps, 0.0);
  Recompute();
}

std::vector<uint64_t> Link::TakeCompleted() {
  std::vector<uint64_t> done;
  for (uint32_t i = 0; i < flows_.size(); ++i) {
    Flow& f = flows_[i];
    if (f.active &&
        (f.remaining <= kDoneBytes || (f.rate > 0 && f.remaining * 8 / f.rate <= 1e-6))) {
      done.push_back(f.tag);
      f.active = false;
      free_ids_.push_back(i);
      --active_;
    }
  }
  if (!done.empty()) Recompute();
  return done;
}

double Link::NextCompletion() const {
  double best = kInf;
  for (const auto& f : flows_) {
    if (!f.active) continue;
    if (f.remaining <= kDoneBytes) return now_;
    // Never return a time that float rounding makes equal to now_ while bytes remain.
    if (f.rate > 0) best = std::min(best, now_ + std::max(f.remaining * 8 / f.rate, 1e-6));
  }
  return best;
}

double Link::backlog_bytes() const {
  double s = 0;
  for (const auto& f : flows_) {
    if (f.active) s += f.remaining;
  }
  return s;
}

void Link::Recompute() {
  ++version_;
  // Max-min fairness on one link: visit flows by ascending cap; each gets min(cap, fair share
  // of what is left), and what a capped flow leaves over goes to the rest.
  order_.clear();
  for (uint32_t i = 0; i < flows_.size(); ++i) {
    if (flows_[i].active) order_.push_back(i);
  }
  auto cap_of = [&](uint32_t i) { return std::min(flows_[i].cap, per_flow_cap_); };
  std::sort(order_.begin(), order_.end(), [&](uint32_t a, uint32_t b) {
    double ca = cap_of(a), cb = cap_of(b);
    return ca != cb ? ca < cb : a < b;
  });
  double left = capacity_;
  size_t n = order_.size();
  total_rate_ = 0;
  for (size_t k = 0; k < n; ++k) {
    Flow& f = flows_[order_[k]];
    double share = left / static_cast<double>(n - k);
    f.rate = std::max(0.0, std::min(cap_of(order_[k]), share));
    left -= f.rate;
    total_rate_ += f.rate;
  }
}

}  // namespace prfaas::sim
