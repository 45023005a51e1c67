#include "router/state/cache_index.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

namespace prfaas::router {
namespace {

std::vector<uint64_t> Chain(uint64_t base, int n) {
  std::vector<uint64_t> c;
  for (int i = 0; i < n; ++i) c.push_back(base * 1000003ULL + static_cast<uint64_t>(i));
  return c;
}

WorkerHit HitFor(const std::vector<WorkerHit>& hits, WorkerIndex w) {
  for (const WorkerHit& h : hits) {
    if (h.worker == w) return h;
  }
  return WorkerHit{w, 0, 0};
}

TEST(CacheIndexTest, EffectiveHitIsLastCheckpointWithinAttentionPrefix) {
  CacheIndex index;
  const auto chain = Chain(7, 8);
  index.AddBlocks(0, std::span(chain).first(6));
  index.AddCheckpoints(0, std::vector<uint64_t>{chain[1], chain[3]});
  index.AddBlocks(1, std::span(chain).first(3));
  index.AddCheckpoints(1, std::vector<uint64_t>{chain[5]});  // beyond its attention prefix

  const auto hits = index.Match(chain);
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(HitFor(hits, 0).attention_blocks, 6u);
  EXPECT_EQ(HitFor(hits, 0).effective_blocks, 4u);
  EXPECT_EQ(HitFor(hits, 1).attention_blocks, 3u);
  EXPECT_EQ(HitFor(hits, 1).effective_blocks, 0u);
}

TEST(CacheIndexTest, GapEndsTheAttentionPrefix) {
  CacheIndex index;
  const auto chain = Chain(3, 5);
  index.AddBlocks(2, std::vector<uint64_t>{chain[0], chain[1], chain[3], chain[4]});
  index.AddCheckpoints(2, std::vector<uint64_t>{chain[1], chain[4]});
  const auto hits = index.Match(chain);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].attention_blocks, 2u);
  EXPECT_EQ(hits[0].effective_blocks, 2u);
}

TEST(CacheIndexTest, PureAttentionModelNeedsNoCheckpoints) {
  CacheIndex index(CacheIndex::Options{.hybrid = false});
  const auto chain = Chain(11, 4);
  index.AddBlocks(5, chain);
  const auto hits = index.Match(chain);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].attention_blocks, 4u);
  EXPECT_EQ(hits[0].effective_blocks, 4u);
}

TEST(CacheIndexTest, EvictionAndWorkerRemoval) {
  CacheIndex index;
  const auto chain = Chain(5, 4);
  index.AddBlocks(0, chain);
  index.AddBlocks(1, chain);
  index.AddCheckpoints(0, chain);
  index.AddCheckpoints(1, chain);
  index.RemoveBlocks(0, std::vector<uint64_t>{chain[2]});
  auto hits = index.Match(chain);
  EXPECT_EQ(HitFor(hits, 0).attention_blocks, 2u);
  EXPECT_EQ(HitFor(hits, 0).effective_blocks, 2u);
  EXPECT_EQ(HitFor(hits, 1).effective_blocks, 4u);

  index.RemoveCheckpoints(1, std::vector<uint64_t>{chain[3]});
  EXPECT_EQ(HitFor(index.Match(chain), 1).effective_blocks, 3u);

  index.RemoveWorker(1);
  EXPECT_EQ(index.entries_of(1).attention, 0u);
  EXPECT_EQ(index.entries_of(1).checkpoints, 0u);
  EXPECT_EQ(index.entries_of(0).attention, 3u);
  hits = index.Match(chain);
  ASSERT_EQ(hits.size(), 1u);
  EXPECT_EQ(hits[0].worker, 0u);
  const CacheIndexStats st = index.stats();
  EXPECT_EQ(st.attention_keys, 3u);
  EXPECT_EQ(st.attention_entries, 3u);
  EXPECT_EQ(st.checkpoint_entries, 4u);
  index.Clear();
  EXPECT_TRUE(index.Match(chain).empty());
  EXPECT_EQ(index.stats().attention_keys, 0u);
}

TEST(CacheIndexTest, AddIsIdempotent) {
  CacheIndex index;
  const auto chain = Chain(9, 3);
  index.AddBlocks(4, chain);
  index.AddBlocks(4, chain);
  EXPECT_EQ(index.stats().attention_entries, 3u);
  index.RemoveBlocks(4, chain);
  EXPECT_EQ(index.stats().attention_keys, 0u);
  EXPECT_TRUE(index.Match(chain).empty());
}

// Random adds/evictions over colliding sequential keys (Mooncake-style hash ids), checked against
// a brute-force model. Exercises probing and backward-shift deletion.
TEST(CacheIndexTest, MatchesBruteForceUnderChurn) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  CacheIndex index;
  std::map<uint64_t, std::set<WorkerIndex>> blocks, ckpts;
  constexpr int kWorkers = 9, kKeys = 3000;
  for (int step = 0; step < 40000; ++step) {
    const uint64_t key = rng() % kKeys;
    const WorkerIndex w = static_cast<WorkerIndex>(rng() % kWorkers);
    const std::vector<uint64_t> one{key};
    switch (rng() % 5) {
      case 0:
      case 1:
        index.AddBlocks(w, one);
        blocks[key].insert(w);
        break;
      case 2:
        index.RemoveBlocks(w, one);
        blocks[key].erase(w);
        break;
      case 3:
        index.AddCheckpoints(w, one);
        ckpts[key].insert(w);
        break;
      case 4:
        index.RemoveCheckpoints(w, one);
        ckpts[key].erase(w);
        break;
    }
    if (step == 20000) {
      index.RemoveWorker(3);
      for (auto& [k, s] : blocks) s.erase(3);
      for (auto& [k, s] : ckpts) s.erase(3);
    }
  }
  size_t entries = 0;
  for (auto& [k, s] : blocks) entries += s.size();
  EXPECT_EQ(index.stats().attention_entries, entries);
  // Per-worker totals (the router's cache_index_blocks gauge) agree with the model too.
  for (WorkerIndex w = 0; w < kWorkers; ++w) {
    size_t attn = 0, ck = 0;
    for (auto& [k, s] : blocks) attn += s.count(w);
    for (auto& [k, s] : ckpts) ck += s.count(w);
    EXPECT_EQ(index.entries_of(w).attention, attn) << "worker " << w;
    EXPECT_EQ(index.entries_of(w).checkpoints, ck) << "worker " << w;
  }

  for (int q = 0; q < 300; ++q) {
    std::vector<uint64_t> chain;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) chain.push_back(rng() % kKeys);
    const auto hits = index.Match(chain);
    for (WorkerIndex w = 0; w < kWorkers; ++w) {
      uint32_t attn = 0, eff = 0;
      while (attn < chain.size() && blocks[chain[attn]].count(w)) {
        ++attn;
        if (ckpts[chain[attn - 1]].count(w)) eff = attn;
      }
      const WorkerHit h = HitFor(hits, w);
      EXPECT_EQ(h.attention_blocks, attn) << "worker " << w << " query " << q;
      EXPECT_EQ(h.effective_blocks, eff) << "worker " << w << " query " << q;
    }
  }
}

}  // namespace
}  // namespace prfaas::router
