// Attention kernels over the paged bf16 KV cache (see attention.h for the contract).
//
// Layout of this file: the cache write, the reference kernel (one warp per query row and head),
// the online-softmax helpers, the fast prefill kernel (Hopper wgmma, FlashAttention structure: a
// block of two warpgroups owns 128 query rows of one head and streams the causal key range in
// BN-key tiles through double-buffered shared memory; S and P never leave registers; tensor-core
// helpers in mma.cuh and wgmma.cuh), and the decode kernel (mma.sync; persistent blocks, balanced
// stream-K key ranges) plus its plan and merge kernels.
#include "kernels/cuda/attention.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/common.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/wgmma.cuh"

namespace prfaas::kernels::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Sequence owning token row `row`: the largest s with cu[s] <= row (cu null: row itself).
__device__ __forceinline__ int FindSeq(const int32_t* cu, int num_seqs, int row) {
  if (cu == nullptr) return row;
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ int RowBegin(const int32_t* cu, int s) {
  return cu == nullptr ? s : cu[s];
}

// Offset (elements) of token `pos`'s row (all kv heads) in the cache of sequence `s`.
__device__ __forceinline__ int64_t CacheRowOffset(const PagedKvCache& c, int s, int pos,
                                                  int row_elems) {
  const int blk =
      c.block_tables[static_cast<int64_t>(s) * c.block_table_stride + pos / c.block_size];
  return static_cast<int64_t>(blk) * c.block_stride +
         static_cast<int64_t>(pos % c.block_size) * row_elems;
}

// Offset of the first row of a `rows`-token tile starting at key0 (a multiple of rows) when the
// tile cannot straddle a cache block (block_size % rows == 0), so the tile's rows are
// row_elems apart; -1 otherwise. One block-table lookup per tile instead of one per row keeps the
// tile loads' address arithmetic (a division and a dependent load per row) off the issue slots.
__device__ __forceinline__ int64_t TileBase(const PagedKvCache& c, int s, int key0, int rows,
                                            int row_elems) {
  if (c.block_size % rows != 0) return -1;
  return CacheRowOffset(c, s, key0, row_elems);
}

// ---------------------------------------------------------------------------------------------
// Cache write: one block per new token row, 16-byte vectors (row length is a multiple of 8).
__global__ void PagedKvWriteKernel(AttentionBatch b) {
  const int row = blockIdx.x;
  const int s = FindSeq(b.cu_seqlens, b.num_seqs, row);
  const int pos = b.first_pos[s] + row - RowBegin(b.cu_seqlens, s);
  const int row_elems = b.kv_heads * b.head_dim;
  const int64_t dst = CacheRowOffset(b.cache, s, pos, row_elems);
  const int4* ks = reinterpret_cast<const int4*>(b.k_new + static_cast<int64_t>(row) * row_elems);
  const int4* vs = reinterpret_cast<const int4*>(b.v_new + static_cast<int64_t>(row) * row_elems);
  int4* kd = reinterpret_cast<int4*>(b.cache.k_cache + dst);
  int4* vd = reinterpret_cast<int4*>(b.cache.v_cache + dst);
  for (int i = threadIdx.x; i < row_elems / 8; i += blockDim.x) {
    kd[i] = ks[i];
    vd[i] = vs[i];
  }
}

// ---------------------------------------------------------------------------------------------
// Reference: one warp per (token row, q head); scalar online softmax over keys 0..pos, each lane
// owning head_dim / 32 output dims. Slow and simple on purpose.
constexpr int kRefMaxPerLane = 16;  // head_dim <= 512

__global__ void AttentionRefKernel(AttentionBatch b) {
  const int64_t gw = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (gw >= static_cast<int64_t>(b.total_tokens) * b.q_heads) return;
  const int row = static_cast<int>(gw / b.q_heads);
  const int h = static_cast<int>(gw % b.q_heads);
  const int s = FindSeq(b.cu_seqlens, b.num_seqs, row);
  const int pos = b.first_pos[s] + row - RowBegin(b.cu_seqlens, s);
  const int kvh = h / (b.q_heads / b.kv_heads);
  const int d = b.head_dim;
  const int row_elems = b.kv_heads * d;
  float q[kRefMaxPerLane], acc[kRefMaxPerLane];
  const __nv_bfloat16* qp = b.q + (static_cast<int64_t>(row) * b.q_heads + h) * d;
#pragma unroll
  for (int i = 0; i < kRefMaxPerLane; ++i) {
    const int c = lane + 32 * i;
    q[i] = c < d ? bf16_to_float(qp[c]) : 0.0f;
    acc[i] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = 0; j <= pos; ++j) {
    const int64_t off = CacheRowOffset(b.cache, s, j, row_elems) + kvh * d;
    const __nv_bfloat16* kp = b.cache.k_cache + off;
    const __nv_bfloat16* vp = b.cache.v_cache + off;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kRefMaxPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < d) dot += q[i] * bf16_to_float(kp[c]);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float x = dot * b.scale;
    const float m_new = fmaxf(m, x);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(x - m_new);
    l = l * corr + p;
#pragma unroll
    for (int i = 0; i < kRefMaxPerLane; ++i) {
      const int c = lane + 32 * i;
      if (c < d) acc[i] = acc[i] * corr + p * bf16_to_float(vp[c]);
    }
    m = m_new;
  }
  __nv_bfloat16* op = b.out + (static_cast<int64_t>(row) * b.q_heads + h) * d;
  const float inv = 1.0f / l;
#pragma unroll
  for (int i = 0; i < kRefMaxPerLane; ++i) {
    const int c = lane + 32 * i;
    if (c < d) op[c] = float_to_bf16(acc[i] * inv);
  }
}

