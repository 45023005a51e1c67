// Request traces for the simulator: loaders for public trace formats and synthetic generators.
//
// A Trace is a list of requests sorted by arrival time (seconds from the trace start). Each
// request may carry chained prefix-block hashes (one per `block_tokens` tokens of its prompt, the
// i-th hash identifying the whole prefix up to block i), which the simulator's prefix caches use.
//
// Loaders never throw: a malformed row yields InvalidArgument naming the file, the 1-based line
// number and the offending field, e.g. "trace.jsonl:17: field 'input_length': expected integer".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::sim {

struct TraceRequest {
  double arrival_s = 0;
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  std::vector<uint64_t> block_hashes;  // chained prefix hashes; may be empty (no prefix info)
  int64_t session_id = -1;             // conversation id where the format has one
  int32_t turn = 0;
};

struct Trace {
  std::string source;          // e.g. "mooncake:/path/file.jsonl" or "synthetic:lognormal"
  int32_t block_tokens = 512;  // tokens per hash block
  std::vector<TraceRequest> requests;
};

enum class TraceFormat { kMooncake, kAzure, kBailian, kBurstGpt };

// Parses "mooncake" | "azure" | "bailian" | "burstgpt".
Result<TraceFormat> ParseTraceFormat(const std::string& name);

struct LoadOptions {
  // Tokens per hash block; 0 means the format's default (Mooncake 512, Bailian 16).
  int32_t block_tokens = 0;
  // BurstGPT logs failed requests with 0 response tokens; they are dropped unless this is set.
  bool keep_failed = false;
};

Result<Trace> LoadTrace(TraceFormat format, const std::string& path, const LoadOptions& opts = {});

// Parsers over in-memory text, used by LoadTrace and by tests. `name` prefixes error messages.
Result<Trace> ParseMooncake(const std::string& text, const std::string& name, int32_t block_tokens);
Result<Trace> ParseBailian(const std::string& text, const std::string& name, int32_t block_tokens);
Result<Trace> ParseAzure(const std::string& text, const std::string& name);
Result<Trace> ParseBurstGpt(const std::string& text, const std::string& name, bool keep_failed);

// Seconds since 1970-01-01 of "YYYY-MM-DD HH:MM:SS[.fffffff]" (any number of fractional digits,
// which is why we do not use strptime: Azure traces carry 7).
Result<double> ParseDateTimeSeconds(const std::string& s);

// ---- synthetic workloads ----------------------------------------------------------------------

struct SyntheticOptions {
  int64_t num_requests = 1000;
  uint64_t seed = 1;
  // Arrivals: "poisson" or "gamma" (with coefficient of variation `cv`) at `rate_rps`.
  std::string arrival = "poisson";
  double rate_rps = 1.0;
  double cv = 1.0;
  // Input lengths: log-normal(mu, sigma) truncated to [min_input, max_input] by rejection.
  // Defaults are the paper's workload (mean ≈ 27.5K tokens).
  double mu = 9.90;
  double sigma = 1.0;
  int64_t min_input = 128;
  int64_t max_input = 131072;
  int64_t output_tokens = 1024;
  // Prefix-sharing sessions: when sessions > 0 requests belong to that many multi-turn
  // conversations sharing a system prompt; each turn's prompt is the previous prompt + previous
  // answer + a fresh user message whose length is drawn from the log-normal above.
  int64_t sessions = 0;
  int64_t system_prompt_tokens = 0;
  int32_t block_tokens = 512;
};

Result<Trace> GenerateSynthetic(const SyntheticOptions& opts);

// ---- transforms -------------------------------------------------------------------------------

struct TransformOptions {
  double window_start_s = 0;   // keep requests with window_start <= t < window_end
  double window_end_s = -1;    // < 0: no end
  double time_scale = 1.0;     // multiply gaps (2 = half the rate)
  double target_rate_rps = 0;  // > 0: rescale time so the mean rate equals this
  double jitter_bucket_s = 0;  // > 0: spread requests sharing a bucket uniformly inside it
  int64_t max_requests = 0;    // > 0: keep only the first N
  uint64_t seed = 1;
};

// Applies, in order: window (re-based to start at 0), jitter, rate/time rescale, limit. Output
// is sorted by arrival (stable, so equal timestamps keep file order).
Status TransformTrace(Trace& trace, const TransformOptions& opts);

}  // namespace prfaas::sim
