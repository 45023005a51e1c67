#include "router/policy/threshold_controller.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace prfaas::router {

ThresholdController::ThresholdController(ThresholdControllerConfig config)
    : config_(config),
      placement_(config.placement == PlacementMode::kAbundant ? PlacementMode::kAbundant
                                                              : PlacementMode::kScarce) {}

uint32_t ThresholdController::threshold() const {
  if (manual_) return manual_threshold_;
  if (!link_up_) return kNoOffload;
  const double t = std::round(static_cast<double>(config_.base_threshold) * multiplier_);
  return static_cast<uint32_t>(std::clamp(t, static_cast<double>(config_.min_threshold),
                                          static_cast<double>(config_.max_threshold)));
}

void ThresholdController::SetBaseThreshold(uint32_t tokens) {
  config_.base_threshold = tokens;
}

void ThresholdController::SetManual(uint32_t tokens) {
  manual_ = true;
  manual_threshold_ = tokens;
  last_reason_ = fmt::format("manual: t pinned to {}", tokens);
}

void ThresholdController::SetAuto() {
  manual_ = false;
  multiplier_ = 1.0;
  last_reason_ = "auto: control resumed at base threshold";
}

bool ThresholdController::Update(const LinkSignals& s, TimePoint now) {
  if (!due(now)) return false;
  ticked_ = true;
  last_tick_ = now;
  const ThresholdControllerConfig& c = config_;

  link_up_ = s.link_up;
  if (!s.link_up) {
    placement_ = PlacementMode::kScarce;
    last_reason_ = "link down: offload disabled";
    return true;
  }

  // Pressure: the first signal above its high watermark names the reason.
  std::string pressure;
  if (s.utilisation >= c.utilisation_high) {
    pressure = fmt::format("utilisation {:.2f} >= {:.2f}", s.utilisation, c.utilisation_high);
  } else if (s.backlog_seconds >= c.backlog_high_s) {
    pressure = fmt::format("backlog {:.2f}s >= {:.2f}s", s.backlog_seconds, c.backlog_high_s);
  } else if (s.retransmit_rate >= c.retransmit_high) {
    pressure = fmt::format("retransmits {:.3f} >= {:.3f}", s.retransmit_rate, c.retransmit_high);
  } else if (s.rtt_ratio >= c.rtt_ratio_high) {
    pressure = fmt::format("rtt x{:.2f} >= x{:.2f}", s.rtt_ratio, c.rtt_ratio_high);
  } else if (s.prfaas_queue_per_worker >= c.prfaas_queue_high) {
    pressure = fmt::format("prfaas queue {:.1f} >= {:.1f}", s.prfaas_queue_per_worker,
                           c.prfaas_queue_high);
  }
  const bool calm = s.utilisation <= c.utilisation_low && s.backlog_seconds <= c.backlog_low_s &&
                    s.retransmit_rate <= c.retransmit_low && s.rtt_ratio <= c.rtt_ratio_low &&
                    s.prfaas_queue_per_worker <= c.prfaas_queue_low;

  if (c.placement != PlacementMode::kAuto) {
    placement_ = c.placement;
  } else {
    placement_ = pressure.empty() && s.utilisation < c.abundant_utilisation
                     ? PlacementMode::kAbundant
                     : PlacementMode::kScarce;
  }
  if (manual_) return true;  // signals still drive the placement mode, not t

  if (!pressure.empty()) {
    multiplier_ = std::min(multiplier_ * c.raise_factor, c.max_multiplier);
    last_reason_ = "raise: " + pressure;
  } else if (calm && s.pd_queue_per_worker >= c.pd_queue_high) {
    // PD prefill is the bottleneck and the remote side is idle: offload more.
    multiplier_ = std::max(multiplier_ * c.lower_factor, c.min_multiplier);
    last_reason_ = fmt::format("lower: pd queue {:.1f} >= {:.1f}, link calm", s.pd_queue_per_worker,
                               c.pd_queue_high);
  } else if (calm && multiplier_ != 1.0) {
    // Recovery: one step back toward the planner's t0, never overshooting it.
    multiplier_ = multiplier_ > 1.0 ? std::max(1.0, multiplier_ * c.relax_step)
                                    : std::min(1.0, multiplier_ / c.relax_step);
    last_reason_ = "relax: link calm, back toward base";
  } else if (!calm) {
    last_reason_ = "hold: between watermarks";
  } else {
    last_reason_ = "steady";
  }
  return true;
}

}  // namespace prfaas::router