// Online-softmax update of one accumulator row set. s: this thread's scores of the rows it holds
// (already masked with -inf), in units of log2 (scale * log2e folded in). Returns nothing; updates
// m (running max), l (this thread's partial row sum) and rescales o.
template <int NT, int OT>
__device__ __forceinline__ void SoftmaxUpdate(float (&s)[NT][4], float (&m)[2], float (&l)[2],
                                              float (&o)[OT][4]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float mx = m[half];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    // A row with no unmasked key so far keeps m = -inf; subtract 0 then so exp2 gives 0, not NaN.
    const float base = mx == -INFINITY ? 0.0f : mx;
    const float corr = exp2f(m[half] - base);
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][2 * half] = exp2f(s[nt][2 * half] - base);
      s[nt][2 * half + 1] = exp2f(s[nt][2 * half + 1] - base);
      sum += s[nt][2 * half] + s[nt][2 * half + 1];
    }
    l[half] = l[half] * corr + sum;
    m[half] = mx;
#pragma unroll
    for (int ot = 0; ot < OT; ++ot) {
      o[ot][2 * half] *= corr;
      o[ot][2 * half + 1] *= corr;
    }
  }
}

// Online softmax of one S tile for the thread's two rows, as SoftmaxUpdate but on raw scores
// (masked ones -inf; scale * log2e applied inside the exponent's FMA) and leaving O alone: the
// factor its rows must be rescaled by goes to corr (the prefill's O may still be in flight).
template <int NT>
__device__ __forceinline__ void SoftmaxStep(float (&s)[NT][4], float scale_log2, float (&m)[2],
                                            float (&l)[2], float (&corr)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float mx = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * half], s[nt][2 * half + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    mx = fmaxf(m[half], mx * scale_log2);            // scale > 0: the max commutes with it
    const float base = mx == -INFINITY ? 0.0f : mx;  // no key yet: exp2 gives 0, not NaN
    corr[half] = exp2f(m[half] - base);
    float sum = 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      s[nt][2 * half] = exp2f(fmaf(s[nt][2 * half], scale_log2, -base));
      s[nt][2 * half + 1] = exp2f(fmaf(s[nt][2 * half + 1], scale_log2, -base));
      sum += s[nt][2 * half] + s[nt][2 * half + 1];
    }
    l[half] = l[half] * corr[half] + sum;
    m[half] = mx;
  }
}

// ---------------------------------------------------------------------------------------------
// Fast prefill (Hopper wgmma, FlashAttention-style). A block is kWgs warpgroups, each owning 64
// query rows of one (sequence, q head), BM = 64 * kWgs rows in all; it streams keys from position
// 0 up to the block's last row (forward order, so every row sees key 0 first and its running max
// is finite from the first tile on) in BN-key tiles through double-buffered shared memory, filled
// by cp.async straight from the paged cache in the 128-byte swizzled layout the wgmma
// descriptors describe (wgmma.cuh). Per tile and warpgroup: S = Q K^T (A = Q, B = K, both from
// shared memory, K-major), online softmax in registers, O += P V (A = P from registers: the S
// accumulator layout is the A-fragment layout; B = V, MN-major), pipelined as described at the
// step below, with one barrier per tile.
template <int HD, int BN>
struct PrefillCfg {
  static constexpr int kWgs = 2;  // warpgroups: 2 x 64 rows share each K/V tile
  static constexpr int kBM = 64 * kWgs;
  static constexpr int kThreads = 128 * kWgs;
  static constexpr int kNT = BN / 8;   // n8 tiles of S per thread
  static constexpr int kOT = HD / 8;   // n8 tiles of O per thread
  static constexpr int kCpr = HD / 8;  // 16-byte chunks per row
  static constexpr int kQBytes = kBM * HD * 2;
  static constexpr int kTileBytes = BN * HD * 2;  // one K or V tile
  // Q + 2 x K + 2 x V, plus slack to align the start to 1024 bytes (the swizzle's period).
  static constexpr int kSmemBytes = kQBytes + 4 * kTileBytes + 1024;
  static_assert((HD == 128 || HD == 256) && (BN == 64 || BN == 128));
};

template <int N>
__device__ __forceinline__ void WgmmaSS(float (&d)[N / 8][4], uint64_t da, uint64_t db, bool acc) {
  if constexpr (N == 64) {
    WgmmaSS64(d, da, db, acc);
  } else {
    WgmmaSS128(d, da, db, acc);
  }
}
template <int N>
__device__ __forceinline__ void WgmmaRSTransB(float (&d)[N / 8][4], const uint32_t (&a)[4],
                                              uint64_t db) {
  if constexpr (N == 128) {
    WgmmaRS128TransB(d, a, db);
  } else {
    WgmmaRS256TransB(d, a, db);
  }
}

