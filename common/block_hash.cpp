#include "common/block_hash.h"

#include <xxhash.h>

#include <cassert>

namespace prfaas {

BlockHash HashBlock(BlockHash parent, std::span<const int32_t> block_tokens) {
  // Serialise explicitly so big-endian hosts produce the same hashes.
  std::vector<unsigned char> bytes(block_tokens.size() * 4);
  for (size_t i = 0; i < block_tokens.size(); ++i) {
    auto v = static_cast<uint32_t>(block_tokens[i]);
    bytes[4 * i + 0] = static_cast<unsigned char>(v);
    bytes[4 * i + 1] = static_cast<unsigned char>(v >> 8);
    bytes[4 * i + 2] = static_cast<unsigned char>(v >> 16);
    bytes[4 * i + 3] = static_cast<unsigned char>(v >> 24);
  }
  return XXH3_64bits_withSeed(bytes.data(), bytes.size(), parent);
}

std::vector<BlockHash> ChainedBlockHashes(std::span<const int32_t> tokens, int block_size,
                                          BlockHash root) {
  assert(block_size > 0);
  std::vector<BlockHash> out;
  if (block_size <= 0) return out;
  out.reserve(tokens.size() / block_size);
  BlockHash parent = root;
  for (size_t off = 0; off + block_size <= tokens.size(); off += block_size) {
    parent = HashBlock(parent, tokens.subspan(off, block_size));
    out.push_back(parent);
  }
  return out;
}

BlockHasher::BlockHasher(int block_size, BlockHash root) : block_size_(block_size), parent_(root) {
  assert(block_size > 0);
  pending_.reserve(block_size);
}

int BlockHasher::Append(std::span<const int32_t> tokens) {
  int completed = 0;
  for (int32_t t : tokens) {
    pending_.push_back(t);
    if (static_cast<int>(pending_.size()) == block_size_) {
      parent_ = HashBlock(parent_, pending_);
      hashes_.push_back(parent_);
      pending_.clear();
      ++completed;
    }
  }
  return completed;
}

}  // namespace prfaas
