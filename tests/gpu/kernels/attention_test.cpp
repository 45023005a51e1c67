// GPU attention (kernels/cuda/attention.h) against the float64 CPU reference
// kernels::cpu::ref::CausalAttention: varlen prefill with cached prefixes and paged decode with
// split-K, head_dim 128 / 256 (fast paths) and 64 (reference fallback), fresh random inputs,
// NaN-poisoned outputs, relative error (||out - ref|| / ||ref||) <= 1e-2 for bf16. Also checks
// that the new K/V rows landed in the right cache slots and that nothing else in the cache moved.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ref.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.h"

namespace prfaas::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

struct Case {
  int head_dim, q_heads, kv_heads, block_size;
  std::vector<int> new_tokens;  // t_s
  std::vector<int> first_pos;   // cached prefix per sequence
};

enum class Impl { kFast, kRef };

template <typename T>
T* ToDevice(const std::vector<T>& h) {
  T* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, std::max<size_t>(1, h.size()) * sizeof(T)));
  if (!h.empty()) CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
std::vector<T> ToHost(const T* d, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

std::vector<bf16> RandomBf16(size_t n, float stddev, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<bf16> v(n);
  for (auto& x : v) x = float_to_bf16(dist(rng));
  return v;
}

// Runs one batch (prefill when decode is false) and checks it; returns the relative error.
double RunCase(const Case& c, Impl impl, bool decode, bool with_workspace, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int n = static_cast<int>(c.new_tokens.size());
  const int hd = c.head_dim, row = c.kv_heads * hd, bs = c.block_size;
  std::vector<int32_t> cu(n + 1, 0);
  int max_new = 0, max_ctx = 0, max_blocks = 1;
  for (int s = 0; s < n; ++s) {
    cu[s + 1] = cu[s] + c.new_tokens[s];
    max_new = std::max(max_new, c.new_tokens[s]);
    const int ctx = c.first_pos[s] + c.new_tokens[s];
    max_ctx = std::max(max_ctx, ctx);
    max_blocks = std::max(max_blocks, (ctx + bs - 1) / bs);
  }
  const int total = cu[n];
  // Pool with 3 spare blocks, handed out in random order; the engine's interleaved layout
  // ([block][K|V][block_size][row]) so that block_stride != block_size * row is exercised.
  const int pool_blocks = n * max_blocks + 3;
  std::vector<int32_t> ids(pool_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(n) * max_blocks);
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = ids[i];
  const int64_t block_stride = 2LL * bs * row;
  std::vector<bf16> pool = RandomBf16(static_cast<size_t>(pool_blocks) * block_stride, 1.0f, rng);
  std::vector<bf16> q = RandomBf16(static_cast<size_t>(total) * c.q_heads * hd, 2.0f, rng);
  std::vector<bf16> k = RandomBf16(static_cast<size_t>(total) * row, 1.0f, rng);
  std::vector<bf16> v = RandomBf16(static_cast<size_t>(total) * row, 1.0f, rng);

  bf16* d_pool = ToDevice(pool);
  bf16* d_q = ToDevice(q);
  bf16* d_k = ToDevice(k);
  bf16* d_v = ToDevice(v);
  int32_t* d_cu = ToDevice(cu);
  std::vector<int32_t> first(c.first_pos.begin(), c.first_pos.end());
  int32_t* d_first = ToDevice(first);
  int32_t* d_tables = ToDevice(tables);
  bf16* d_out = nullptr;
  const size_t out_n = static_cast<size_t>(total) * c.q_heads * hd;
  CUDA_CHECK(cudaMalloc(&d_out, out_n * sizeof(bf16)));
  CUDA_CHECK(cudaMemset(d_out, 0xFF, out_n * sizeof(bf16)));  // 0xFFFF is a bf16 NaN

  AttentionBatch b;
  b.q = d_q;
  b.k_new = d_k;
  b.v_new = d_v;
  b.out = d_out;
  b.cu_seqlens = decode ? nullptr : d_cu;
  b.first_pos = d_first;
  b.cache.k_cache = d_pool;
  b.cache.v_cache = d_pool + static_cast<int64_t>(bs) * row;
  b.cache.block_stride = block_stride;
  b.cache.block_size = bs;
  b.cache.block_tables = d_tables;
  b.cache.block_table_stride = max_blocks;
  b.num_seqs = n;
  b.total_tokens = total;
  b.max_new_tokens = max_new;
  b.max_context = max_ctx;
  b.q_heads = c.q_heads;
  b.kv_heads = c.kv_heads;
  b.head_dim = hd;
  b.scale = 1.0f / std::sqrt(static_cast<float>(hd));

  void* ws = nullptr;
  size_t ws_bytes = 0;
  if (decode) {
    if (with_workspace) {
      ws_bytes = AttentionDecodeWorkspaceBytes(n, c.q_heads, hd, max_ctx);
      if (ws_bytes > 0) {
        CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
        CUDA_CHECK(cudaMemset(ws, 0xFF, ws_bytes));  // stale partials must never be read
      }
    }
    if (impl == Impl::kFast) {
      AttentionDecode(b, ws, ws_bytes, nullptr);
    } else {
      AttentionDecodeRef(b, nullptr);
    }
  } else if (impl == Impl::kFast) {
    AttentionPrefill(b, nullptr);
  } else {
    AttentionPrefillRef(b, nullptr);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<bf16> out = ToHost(d_out, out_n);
  const std::vector<bf16> pool_after = ToHost(d_pool, pool.size());

  // Expected cache: the initial pool with each sequence's new rows written at its positions.
  std::vector<bf16> pool_expect = pool;
  for (int s = 0; s < n; ++s) {
    for (int i = 0; i < c.new_tokens[s]; ++i) {
      const int pos = c.first_pos[s] + i;
      const int64_t off = tables[s * max_blocks + pos / bs] * block_stride + (pos % bs) * row;
      std::memcpy(&pool_expect[off], &k[(cu[s] + i) * static_cast<size_t>(row)],
                  row * sizeof(bf16));
      std::memcpy(&pool_expect[off + static_cast<int64_t>(bs) * row],
                  &v[(cu[s] + i) * static_cast<size_t>(row)], row * sizeof(bf16));
    }
  }
  EXPECT_EQ(0, std::memcmp(pool_expect.data(), pool_after.data(), pool.size() * sizeof(bf16)))
      << "cache contents differ from the expected write";

  // float64 reference per sequence over contiguous K/V gathered from the expected cache.
  double err2 = 0, ref2 = 0;
  int64_t nan_count = 0;
  for (int s = 0; s < n; ++s) {
    const int t = c.new_tokens[s], ctx = c.first_pos[s] + t;
    if (t == 0) continue;
    std::vector<double> kd(static_cast<size_t>(ctx) * row), vd(kd.size());
    for (int pos = 0; pos < ctx; ++pos) {
      const int64_t off = tables[s * max_blocks + pos / bs] * block_stride + (pos % bs) * row;
      for (int e = 0; e < row; ++e) {
        kd[static_cast<size_t>(pos) * row + e] = bf16_to_float(pool_expect[off + e]);
        vd[static_cast<size_t>(pos) * row + e] = bf16_to_float(pool_expect[off + bs * row + e]);
      }
    }
    const size_t qn = static_cast<size_t>(t) * c.q_heads * hd;
    std::vector<double> qd(qn), od(qn);
    for (size_t e = 0; e < qn; ++e)
      qd[e] = bf16_to_float(q[cu[s] * static_cast<size_t>(c.q_heads) * hd + e]);
    cpu::ref::CausalAttention(qd.data(), t, c.q_heads, c.first_pos[s], kd.data(), vd.data(),
                              c.kv_heads, hd, 1.0 / std::sqrt(static_cast<double>(hd)), od.data());
    for (size_t e = 0; e < qn; ++e) {
      const double got = bf16_to_float(out[cu[s] * static_cast<size_t>(c.q_heads) * hd + e]);
      if (std::isnan(got)) ++nan_count;
      err2 += (got - od[e]) * (got - od[e]);
      ref2 += od[e] * od[e];
    }
  }
  EXPECT_EQ(nan_count, 0) << "unwritten or NaN outputs";
  const double rel = std::sqrt(err2 / ref2);
  EXPECT_LE(rel, 1e-2);

  for (void* p : {static_cast<void*>(d_pool), static_cast<void*>(d_q), static_cast<void*>(d_k),
                  static_cast<void*>(d_v), static_cast<void*>(d_cu), static_cast<void*>(d_first),
                  static_cast<void*>(d_tables), static_cast<void*>(d_out), ws}) {
    if (p != nullptr) CUDA_CHECK(cudaFree(p));
  }
  return rel;
}

class AttentionGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  }
  uint64_t Seed() { return std::random_device{}(); }  // fresh inputs every run
};

