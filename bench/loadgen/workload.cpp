#include "bench/loadgen/workload.h"

#include <algorithm>
#include <cmath>

#include "bench/loadgen/prompt.h"

namespace prfaas::bench {

std::vector<PlannedRequest> BuildWorkload(const sim::Trace& trace, const WorkloadOptions& opts) {
  std::vector<PlannedRequest> out;
  out.reserve(trace.requests.size());
  const double scale = opts.length_scale > 0 ? opts.length_scale : 1.0;
  const int32_t block = std::max<int32_t>(
      1, static_cast<int32_t>(std::lround(std::max(trace.block_tokens, 1) * scale)));
  for (size_t i = 0; i < trace.requests.size(); ++i) {
    const sim::TraceRequest& t = trace.requests[i];
    if (opts.max_duration_s > 0 && t.arrival_s >= opts.max_duration_s) break;
    PromptSpec spec;
    spec.tokens = std::max<int64_t>(1, std::llround(static_cast<double>(t.input_tokens) * scale));
    if (opts.max_input_tokens > 0) spec.tokens = std::min(spec.tokens, opts.max_input_tokens);
    spec.block_ids = t.block_hashes;
    spec.block_tokens = block;
    spec.unique_seed = static_cast<uint64_t>(i);
    PlannedRequest p;
    p.index = static_cast<int64_t>(out.size());
    p.arrival_s = t.arrival_s;
    p.prompt = SynthesizePrompt(spec);
    p.prompt_tokens = spec.tokens;
    int64_t o = std::llround(static_cast<double>(t.output_tokens) * scale);
    if (opts.max_output_tokens > 0) o = std::min<int64_t>(o, opts.max_output_tokens);
    p.max_tokens = static_cast<int32_t>(std::max<int64_t>(o, std::max(opts.min_output_tokens, 1)));
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace prfaas::bench
