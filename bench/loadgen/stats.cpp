#include "bench/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

namespace prfaas::bench {

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return values[lo] + (values[hi] - values[lo]) * frac;
}

Distribution Summarize(const std::vector<double>& values) {
  Distribution d;
  if (values.empty()) return d;
  d.count = static_cast<int64_t>(values.size());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(d.count);
  d.p50 = Percentile(values, 50);
  d.p90 = Percentile(values, 90);
  d.p99 = Percentile(values, 99);
  auto [mn, mx] = std::minmax_element(values.begin(), values.end());
  d.min = *mn;
  d.max = *mx;
  return d;
}

Report BuildReport(const std::vector<RequestResult>& results, const Slo& slo) {
  Report r;
  r.planned = static_cast<int64_t>(results.size());
  r.slo = slo;
  r.slo_given = slo.ttft_s > 0 || slo.tpot_s > 0;
  std::vector<double> ttft, tpot, e2e;
  double first = INFINITY, last = -INFINITY;
  for (const RequestResult& q : results) {
    if (!q.sent) {
      ++r.not_sent;
      continue;
    }
    ++r.sent;
    first = std::min(first, q.start_s);
    last = std::max(last, q.start_s + std::max(q.e2e_s, 0.0));
    if (!q.ok) {
      ++r.failed;
      ++r.errors[q.error_kind];
      r.error_examples.emplace(q.error_kind, q.error_message);
      continue;
    }
    ++r.completed;
    r.output_tokens += q.output_tokens;
    r.input_tokens += q.prompt_tokens;
    e2e.push_back(q.e2e_s);
    if (q.ttft_s >= 0) ttft.push_back(q.ttft_s);
    double t = -1;
    if (q.output_tokens >= 2 && q.ttft_s >= 0) {
      t = (q.e2e_s - q.ttft_s) / static_cast<double>(q.output_tokens - 1);
      tpot.push_back(t);
    }
    bool met = q.ttft_s >= 0;
    if (slo.ttft_s > 0 && !(q.ttft_s >= 0 && q.ttft_s <= slo.ttft_s)) met = false;
    if (slo.tpot_s > 0 && t >= 0 && t > slo.tpot_s) met = false;
    if (met) ++r.slo_met;
  }
  if (r.sent > 0) r.duration_s = std::max(last - first, 0.0);
  if (r.duration_s > 0) {
    r.request_throughput = static_cast<double>(r.completed) / r.duration_s;
    r.output_token_throughput = static_cast<double>(r.output_tokens) / r.duration_s;
    r.input_token_throughput = static_cast<double>(r.input_tokens) / r.duration_s;
  }
  r.ttft = Summarize(ttft);
  r.tpot = Summarize(tpot);
  r.e2e = Summarize(e2e);
  r.slo_attainment = r.sent > 0 ? static_cast<double>(r.slo_met) / static_cast<double>(r.sent) : 0;
  return r;
}

namespace {
nlohmann::json DistJson(const Distribution& d) {
  return {{"count", d.count}, {"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90},
          {"p99", d.p99},     {"min", d.min},   {"max", d.max}};
}
std::string DistLine(const char* name, const Distribution& d) {
  return fmt::format("  {:<5} ms  mean {:9.2f}  p50 {:9.2f}  p90 {:9.2f}  p99 {:9.2f}  (n={})\n",
                     name, d.mean * 1e3, d.p50 * 1e3, d.p90 * 1e3, d.p99 * 1e3, d.count);
}
}  // namespace

nlohmann::json ReportToJson(const Report& r) {
  nlohmann::json errors = nlohmann::json::object();
  for (const auto& [kind, n] : r.errors) {
    errors[kind] = {{"count", n}, {"example", r.error_examples.at(kind)}};
  }
  nlohmann::json slo = {{"ttft_s", r.slo.ttft_s},
                        {"tpot_s", r.slo.tpot_s},
                        {"met", r.slo_met},
                        {"attainment", r.slo_attainment}};
  return {{"requests",
           {{"planned", r.planned},
            {"sent", r.sent},
            {"completed", r.completed},
            {"failed", r.failed},
            {"not_sent", r.not_sent}}},
          {"duration_s", r.duration_s},
          {"throughput",
           {{"requests_per_s", r.request_throughput},
            {"output_tokens_per_s", r.output_token_throughput},
            {"input_tokens_per_s", r.input_token_throughput}}},
          {"tokens", {{"input", r.input_tokens}, {"output", r.output_tokens}}},
          {"ttft_s", DistJson(r.ttft)},
          {"tpot_s", DistJson(r.tpot)},
          {"e2e_s", DistJson(r.e2e)},
          {"slo", slo},
          {"errors", errors}};
}

std::string FormatReport(const Report& r) {
  std::string s;
  s += fmt::format("requests: {} planned, {} sent, {} completed, {} failed, {} not sent\n",
                   r.planned, r.sent, r.completed, r.failed, r.not_sent);
  s += fmt::format("duration: {:.2f} s\n", r.duration_s);
  s += fmt::format("throughput: {:.3f} req/s, {:.1f} output tok/s, {:.1f} input tok/s\n",
                   r.request_throughput, r.output_token_throughput, r.input_token_throughput);
  s += "latency (successful requests):\n";
  s += DistLine("TTFT", r.ttft);
  s += DistLine("TPOT", r.tpot);
  s += DistLine("E2E", r.e2e);
  if (r.slo_given) {
    s += fmt::format("SLO (TTFT <= {} s, TPOT <= {} s): {} of {} sent met, attainment {:.1f}%\n",
                     r.slo.ttft_s > 0 ? fmt::format("{:g}", r.slo.ttft_s) : "-",
                     r.slo.tpot_s > 0 ? fmt::format("{:g}", r.slo.tpot_s) : "-", r.slo_met, r.sent,
                     r.slo_attainment * 100);
  }
  if (!r.errors.empty()) {
    s += "errors:\n";
    for (const auto& [kind, n] : r.errors) {
      s += fmt::format("  {:<18} {:6}  e.g. {}\n", kind, n, r.error_examples.at(kind));
    }
  }
  return s;
}

}  // namespace prfaas::bench
