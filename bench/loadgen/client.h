// The load generator's HTTP side: replays planned requests against an OpenAI-compatible endpoint
// open-loop (each request is sent at its arrival time, or as soon after as fewer than
// `concurrency` requests are in flight), streaming every response (SSE) to time its first token
// and its end. Boost.Beast on one I/O thread; one TCP connection per request.
//
// Every request has a deadline (`timeout_s`, connect to last byte). Stop() (thread-safe), or
// SIGINT/SIGTERM when `handle_signals` is set, stops sending, cancels what is in flight (error
// kind "cancelled") and makes Run() return; requests never sent come back with sent = false.
//
// Error kinds: "http_<status>" (non-200 answer), "timeout", "connect" (refused / unreachable),
// "io" (connection broken mid-stream), "stream_error" (an {"error":...} chunk), "bad_stream"
// (malformed chunk or the stream ended without [DONE] / finish_reason), "cancelled".
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "bench/loadgen/stats.h"
#include "bench/loadgen/workload.h"
#include "common/status.h"

namespace prfaas::bench {

struct Endpoint {
  std::string host;
  std::string port = "80";
  std::string base_path;  // prefix before /v1/..., without a trailing '/'
};

// "http://host[:port][/prefix]" (https is not supported: InvalidArgument).
Result<Endpoint> ParseUrl(const std::string& url);

struct RunOptions {
  Endpoint endpoint;
  std::string model = "default";
  bool chat = false;       // /v1/chat/completions with one user message, else /v1/completions
  bool ignore_eos = true;  // send "ignore_eos": true so outputs have the planned length
  double temperature = 0;
  int concurrency = 256;   // max requests in flight
  double timeout_s = 600;  // per request
  bool progress = false;   // progress bar on stderr
  bool handle_signals = false;
};

class LoadRunner {
 public:
  explicit LoadRunner(RunOptions options);
  ~LoadRunner();
  LoadRunner(const LoadRunner&) = delete;
  LoadRunner& operator=(const LoadRunner&) = delete;

  // Blocks until every request finished or Stop(). results[i] describes requests[i].
  // Fails only when the host cannot be resolved.
  Result<std::vector<RequestResult>> Run(const std::vector<PlannedRequest>& requests);
  void Stop();
  bool stopped() const { return stopped_.load(); }

  class Impl;  // the run's I/O state (client.cpp)

 private:
  RunOptions options_;
  std::atomic<bool> stopped_{false};
  std::mutex mu_;
  Impl* active_ = nullptr;  // guarded by mu_; set while Run() is active
};

// The JSON body sent for one request (exposed for tests).
std::string RequestBody(const RunOptions& options, const PlannedRequest& request);

}  // namespace prfaas::bench
