// PrefixCache: one simulated worker's prefix cache, an LRU over chained block hashes.
//
// Blocks hold attention KV; a block may also carry a state checkpoint (the recurrent state after
// the prefix ending at that block), which a hybrid model needs to reuse the prefix (DESIGN §4).
// Lookup returns the leading run of blocks present and the effective hit (last checkpoint inside
// that run; equal to the run for models without recurrent state). Capacity is in blocks; inserting
// past it evicts least-recently-used blocks and reports them so the caller can mirror the change
// into the router's CacheIndex, as a live worker publishes evicted events.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

namespace prfaas::sim {

class PrefixCache {
 public:
  struct Hit {
    uint32_t attention_blocks = 0;
    uint32_t effective_blocks = 0;
  };
  struct Evicted {
    std::vector<uint64_t> blocks;
    std::vector<uint64_t> checkpoints;
    void clear() {
      blocks.clear();
      checkpoints.clear();
    }
  };

  // `checkpoint_every` (blocks): 0 = one checkpoint at the end of each stored prompt; k > 0 = the
  // live worker's rule (serving/prefix_cache.h): checkpoints at every k-th block, and only the
  // blocks up to the last such boundary are stored (the rest of the prompt is not settled).
  PrefixCache(int64_t capacity_blocks, bool hybrid, int64_t checkpoint_every = 0);

  // Leading blocks of `chain` held; with touch, they become most recently used.
  Hit Lookup(std::span<const uint64_t> chain, bool touch);
  // Stores the blocks of `chain` and its checkpoints (see the constructor). Newly stored blocks and
  // checkpoints are appended to `added` (for the index); evictions go to `evicted`.
  void Insert(std::span<const uint64_t> chain, Evicted* added, Evicted* evicted);

  int64_t size() const { return static_cast<int64_t>(map_.size()); }
  int64_t capacity() const { return capacity_; }
  bool enabled() const { return capacity_ > 0; }

 private:
  struct Node {
    uint64_t hash = 0;
    uint32_t prev = kNil, next = kNil;
    bool checkpoint = false;
  };
  static constexpr uint32_t kNil = UINT32_MAX;
  void Unlink(uint32_t i);
  void PushFront(uint32_t i);

  int64_t capacity_;
  bool hybrid_;
  int64_t every_;
  std::vector<Node> nodes_;
  std::vector<uint32_t> free_;
  uint32_t head_ = kNil, tail_ = kNil;  // head = most recent
  std::unordered_map<uint64_t, uint32_t> map_;
};

}  // namespace prfaas::sim
