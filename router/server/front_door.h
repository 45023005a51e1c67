// FrontDoor: the router's OpenAI-compatible HTTP server (Boost.Beast, async, multi-threaded).
//
// Routes: POST /v1/completions, POST /v1/chat/completions (JSON or `stream: true` SSE ending
// `data: [DONE]`), GET /v1/models, GET /health (ready/503), GET /health/live, GET /metrics.
// Limits: request body size (413), prompt tokens and max_tokens (400), concurrent generations
// (429). With an API token set, /v1/* requires "Authorization: Bearer <token>" (401).
// Every request has an id (x-request-id honoured, else generated; echoed in the response header)
// and runs under a log RequestScope. Generations run on their own threads (the orchestrator's
// gRPC calls block); the session's socket is watched meanwhile, so a client that disconnects
// cancels the request everywhere within milliseconds.
#pragma once

#include <memory>
#include <string>

#include "common/http_server.h"
#include "common/metrics.h"
#include "common/status.h"
#include "router/server/openai.h"
#include "router/service/orchestrator.h"
#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

struct FrontDoorOptions {
  std::string bind_address = "0.0.0.0";
  int port = 8000;  // 0 picks a free port
  int threads = 4;  // I/O threads
  size_t max_body_bytes = 4 << 20;
  int max_concurrent_requests = 1024;  // generations in flight; more get 429
  std::string api_token;               // empty: no auth
  std::string model_name = "prfaas";
  ApiLimits limits;
};

class FrontDoor {
 public:
  FrontDoor(FrontDoorOptions options, Orchestrator& orchestrator, const Tokenizer& tokenizer,
            metrics::Registry& registry, const http::HealthState& health);
  ~FrontDoor();  // Stop()s
  FrontDoor(const FrontDoor&) = delete;
  FrontDoor& operator=(const FrontDoor&) = delete;

  // Binds and starts serving. Unavailable when the port is taken.
  Status Start();
  // Stops accepting, cancels in-flight generations and waits for them (bounded by the
  // orchestrator's timeouts).
  void Stop();
  int port() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prfaas::router