// Ragged lengths (not multiples of any tile), cached prefixes, an empty sequence.
const Case kPrefill128{128, 16, 2, 64, {1, 37, 200, 0, 129}, {0, 0, 70, 5, 300}};
const Case kPrefill256{256, 16, 2, 16, {1, 37, 200, 0, 129}, {0, 0, 70, 5, 300}};

TEST_F(AttentionGpuTest, PrefillFastHeadDim128) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(kPrefill128, Impl::kFast, false, false, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, PrefillFastHeadDim256) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(kPrefill256, Impl::kFast, false, false, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, PrefillRefBothHeadDims) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(kPrefill128, Impl::kRef, false, false, seed), 1e-2) << "seed " << seed;
  EXPECT_LE(RunCase(kPrefill256, Impl::kRef, false, false, seed + 1), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, PrefillLongSingleSequence) {
  const uint64_t seed = Seed();
  const Case c{256, 16, 2, 64, {700}, {0}};
  EXPECT_LE(RunCase(c, Impl::kFast, false, false, seed), 1e-2) << "seed " << seed;
  const Case c2{128, 8, 1, 32, {450}, {333}};  // other group size, prefix not block-aligned
  EXPECT_LE(RunCase(c2, Impl::kFast, false, false, seed + 1), 1e-2) << "seed " << seed;
}
// Several key tiles per query block and several query blocks per sequence, on both cache paths:
// block_size a multiple of the key tile (one block-table lookup per tile) and block_size not
// dividing it (a lookup per row); cached prefixes not aligned to the query or key tiles.
TEST_F(AttentionGpuTest, PrefillLongerSequencesAndCachePaths) {
  const uint64_t seed = Seed();
  const Case c128{128, 16, 2, 128, {700, 300, 65}, {0, 256, 1000}};
  EXPECT_LE(RunCase(c128, Impl::kFast, false, false, seed), 1e-2) << "seed " << seed;
  const Case c256{256, 16, 2, 48, {520, 129}, {77, 0}};
  EXPECT_LE(RunCase(c256, Impl::kFast, false, false, seed + 1), 1e-2) << "seed " << seed;
  const Case c256_aligned{256, 8, 2, 64, {400}, {192}};  // group of 4, tile-aligned prefix
  EXPECT_LE(RunCase(c256_aligned, Impl::kFast, false, false, seed + 2), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, PrefillOtherHeadDimFallsBackToReference) {
  const uint64_t seed = Seed();
  const Case c{64, 4, 2, 8, {33, 5}, {0, 17}};
  EXPECT_LE(RunCase(c, Impl::kFast, false, false, seed), 1e-2) << "seed " << seed;
}

// Decode: contexts from 1 to several splits long.
Case DecodeCase(int hd, int block_size) {
  const std::vector<int> ctx = {1, 2, 17, 64, 65, 300, 1000, 3001, 5000};
  Case c{hd, 16, 2, block_size, std::vector<int>(ctx.size(), 1), {}};
  for (int x : ctx) c.first_pos.push_back(x - 1);
  return c;
}
TEST_F(AttentionGpuTest, DecodeSplitKHeadDim256) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(DecodeCase(256, 64), Impl::kFast, true, true, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeSplitKHeadDim128) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(DecodeCase(128, 16), Impl::kFast, true, true, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeWithoutWorkspaceIsOneSplit) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(DecodeCase(256, 64), Impl::kFast, true, false, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeLongContextManySplits) {
  // One 70,001-key sequence (longer than the other cases by 14x): many splits, the last one
  // partial, all merged into one output; catches split-range and merge indexing errors that
  // the few-split cases above cannot.
  const uint64_t seed = Seed();
  const Case c{256, 16, 2, 64, {1}, {70000}};
  EXPECT_LE(RunCase(c, Impl::kFast, true, true, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeManyUnevenSequences) {
  // 150 sequences of random lengths (fresh per run): blocks cover several whole sequences, pieces
  // of others, and the merge sees units split across two or more blocks next to whole ones.
  const uint64_t seed = Seed();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> len(1, 2500);
  Case c{128, 16, 2, 64, std::vector<int>(150, 1), {}};
  for (int i = 0; i < 150; ++i) c.first_pos.push_back(len(rng) - 1);
  EXPECT_LE(RunCase(c, Impl::kFast, true, true, seed), 1e-2) << "seed " << seed;
  c.head_dim = 256;
  c.block_size = 16;
  EXPECT_LE(RunCase(c, Impl::kFast, true, true, seed + 1), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeRef) {
  const uint64_t seed = Seed();
  EXPECT_LE(RunCase(DecodeCase(128, 64), Impl::kRef, true, false, seed), 1e-2) << "seed " << seed;
}
TEST_F(AttentionGpuTest, DecodeGroupOfFour) {
  const uint64_t seed = Seed();
  Case c = DecodeCase(256, 32);
  c.q_heads = 8;  // Qwen3.5-9B-like group (8 q heads over 2 kv heads)
  EXPECT_LE(RunCase(c, Impl::kFast, true, true, seed), 1e-2) << "seed " << seed;
}

}  // namespace
}  // namespace prfaas::kernels::cuda
