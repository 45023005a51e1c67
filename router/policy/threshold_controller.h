// ThresholdController: the short-timescale loop that moves the offload threshold t.
//
// The planner (long timescale) supplies a base threshold t0 that balances the two prefill paths
// (paper Eq. 7). Between planner runs the controller scales it, t = clamp(t0 · m), from link and
// queue signals sampled once per tick:
//   * pressure (any signal above its high watermark) → m *= raise_factor: only longer, lower-Φ_kv
//     requests go remote, relieving the link / PrfaaS queue;
//   * PD prefill overloaded while PrfaaS and the link are idle → m *= lower_factor, down to
//     min_multiplier: push more work to the remote cluster;
//   * all signals below their low watermarks → m relaxes one step back toward 1;
//   * between watermarks → hold (hysteresis, no oscillation).
// A link that is down disables offload (t = +inf) until it comes back. Placement mode: bandwidth
// is "abundant" when utilisation is below abundant_utilisation and no pressure signal fires,
// otherwise "scarce" (or forced by config).
// Deterministic: the state changes only in Update(), as a function of the signals and `now`.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace prfaas::router {

// Monotonic time since an arbitrary epoch, injected by the caller (live: steady_clock; simulator:
// simulated time). Policies never read a clock themselves.
using TimePoint = std::chrono::nanoseconds;

inline constexpr uint32_t kNoOffload = UINT32_MAX;  // threshold meaning "never offload"

enum class PlacementMode : uint8_t { kAuto, kScarce, kAbundant };
std::string_view PlacementModeName(PlacementMode mode);  // "auto" | "scarce" | "abundant"

// Link + queue signals for the PrfaaS -> PD path, aggregated by the caller (the prfaas policy
// builds them from its ClusterState with SignalsFrom(), router/policy/placement.h).
struct LinkSignals {
  bool link_up = true;
  double utilisation = 0;              // egress goodput / nominal capacity
  double backlog_seconds = 0;          // queued bytes / goodput
  double retransmit_rate = 0;          // retransmitted / sent segments
  double rtt_ratio = 1;                // rtt / base rtt (1 when unknown)
  double prfaas_queue_per_worker = 0;  // mean queued prefill requests per PrfaaS prefill worker
  double pd_queue_per_worker = 0;      // same for PD-cluster prefill workers
};

struct ThresholdControllerConfig {
  uint32_t base_threshold = 19400;  // t0 (tokens), normally from the planner
  uint32_t min_threshold = 512;
  uint32_t max_threshold = 131072;      // above this nothing is offloaded in practice
  std::chrono::milliseconds tick{200};  // minimum time between Update() state changes
  double raise_factor = 1.25;           // per tick under pressure
  double lower_factor = 0.9;            // per tick when PD prefill is the bottleneck
  double relax_step = 0.9;              // m moves toward 1 by this factor per calm tick
  double min_multiplier = 0.5;
  double max_multiplier = 8.0;
  // Watermarks: high triggers, low releases.
  double utilisation_high = 0.85, utilisation_low = 0.60;
  double backlog_high_s = 0.50, backlog_low_s = 0.10;
  double retransmit_high = 0.02, retransmit_low = 0.005;
  double rtt_ratio_high = 2.0, rtt_ratio_low = 1.3;
  double prfaas_queue_high = 4.0, prfaas_queue_low = 1.0;
  double pd_queue_high = 4.0;          // PD prefill backlog that asks for more offload
  double abundant_utilisation = 0.50;  // below this (and no pressure) bandwidth is abundant
  PlacementMode placement = PlacementMode::kAuto;
};

class ThresholdController {
 public:
  ThresholdController() : ThresholdController(ThresholdControllerConfig{}) {}
  explicit ThresholdController(ThresholdControllerConfig config);

  // Samples the signals; acts at most once per config.tick. Returns true if this call acted.
  bool Update(const LinkSignals& signals, TimePoint now);

  // True when Update() at `now` would be allowed to change state (lets callers skip building
  // signals between ticks).
  bool due(TimePoint now) const { return !ticked_ || now - last_tick_ >= config_.tick; }

  // Current threshold in tokens (kNoOffload while the link is down).
  uint32_t threshold() const;
  double multiplier() const { return multiplier_; }
  // Placement mode in force (kScarce or kAbundant, never kAuto).
  PlacementMode placement() const { return placement_; }
  // Why the last state change happened, e.g. "raise: utilisation 0.91 >= 0.85".
  const std::string& last_reason() const { return last_reason_; }

  // Operator / planner controls.
  void SetBaseThreshold(uint32_t tokens);  // planner result; keeps the multiplier
  void SetManual(uint32_t tokens);         // pin t (prfaasctl threshold set); disables control
  void SetAuto();                          // back to automatic control (multiplier reset to 1)
  bool manual() const { return manual_; }
  const ThresholdControllerConfig& config() const { return config_; }

 private:
  ThresholdControllerConfig config_;
  double multiplier_ = 1.0;
  bool manual_ = false;
  uint32_t manual_threshold_ = 0;
  bool link_up_ = true;
  bool ticked_ = false;
  TimePoint last_tick_{0};
  PlacementMode placement_ = PlacementMode::kScarce;
  std::string last_reason_ = "initial";
};

}  // namespace prfaas::router
