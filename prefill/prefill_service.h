// PrefillService: the prefill side of a worker (gRPC prfaas.v1.PrefillService).
//
// Prefill(request) waits for KV capacity in FCFS order, opens a bundle to the decode worker's
// transport endpoint named in the ticket, and prefills the prompt on the engine loop (chunked,
// batched with other short prompts). Chunk-wise export while computing: after every prefill
// chunk the newly completed KV blocks in [ticket.cached_prefix_tokens, n) are exported and
// appended to the bundle while later chunks compute (those rows are final); once the prompt is
// done the first token is sampled and the remaining KV plus the GDN state (valid only at n) close
// the bundle, which is then committed. The reply carries the first token, the bytes sent and the
// queue/compute times. A cancelled RPC or a failed transfer stops the prefill and aborts the
// bundle.
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
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace prfaas::prefill {

struct PrefillOptions {
  std::chrono::milliseconds queue_timeout{120000};  // max wait for capacity
  transport::EndpointOptions transport;             // for connections to decode workers
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
  // A healthy sender to the ticket's endpoint ("ucx://h:p", "inproc://name", "h:p"; a bare
  // endpoint gets the ticket's backend as its scheme), connected on first use.
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
  metrics::Counter& segments_overlapped_;  // appended while the prompt still computed
  metrics::Counter& segments_final_;       // appended after the last chunk
  const uint64_t fingerprint_;
};

}  // namespace prfaas::prefill
