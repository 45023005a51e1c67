#include "serving/service_common.h"

namespace prfaas::serving {

ServiceMetrics::ServiceMetrics(metrics::Registry& r, const std::string& name)
    : service(name),
      requests(r.Counter("prfaas_worker_requests_total", "Requests finished by the service.",
                         {"service", "status"})),
      running(
          r.Gauge("prfaas_worker_running_requests", "Sequences in the running batch.", {"service"})
              .WithLabels({name})),
      waiting(r.Gauge("prfaas_worker_waiting_requests",
                      "Sequences admitted and waiting (the queue depth).", {"service"})
                  .WithLabels({name})) {}

engine::SamplingParams ToSampling(const v1::SamplingParams& p) {
  engine::SamplingParams s;
  s.temperature = p.temperature();
  s.top_k = p.top_k();
  s.top_p = p.top_p() > 0 ? p.top_p() : 1.0f;  // proto3 default 0 means "not set"
  s.seed = p.seed();
  return s;
}

}  // namespace prfaas::serving
