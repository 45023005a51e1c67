// Prefill with the hybrid prefix cache: the steps the prefill service and the decode service's
// local path share.
//
//   auto start = StartSequence(loop, cache, hashes, prompt.size());   // reuse the best prefix
//   loop.SubmitPrefill(start->seq, suffix(prompt, start->cached_tokens), done,
//                      CacheFiller(cache, start->seq, hashes));       // checkpoints + blocks
#pragma once

#include <memory>
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

// A progress hook that caches the sequence's full blocks as prefill advances and takes a state
// checkpoint whenever the length reaches a multiple of the checkpoint interval. Null cache: null.
EngineLoop::PrefillProgress CacheFiller(PrefixCache* cache, engine::SequenceId seq,
                                        std::shared_ptr<const std::vector<BlockHash>> hashes);

}  // namespace prfaas::serving
