// Results of a load-generator run: per-request outcomes and the report built from them
// (throughput, TTFT / TPOT / end-to-end latency distributions, SLO attainment, errors by kind).
//
// Definitions (docs/bench.md): TTFT = first non-empty content chunk - request sent;
// TPOT = (e2e - TTFT) / (output_tokens - 1), defined for output_tokens >= 2; latency
// distributions cover successful requests only. SLO attainment = successful requests meeting
// every given bound / requests sent (a failure is a miss).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace prfaas::bench {

struct RequestResult {
  int64_t index = 0;
  bool sent = false;
  bool ok = false;
  std::string error_kind;  // "", "http_500", "http_429", "timeout", "connect", ...
  std::string error_message;
  double scheduled_s = 0;  // planned arrival, seconds from run start
  double start_s = 0;      // when the request was sent
  double ttft_s = -1;      // < 0 when no token arrived
  double e2e_s = -1;
  int64_t prompt_tokens = 0;  // as planned (bytes of the prompt)
  int64_t output_tokens = 0;  // usage.completion_tokens when the server sent it, else chunks
};

// p-th percentile (p in [0, 100]) by linear interpolation between closest ranks (NumPy's
// default). 0 for an empty input.
double Percentile(std::vector<double> values, double p);

struct Distribution {
  int64_t count = 0;
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, min = 0, max = 0;
};
Distribution Summarize(const std::vector<double>& values);

struct Slo {
  double ttft_s = 0;  // 0: no bound
  double tpot_s = 0;
};

struct Report {
  int64_t planned = 0, sent = 0, completed = 0, failed = 0, not_sent = 0;
  double duration_s = 0;          // first send to last completion
  double request_throughput = 0;  // completed / duration
  double output_token_throughput = 0;
  double input_token_throughput = 0;
  int64_t output_tokens = 0, input_tokens = 0;
  Distribution ttft, tpot, e2e;
  Slo slo;
  bool slo_given = false;
  int64_t slo_met = 0;
  double slo_attainment = 0;                          // slo_met / sent
  std::map<std::string, int64_t> errors;              // kind -> count
  std::map<std::string, std::string> error_examples;  // kind -> one message
};

Report BuildReport(const std::vector<RequestResult>& results, const Slo& slo);
nlohmann::json ReportToJson(const Report& r);
// Human-readable multi-line summary (milliseconds for latencies).
std::string FormatReport(const Report& r);

}  // namespace prfaas::bench