template <int HD, int BN>
__global__ void __launch_bounds__(PrefillCfg<HD, BN>::kThreads, 1)
    AttentionPrefillKernel(AttentionBatch b) {
  using Cfg = PrefillCfg<HD, BN>;
  constexpr int kBM = Cfg::kBM, kNT = Cfg::kNT, kOT = Cfg::kOT, kCpr = Cfg::kCpr;
  constexpr int kQBytes = Cfg::kQBytes, kTileBytes = Cfg::kTileBytes;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const uint32_t raw_addr = SmemAddr(smem_raw);
  const uint32_t sq = (raw_addr + 1023) & ~1023u;  // shared addresses: Q, K[2], V[2]
  const uint32_t sk = sq + kQBytes;
  const uint32_t sv = sk + 2 * kTileBytes;
  unsigned char* smem = smem_raw + (sq - raw_addr);

  const int s = blockIdx.z;
  const int h = blockIdx.y;
  const int row0 = b.cu_seqlens[s];
  const int t = b.cu_seqlens[s + 1] - row0;
  const int m_tile = gridDim.x - 1 - blockIdx.x;  // heaviest (latest rows) first
  const int m0 = m_tile * kBM;
  if (m0 >= t) return;
  const int first = b.first_pos[s];
  const int ctx = first + t;
  const int kvh = h / (b.q_heads / b.kv_heads);
  const int row_elems = b.kv_heads * HD;
  const int q_stride = b.q_heads * HD;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid / 32) % 4, lane = tid % 32;

  // Q tile (rows past t zero-filled; their outputs are never stored).
#pragma unroll 4
  for (int c = tid; c < kBM * kCpr; c += Cfg::kThreads) {
    const int r = c / kCpr, ch = c % kCpr;
    const bool ok = m0 + r < t;
    const __nv_bfloat16* src =
        b.q + static_cast<int64_t>(row0 + (ok ? m0 + r : 0)) * q_stride + h * HD + ch * 8;
    CpAsync16(smem + Swz128Offset(kBM, r, ch), src, ok);
  }
  // K or V (cache) of keys key0 .. key0 + BN - 1 into the tile at byte `dst` of the dynamic area
  // (keys past the context zero-filled). Thread tid copies chunk column ld_ch of rows
  // ld_r0 + i * kRowStep; kRowStep is a multiple of 8, so all its rows share one swizzle phase and
  // its shared offsets step by a constant. A tile inside one cache block and the context (all but
  // the last, when block_size is a multiple of BN) is kRowsPerThread copies at a fixed stride,
  // with no per-row address arithmetic: these copies are issued by the same warps that run the
  // softmax, so their instruction count matters.
  constexpr int kRowStep = Cfg::kThreads / kCpr;
  constexpr int kRowsPerThread = BN / kRowStep;
  static_assert(kRowStep % 8 == 0 && BN % kRowStep == 0);
  const int ld_ch = tid % kCpr, ld_r0 = tid / kCpr;
  const uint32_t ld_soff = Swz128Offset(BN, ld_r0, ld_ch);
  auto load_tile = [&](uint32_t dst, const __nv_bfloat16* cache, int key0) {
    const int64_t base = TileBase(b.cache, s, key0, BN, row_elems);
    const __nv_bfloat16* src = cache + kvh * HD + ld_ch * 8;
    unsigned char* d = smem + dst + ld_soff;
    if (base >= 0 && key0 + BN <= ctx) {
      src += base + static_cast<int64_t>(ld_r0) * row_elems;
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        CpAsync16(d + i * kRowStep * 128, src + i * kRowStep * row_elems, true);
      }
    } else {
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int pos = key0 + ld_r0 + i * kRowStep;
        const bool ok = pos < ctx;
        CpAsync16(d + i * kRowStep * 128,
                  src + CacheRowOffset(b.cache, s, ok ? pos : key0, row_elems), ok);
      }
    }
  };

  const int last_key = min(first + m0 + kBM, ctx) - 1;
  const int n_tiles = last_key / BN + 1;
  const int wrow = m0 + 64 * wg;  // this warpgroup's first row
  const int g = lane / 4, tq = lane % 4;
  const int my_pos = first + wrow + 16 * warp + g;  // position of this thread's row g (+8: g + 8)
  const float scale_log2 = b.scale * kLog2e;
  // Descriptors (wgmma.cuh): Q and K K-major, V MN-major with 64-column blocks BN * 128 apart.
  const uint64_t dq = WgmmaDescSw128(sq + wg * 64 * 128, 16, 1024);
  const uint64_t dk = WgmmaDescSw128(sk, 16, 1024);
  const uint64_t dv = WgmmaDescSw128(sv, BN * 128, 1024);

  load_tile(kQBytes, b.cache.k_cache, 0);
  CpAsyncCommit();  // group: Q + K0

  float o[kOT][4];
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
  for (int ot = 0; ot < kOT; ++ot) o[ot][0] = o[ot][1] = o[ot][2] = o[ot][3] = 0.0f;
  uint32_t pa[BN / 16][4];  // P of the previous tile, bf16 A fragments

  // Step j issues S_j = Q K_j and O += P_{j-1} V_{j-1} back to back, so the softmax of S_j runs
  // while the tensor cores still work on P_{j-1} V_{j-1}; O is rescaled once that is done. K runs
  // one tile ahead of V: step j loads K_{j+1} and V_j, into the buffers of K_{j-1} and V_{j-2},
  // which steps before the barrier finished with. Steps 0 (no P yet) and n_tiles (no S) are
  // instantiated apart, so that no wgmma sits under a run-time branch (ptxas would serialise
  // them all). A warpgroup whose rows all precede tile j still computes it (fully masked: p = 0,
  // corr = 1), for the same reason: at most its block's last tile.
  auto step = [&]<bool kS, bool kPV>(int j) {
    CpAsyncWait<0>();  // K_j, V_{j-1} (and Q) landed for this thread's copies
    FenceProxyAsyncShared();
    __syncthreads();  // ... for everyone's; and every thread finished step j - 1
    if (j + 1 < n_tiles) {
      load_tile(kQBytes + ((j + 1) & 1) * kTileBytes, b.cache.k_cache, (j + 1) * BN);
    }
    if (j < n_tiles) load_tile(kQBytes + (2 + (j & 1)) * kTileBytes, b.cache.v_cache, j * BN);
    CpAsyncCommit();

    float sc[kNT][4];
    if constexpr (kS) {
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
      WgmmaPin(sc);
    }
    WgmmaPin(pa);
    WgmmaPin(o);
    WgmmaFence();
    if constexpr (kS) {
#pragma unroll
      for (int kk = 0; kk < HD / 16; ++kk) {
        const uint32_t col = (kk % 4) * 32;  // k-step's byte within its 64-column block's rows
        WgmmaSS<BN>(sc, dq + (((kk / 4) * kBM * 128 + col) >> 4),
                    dk + (((j & 1) * kTileBytes + (kk / 4) * BN * 128 + col) >> 4), kk > 0);
      }
      WgmmaCommit();
    }
    if constexpr (kPV) {
      const uint32_t vbuf = ((j - 1) & 1) * kTileBytes;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        WgmmaRSTransB<HD>(o, pa[kk], dv + ((vbuf + kk * 16 * 128) >> 4));
      }
      WgmmaCommit();
    }
    if constexpr (kS) {
      WgmmaWait<kPV ? 1 : 0>();  // S_j done; P_{j-1} V_{j-1} may still run
      WgmmaPin(sc);
      // Mask keys after the row's position (and past the context); raw scores, -inf masked.
      if (j * BN + BN - 1 > first + wrow) {
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = j * BN + nt * 8 + tq * 2 + (e & 1);
            if (key > min(my_pos + (e >> 1) * 8, ctx - 1)) sc[nt][e] = -INFINITY;
          }
        }
      }
      float corr[2];
      SoftmaxStep<kNT>(sc, scale_log2, m, l, corr);
      WgmmaWait<0>();
      WgmmaPin(o);
