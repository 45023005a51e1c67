// Logging on spdlog, with the current request id in every line.
//
// InitLogging() configures the default spdlog logger once per process (level, text or JSON
// lines). A RequestScope marks the request a thread is working on; every log line written while
// it lives carries `req=<id>` (or `"request_id"` in JSON mode), so a request can be followed
// across router, prefill and decode logs by grepping one id.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace spdlog::sinks {
class sink;
}

namespace prfaas::log {

struct Options {
  std::string level = "info";  // trace | debug | info | warn | error | critical | off
  bool json = false;           // one JSON object per line instead of text
  std::string component;       // e.g. "router", "worker"; shown in every line
  std::shared_ptr<spdlog::sinks::sink> sink;  // where lines go; stderr when null
};

// Returns InvalidArgument naming the bad level.
Status InitLogging(const Options& options);

// The request id of the calling thread, or "-" when none is set.
std::string_view CurrentRequestId();

class RequestScope {
 public:
  explicit RequestScope(std::string request_id);
  ~RequestScope();
  RequestScope(const RequestScope&) = delete;
  RequestScope& operator=(const RequestScope&) = delete;

 private:
  std::string previous_;
};

}  // namespace prfaas::log
