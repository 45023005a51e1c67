// PrefixCache: the hybrid prefix cache of one worker (DESIGN.md §4).
//
// Attention KV is cached per block, keyed by the chained block hash (common/block_hash.h), so any
// block-aligned prefix can be matched. GDN conv + recurrent state is only valid at one length, so
// the cache also keeps state *checkpoints* at every multiple of `checkpoint_interval` tokens. A
// prefix is reusable up to the last checkpoint that lies inside the matched attention prefix:
//   effective hit = max { c : c % C == 0, c <= attention prefix, checkpoint(c) cached }.
// A decode worker that receives the state with the bundle needs no checkpoint: its hit is the
// attention prefix itself, rounded down to a piece boundary (LookupBlocks).
//
// Bit-exactness: prefill runs in pieces that end at absolute multiples of the prefill chunk and of
// C ("piece boundaries"), and a block's KV depends on the piece it was computed in. A block is
// therefore only cached once the piece holding it is complete (SettledLength), and hits end at a
// boundary, so a reused block is always bit-identical to what a cold prefill computes.
//
// The cache owns engine references: one KV block reference per cached block and one state
// snapshot per checkpoint, within budgets that are separate from request capacity (transfer and
// running sequences never compete with cached blocks). Eviction is LRU; a sequence started from
// cached blocks holds its own engine references, so evicting a block in use is safe (it is freed
// when the sequence releases it) — those references are the leases of in-flight requests.
//
// All methods except Stats() and TakeEvents() run on the engine loop thread.
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/block_hash.h"
#include "common/metrics.h"
#include "engine/engine.h"

namespace prfaas::serving {

struct PrefixCacheOptions {
  int64_t block_size = 64;
  int64_t checkpoint_interval = 256;  // C, a multiple of block_size
  int64_t max_blocks = 256;           // attention blocks the cache may hold
  int64_t max_checkpoints = 16;       // state snapshots the cache may hold
  int64_t prefill_chunk = 0;          // pieces also end at multiples of this (0 = only C)
};

struct CacheHit {
  int64_t attention_tokens = 0;  // matched attention prefix
  int64_t tokens = 0;            // effective (usable) hit
  std::vector<int32_t> blocks;   // engine blocks for [0, tokens)
  engine::SnapshotId snapshot = -1;
};

// A stored/evicted notification for the router's global cache index.
struct CacheEventRecord {
  enum Kind { kAttnStored, kAttnEvicted, kCheckpointStored, kCheckpointEvicted } kind;
  std::vector<BlockHash> hashes;
};

struct PrefixCacheStats {
  int64_t blocks = 0, checkpoints = 0;
  int64_t lookups = 0, lookup_tokens = 0, attention_hit_tokens = 0, hit_tokens = 0;
  int64_t block_evictions = 0, checkpoint_evictions = 0;
};

class PrefixCache {
 public:
  PrefixCache(PrefixCacheOptions options, metrics::Registry& registry);

  const PrefixCacheOptions& options() const { return options_; }

  // Longest usable prefix of a prompt with these block hashes, leaving at least one token of the
  // prompt (`prompt_tokens`) to compute. Marks what it returns as recently used.
  CacheHit Lookup(const std::vector<BlockHash>& hashes, int64_t prompt_tokens);
  // Decode side: the longest cached attention prefix, ending at a piece boundary and short of the
  // whole prompt (the sender always brings the state with at least one token of KV). No snapshot:
  // the state arrives with the bundle. Counted under service="decode", kind="attention".
  CacheHit LookupBlocks(const std::vector<BlockHash>& hashes, int64_t prompt_tokens);

  // The last piece boundary <= `length`: the part of a prefill of `length` tokens that was
  // computed in complete pieces, whose blocks are safe to cache.
  int64_t SettledLength(int64_t length) const;

  // Caches `seq`'s full blocks covering `hashes` (the sequence must hold at least that many).
  void AddBlocks(engine::Engine& e, engine::SequenceId seq, const std::vector<BlockHash>& hashes);
  // Takes a checkpoint of `seq`'s state; its length must be a positive multiple of C and
  // `hashes` must cover it. Also caches the blocks up to that length.
  void AddCheckpoint(engine::Engine& e, engine::SequenceId seq,
                     const std::vector<BlockHash>& hashes);

  // Drops everything (engine references released).
  void Clear(engine::Engine& e);

  PrefixCacheStats Stats() const;
  std::vector<CacheEventRecord> TakeEvents();
  // Everything resident, as stored-events (for a router that (re)connects); also drops the
  // pending events, which the snapshot supersedes. Loop thread.
  std::vector<CacheEventRecord> Snapshot();

 private:
  struct Block {
    int32_t block;
    std::list<BlockHash>::iterator lru;
  };
  struct Checkpoint {
    engine::SnapshotId snapshot;
    int64_t length;
    std::list<BlockHash>::iterator lru;
  };
  void EvictBlocks(engine::Engine& e);
  void EvictCheckpoints(engine::Engine& e);
  void Emit(CacheEventRecord::Kind kind, BlockHash h);

  const PrefixCacheOptions options_;
  std::unordered_map<BlockHash, Block> blocks_;
  std::list<BlockHash> block_lru_;                         // front = most recent
  std::unordered_map<BlockHash, Checkpoint> checkpoints_;  // keyed by the hash of the last block
  std::list<BlockHash> ckpt_lru_;

  mutable std::mutex mu_;  // guards stats_ and events_ (read from other threads)
  PrefixCacheStats stats_;
  std::vector<CacheEventRecord> events_;

  metrics::Counter& evict_attention_;
  metrics::Counter& evict_checkpoint_;
  metrics::Gauge& entries_attention_;
  metrics::Gauge& entries_checkpoint_;

  // Lookup counters of one service ("prefill": Lookup, "decode": LookupBlocks).
  struct LookupMetrics {
    LookupMetrics(metrics::Registry& r, const std::string& service, const std::string& hit_kind);
    void Record(int64_t prompt_tokens, int64_t attention_tokens, int64_t hit_tokens);
    metrics::Counter& lookup_tokens;
    metrics::Counter& hit_attention;
    metrics::Counter* hit_checkpoint;  // null for decode (no checkpoint involved)
    metrics::Counter& hits;
    metrics::Counter& misses;
  };
  void TouchBlocks(const std::vector<BlockHash>& hashes, CacheHit* hit);
  void CountLookup(int64_t prompt_tokens, const CacheHit& hit);

  LookupMetrics prefill_metrics_;
  LookupMetrics decode_metrics_;
};

}  // namespace prfaas::serving
