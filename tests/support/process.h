// Test support: run real prfaas processes and talk to them.
//
// ChildProcess is common/subprocess.h's Subprocess. WaitForReadyFile polls for the JSON
// a `prfaas worker --ready-file` writes once it serves. HttpGet is a tiny blocking HTTP/1.1 client.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"

namespace prfaas::testing {

using ChildProcess = prfaas::Subprocess;

// Polls `path` until it holds valid JSON or `timeout` passes (then returns nullopt).
std::optional<nlohmann::json> WaitForReadyFile(const std::string& path,
                                               std::chrono::milliseconds timeout,
                                               ChildProcess* child = nullptr);

struct HttpResult {
  int status = 0;  // 0 when the connection failed
  std::string body;
};
HttpResult HttpGet(const std::string& host, int port, const std::string& target);

// Value of an unlabelled sample or of the series whose label set contains `labels` (e.g.
// `service="decode"`) in a Prometheus text exposition; nullopt when absent.
std::optional<double> MetricValue(const std::string& exposition, const std::string& name,
                                  const std::string& labels = "");

// A fresh temporary directory (removed by the caller if it wants).
std::string MakeTempDir(const std::string& prefix);

// Path of the built `prfaas` binary.
std::string PrfaasBinary();

}  // namespace prfaas::testing
