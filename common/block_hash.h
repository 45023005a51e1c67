// Chained block hashes over token ids: the identity of a cached prefix block.
//
// The prompt is cut into full blocks of `block_size` tokens (a trailing partial block has no
// hash). Block i's hash is XXH3-64 of its token ids, serialised as little-endian uint32, seeded
// with block i-1's hash (block 0 uses kRootSeed). Equal hashes therefore mean equal prefixes,
// not just equal blocks. The values are stable across runs, machines and compilers: they are
// part of the router <-> worker protocol (common/proto CacheEvent) and pinned by a test vector.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace prfaas {

using BlockHash = uint64_t;

// Seed of the first block of every chain ("prfaas v1" in ASCII).
inline constexpr BlockHash kRootSeed = 0x7072666161732031ULL;

// Hash of one block given its parent's hash.
BlockHash HashBlock(BlockHash parent, std::span<const int32_t> block_tokens);

// Hashes of every full block of `tokens`; block_size must be > 0.
std::vector<BlockHash> ChainedBlockHashes(std::span<const int32_t> tokens, int block_size,
                                          BlockHash root = kRootSeed);

// Incremental form for token streams (decode appends tokens one at a time).
class BlockHasher {
 public:
  explicit BlockHasher(int block_size, BlockHash root = kRootSeed);
  // Appends tokens; returns how many new full blocks were completed.
  int Append(std::span<const int32_t> tokens);
  const std::vector<BlockHash>& hashes() const { return hashes_; }
  int block_size() const { return block_size_; }

 private:
  int block_size_;
  BlockHash parent_;
  std::vector<int32_t> pending_;
  std::vector<BlockHash> hashes_;
};

}  // namespace prfaas
