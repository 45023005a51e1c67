// A small HTTP/1.1 server (Boost.Beast on Boost.Asio) for /metrics, /health and other simple
// request/response endpoints of every prfaas process.
//
// Handlers run on the server's I/O threads and must not block for long. Requests with bodies
// larger than Options::max_body_bytes get 413; unknown paths 404; a known path with another
// method 405. Start() binds synchronously so a busy port is reported to the caller at once.
// (The router's OpenAI front door, which streams SSE, has its own server in router/.)
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"

namespace prfaas::http {

struct Request {
  std::string method;                          // "GET", "POST", ...
  std::string target;                          // path plus query, as sent
  std::string path;                            // without the query
  std::string query;                           // after '?', undecoded
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using Handler = std::function<Response(const Request&)>;

class Server {
 public:
  struct Options {
    std::string bind_address = "127.0.0.1";
    int port = 0;  // 0 picks a free port; see port()
    int threads = 1;
    size_t max_body_bytes = 1 << 20;
  };

  explicit Server(Options options);
  ~Server();  // Stop()s
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Registers a handler before Start(); method "*" matches any method.
  void Handle(const std::string& method, const std::string& path, Handler handler);

  // Binds and starts serving. Errors: InvalidArgument for a bad address, Unavailable when the
  // port is in use (the message names address and port).
  Status Start();
  void Stop();

  // The bound port (useful with port 0); valid after Start().
  int port() const { return port_; }

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  int port_ = 0;
};

// Readiness of a process: /health answers 200 only once the process is ready (model loaded,
// registered, ...) and stops doing so while it drains or shuts down.
class HealthState {
 public:
  void SetReady(bool ready, std::string reason = {});
  // Mirrors readiness into `registry`'s prfaas_health_status gauge (1 ready, 0 not) from now on.
  void ExportTo(metrics::Registry& registry);
  bool ready() const { return ready_.load(); }
  std::string reason() const;

 private:
  std::atomic<bool> ready_{false};
  std::atomic<metrics::Gauge*> gauge_{nullptr};
  mutable std::mutex mu_;
  std::string reason_ = "starting";
};

// Adds GET /metrics (the registry in Prometheus text format 0.0.4), GET /health (readiness:
// 200 "ok" or 503 with the reason) and GET /health/live (liveness: always 200 while serving).
void AddObservabilityRoutes(Server& server, const metrics::Registry& registry,
                            const HealthState& health);

// The metrics every prfaas process exports (docs/metrics.md, "Every process"):
// prfaas_build_info{version,revision} = 1, prfaas_process_start_time_seconds, and
// prfaas_health_status (through health.ExportTo). Call once per process and registry.
void RegisterProcessMetrics(metrics::Registry& registry, HealthState& health);

}  // namespace prfaas::http
