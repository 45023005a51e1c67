// Reports of a simulation: summary statistics, per-request JSONL and SVG plots.
//
// Definitions (also in docs/simulator.md):
//  * TTFT = first token back at the router − arrival; TPOT = (last − first token) / (output − 1).
//  * wait = prefill queueing (enqueue → prefill start) + decode admission (bundle ready → joined).
//  * throughput = completed requests / (last finish − first arrival); SLO attainment counts a
//    request only if it finished with TTFT ≤ slo.ttft_s and TPOT ≤ slo.tpot_ms (unfinished miss).
//  * offload ratio = requests prefilled on a PrfaaS cluster / requests routed.
//  * cache hit rate = Σ reused prefix tokens / Σ prompt tokens (token-weighted).
//  * percentiles interpolate linearly between order statistics.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "sim/simulator.h"
#include "sim/topology.h"

namespace prfaas::sim {

struct Dist {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
};
Dist Summarise(std::vector<double> values);
double Percentile(const std::vector<double>& sorted, double q);

struct LinkSummary {
  std::string name;
  double mean_gbps = 0;    // bytes·8 / simulated span
  double peak_gbps = 0;    // busiest bucket
  double utilisation = 0;  // mean_gbps / nominal
  double gbytes = 0;
};

struct Summary {
  std::string name, policy, policy_library;
  size_t requests = 0, completed = 0, dropped = 0;
  double span_s = 0;
  double offered_rps = 0;
  double throughput_rps = 0;
  double output_tokens_per_s = 0;
  Dist ttft, tpot, wait, transfer;
  double slo_attainment = 0;
  double offload_ratio = 0;
  double prefill_cache_hit = 0;
  double decode_cache_hit = 0;
  std::vector<LinkSummary> links;
  double final_threshold = 0;
  // Long-timescale controller: its decisions and the role flips it applied.
  std::vector<RebalanceAdvice> rebalances;
  std::vector<RoleFlip> role_flips;
  uint64_t events = 0;
};

Summary Summarise(const SimResult& r, const SloSpec& slo);
nlohmann::json SummaryToJson(const Summary& s);
Status WriteRequestsJsonl(const SimResult& r, const std::string& path);
Status WriteText(const std::string& path, const std::string& text);

// Throughput (completed req/s) per time bucket.
std::vector<std::pair<double, double>> ThroughputSeries(const SimResult& r);
std::vector<double> TtftValues(const SimResult& r);

// Minimal SVG line chart: one polyline per series, linear axes with ticks, legend.
struct Series {
  std::string label;
  std::vector<std::pair<double, double>> points;
};
std::string LineChartSvg(const std::string& title, const std::string& xlabel,
                         const std::string& ylabel, const std::vector<Series>& series);
// Empirical CDF of each sample set (x = value, y = fraction ≤ x).
std::string CdfSvg(const std::string& title, const std::string& xlabel,
                   const std::vector<std::pair<std::string, std::vector<double>>>& samples);

}  // namespace prfaas::sim
