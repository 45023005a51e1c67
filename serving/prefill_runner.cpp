#include "serving/prefill_runner.h"

namespace prfaas::serving {

Result<StartedSequence> StartSequence(EngineLoop& loop, PrefixCache* cache,
                                      std::shared_ptr<const std::vector<BlockHash>> hashes,
                                      int64_t prompt_tokens) {
  return loop.Call([&](engine::Engine& e) -> Result<StartedSequence> {
    StartedSequence out;
    if (cache) {
      CacheHit hit = cache->Lookup(*hashes, prompt_tokens);
      out.attention_tokens = hit.attention_tokens;
      if (hit.tokens > 0) {
        auto seq = e.AddSequenceFromPrefix(hit.blocks, hit.tokens, hit.snapshot);
        if (seq.ok()) {
          out.seq = *seq;
          out.cached_tokens = hit.tokens;
          return out;
        }
        // Fall through to a cold start: a cache hit is an optimisation, never a requirement.
      }
    }
    PRFAAS_ASSIGN_OR_RETURN(out.seq, e.AddSequence());
    return out;
  });
}

EngineLoop::PrefillProgress CacheFiller(PrefixCache* cache, engine::SequenceId seq,
                                        std::shared_ptr<const std::vector<BlockHash>> hashes) {
  if (!cache) return nullptr;
  return [cache, seq, hashes](engine::Engine& e, int64_t len) {
    const int64_t bs = cache->options().block_size;
    if (len % cache->options().checkpoint_interval == 0) {
      cache->AddCheckpoint(e, seq, *hashes);
      return;
    }
    size_t full = std::min<size_t>(hashes->size(), static_cast<size_t>(len / bs));
    cache->AddBlocks(e, seq, std::vector<BlockHash>(hashes->begin(), hashes->begin() + full));
  };
}

}  // namespace prfaas::serving
