// KV block pool and GDN state slot pool. See cache.h.
#include "engine/cache.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace prfaas::engine {

KvBlockPool::KvBlockPool(const ModelConfig& c, int64_t num_blocks, int64_t block_size)
    : num_layers_(c.num_full_attention_layers()),
      num_blocks_(num_blocks),
      block_size_(block_size),
      row_floats_(c.num_kv_heads * c.head_dim),
      storage_(static_cast<size_t>(num_layers_ * num_blocks * 2 * block_size * row_floats_)),
      refs_(static_cast<size_t>(num_blocks), 0) {
  // Hand out low ids first.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

Result<int32_t> KvBlockPool::Allocate() {
  if (free_.empty())
    return ResourceExhausted("KV block pool exhausted (" + std::to_string(num_blocks_) +
                             " blocks of " + std::to_string(block_size_) + " tokens)");
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

void KvBlockPool::Ref(int32_t block) {
  assert(refs_[block] > 0);
  ++refs_[block];
}

void KvBlockPool::Unref(int32_t block) {
  assert(refs_[block] > 0);
  if (--refs_[block] == 0) free_.push_back(block);
}

float* KvBlockPool::K(int64_t layer, int32_t block) {
  return storage_.data() + ((layer * num_blocks_ + block) * 2) * block_size_ * row_floats_;
}

float* KvBlockPool::V(int64_t layer, int32_t block) {
  return K(layer, block) + block_size_ * row_floats_;
}

void KvBlockPool::CopyBlock(int32_t src, int32_t dst) {
  for (int64_t l = 0; l < num_layers_; ++l)
    std::memcpy(K(l, dst), K(l, src), sizeof(float) * 2 * block_size_ * row_floats_);
}

int64_t KvBlockPool::bytes_per_block() const {
  return num_layers_ * 2 * block_size_ * row_floats_ * static_cast<int64_t>(sizeof(float));
}

StateSlotPool::StateSlotPool(const ModelConfig& c, int64_t num_slots)
    : num_layers_(c.num_linear_attention_layers()),
      num_slots_(num_slots),
      conv_floats_((c.linear_conv_kernel_dim - 1) * c.conv_dim()),
      ssm_floats_(c.linear_num_value_heads * c.linear_key_head_dim * c.linear_value_head_dim),
      slot_floats_(num_layers_ * (conv_floats_ + ssm_floats_)),
      storage_(static_cast<size_t>(slot_floats_ * num_slots)),
      refs_(static_cast<size_t>(num_slots), 0) {
  for (int64_t s = num_slots - 1; s >= 0; --s) free_.push_back(static_cast<int32_t>(s));
}

Result<int32_t> StateSlotPool::Allocate() {
  if (free_.empty())
    return ResourceExhausted("GDN state slot pool exhausted (" + std::to_string(num_slots_) +
                             " slots)");
  const int32_t s = free_.back();
  free_.pop_back();
  refs_[s] = 1;
  std::fill(Base(s), Base(s) + slot_floats_, 0.0f);
  return s;
}

void StateSlotPool::Ref(int32_t slot) {
  assert(refs_[slot] > 0);
  ++refs_[slot];
}

void StateSlotPool::Unref(int32_t slot) {
  assert(refs_[slot] > 0);
  if (--refs_[slot] == 0) free_.push_back(slot);
}

void StateSlotPool::CopySlot(int32_t src, int32_t dst) {
  std::memcpy(Base(dst), Base(src), sizeof(float) * slot_floats_);
}

float* StateSlotPool::Conv(int64_t layer, int32_t slot) {
  return Base(slot) + layer * (conv_floats_ + ssm_floats_);
}

float* StateSlotPool::Ssm(int64_t layer, int32_t slot) {
  return Conv(layer, slot) + conv_floats_;
}

int64_t StateSlotPool::bytes_per_slot() const {
  return slot_floats_ * static_cast<int64_t>(sizeof(float));
}

}  // namespace prfaas::engine
