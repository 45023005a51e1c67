#include "serving/prefix_cache.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace prfaas::serving {

namespace {
constexpr const char* kHitHelp =
    "Tokens matched: attention prefix and usable hit after the state checkpoint.";
}  // namespace

PrefixCache::LookupMetrics::LookupMetrics(metrics::Registry& r, const std::string& service,
                                          const std::string& hit_kind)
    : lookup_tokens(r.Counter("prfaas_worker_prefix_cache_lookup_tokens_total",
                              "Prompt tokens looked up in the local prefix cache.", {"service"})
                        .WithLabels({service})),
      hit_attention(
          r.Counter("prfaas_worker_prefix_cache_hit_tokens_total", kHitHelp, {"service", "kind"})
              .WithLabels({service, "attention"})),
      hit_checkpoint(hit_kind == "checkpoint"
                         ? &r.Counter("prfaas_worker_prefix_cache_hit_tokens_total", kHitHelp,
                                      {"service", "kind"})
                                .WithLabels({service, "checkpoint"})
                         : nullptr),
      hits(r.Counter("prfaas_worker_prefix_cache_hits_total", "Lookups with a non-zero hit.",
                     {"service", "kind"})
               .WithLabels({service, hit_kind})),
      misses(r.Counter("prfaas_worker_prefix_cache_misses_total", "Lookups with no hit.",
                       {"service", "kind"})
                 .WithLabels({service, hit_kind})) {}

void PrefixCache::LookupMetrics::Record(int64_t prompt_tokens, int64_t attention_tokens,
                                        int64_t hit_tokens) {
  lookup_tokens.Inc(static_cast<double>(prompt_tokens));
  if (hit_checkpoint) {
    hit_attention.Inc(static_cast<double>(attention_tokens));
    hit_checkpoint->Inc(static_cast<double>(hit_tokens));
  } else {
    // Without checkpoints the usable hit is what counts (the raw match is in Stats()).
    hit_attention.Inc(static_cast<double>(hit_tokens));
  }
  (hit_tokens > 0 ? hits : misses).Inc();
}

PrefixCache::PrefixCache(PrefixCacheOptions options, metrics::Registry& r)
    : options_(options),
      evict_attention_(r.Counter("prfaas_worker_prefix_cache_evictions_total",
                                 "LRU evictions of attention blocks and state checkpoints.",
                                 {"kind"})
                           .WithLabels({"attention"})),
      evict_checkpoint_(r.Counter("prfaas_worker_prefix_cache_evictions_total",
                                  "LRU evictions of attention blocks and state checkpoints.",
                                  {"kind"})
                            .WithLabels({"checkpoint"})),
      entries_attention_(r.Gauge("prfaas_worker_prefix_cache_entries",
                                 "Resident attention blocks / state checkpoints.", {"kind"})
                             .WithLabels({"attention"})),
      entries_checkpoint_(r.Gauge("prfaas_worker_prefix_cache_entries",
                                  "Resident attention blocks / state checkpoints.", {"kind"})
                              .WithLabels({"checkpoint"})),
      prefill_metrics_(r, "prefill", "checkpoint"),
      decode_metrics_(r, "decode", "attention") {}

int64_t PrefixCache::SettledLength(int64_t length) const {
  const int64_t C = options_.checkpoint_interval;
  int64_t settled = (length / C) * C;
  if (options_.prefill_chunk > 0) {
    settled = std::max(settled, (length / options_.prefill_chunk) * options_.prefill_chunk);
  }
  return settled;
}

void PrefixCache::TouchBlocks(const std::vector<BlockHash>& hashes, CacheHit* hit) {
  const int64_t bs = options_.block_size;
  for (int64_t i = 0; i < hit->tokens / bs; ++i) {
    Block& b = blocks_.at(hashes[i]);
    hit->blocks.push_back(b.block);
    block_lru_.splice(block_lru_.begin(), block_lru_, b.lru);
  }
}

