#include "bench/loadgen/prompt.h"

#include <algorithm>
#include <array>
#include <string_view>

namespace prfaas::bench {
namespace {

// Fixed vocabulary: ordinary English words keep BPE tokenizers near their usual bytes/token ratio
// instead of falling back to single bytes on random noise.
constexpr std::array<std::string_view, 64> kWords = {
    "the",   "of",    "and",   "to",     "in",      "is",      "that",    "for",
    "it",    "as",    "was",   "with",   "be",      "by",      "on",      "not",
    "he",    "this",  "are",   "or",     "his",     "from",    "at",      "which",
    "but",   "have",  "an",    "had",    "they",    "you",     "were",    "their",
    "one",   "all",   "we",    "can",    "her",     "has",     "there",   "been",
    "if",    "more",  "when",  "will",   "would",   "who",     "so",      "no",
    "model", "cache", "token", "prefix", "decode",  "server",  "request", "cluster",
    "state", "layer", "block", "stream", "latency", "network", "memory",  "compute"};

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Appends words drawn from a stream seeded by `seed` until `out` holds `n` more bytes.
void AppendWords(uint64_t seed, int64_t n, std::string& out) {
  const size_t target = out.size() + static_cast<size_t>(std::max<int64_t>(n, 0));
  uint64_t state = seed;
  while (out.size() < target) {
    std::string_view w = kWords[SplitMix64(state) % kWords.size()];
    const size_t room = target - out.size();
    out.append(w.substr(0, std::min(room, w.size())));
    if (out.size() < target) out.push_back(' ');
  }
}

// Distinct salts keep block-id streams and per-request tail streams from ever coinciding.
constexpr uint64_t kBlockSalt = 0x6b1d5e2a40c3f917ull;
constexpr uint64_t kTailSalt = 0x2f8e93c4d7a16b05ull;

}  // namespace

std::string BlockText(uint64_t id, int64_t n) {
  std::string out;
  out.reserve(static_cast<size_t>(std::max<int64_t>(n, 0)));
  AppendWords(id ^ kBlockSalt, n, out);
  return out;
}

std::string SynthesizePrompt(const PromptSpec& spec) {
  std::string out;
  if (spec.tokens <= 0) return out;
  out.reserve(static_cast<size_t>(spec.tokens));
  const int64_t bt = std::max<int32_t>(spec.block_tokens, 1);
  for (uint64_t id : spec.block_ids) {
    const int64_t left = spec.tokens - static_cast<int64_t>(out.size());
    if (left <= 0) break;
    AppendWords(id ^ kBlockSalt, std::min(left, bt), out);
  }
  AppendWords(spec.unique_seed ^ kTailSalt, spec.tokens - static_cast<int64_t>(out.size()), out);
  return out;
}

}  // namespace prfaas::bench
