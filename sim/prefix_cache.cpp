#include "sim/prefix_cache.h"

namespace prfaas::sim {

PrefixCache::PrefixCache(int64_t capacity_blocks, bool hybrid, int64_t checkpoint_every)
    : capacity_(capacity_blocks > 0 ? capacity_blocks : 0),
      hybrid_(hybrid),
      every_(checkpoint_every > 0 ? checkpoint_every : 0) {
  if (capacity_ > 0) map_.reserve(static_cast<size_t>(std::min<int64_t>(capacity_, 1 << 20)));
}

void PrefixCache::Unlink(uint32_t i) {
  Node& n = nodes_[i];
  if (n.prev != kNil)
    nodes_[n.prev].next = n.next;
  else
    head_ = n.next;
  if (n.next != kNil)
    nodes_[n.next].prev = n.prev;
  else
    tail_ = n.prev;
  n.prev = n.next = kNil;
}

void PrefixCache::PushFront(uint32_t i) {
  Node& n = nodes_[i];
  n.prev = kNil;
  n.next = head_;
  if (head_ != kNil) nodes_[head_].prev = i;
  head_ = i;
  if (tail_ == kNil) tail_ = i;
}

PrefixCache::Hit PrefixCache::Lookup(std::span<const uint64_t> chain, bool touch) {
  Hit h;
  if (capacity_ == 0) return h;
  for (size_t b = 0; b < chain.size(); ++b) {
    auto it = map_.find(chain[b]);
    if (it == map_.end()) break;
    h.attention_blocks = static_cast<uint32_t>(b + 1);
    if (!hybrid_ || nodes_[it->second].checkpoint) h.effective_blocks = h.attention_blocks;
    if (touch) {
      Unlink(it->second);
      PushFront(it->second);
    }
  }
  return h;
}

void PrefixCache::Insert(std::span<const uint64_t> chain, Evicted* added, Evicted* evicted) {
  if (every_ > 0) {
    const auto every = static_cast<size_t>(every_);
    chain = chain.first(chain.size() / every * every);
  }
  if (capacity_ == 0 || chain.empty()) return;
  for (size_t b = 0; b < chain.size(); ++b) {
    bool ckpt = every_ > 0 ? (b + 1) % static_cast<size_t>(every_) == 0 : b + 1 == chain.size();
    auto it = map_.find(chain[b]);
    uint32_t idx;
    if (it != map_.end()) {
      idx = it->second;
      Unlink(idx);
    } else {
      if (static_cast<int64_t>(map_.size()) >= capacity_) {
        uint32_t victim = tail_;
        Unlink(victim);
        Node& v = nodes_[victim];
        if (evicted) {
          evicted->blocks.push_back(v.hash);
          if (v.checkpoint) evicted->checkpoints.push_back(v.hash);
        }
        map_.erase(v.hash);
        free_.push_back(victim);
      }
      if (!free_.empty()) {
        idx = free_.back();
        free_.pop_back();
      } else {
        idx = static_cast<uint32_t>(nodes_.size());
        nodes_.emplace_back();
      }
      nodes_[idx] = Node{chain[b], kNil, kNil, false};
      map_.emplace(chain[b], idx);
      if (added) added->blocks.push_back(chain[b]);
    }
    if (ckpt && !nodes_[idx].checkpoint) {
      nodes_[idx].checkpoint = true;
      if (added) added->checkpoints.push_back(chain[b]);
    }
    PushFront(idx);
  }
}

}  // namespace prfaas::sim
