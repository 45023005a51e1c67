#include "serving/prefill_runner.h"

#include <algorithm>

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

Result<StartedSequence> StartFromCachedBlocks(EngineLoop& loop, PrefixCache* cache,
                                              std::shared_ptr<const std::vector<BlockHash>> hashes,
                                              int64_t prompt_tokens) {
  return loop.Call([&](engine::Engine& e) -> Result<StartedSequence> {
    StartedSequence out;
    if (cache) {
      CacheHit hit = cache->LookupBlocks(*hashes, prompt_tokens);
      out.attention_tokens = hit.attention_tokens;
      if (hit.tokens > 0) {
        auto seq = e.AddSequenceFromBlocks(hit.blocks, hit.tokens);
        if (seq.ok()) {
          out.seq = *seq;
          out.cached_tokens = hit.tokens;
          return out;
        }
      }
    }
    PRFAAS_ASSIGN_OR_RETURN(out.seq, e.AddSequence());
    return out;
  });
}

void CacheSequence(engine::Engine& e, PrefixCache* cache, engine::SequenceId seq,
                   std::span<const int32_t> tokens, int64_t settled_tokens) {
  if (!cache) return;
  auto len = e.Length(seq);
  if (!len.ok()) return;
  const int64_t bs = cache->options().block_size;
  const int64_t upto =
      std::min<int64_t>({settled_tokens, *len, static_cast<int64_t>(tokens.size())});
  if (upto < bs) return;
  cache->AddBlocks(
      e, seq, ChainedBlockHashes(tokens.first(static_cast<size_t>(upto)), static_cast<int>(bs)));
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
    // Only blocks of complete pieces: a block of the last, partial piece would differ in its
    // last bits from the same block computed as part of a longer prompt.
    size_t full =
        std::min<size_t>(hashes->size(), static_cast<size_t>(cache->SettledLength(len) / bs));
    cache->AddBlocks(e, seq, std::vector<BlockHash>(hashes->begin(), hashes->begin() + full));
  };
}

}  // namespace prfaas::serving
