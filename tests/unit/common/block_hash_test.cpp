#include "common/block_hash.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>

namespace prfaas {
namespace {

TEST(BlockHashTest, OnlyFullBlocksAreHashed) {
  std::vector<int32_t> t(130);
  std::iota(t.begin(), t.end(), 0);
  EXPECT_EQ(ChainedBlockHashes(t, 64).size(), 2u);
  EXPECT_EQ(ChainedBlockHashes(std::span(t).first(63), 64).size(), 0u);
  EXPECT_EQ(ChainedBlockHashes(t, 1).size(), 130u);
}

// Pinned values: these hashes cross process and machine boundaries (router <-> worker), so a
// change here is a protocol change. Values computed independently with Debian's python3-xxhash:
// xxh3_64_intdigest(le_u32_bytes(block), seed=parent).
TEST(BlockHashTest, StableTestVector) {
  std::vector<int32_t> t(32);
  std::iota(t.begin(), t.end(), 0);
  auto h = ChainedBlockHashes(t, 16);
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0], 0xe27108c5798f25d8ULL) << std::hex << h[0];
  EXPECT_EQ(h[1], 0x3bc5a2a211bb6867ULL) << std::hex << h[1];
}

TEST(BlockHashTest, ChainingMakesHashDependOnPrefix) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> tok(0, 151935);
  std::vector<int32_t> a(256), b;
  for (auto& x : a) x = tok(rng);
  b = a;
  b[3] ^= 1;  // differ in block 0 only
  auto ha = ChainedBlockHashes(a, 64), hb = ChainedBlockHashes(b, 64);
  for (size_t i = 0; i < ha.size(); ++i) EXPECT_NE(ha[i], hb[i]) << i;
  // Same block content under different parents hashes differently.
  EXPECT_NE(HashBlock(1, std::span(a).first(64)), HashBlock(2, std::span(a).first(64)));
  // Shared prefix gives shared hashes.
  b = a;
  b[200] ^= 1;
  hb = ChainedBlockHashes(b, 64);
  EXPECT_EQ(ha[0], hb[0]);
  EXPECT_EQ(ha[2], hb[2]);
  EXPECT_NE(ha[3], hb[3]);
}

TEST(BlockHashTest, IncrementalMatchesBatch) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> tok(0, 255);
  std::vector<int32_t> t(1000);
  for (auto& x : t) x = tok(rng);
  BlockHasher inc(64);
  int completed = 0;
  size_t off = 0;
  std::uniform_int_distribution<int> step(1, 100);
  while (off < t.size()) {
    size_t n = std::min<size_t>(step(rng), t.size() - off);
    completed += inc.Append(std::span(t).subspan(off, n));
    off += n;
  }
  EXPECT_EQ(completed, 15);
  EXPECT_EQ(inc.hashes(), ChainedBlockHashes(t, 64));
}

}  // namespace
}  // namespace prfaas
