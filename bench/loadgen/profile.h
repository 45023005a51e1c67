// `prfaas bench profile`: measures one worker's prefill latency per prompt length and decode
// step latency per batch size through its gRPC DecodeService (local_prefill = true, so the
// worker prefills and decodes itself), and produces the simulator's profile JSON
// ("prfaas-profile/1", sim/cost_model.h, docs/simulator.md).
//
// Prefill(L) = median over `repeats` runs of the time from sending a Decode call with an
//   L-token prompt (fresh random tokens each run, so no prefix-cache hit) to its first token.
// Decode(B) = with B concurrent streams of `decode_context`-token prompts each generating
//   `decode_tokens` tokens (ignore_eos), the window in which all B streams are decoding (after
//   the last first token, before the first last token) divided by the mean number of tokens a
//   stream produced in it. Recorded at context_tokens = decode_context + decode_tokens / 2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace prfaas::bench {

struct ProfileOptions {
  std::string worker;  // host:port of the worker's gRPC server
  std::vector<int64_t> lengths = {128, 512, 2048};
  std::vector<int> batches = {1, 8, 32};
  int repeats = 3;
  int64_t decode_context = 128;
  int decode_tokens = 32;
  double timeout_s = 300;  // per RPC
  // Prompt token ids are drawn uniformly from [token_min, token_max] (printable ASCII bytes,
  // valid for the byte-level embedded model and for any vocabulary of >= 127 entries).
  int32_t token_min = 32, token_max = 126;
  uint64_t seed = 1;
  // Labels written into the profile.
  std::string model = "embedded";
  std::string hardware = "cpu";
  int gpus = 1;
};

// The profile JSON, or the first RPC error (with the worker address in the message).
Result<nlohmann::json> RunProfile(const ProfileOptions& opts);

}  // namespace prfaas::bench
