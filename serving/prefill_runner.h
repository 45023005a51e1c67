// Prefill with the hybrid prefix cache: the steps the prefill service and the decode service's
// local path share.
//
//   auto start = StartSequence(loop, cache, hashes, prompt.size());   // reuse the best prefix
//   loop.SubmitPrefill(start->seq, suffix(prompt, start->cached_tokens), done,
//                      CacheFiller(cache, start->seq, hashes));       // checkpoints + blocks
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "common/block_hash.h"
#include "serving/engine_loop.h"
#include "serving/prefix_cache.h"

namespace prfaas::serving {

struct StartedSequence {
  engine::SequenceId seq = 0;
  int64_t cached_tokens = 0;     // effective prefix hit the sequence starts from
  int64_t attention_tokens = 0;  // attention-only match (informational)
};

// Creates a sequence for a prompt of `prompt_tokens` tokens, starting from the longest usable
// cached prefix (cache may be null). Runs on the loop thread; blocks the caller until done.
Result<StartedSequence> StartSequence(EngineLoop& loop, PrefixCache* cache,
                                      std::shared_ptr<const std::vector<BlockHash>> hashes,
                                      int64_t prompt_tokens);

// Decode side: creates a sequence from the longest cached attention prefix (piece-aligned, shorter
// than the prompt; PrefixCache::LookupBlocks) with an empty state. The caller completes it with
// Import() of KV [cached_tokens, n) + the state at n. Null cache: a fresh sequence.
Result<StartedSequence> StartFromCachedBlocks(EngineLoop& loop, PrefixCache* cache,
                                              std::shared_ptr<const std::vector<BlockHash>> hashes,
                                              int64_t prompt_tokens);

// Caches the full blocks of `seq` among its first `settled_tokens` tokens; `tokens` are the
// sequence's token ids (at least that many). Loop thread; no-op with a null cache.
void CacheSequence(engine::Engine& e, PrefixCache* cache, engine::SequenceId seq,
                   std::span<const int32_t> tokens, int64_t settled_tokens);

// A progress hook that caches the sequence's blocks of complete prefill pieces as prefill advances
// (PrefixCache::SettledLength) and takes a state checkpoint whenever the length reaches a multiple
// of the checkpoint interval. Null cache: null.
EngineLoop::PrefillProgress CacheFiller(PrefixCache* cache, engine::SequenceId seq,
                                        std::shared_ptr<const std::vector<BlockHash>> hashes);

}  // namespace prfaas::serving