void PrefixCache::CountLookup(int64_t prompt_tokens, const CacheHit& hit) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.lookups++;
  stats_.lookup_tokens += prompt_tokens;
  stats_.attention_hit_tokens += hit.attention_tokens;
  stats_.hit_tokens += hit.tokens;
}

CacheHit PrefixCache::Lookup(const std::vector<BlockHash>& hashes, int64_t prompt_tokens) {
  const int64_t bs = options_.block_size;
  const int64_t C = options_.checkpoint_interval;
  CacheHit hit;
  size_t matched = 0;
  while (matched < hashes.size() && blocks_.count(hashes[matched])) ++matched;
  hit.attention_tokens = static_cast<int64_t>(matched) * bs;
  // Best checkpoint inside the matched prefix that still leaves a token to compute.
  int64_t limit = std::min<int64_t>(hit.attention_tokens, prompt_tokens - 1);
  for (int64_t c = (limit / C) * C; c > 0; c -= C) {
    auto it = checkpoints_.find(hashes[c / bs - 1]);
    if (it == checkpoints_.end()) continue;
    hit.tokens = c;
    hit.snapshot = it->second.snapshot;
    ckpt_lru_.splice(ckpt_lru_.begin(), ckpt_lru_, it->second.lru);
    break;
  }
  TouchBlocks(hashes, &hit);
  prefill_metrics_.Record(prompt_tokens, hit.attention_tokens, hit.tokens);
  CountLookup(prompt_tokens, hit);
  return hit;
}

CacheHit PrefixCache::LookupBlocks(const std::vector<BlockHash>& hashes, int64_t prompt_tokens) {
  const int64_t bs = options_.block_size;
  CacheHit hit;
  size_t matched = 0;
  while (matched < hashes.size() && blocks_.count(hashes[matched])) ++matched;
  hit.attention_tokens = static_cast<int64_t>(matched) * bs;
  // Boundaries are block multiples when C and the chunk are; round down in case the chunk is not.
  hit.tokens = SettledLength(std::min<int64_t>(hit.attention_tokens, prompt_tokens - 1));
  hit.tokens = (hit.tokens / bs) * bs;
  TouchBlocks(hashes, &hit);
  decode_metrics_.Record(prompt_tokens, hit.attention_tokens, hit.tokens);
  CountLookup(prompt_tokens, hit);
  return hit;
}

void PrefixCache::AddBlocks(engine::Engine& e, engine::SequenceId seq,
                            const std::vector<BlockHash>& hashes) {
  auto table = e.BlockTable(seq);
  if (!table.ok()) return;
  size_t n = std::min(hashes.size(), table->size());
  for (size_t i = 0; i < n; ++i) {
    auto it = blocks_.find(hashes[i]);
    if (it != blocks_.end()) {
      block_lru_.splice(block_lru_.begin(), block_lru_, it->second.lru);
      continue;
    }
    if (!e.RefBlock((*table)[i]).ok()) return;
    block_lru_.push_front(hashes[i]);
    blocks_[hashes[i]] = Block{(*table)[i], block_lru_.begin()};
    Emit(CacheEventRecord::kAttnStored, hashes[i]);
  }
  EvictBlocks(e);
}

void PrefixCache::AddCheckpoint(engine::Engine& e, engine::SequenceId seq,
                                const std::vector<BlockHash>& hashes) {
  auto len = e.Length(seq);
  const int64_t bs = options_.block_size;
  if (!len.ok() || *len <= 0 || *len % options_.checkpoint_interval != 0) return;
  if (static_cast<int64_t>(hashes.size()) < *len / bs) return;
  std::vector<BlockHash> prefix(hashes.begin(), hashes.begin() + *len / bs);
  AddBlocks(e, seq, prefix);
  BlockHash key = prefix.back();
  if (checkpoints_.count(key)) return;
  auto snap = e.SnapshotState(seq);
  if (!snap.ok()) {
    spdlog::debug("prefix cache: no slot for a checkpoint: {}", snap.status().ToString());
    return;
  }
  ckpt_lru_.push_front(key);
  checkpoints_[key] = Checkpoint{*snap, *len, ckpt_lru_.begin()};
  Emit(CacheEventRecord::kCheckpointStored, key);
  EvictCheckpoints(e);
}

