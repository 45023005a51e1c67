#include <gtest/gtest.h>

#include "sim/prefix_cache.h"

namespace prfaas::sim {
namespace {

TEST(PrefixCache, LruEvictsLeastRecentlyUsedAndReportsIt) {
  PrefixCache c(4, /*hybrid=*/false);
  std::vector<uint64_t> a = {1, 2, 3};
  PrefixCache::Evicted added, ev;
  c.Insert(a, &added, &ev);
  EXPECT_EQ(added.blocks, (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_TRUE(ev.blocks.empty());
  EXPECT_EQ(c.Lookup(std::vector<uint64_t>{1, 2, 9}, true).attention_blocks, 2u);  // touches 1, 2
  added.clear();
  std::vector<uint64_t> b = {10, 11};
  c.Insert(b, &added, &ev);
  // 3 was least recently used.
  EXPECT_EQ(ev.blocks, (std::vector<uint64_t>{3}));
  EXPECT_EQ(c.size(), 4);
  EXPECT_EQ(c.Lookup(a, false).attention_blocks, 2u);
  EXPECT_EQ(c.Lookup(b, false).attention_blocks, 2u);
}

TEST(PrefixCache, HybridNeedsCheckpoint) {
  PrefixCache c(100, /*hybrid=*/true);
  std::vector<uint64_t> prompt = {1, 2, 3, 4};
  c.Insert(prompt, nullptr, nullptr);
  // A longer prompt sharing 4 blocks: attention hit 4, state checkpoint at block 4.
  auto h = c.Lookup(std::vector<uint64_t>{1, 2, 3, 4, 5}, false);
  EXPECT_EQ(h.attention_blocks, 4u);
  EXPECT_EQ(h.effective_blocks, 4u);
  // Diverging after block 2: KV for 2 blocks but no state checkpoint there.
  h = c.Lookup(std::vector<uint64_t>{1, 2, 7}, false);
  EXPECT_EQ(h.attention_blocks, 2u);
  EXPECT_EQ(h.effective_blocks, 0u);
  PrefixCache dense(100, false);
  dense.Insert(prompt, nullptr, nullptr);
  EXPECT_EQ(dense.Lookup(std::vector<uint64_t>{1, 2, 7}, false).effective_blocks, 2u);
  PrefixCache off(0, false);
  off.Insert(prompt, nullptr, nullptr);
  EXPECT_EQ(off.Lookup(prompt, false).attention_blocks, 0u);
}

TEST(PrefixCache, CheckpointIntervalAsTheLiveWorker) {
  // Checkpoints every 2 blocks: a 5-block prompt settles 4 blocks (checkpoints at 2 and 4); its
  // 5th block is not stored, as a live worker stores only completed pieces.
  PrefixCache c(100, /*hybrid=*/true, /*checkpoint_every=*/2);
  PrefixCache::Evicted added;
  c.Insert(std::vector<uint64_t>{1, 2, 3, 4, 5}, &added, nullptr);
  EXPECT_EQ(added.blocks, (std::vector<uint64_t>{1, 2, 3, 4}));
  EXPECT_EQ(added.checkpoints, (std::vector<uint64_t>{2, 4}));
  auto h = c.Lookup(std::vector<uint64_t>{1, 2, 3, 9}, false);
  EXPECT_EQ(h.attention_blocks, 3u);
  EXPECT_EQ(h.effective_blocks, 2u);  // the last checkpoint inside the match
  EXPECT_EQ(c.Lookup(std::vector<uint64_t>{1, 2, 3, 4, 5, 6}, false).effective_blocks, 4u);
  // A prompt shorter than one interval stores nothing.
  PrefixCache::Evicted none;
  c.Insert(std::vector<uint64_t>{7}, &none, nullptr);
  EXPECT_TRUE(none.blocks.empty());
  EXPECT_EQ(c.Lookup(std::vector<uint64_t>{7}, false).attention_blocks, 0u);
}

}  // namespace
}  // namespace prfaas::sim
