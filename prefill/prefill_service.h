// PrefillService: the prefill side of a worker (gRPC prfaas.v1.PrefillService).
//
// Prefill(request) waits for KV capacity in FCFS order, prefills the prompt on the engine loop
// (chunked, batched with other short prompts), samples the first token, exports the KV for
// [ticket.cached_prefix_tokens, n) plus the GDN state, streams it to the decode worker's transport
// endpoint named in the ticket and commits. The reply carries the first token, the bytes sent and
// the queue/compute times. A cancelled RPC drops the queued prefill or aborts the transfer.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/metrics.h"
#include "prfaas/v1/worker.grpc.pb.h"
#include "serving/capacity.h"
#include "serving/engine_loop.h"
#include "serving/prefix_cache.h"
#include "serving/service_common.h"
#include "transport/transport.h"

namespace prfaas::prefill {

struct PrefillOptions {
  std::chrono::milliseconds queue_timeout{120000};  // max wait for capacity
  transport::TcpOptions tcp;                        // for connections to decode workers
};

class PrefillService final : public v1::PrefillService::Service {
 public:
  // `cache` (may be null) is the worker's hybrid prefix cache, shared with the decode service.
  PrefillService(serving::EngineLoop& loop, serving::Capacity& capacity,
                 serving::PrefixCache* cache, PrefillOptions options, metrics::Registry& registry);
  ~PrefillService() override;

  void SetAccepting(bool accepting, std::string reason = "draining");
  int64_t InFlight() const;
  // Telemetry of every link this worker sends on.
  std::vector<transport::LinkStats> Links() const;

  grpc::Status Prefill(grpc::ServerContext* ctx, const v1::PrefillRequest* req,
                       v1::PrefillReply* reply) override;

 private:
  Result<transport::Sender*> SenderFor(const std::string& backend, const std::string& endpoint);

  serving::EngineLoop& loop_;
  serving::Capacity& capacity_;
  serving::PrefixCache* cache_;
  const PrefillOptions options_;

  mutable std::mutex mu_;
  bool accepting_ = true;
  std::string not_accepting_reason_;
  int64_t in_flight_ = 0;
  std::map<std::string, std::unique_ptr<transport::Sender>> senders_;

  serving::ServiceMetrics metrics_;
  metrics::Counter& prefill_tokens_;
  metrics::Histogram& prefill_seconds_;
  metrics::Histogram& queue_seconds_;
};

}  // namespace prfaas::prefill