void PrefixCache::EvictBlocks(engine::Engine& e) {
  while (static_cast<int64_t>(blocks_.size()) > options_.max_blocks) {
    BlockHash h = block_lru_.back();
    block_lru_.pop_back();
    Status st = e.UnrefBlock(blocks_.at(h).block);
    if (!st.ok()) spdlog::error("prefix cache: {}", st.ToString());
    blocks_.erase(h);
    evict_attention_.Inc();
    Emit(CacheEventRecord::kAttnEvicted, h);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.block_evictions++;
  }
  entries_attention_.Set(static_cast<double>(blocks_.size()));
}

void PrefixCache::EvictCheckpoints(engine::Engine& e) {
  while (static_cast<int64_t>(checkpoints_.size()) > options_.max_checkpoints) {
    BlockHash h = ckpt_lru_.back();
    ckpt_lru_.pop_back();
    Status st = e.ReleaseSnapshot(checkpoints_.at(h).snapshot);
    if (!st.ok()) spdlog::error("prefix cache: {}", st.ToString());
    checkpoints_.erase(h);
    evict_checkpoint_.Inc();
    Emit(CacheEventRecord::kCheckpointEvicted, h);
    std::lock_guard<std::mutex> lock(mu_);
    stats_.checkpoint_evictions++;
  }
  entries_checkpoint_.Set(static_cast<double>(checkpoints_.size()));
}

void PrefixCache::Clear(engine::Engine& e) {
  for (auto& [h, b] : blocks_) {
    (void)e.UnrefBlock(b.block);
    Emit(CacheEventRecord::kAttnEvicted, h);
  }
  for (auto& [h, c] : checkpoints_) {
    (void)e.ReleaseSnapshot(c.snapshot);
    Emit(CacheEventRecord::kCheckpointEvicted, h);
  }
  blocks_.clear();
  checkpoints_.clear();
  block_lru_.clear();
  ckpt_lru_.clear();
  entries_attention_.Set(0);
  entries_checkpoint_.Set(0);
}

void PrefixCache::Emit(CacheEventRecord::Kind kind, BlockHash h) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.blocks = static_cast<int64_t>(blocks_.size());
  stats_.checkpoints = static_cast<int64_t>(checkpoints_.size());
  if (!events_.empty() && events_.back().kind == kind && events_.back().hashes.size() < 1024) {
    events_.back().hashes.push_back(h);
  } else {
    // With no router draining the events, keep only the newest ones: the router's index is a
    // hint (every hit is re-checked here), so losing old events only costs routing quality.
    if (events_.size() >= 4096) events_.erase(events_.begin(), events_.begin() + 1024);
    events_.push_back({kind, {h}});
  }
}

std::vector<CacheEventRecord> PrefixCache::Snapshot() {
  std::vector<CacheEventRecord> out(2);
  out[0].kind = CacheEventRecord::kAttnStored;
  out[1].kind = CacheEventRecord::kCheckpointStored;
  // Oldest first, so a router replaying them keeps the same recency order.
  for (auto it = block_lru_.rbegin(); it != block_lru_.rend(); ++it) out[0].hashes.push_back(*it);
  for (auto it = ckpt_lru_.rbegin(); it != ckpt_lru_.rend(); ++it) out[1].hashes.push_back(*it);
  std::lock_guard<std::mutex> lock(mu_);
  events_.clear();
  return out;
}

PrefixCacheStats PrefixCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<CacheEventRecord> PrefixCache::TakeEvents() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<CacheEventRecord> out;
  out.swap(events_);
  return out;
}

}  // namespace prfaas::serving