#pragma unroll
      for (int ot = 0; ot < kOT; ++ot) {
        o[ot][0] *= corr[0];
        o[ot][1] *= corr[0];
        o[ot][2] *= corr[1];
        o[ot][3] *= corr[1];
      }
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        AccToA(pa[kk], sc[2 * kk], sc[2 * kk + 1]);
      }
    } else {
      WgmmaWait<0>();
      WgmmaPin(o);
    }
  };
  step.template operator()<true, false>(0);
  for (int j = 1; j < n_tiles; ++j) step.template operator()<true, true>(j);
  step.template operator()<false, true>(n_tiles);
  CpAsyncWait<0>();

#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = l[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = 1.0f / sum;
    const int r = wrow + 16 * warp + g + half * 8;
    if (r < t) {
      __nv_bfloat16* op = b.out + static_cast<int64_t>(row0 + r) * q_stride + h * HD + tq * 2;
#pragma unroll
      for (int ot = 0; ot < kOT; ++ot) {
        *reinterpret_cast<__nv_bfloat162*>(op + ot * 8) =
            __floats2bfloat162_rn(o[ot][2 * half] * inv, o[ot][2 * half + 1] * inv);
      }
    }
  }
}

template <int HD, int BN>
void LaunchPrefill(const AttentionBatch& b, cudaStream_t stream) {
  using Cfg = PrefillCfg<HD, BN>;
  auto kernel = AttentionPrefillKernel<HD, BN>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  const dim3 grid(ceil_div(b.max_new_tokens, Cfg::kBM), b.q_heads, b.num_seqs);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(b);
  CUDA_CHECK_LAUNCH();
}
// ---------------------------------------------------------------------------------------------
// Fast decode, balanced over the SMs (stream-K partitioning). The work is the concatenation of
// every unit's key range (unit = (sequence, kv head), units in order s * kv_heads + kvh), cut into
// kDecChunk-key chunks. Each of W persistent blocks (as many as fit on the device at once) takes
// an equal, contiguous run of L chunks, which may end inside one unit and go on in the next. A
// batch of mixed lengths thus leaves no SM idle in a last wave (the split-per-unit scheme this
// replaces reached 69% of the copy rate at batch 32 for that reason, bench/results/
// gpu-kernels.md), and a block pays its fixed cost (query tile load, pipeline fill, cross-warp
// merge) once per piece of a unit it covers, not once per fixed-size split.
//
// A piece (DecodePiece): the group's q heads are the 16 rows of one m16 tile (rows past the group
// are zero and ignored), so each K/V byte is read once per group; each of the 4 warps streams its
// own 16-key tiles (w, w+4, ...) through a private kStages-deep cp.async ring (warp-level sync
// only), keeps its own online-softmax state, and the warps merge through shared memory at the
// end. A piece that is its whole unit writes the output; otherwise it writes a normalised fp32
// partial and its log2-sum-exp, and the merge kernel combines the pieces of each unit.
//
// Partial slots: unit u's pieces are blocks first(u) .. last(u) (first(u) = u's first chunk / L),
// stored at slots first(u) + u + piece. first(u+1) >= last(u), so slots never collide, and there
// are fewer than W + units of them (AttentionDecodeWorkspaceBytes).
constexpr int kDecWarps = 4;
constexpr int kDecKeys = 16;                     // keys per warp tile
constexpr int kDecChunk = kDecWarps * kDecKeys;  // keys per chunk: one tile for every warp

