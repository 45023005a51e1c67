// CacheIndex: the router's global view of which worker holds which cached prefix.
//
// Keys are chained block hashes (common/block_hash.h): block i's hash identifies the whole
// prefix of (i+1)*B tokens. Two kinds of entries are kept apart, because a hybrid model needs both
// to reuse a prefix (DESIGN §4):
//   * attention blocks: paged KV, reusable for any prefix of blocks a worker holds;
//   * state checkpoints: the recurrent/conv state after the prefix that ends at a given block,
//     usable only at exactly that length.
// For a request's hash chain, Match() reports per worker the attention prefix (leading blocks held
// without a gap) and the effective hybrid hit = the last state checkpoint at or below that
// prefix. For a pure-attention model (Options::hybrid = false) effective = attention prefix.
//
// Workers publish stored/evicted events; the owner applies them with Add*/Remove*. Workers are
// addressed by WorkerIndex (see cluster_state.h). Not thread-safe: the owner serialises access
// (the live router applies events and routes on one strand; the simulator is single-threaded).
// Cost: Match is O(matched blocks × holders per block) hash probes and stops as soon as no worker
// still matches; updates are O(1) amortised per hash; RemoveWorker is O(index size).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "router/state/cluster_state.h"

namespace prfaas::router {

// One worker's hit for a queried chain. Only workers that hold at least block 0 appear.
struct WorkerHit {
  WorkerIndex worker = kNoWorker;
  uint32_t attention_blocks = 0;  // leading blocks of the chain held as attention KV
  uint32_t effective_blocks = 0;  // usable hybrid prefix: last checkpoint <= attention_blocks
};

struct CacheIndexStats {
  size_t attention_keys = 0;     // distinct block hashes with at least one holder
  size_t attention_entries = 0;  // (hash, worker) pairs
  size_t checkpoint_keys = 0;
  size_t checkpoint_entries = 0;
};

// Entries one worker holds in the index.
struct WorkerEntries {
  size_t attention = 0;
  size_t checkpoints = 0;
};

class CacheIndex {
 public:
  struct Options {
    bool hybrid = true;          // false: pure-attention model, checkpoints are not required
    size_t expected_blocks = 0;  // pre-size the tables (avoids rehash pauses)
  };

  CacheIndex();
  explicit CacheIndex(Options options);
  ~CacheIndex();
  CacheIndex(CacheIndex&&) noexcept;
  CacheIndex& operator=(CacheIndex&&) noexcept;
  CacheIndex(const CacheIndex&) = delete;
  CacheIndex& operator=(const CacheIndex&) = delete;

  // Attention KV blocks stored on / evicted from `worker`. Idempotent.
  void AddBlocks(WorkerIndex worker, std::span<const uint64_t> hashes);
  void RemoveBlocks(WorkerIndex worker, std::span<const uint64_t> hashes);

  // State checkpoints: `hash` is the hash of the block the checkpointed prefix ends with.
  void AddCheckpoints(WorkerIndex worker, std::span<const uint64_t> hashes);
  void RemoveCheckpoints(WorkerIndex worker, std::span<const uint64_t> hashes);

  // Forgets everything `worker` holds (worker died, restarted or left).
  void RemoveWorker(WorkerIndex worker);
  void Clear();

  // Per-worker hits for `chain` (block hashes of the prompt, block 0 first), written to `out`
  // (cleared first), ordered by worker index.
  void Match(std::span<const uint64_t> chain, std::vector<WorkerHit>* out) const;
  std::vector<WorkerHit> Match(std::span<const uint64_t> chain) const;

  bool hybrid() const;
  CacheIndexStats stats() const;
  WorkerEntries entries_of(WorkerIndex worker) const;  // O(1)

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace prfaas::router
