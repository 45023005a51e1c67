// The workload `prfaas bench` sends: a trace (loaded or synthetic, from sim/trace.h) turned into
// planned requests with arrival times and synthesised prompt text (bench/loadgen/prompt.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "sim/trace.h"

namespace prfaas::bench {

struct PlannedRequest {
  int64_t index = 0;
  double arrival_s = 0;  // seconds from run start
  std::string prompt;    // prompt_tokens bytes
  int64_t prompt_tokens = 0;
  int32_t max_tokens = 1;
};

struct WorkloadOptions {
  // Multiplies prompt and output lengths and the block size alike, so a trace's prefix sharing
  // survives shrinking it to a small model.
  double length_scale = 1.0;
  int64_t max_input_tokens = 0;   // > 0: truncate longer prompts (keeps their prefix)
  int32_t max_output_tokens = 0;  // > 0: cap
  int32_t min_output_tokens = 1;
  double max_duration_s = 0;  // > 0: drop requests arriving at or after this time
};

// Requests keep the trace's order and arrival times (apply sim::TransformTrace first for rate
// and window). Request i's unshared tail is seeded by i.
std::vector<PlannedRequest> BuildWorkload(const sim::Trace& trace, const WorkloadOptions& opts);

}  // namespace prfaas::bench