template <int HD>
struct DecodeCfg {
  static constexpr int kStages = HD >= 256 ? 3 : 4;
  static constexpr int kTileElems = kDecKeys * HD;             // one K (or V) tile
  static constexpr int kWarpElems = kStages * 2 * kTileElems;  // ring of K+V tiles
  static constexpr int kPipeBytes = kDecWarps * kWarpElems * 2;
  static constexpr int kMergeBytes = kDecWarps * 16 * (HD + 2) * 4;  // O, m, l per warp
  static constexpr int kSmemBytes =
      16 * HD * 2 + (kPipeBytes > kMergeBytes ? kPipeBytes : kMergeBytes);
};

// The plan in the workspace: plan[0] = L (chunks per block), plan[1] = N (total chunks),
// plan[2 + s] = first chunk of sequence s's first unit (s = 0..num_seqs; the last is N).
constexpr int kPlanThreads = 1024;

__device__ __forceinline__ int UnitChunks(const AttentionBatch& b, int s) {
  return ceil_div(b.first_pos[s] + 1, kDecChunk);
}

__global__ void __launch_bounds__(kPlanThreads)
    DecodePlanKernel(AttentionBatch b, int workers, int32_t* plan) {
  using Scan = cub::BlockScan<int32_t, kPlanThreads>;
  __shared__ typename Scan::TempStorage scan;
  const int per = ceil_div(b.num_seqs, kPlanThreads);
  const int s0 = min(b.num_seqs, static_cast<int>(threadIdx.x) * per);
  const int s1 = min(b.num_seqs, s0 + per);
  int32_t mine = 0;
  for (int s = s0; s < s1; ++s) mine += UnitChunks(b, s) * b.kv_heads;
  int32_t before = 0, total = 0;
  Scan(scan).ExclusiveSum(mine, before, total);
  int32_t* seq_chunk0 = plan + 2;
  for (int s = s0; s < s1; ++s) {
    seq_chunk0[s] = before;
    before += UnitChunks(b, s) * b.kv_heads;
  }
  if (threadIdx.x == 0) {
    seq_chunk0[b.num_seqs] = total;
    plan[0] = max(1, ceil_div(total, workers));
    plan[1] = total;
  }
}

