// Experiment runner behind `prfaas sim`: builds the workload, expands variants (topologies ×
// policies × thresholds × N_p/N_d splits), runs each, optionally searches each variant's maximum
// sustainable arrival rate, and writes the reports (JSONL, summary JSON, SVG plots).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/report.h"
#include "sim/simulator.h"
#include "sim/topology.h"
#include "sim/trace.h"

namespace prfaas::sim {

struct WorkloadSpec {
  bool synthetic = true;
  SyntheticOptions syn;
  TraceFormat format = TraceFormat::kMooncake;
  std::string path;
  LoadOptions load;
  TransformOptions transform;
};

// Loads/generates the workload; `rate_rps` > 0 overrides the arrival rate (synthetic: the
// generator's rate; trace: rescaled to that mean rate).
Result<Trace> BuildWorkload(const WorkloadSpec& w, double rate_rps = 0);

struct Variant {
  std::string label;
  Topology topo;
};

struct SweepSpec {
  std::vector<std::string> policies;        // empty: each topology's own
  std::vector<double> thresholds;           // empty: each topology's own
  std::vector<std::pair<int, int>> splits;  // N_p:N_d for every PD cluster; empty: as configured
  bool pin_threshold = false;               // thresholds sweep pins t (controller off)
};

Result<std::vector<Variant>> ExpandVariants(const std::vector<Topology>& topologies,
                                            const SweepSpec& sweep);

// Maximum sustainable rate: the largest offered rate (bisection between lo and hi) at which all
// requests complete and the p90 of queueing waits stays within max_wait_s.
struct RateSearch {
  bool enabled = false;
  double lo_rps = 0.05;
  double hi_rps = 20;
  int iterations = 10;
  double max_wait_s = 10;
};

struct VariantOutcome {
  Variant variant;
  Summary summary;          // at the workload's rate (or at the max rate when searched)
  double max_rate_rps = 0;  // 0 when not searched
  double wall_s = 0;
  SimResult result;
};

struct ExperimentOptions {
  SimOptions sim;
  RateSearch search;
  std::string out_dir;  // empty: no files
  bool write_requests = true;
};

Result<std::vector<VariantOutcome>> RunExperiment(const std::vector<Variant>& variants,
                                                  const WorkloadSpec& workload,
                                                  const ExperimentOptions& opts);

// Writes summary.json, <label>.summary.json, <label>.requests.jsonl and the plots.
Status WriteExperiment(const std::vector<VariantOutcome>& outcomes, const ExperimentOptions& opts,
                       const SweepSpec& sweep);

}  // namespace prfaas::sim
