// Pieces both worker services (prefill/, decode/) need: the per-service request metrics and the
// conversion of wire sampling parameters into the engine's.
#pragma once

#include <string>

#include "common/metrics.h"
#include "engine/engine.h"
#include "prfaas/v1/common.pb.h"

namespace prfaas::serving {

// prfaas_worker_{requests_total,running_requests,waiting_requests} for one service
// ("prefill" | "decode"), as docs/metrics.md defines them.
struct ServiceMetrics {
  ServiceMetrics(metrics::Registry& registry, const std::string& service);
  metrics::Counter& Requests(const std::string& status) const {
    return requests.WithLabels({service, status});
  }
  std::string service;
  metrics::Family<metrics::Counter>& requests;
  metrics::Gauge& running;
  metrics::Gauge& waiting;
};

engine::SamplingParams ToSampling(const v1::SamplingParams& p);

}  // namespace prfaas::serving