// Keys [k_begin, k_end) of unit (s, kvh). whole: the piece is the unit, write `out`; otherwise
// write partial slot `slot`. Ends with a barrier, so the next piece may reuse shared memory.
template <int HD>
__device__ __forceinline__ void DecodePiece(const AttentionBatch& b, int s, int kvh, int k_begin,
                                            int k_end, bool whole, int64_t slot, float* part_o,
                                            float* part_lse, unsigned char* smem_raw) {
  using Cfg = DecodeCfg<HD>;
  constexpr int kCpr = HD / 8, kOT = HD / 8;
  __nv_bfloat16* sq = reinterpret_cast<__nv_bfloat16*>(smem_raw);
  __nv_bfloat16* pipe = sq + 16 * HD;
  const int group = b.q_heads / b.kv_heads;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int row_elems = b.kv_heads * HD;
  const int qrow = RowBegin(b.cu_seqlens, s);

  for (int c = tid; c < 16 * kCpr; c += blockDim.x) {
    const int r = c / kCpr, ch = c % kCpr;
    const bool ok = r < group;
    const __nv_bfloat16* src =
        b.q + (static_cast<int64_t>(qrow) * b.q_heads + kvh * group + (ok ? r : 0)) * HD + ch * 8;
    CpAsync16(TileAt<HD>(sq, r, ch), src, ok);
  }
  CpAsyncCommit();
  CpAsyncWait<0>();
  __syncthreads();

  __nv_bfloat16* ring = pipe + warp * Cfg::kWarpElems;
  const int n_tiles = ceil_div(k_end - k_begin, kDecKeys);
  auto issue = [&](int it) {  // warp-local tile number it -> stage it % kStages
    const int tile = warp + kDecWarps * it;
    if (tile < n_tiles) {
      __nv_bfloat16* dk = ring + (it % Cfg::kStages) * 2 * Cfg::kTileElems;
      __nv_bfloat16* dv = dk + Cfg::kTileElems;
      const int key0 = k_begin + tile * kDecKeys;
      const int64_t base = TileBase(b.cache, s, key0, kDecKeys, row_elems);
#pragma unroll
      for (int c = lane; c < kDecKeys * kCpr; c += 32) {
        const int r = c / kCpr, ch = c % kCpr;
        const bool ok = key0 + r < k_end;
        const int64_t off =
            (base >= 0 ? base + static_cast<int64_t>(r) * row_elems
                       : CacheRowOffset(b.cache, s, ok ? key0 + r : k_begin, row_elems)) +
            kvh * HD + ch * 8;
        CpAsync16(TileAt<HD>(dk, r, ch), b.cache.k_cache + off, ok);
        CpAsync16(TileAt<HD>(dv, r, ch), b.cache.v_cache + off, ok);
      }
    }
    CpAsyncCommit();  // always, so that group counting stays uniform
  };

  float o[kOT][4];
#pragma unroll
  for (int ot = 0; ot < kOT; ++ot) o[ot][0] = o[ot][1] = o[ot][2] = o[ot][3] = 0;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const float scale_log2 = b.scale * kLog2e;
  const int tq = lane % 4;
  const FragAddr<HD> qa(sq, lane % 16, lane / 16);
  const FragAddr<HD> ka(ring, (lane % 8) + (lane / 16) * 8, (lane / 8) % 2);
  const FragAddr<HD> va(ring + Cfg::kTileElems, (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);

#pragma unroll
  for (int it = 0; it < Cfg::kStages - 1; ++it) issue(it);
  for (int it = 0; warp + kDecWarps * it < n_tiles; ++it) {
    issue(it + Cfg::kStages - 1);
    CpAsyncWait<Cfg::kStages - 1>();
    __syncwarp();
    const uint32_t stage_bytes = (it % Cfg::kStages) * 2 * Cfg::kTileElems * 2;
    const int key0 = k_begin + (warp + kDecWarps * it) * kDecKeys;

    float sc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
    for (int kk = 0; kk < HD / 16; ++kk) {
      uint32_t a[4], bk[4];
      LdMatrixX4(a, qa.at(kk));
      LdMatrixX4(bk, ka.at(kk) + stage_bytes);
      Mma16816(sc[0], a, bk[0], bk[1]);
      Mma16816(sc[1], a, bk[2], bk[3]);
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + nt * 8 + tq * 2 + (e & 1);
        sc[nt][e] = key < k_end ? sc[nt][e] * scale_log2 : -INFINITY;
      }
    }
    SoftmaxUpdate<2, kOT>(sc, m, l, o);
    uint32_t a[4];
    AccToA(a, sc[0], sc[1]);
#pragma unroll
    for (int d2 = 0; d2 < kOT / 2; ++d2) {
      uint32_t bv[4];
      LdMatrixX4Trans(bv, va.at(d2) + stage_bytes);
      Mma16816(o[2 * d2], a, bv[0], bv[1]);
      Mma16816(o[2 * d2 + 1], a, bv[2], bv[3]);
    }
    __syncwarp();  // the stage is refilled by a later issue()
  }
  CpAsyncWait<0>();
  __syncthreads();  // every warp done with the ring: reuse it for the merge

  // Per warp: O (unnormalised) [16][HD], m [16], l [16] in fp32.
  float* mo = reinterpret_cast<float*>(pipe) + warp * 16 * (HD + 2);
  float* mm = mo + 16 * HD;
  float* ml = mm + 16;
  const int g = lane / 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = l[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int r = g + half * 8;
#pragma unroll
    for (int ot = 0; ot < kOT; ++ot) {
      mo[r * HD + ot * 8 + tq * 2] = o[ot][2 * half];
      mo[r * HD + ot * 8 + tq * 2 + 1] = o[ot][2 * half + 1];
    }
    if (tq == 0) {
      mm[r] = m[half];
      ml[r] = sum;
    }
  }
  __syncthreads();

  for (int e = tid; e < group * HD; e += blockDim.x) {
    const int r = e / HD, c = e % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) {
      mx = fmaxf(mx, reinterpret_cast<float*>(pipe)[w * 16 * (HD + 2) + 16 * HD + r]);
    }
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < kDecWarps; ++w) {
      const float* base = reinterpret_cast<float*>(pipe) + w * 16 * (HD + 2);
      const float wm = base[16 * HD + r];
      if (wm == -INFINITY) continue;  // warp saw no key of this piece
      const float f = exp2f(wm - mx);
      sum += f * base[16 * HD + 16 + r];
      acc += f * base[r * HD + c];
    }
    if (whole) {
      b.out[(static_cast<int64_t>(qrow) * b.q_heads + kvh * group + r) * HD + c] =
          float_to_bf16(acc / sum);
    } else {
      const int64_t pr = slot * group + r;
      part_o[pr * HD + c] = acc / sum;
      if (c == 0) part_lse[pr] = mx + log2f(sum);
    }
  }
  __syncthreads();  // the merge area is the next piece's ring
}

