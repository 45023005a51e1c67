// Orchestrator: runs one generation request across the workers, with failure handling.
//
// Per request (DESIGN §1): block hashes of the prompt -> policy decision (WorkerDirectory::Route)
// -> open the Decode stream on the decode worker (it reserves capacity and answers with a
// transfer ticket) -> Prefill on the prefill worker with that ticket (its reply carries the first
// token) -> stream the decode worker's tokens to the caller.
//
// Token convention with the workers: the decode stream carries every token the router does not
// already have. On the ticket path the first token comes from PrefillReply and the decode stream
// continues after it; with local_prefill the decode stream carries all tokens; on resume it
// carries only tokens after resume_token_ids, and sampling.max_tokens is the number still to
// generate.
//
// Failures (bounded, each counted in prfaas_router_reroutes_total{reason}):
//   * prefill worker or link failure (Prefill RPC error or deadline) -> the decode stream is
//     cancelled, the prefill worker marked down, and the request re-routed without it; after
//     `max_prefill_retries` re-routes it falls back to local prefill on a decode worker;
//   * decode worker failure (stream error, error Finished, no event for `token_idle_timeout`)
//     -> another decode worker re-prefills prompt + tokens generated so far
//     (DecodeRequest.resume_token_ids, local_prefill) and the same caller stream continues.
// Cancellation (client disconnect) cancels the in-flight gRPC calls; workers propagate it.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "router/registry/directory.h"

namespace grpc {
class ClientContext;
}

namespace prfaas::router {

// Cancels the gRPC calls of one request from another thread (client disconnect, shutdown).
class CancelToken {
 public:
  void Cancel();
  bool cancelled() const { return cancelled_.load(); }
  // Tracks `ctx` so Cancel() reaches it; false (and nothing tracked) if already cancelled.
  bool Attach(grpc::ClientContext* ctx);
  void Detach(grpc::ClientContext* ctx);

 private:
  std::atomic<bool> cancelled_{false};
  std::mutex mu_;
  std::vector<grpc::ClientContext*> contexts_;
};

struct Sampling {
  float temperature = 1.0f;
  int32_t top_k = 0;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int32_t max_tokens = 16;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
};

struct GenerateRequest {
  std::string request_id;
  std::vector<int32_t> prompt;
  Sampling sampling;
};

enum class Finish { kStop, kLength, kCancelled, kError };

struct GenerateOutcome {
  Finish finish = Finish::kStop;
  std::string path = "none";  // metrics label: "pd" | "prfaas" | "none"
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t cached_tokens = 0;
  int reroutes = 0;
  std::string prefill_worker, decode_worker;  // last ones used
};

// Receives tokens as they arrive, in order, on the orchestrating thread. Returning false means the
// consumer is gone: the request is cancelled.
using TokenSink = std::function<bool(std::span<const int32_t> tokens)>;
// Called once with the decision before any worker is contacted (for metrics / logs).
using RoutedHook = std::function<void(const Decision& decision)>;

class Orchestrator {
 public:
  struct Options {
    std::chrono::milliseconds ticket_timeout{5000};       // Decode open -> ticket
    std::chrono::milliseconds prefill_timeout{120000};    // Prefill RPC deadline
    std::chrono::milliseconds token_idle_timeout{30000};  // max gap between decode events
    int max_prefill_retries = 1;  // re-routes after prefill failures before local prefill
    int max_decode_retries = 2;   // decode-worker failures survived per request
  };

  Orchestrator(Options options, WorkerDirectory& directory, metrics::Registry& registry);
  ~Orchestrator();
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  // Blocks until the request finished, failed or was cancelled. Errors: Unavailable when no
  // worker can take it (the message is the policy's explanation), or after retries are
  // exhausted; Cancelled when `cancel` fired; DeadlineExceeded on a timeout with no worker left.
  // Tokens already delivered to `sink` stay delivered; the outcome counts them.
  Result<GenerateOutcome> Generate(const GenerateRequest& request, CancelToken& cancel,
                                   const TokenSink& sink, const RoutedHook& routed = {});

  WorkerDirectory& directory() { return directory_; }

 private:
  class Attempt;
  struct Watch {
    grpc::ClientContext* ctx;
    std::atomic<int64_t> deadline_ns;
    std::atomic<bool> fired{false};
  };
  void WatchdogLoop();
  void AddWatch(Watch* w);
  void RemoveWatch(Watch* w);

  Options options_;
  WorkerDirectory& directory_;
  metrics::Family<metrics::Counter>& reroutes_;
  metrics::Family<metrics::Counter>& decisions_;

  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  std::vector<Watch*> watches_;
  bool stopping_ = false;
  std::thread watchdog_;
};

std::string_view PathLabel(PrefillPath path);  // "pd" | "prfaas" | "none"
// docs/metrics.md routing reason for a policy Reason.
std::string_view ReasonLabel(Reason reason);
// docs/metrics.md policy label ("round-robin" -> "round_robin").
std::string PolicyLabel(std::string_view policy_name);

}  // namespace prfaas::router
