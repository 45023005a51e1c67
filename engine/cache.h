// Cache pools of the engine: paged attention KV blocks and GDN state slots.
//
// KvBlockPool: one block id covers `block_size` tokens in EVERY full-attention layer (like vLLM's
// block tables). Block storage per attention layer is [block_size, kv_heads, head_dim] for K and
// the same for V, float32. Blocks are reference counted so sequences can share a cached prefix;
// a block returns to the free list when its count drops to zero.
//
// StateSlotPool: one slot holds, for every GDN layer, the conv state [K-1, conv_dim] and the
// recurrent state [H_v, d_k, d_v] (both float32). Slots back running sequences and state
// snapshots (prefix-cache checkpoints). Also reference counted.
//
// Neither pool is thread-safe; the owning Engine serialises access.
#pragma once

#include <cstdint>
#include <vector>

#include "common/status.h"
#include "engine/config.h"

namespace prfaas::engine {

class KvBlockPool {
 public:
  KvBlockPool(const ModelConfig& config, int64_t num_blocks, int64_t block_size);

  Result<int32_t> Allocate();  // refcount 1; RESOURCE_EXHAUSTED when empty
  void Ref(int32_t block);     // +1
  void Unref(int32_t block);   // -1, frees at 0
  int32_t RefCount(int32_t block) const { return refs_[block]; }
  // Copies K and V of every layer from src to dst (copy-on-write of shared blocks).
  void CopyBlock(int32_t src, int32_t dst);

  float* K(int64_t attn_layer, int32_t block);
  float* V(int64_t attn_layer, int32_t block);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t bytes_per_block() const;  // over all attention layers, K + V
  int64_t capacity_bytes() const { return bytes_per_block() * num_blocks_; }
  int64_t used_bytes() const { return bytes_per_block() * (num_blocks_ - free_blocks()); }

 private:
  int64_t num_layers_, num_blocks_, block_size_, row_floats_;  // row = kv_heads * head_dim
  std::vector<float> storage_;  // [layer][block][K|V][block_size][row]
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;
};

class StateSlotPool {
 public:
  StateSlotPool(const ModelConfig& config, int64_t num_slots);

  Result<int32_t> Allocate();  // zero-filled, refcount 1
  void Ref(int32_t slot);
  void Unref(int32_t slot);
  int32_t RefCount(int32_t slot) const { return refs_[slot]; }
  void CopySlot(int32_t src, int32_t dst);

  float* Conv(int64_t gdn_layer, int32_t slot);  // [K-1, conv_dim]
  float* Ssm(int64_t gdn_layer, int32_t slot);   // [H_v, d_k, d_v]
  int64_t conv_floats() const { return conv_floats_; }
  int64_t ssm_floats() const { return ssm_floats_; }

  int64_t num_slots() const { return num_slots_; }
  int64_t free_slots() const { return static_cast<int64_t>(free_.size()); }
  int64_t bytes_per_slot() const;
  int64_t capacity_bytes() const { return bytes_per_slot() * num_slots_; }
  int64_t used_bytes() const { return bytes_per_slot() * (num_slots_ - free_slots()); }

 private:
  float* Base(int32_t slot) { return storage_.data() + slot * slot_floats_; }
  int64_t num_layers_, num_slots_, conv_floats_, ssm_floats_, slot_floats_;
  std::vector<float> storage_;
  std::vector<int32_t> refs_;
  std::vector<int32_t> free_;
};

}  // namespace prfaas::engine