// plan null: one block per unit (blockIdx.x = s * kv_heads + kvh), whole units, no partials.
template <int HD>
__global__ void __launch_bounds__(kDecWarps * 32, 1)
    AttentionDecodeKernel(AttentionBatch b, const int32_t* plan, float* part_o, float* part_lse) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  if (plan == nullptr) {
    const int s = blockIdx.x / b.kv_heads, kvh = blockIdx.x % b.kv_heads;
    DecodePiece<HD>(b, s, kvh, 0, b.first_pos[s] + 1, true, 0, part_o, part_lse, smem_raw);
    return;
  }
  const int L = plan[0], total = plan[1];
  const int32_t* seq_chunk0 = plan + 2;
  int c = static_cast<int>(blockIdx.x) * L;
  const int c_end = min(total, c + L);
  if (c >= c_end) return;
  int lo = 0, hi = b.num_seqs - 1;  // sequence holding chunk c: last s with seq_chunk0[s] <= c
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (seq_chunk0[mid] <= c) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  int s = lo;
  while (c < c_end) {
    while (seq_chunk0[s + 1] <= c) ++s;
    const int ctx = b.first_pos[s] + 1;
    const int cs = ceil_div(ctx, kDecChunk);  // chunks per unit of sequence s
    const int rel = c - seq_chunk0[s];
    const int kvh = rel / cs, lc = rel % cs;
    const int hc = min(cs, lc + (c_end - c));
    const int unit0 = seq_chunk0[s] + kvh * cs;
    const int first = unit0 / L, last = (unit0 + cs - 1) / L;
    const int64_t slot = first + (static_cast<int64_t>(s) * b.kv_heads + kvh) +
                         (static_cast<int>(blockIdx.x) - first);
    DecodePiece<HD>(b, s, kvh, lc * kDecChunk, min(ctx, hc * kDecChunk), first == last, slot,
                    part_o, part_lse, smem_raw);
    c += hc - lc;
  }
}

// Merges the pieces of one (sequence, q head) whose unit was split:
// out = sum_i 2^(lse_i - M) o_i / sum_i 2^(lse_i - M).
__global__ void AttentionDecodeMergeKernel(AttentionBatch b, const int32_t* plan,
                                           const float* part_o, const float* part_lse) {
  const int64_t sh = blockIdx.x;  // s * q_heads + h
  const int s = static_cast<int>(sh / b.q_heads);
  const int h = static_cast<int>(sh % b.q_heads);
  const int group = b.q_heads / b.kv_heads;
  const int kvh = h / group, r = h % group;
  const int L = plan[0];
  const int cs = ceil_div(b.first_pos[s] + 1, kDecChunk);
  const int unit0 = plan[2 + s] + kvh * cs;
  const int first = unit0 / L, last = (unit0 + cs - 1) / L;
  if (first == last) return;  // its only piece wrote the output
  const int n = last - first + 1;
  const int64_t slot0 = first + static_cast<int64_t>(s) * b.kv_heads + kvh;
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = fmaxf(mx, part_lse[(slot0 + i) * group + r]);
  const int qrow = RowBegin(b.cu_seqlens, s);
  for (int c = threadIdx.x; c < b.head_dim; c += blockDim.x) {
    float sum = 0.0f, acc = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int64_t pr = (slot0 + i) * group + r;
      const float f = exp2f(part_lse[pr] - mx);
      sum += f;
      acc += f * part_o[pr * b.head_dim + c];
    }
    b.out[(static_cast<int64_t>(qrow) * b.q_heads + h) * b.head_dim + c] = float_to_bf16(acc / sum);
  }
}

int NumSms() {
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

// Persistent blocks for head_dim HD: as many as are resident at once on the current device. The
// occupancy query runs once per device (decode calls this every step of every attention layer).
template <int HD>
int DecodeWorkers() {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int>, kMaxDevices> per_sm_cache{};  // 0 = not measured yet
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  int per_sm = dev < kMaxDevices ? per_sm_cache[dev].load(std::memory_order_relaxed) : 0;
  if (per_sm == 0) {
    auto kernel = AttentionDecodeKernel<HD>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    DecodeCfg<HD>::kSmemBytes));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kDecWarps * 32,
                                                             DecodeCfg<HD>::kSmemBytes));
    per_sm = std::max(1, per_sm);
    if (dev < kMaxDevices) per_sm_cache[dev].store(per_sm, std::memory_order_relaxed);
  }
  return per_sm * NumSms();
}

// Blocks of one decode launch: one wave, but never more than there are chunks even if all `units`
// (sequence, kv head) pairs were max_context long.
template <int HD>
int DecodeBlocks(int64_t units, int32_t max_context) {
  const int64_t max_chunks = units * ceil_div(std::max(1, max_context), kDecChunk);
  return static_cast<int>(std::min<int64_t>(DecodeWorkers<HD>(), max_chunks));
}

