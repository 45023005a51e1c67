// DecodeService: the decode side of a worker (gRPC prfaas.v1.DecodeService).
//
// Decode(request) reserves KV blocks and a state slot for prompt + max_tokens (admission control:
// RESOURCE_EXHAUSTED when the worker is full, never an over-commit), then either
//   * prefills locally (request.local_prefill: the colocated path and decode-failure recovery), or
//   * starts the sequence from the longest cached attention prefix it holds, issues a transport
//     ticket for the rest (ticket.cached_prefix_tokens = that prefix), streams it to the router as
//     the first event, waits for the KV bundle (KV [prefix, n) + state, installed only on commit)
//     and for StartDecode(first token) from the router,
// joins the continuous batch and streams tokens until a stop token, max_tokens, cancellation or
// an error. The stream always ends with a Finished event (reason + usage) or an RPC error.
// Token accounting: on the ticket path the first token comes from the prefill worker (via the
// router's StartDecode) and the stream carries the tokens after it; with local_prefill the stream
// carries every token. With resume_token_ids the stream carries only new tokens and
// sampling.max_tokens counts the tokens still to generate; usage.completion_tokens counts the
// tokens this call generated (including a first token sampled by the prefill worker).
// Cancelling the RPC cancels the transfer ticket and the decode job; every path releases the
// sequence and the reservation. At release the sequence's cacheable blocks go into the prefix
// cache, so a later request with the same prefix needs only the missing suffix on the wire.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "common/metrics.h"
#include "prfaas/v1/worker.grpc.pb.h"
#include "serving/capacity.h"
#include "serving/engine_loop.h"
#include "serving/prefix_cache.h"
#include "serving/service_common.h"
#include "transport/transport.h"

namespace prfaas::decode {

struct DecodeOptions {
  std::chrono::milliseconds transfer_timeout{60000};  // ticket issued -> bundle + first token
  int64_t max_context_tokens = 1 << 20;
  std::string transport_backend = "tcp";
  // Also cache blocks holding generated tokens at release. Off by default: decode computes KV
  // with other kernels than prefill, so a later prompt that reuses them is not bit-identical to
  // a cold prefill (DESIGN.md exactness invariant); on, multi-turn follow-ups reuse the answer.
  bool cache_generated_blocks = false;
};

class DecodeService final : public v1::DecodeService::Service {
 public:
  // `cache` (may be null) is the worker's hybrid prefix cache (local prefill and incoming bundles).
  DecodeService(serving::EngineLoop& loop, serving::Capacity& capacity, serving::PrefixCache* cache,
                DecodeOptions options, metrics::Registry& registry);
  ~DecodeService() override;

  // The receiver whose tickets this service issues; set before serving. Its callbacks must be
  // wired to OnBundle / OnTransferAbort.
  void SetReceiver(transport::Receiver* receiver) { receiver_ = receiver; }
  void OnBundle(transport::Bundle&& bundle);
  void OnTransferAbort(uint64_t ticket, const Status& reason);

  // While set, new Decode calls are refused with UNAVAILABLE (drain / role switch / shutdown).
  void SetAccepting(bool accepting, std::string reason = "draining");
  int64_t InFlight() const;

  grpc::Status Decode(grpc::ServerContext* ctx, const v1::DecodeRequest* req,
                      grpc::ServerWriter<v1::DecodeEvent>* writer) override;
  grpc::Status StartDecode(grpc::ServerContext* ctx, const v1::StartDecodeRequest* req,
                           v1::StartDecodeReply* reply) override;

 private:
  struct Call;
  void MaybeStart(const std::shared_ptr<Call>& call);
  void Fail(const std::shared_ptr<Call>& call, const Status& why);

  serving::EngineLoop& loop_;
  serving::Capacity& capacity_;
  serving::PrefixCache* cache_;
  const DecodeOptions options_;
  transport::Receiver* receiver_ = nullptr;

  mutable std::mutex mu_;
  bool accepting_ = true;
  std::string not_accepting_reason_;
  std::map<uint64_t, std::shared_ptr<Call>> by_ticket_;
  int64_t in_flight_ = 0;

  serving::ServiceMetrics metrics_;
  metrics::Counter& tokens_;
};

}  // namespace prfaas::decode
