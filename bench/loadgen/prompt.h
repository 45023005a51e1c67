// Prompt synthesis for `prfaas bench`: turns a trace request (a prompt length plus the ids of its
// prefix blocks) into prompt text, so that prefix reuse in a trace becomes real prefix reuse on
// the server.
//
// Mapping (docs/bench.md): one token = one byte, which is exact for the byte-level embedded
// model and approximate for BPE tokenizers. Block i of a prompt covers bytes
// [i*block_tokens, (i+1)*block_tokens) and its text depends only on the block's id, so two
// requests whose id lists agree on the first k entries share their first k*block_tokens bytes.
// Bytes past the last id come from `unique_seed`, so they are shared with no other request that
// has a different seed. The text is lower-case ASCII words separated by spaces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace prfaas::bench {

// `n` bytes determined only by `id`; BlockText(id, n) is a prefix of BlockText(id, m) for n <= m.
std::string BlockText(uint64_t id, int64_t n);

struct PromptSpec {
  int64_t tokens = 0;               // prompt length in tokens (= bytes)
  std::vector<uint64_t> block_ids;  // one id per block_tokens of prompt, may be empty
  int32_t block_tokens = 512;       // > 0
  uint64_t unique_seed = 0;         // seeds the bytes not covered by block_ids
};

// Exactly spec.tokens bytes. Ids beyond the prompt length are ignored; a last partial block is
// the prefix of its full text.
std::string SynthesizePrompt(const PromptSpec& spec);

}  // namespace prfaas::bench