// Workspace layout: the plan (num_seqs + 3 int32, rounded up to 16 bytes), then the partials:
// slots x group rows of HD floats, then slots x group log2-sum-exps. Sized with q_heads standing
// in for kv_heads and group (both <= q_heads; group * kv_heads = q_heads).
size_t DecodePlanBytes(int32_t num_seqs) {
  return ceil_div<size_t>(static_cast<size_t>(num_seqs + 3) * sizeof(int32_t), 16) * 16;
}
size_t DecodeWorkspaceBytes(int workers, int32_t num_seqs, int32_t q_heads, int32_t head_dim) {
  const size_t rows = (static_cast<size_t>(workers) + num_seqs) * q_heads;
  return DecodePlanBytes(num_seqs) + rows * (head_dim + 1) * sizeof(float);
}

template <int HD>
void LaunchDecode(const AttentionBatch& b, void* workspace, size_t workspace_bytes,
                  cudaStream_t stream) {
  using Cfg = DecodeCfg<HD>;
  const int group = b.q_heads / b.kv_heads;
  const int units = b.num_seqs * b.kv_heads;
  const int workers = DecodeBlocks<HD>(units, b.max_context);
  auto kernel = AttentionDecodeKernel<HD>;
  CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
  if (workspace == nullptr ||
      workspace_bytes < DecodeWorkspaceBytes(workers, b.num_seqs, b.q_heads, HD)) {
    kernel<<<units, kDecWarps * 32, Cfg::kSmemBytes, stream>>>(b, nullptr, nullptr, nullptr);
    CUDA_CHECK_LAUNCH();
    return;
  }
  auto* plan = static_cast<int32_t*>(workspace);
  auto* part_o = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) +
                                          DecodePlanBytes(b.num_seqs));
  float* part_lse = part_o + (static_cast<size_t>(workers) + units) * group * HD;
  DecodePlanKernel<<<1, kPlanThreads, 0, stream>>>(b, workers, plan);
  CUDA_CHECK_LAUNCH();
  kernel<<<workers, kDecWarps * 32, Cfg::kSmemBytes, stream>>>(b, plan, part_o, part_lse);
  CUDA_CHECK_LAUNCH();
  AttentionDecodeMergeKernel<<<b.num_seqs * b.q_heads, 128, 0, stream>>>(b, plan, part_o, part_lse);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void PagedKvWrite(const AttentionBatch& batch, cudaStream_t stream) {
  if (batch.total_tokens <= 0) return;
  PagedKvWriteKernel<<<batch.total_tokens, 64, 0, stream>>>(batch);
  CUDA_CHECK_LAUNCH();
}

void AttentionPrefillRef(const AttentionBatch& batch, cudaStream_t stream) {
  if (batch.total_tokens <= 0) return;
  PagedKvWrite(batch, stream);
  const int64_t threads = static_cast<int64_t>(batch.total_tokens) * batch.q_heads * 32;
  AttentionRefKernel<<<static_cast<unsigned>(ceil_div<int64_t>(threads, 128)), 128, 0, stream>>>(
      batch);
  CUDA_CHECK_LAUNCH();
}

void AttentionDecodeRef(const AttentionBatch& batch, cudaStream_t stream) {
  AttentionPrefillRef(batch, stream);  // one warp per (row, head) serves both
}

void AttentionPrefill(const AttentionBatch& batch, cudaStream_t stream) {
  if (batch.total_tokens <= 0) return;
  if (batch.cu_seqlens == nullptr || (batch.head_dim != 128 && batch.head_dim != 256)) {
    AttentionPrefillRef(batch, stream);
    return;
  }
  PagedKvWrite(batch, stream);
  if (batch.head_dim == 128) {
    LaunchPrefill<128, 128>(batch, stream);
  } else {
    LaunchPrefill<256, 64>(batch, stream);
  }
}

size_t AttentionDecodeWorkspaceBytes(int32_t num_seqs, int32_t q_heads, int32_t head_dim,
                                     int32_t max_context) {
  if (num_seqs <= 0 || (head_dim != 128 && head_dim != 256)) return 0;  // reference: none
  // As LaunchDecode, with q_heads bounding the units (kv_heads <= q_heads).
  const int64_t units = static_cast<int64_t>(num_seqs) * q_heads;
  const int workers = head_dim == 128 ? DecodeBlocks<128>(units, max_context)
                                      : DecodeBlocks<256>(units, max_context);
  return DecodeWorkspaceBytes(workers, num_seqs, q_heads, head_dim);
}

void AttentionDecode(const AttentionBatch& batch, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream) {
  if (batch.num_seqs <= 0) return;
  const int group = batch.q_heads / batch.kv_heads;
  if (group > 16 || (batch.head_dim != 128 && batch.head_dim != 256)) {
    AttentionDecodeRef(batch, stream);
    return;
  }
  PagedKvWrite(batch, stream);
  if (batch.head_dim == 128) {
    LaunchDecode<128>(batch, workspace, workspace_bytes, stream);
  } else {
    LaunchDecode<256>(batch, workspace, workspace_bytes, stream);
  }
}

}  // namespace prfaas::kernels::cuda
