// Gated DeltaNet kernels (see gdn.h for the contract, kernels/cpu/gdn.cpp for the algebra).
//
// Prefill = three launches:
//   1. gdn_chunk_offsets: chunk_off[s] = number of 64-token chunks before sequence s.
//   2. gdn_chunk_local (fully parallel, one 4-warp CTA per chunk x value head): the per-chunk UT
//      transform. With K, Q raw (unnormalised) bf16 tiles and the norms folded into fp32 scalars:
//        A = strict_lower(beta_i e^(g_i - g_l) k^_i.k^_l),  T = (I + A)^-1 (16x16 diagonal blocks
//        by forward substitution in fp32, the rest blockwise with tf32 products),
//        W = T diag(beta e^g) K^,  U = T diag(beta) V,
//        P = lower(e^(g_i - g_l) q^_i.k^_l)  (intra-chunk attention, diagonal included),
//      and the per-token scalars gam (chunk-local cumulative g), qf = e^gam / |q| * scale and
//      kf = e^(gam_last - gam) / |k|. Products on mma.sync tensor cores (bf16 in, fp32 acc).
//   3. gdn_chunk_state (sequential over chunks): one 4-warp CTA per sequence x value head x 64
//      value columns, so a single sequence occupies value_heads * 2 CTAs. Each warp keeps its 16
//      columns of the state transposed (S^T, 16 x 128 fp32) in mma accumulators; per chunk:
//        Vn = U - W S;  O = qf * (Q S) + P Vn;  S = e^gam_last S + K^T (kf * Vn)
//      with S^T and Vn^T feeding the next product straight from registers, and the next chunk's
//      tiles prefetched by cp.async while this one computes.
// Only W, U (bf16, [T, H_v, 128]), P (bf16 [T, H_v, 64]) and three fp32 scalars per token and
// head cross between 2 and 3 (fla additionally round-trips per-chunk states and v_new). A single
// sequence longer than kPieceChunks chunks runs 2 and 3 piecewise on two streams, so that 2 of the
// next piece overlaps 3 of this one (gdn_chunk_prefill).
//
// Decode: one warp per (sequence, value head, 16 state columns); each lane keeps 16 rows x 4
// columns of the fp32 state in registers (read once, written once) and the reductions over d_k
// are warp shuffles, so nothing but the state's own loads stands between a load and its store.
#include <algorithm>
#include <map>
#include <mutex>

#include "kernels/cuda/common.h"
#include "kernels/cuda/gdn.h"
#include "kernels/cuda/mma.cuh"

namespace prfaas::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

constexpr int D = kGdnHeadDim;  // 128
constexpr int C = kGdnChunk;    // 64
constexpr float kL2Eps = 1e-6f;

// ---------------------------------------------------------------------------------------------
// Shared device helpers.

struct Gate {
  float g;     // log-decay
  float beta;  // write strength
};

__device__ __forceinline__ Gate load_gate(const GdnGates& gt, int64_t row, int head) {
  const float a = __bfloat162float(gt.a[row * gt.stride + head]) + gt.dt_bias[head];
  const float b = __bfloat162float(gt.b[row * gt.stride + head]);
  const float softplus = a > 20.0f ? a : log1pf(expf(a));
  return {-expf(gt.a_log[head]) * softplus, 1.0f / (1.0f + expf(-b))};
}

__device__ __forceinline__ void seq_range(const GdnArgs& a, int s, int* start, int* len) {
  if (a.cu_seqlens == nullptr) {
    *start = s;
    *len = 1;
  } else {
    *start = a.cu_seqlens[s];
    *len = a.cu_seqlens[s + 1] - *start;
  }
}

__device__ __forceinline__ float* state_ptr(const GdnArgs& a, int s, int head) {
  const int32_t slot = a.slots[s];
  if (slot < 0) return nullptr;
  return a.states.base + static_cast<int64_t>(slot) * a.states.slot_stride +
         static_cast<int64_t>(head) * D * D;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Reference: the fp32 recurrence, one CTA of 128 threads per (sequence, value head); thread c owns
// column c of the state (all 128 rows in registers), so each token is a handful of dot products.

__global__ void __launch_bounds__(D) gdn_recurrent_ref_kernel(GdnArgs a) {
  const int s = blockIdx.x;
  const int h = blockIdx.y;
  const int kh = h / (a.value_heads / a.key_heads);
  const int c = threadIdx.x;
  int start = 0, len = 0;
  seq_range(a, s, &start, &len);
  float* state = state_ptr(a, s, h);
  __shared__ float qs[D], ks[D], red[2][D / 32];
  float col[D];
#pragma unroll
  for (int r = 0; r < D; ++r) col[r] = state ? state[r * D + c] : 0.0f;
  for (int t = 0; t < len; ++t) {
    const int64_t row = start + t;
    const float qv = __bfloat162float(a.q[row * a.q_stride + kh * D + c]);
    const float kv = __bfloat162float(a.k[row * a.k_stride + kh * D + c]);
    const float sq = warp_sum(qv * qv), sk = warp_sum(kv * kv);
    if (c % 32 == 0) {
      red[0][c / 32] = sq;
      red[1][c / 32] = sk;
    }
    __syncthreads();
    float tq = 0.0f, tk = 0.0f;
    for (int w = 0; w < D / 32; ++w) {
      tq += red[0][w];
      tk += red[1][w];
    }
    qs[c] = qv * (a.scale / sqrtf(tq + kL2Eps));
    ks[c] = kv / sqrtf(tk + kL2Eps);
    __syncthreads();
    const Gate gt = load_gate(a.gates, row, h);
    const float alpha = expf(gt.g);
    float dot = 0.0f;
#pragma unroll
    for (int r = 0; r < D; ++r) {
      col[r] *= alpha;
      dot += col[r] * ks[r];
    }
    const float u = gt.beta * (__bfloat162float(a.v[row * a.v_stride + h * D + c]) - dot);
    float o = 0.0f;
#pragma unroll
    for (int r = 0; r < D; ++r) {
      col[r] += ks[r] * u;
      o += col[r] * qs[r];
    }
    a.out[(row * a.value_heads + h) * D + c] = __float2bfloat16(o);
    __syncthreads();  // qs/ks/red are rewritten by the next token
  }
  if (state && len > 0) {
#pragma unroll
    for (int r = 0; r < D; ++r) state[r * D + c] = col[r];
  }
}

void launch_ref(const GdnArgs& a, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  gdn_recurrent_ref_kernel<<<dim3(a.num_seqs, a.value_heads), D, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Decode. One warp per (sequence, value head, 16-column tile of the state): lane = 8 row groups x
// 4 column quads; lane (g, c4) owns columns 4*c4 .. +3 of the tile at rows g + 8*i, i < 16, i.e.
// 16 float4 (64 registers) of state. All 16 loads are issued before anything else, so each warp
// has 8 KB in flight; S^T k and S^T q reduce over rows across the 8 row groups with three xor
// shuffles each, so no CTA barrier sits between the loads and the stores. A warp load instruction
// covers 8 rows x 64 contiguous bytes (two full 32-byte sectors per row).
constexpr int kDecTileCols = 16;                        // state columns per warp
constexpr int kDecRowGroups = 32 / (kDecTileCols / 4);  // 8
constexpr int kDecRows = D / kDecRowGroups;             // 16 rows (float4 each) per lane
constexpr int kDecWarps = 2;  // small CTAs: batch 1 still spreads over 128 CTAs
constexpr int kDecThreads = 32 * kDecWarps;

// Adds v over the 8 row groups of the warp (lanes 4 apart); every lane gets its quad's total.
__device__ __forceinline__ float4 sum_row_groups(float4 v) {
#pragma unroll
  for (int o = kDecTileCols / 4; o < 32; o <<= 1) {
    v.x += __shfl_xor_sync(0xffffffffu, v.x, o);
    v.y += __shfl_xor_sync(0xffffffffu, v.y, o);
    v.z += __shfl_xor_sync(0xffffffffu, v.z, o);
    v.w += __shfl_xor_sync(0xffffffffu, v.w, o);
  }
  return v;
}

__device__ __forceinline__ float4 bf16x4_to_float4(uint2 raw) {
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
  return make_float4(lo.x, lo.y, hi.x, hi.y);
}

__global__ void __launch_bounds__(kDecThreads) gdn_decode_kernel(GdnArgs a) {
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int s = blockIdx.z;
  const int h = blockIdx.y;
  const int col = (blockIdx.x * kDecWarps + warp) * kDecTileCols + 4 * (lane % 4);
  const int g = lane / 4;  // row group: rows g + 8 i
  const int kh = h / (a.value_heads / a.key_heads);
  float* state = a.states.base + static_cast<int64_t>(a.slots[s]) * a.states.slot_stride +
                 static_cast<int64_t>(h) * D * D + g * D + col;
  // The state loads are the whole cost: issue them all first.
  float4 st[kDecRows];
#pragma unroll
  for (int i = 0; i < kDecRows; ++i)
    st[i] = *reinterpret_cast<const float4*>(state + i * kDecRowGroups * D);
  // q, k of this key head: lane loads elements 4*lane .. +3; the warp reduces the squared norms
  // and stages the normalised vectors in its own slice of shared memory (no CTA barrier).
  __shared__ __align__(16) float qs[kDecWarps][D], ks[kDecWarps][D];  // written as float4
  const float4 q4 = bf16x4_to_float4(*reinterpret_cast<const uint2*>(
      a.q + static_cast<int64_t>(s) * a.q_stride + kh * D + 4 * lane));
  const float4 k4 = bf16x4_to_float4(*reinterpret_cast<const uint2*>(
      a.k + static_cast<int64_t>(s) * a.k_stride + kh * D + 4 * lane));
  const float4 v4 = bf16x4_to_float4(
      *reinterpret_cast<const uint2*>(a.v + static_cast<int64_t>(s) * a.v_stride + h * D + col));
  const Gate gt = load_gate(a.gates, s, h);
  const float nq =
      a.scale / sqrtf(warp_sum(q4.x * q4.x + q4.y * q4.y + q4.z * q4.z + q4.w * q4.w) + kL2Eps);
  const float nk =
      1.0f / sqrtf(warp_sum(k4.x * k4.x + k4.y * k4.y + k4.z * k4.z + k4.w * k4.w) + kL2Eps);
  *reinterpret_cast<float4*>(&qs[warp][4 * lane]) =
      make_float4(q4.x * nq, q4.y * nq, q4.z * nq, q4.w * nq);
  *reinterpret_cast<float4*>(&ks[warp][4 * lane]) =
      make_float4(k4.x * nk, k4.y * nk, k4.z * nk, k4.w * nk);
  __syncwarp();
  const float alpha = expf(gt.g);
  // u = beta (v - (alpha S)^T k) = beta (v - alpha (S^T k)).
  float4 d = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int i = 0; i < kDecRows; ++i) {
    const float kr = ks[warp][g + i * kDecRowGroups];
    d.x += st[i].x * kr;
    d.y += st[i].y * kr;
    d.z += st[i].z * kr;
    d.w += st[i].w * kr;
  }
  d = sum_row_groups(d);
  const float4 u = make_float4(gt.beta * (v4.x - alpha * d.x), gt.beta * (v4.y - alpha * d.y),
                               gt.beta * (v4.z - alpha * d.z), gt.beta * (v4.w - alpha * d.w));
  // S <- alpha S + k u^T (stored as soon as computed);  o = S^T q.
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int i = 0; i < kDecRows; ++i) {
    const float kr = ks[warp][g + i * kDecRowGroups];
    const float qr = qs[warp][g + i * kDecRowGroups];
    st[i].x = alpha * st[i].x + kr * u.x;
    st[i].y = alpha * st[i].y + kr * u.y;
    st[i].z = alpha * st[i].z + kr * u.z;
    st[i].w = alpha * st[i].w + kr * u.w;
    o.x += st[i].x * qr;
    o.y += st[i].y * qr;
    o.z += st[i].z * qr;
    o.w += st[i].w * qr;
    *reinterpret_cast<float4*>(state + i * kDecRowGroups * D) = st[i];
  }
  o = sum_row_groups(o);
  if (g == 0) {
    const __nv_bfloat162 lo = __floats2bfloat162_rn(o.x, o.y);
    const __nv_bfloat162 hi = __floats2bfloat162_rn(o.z, o.w);
    uint2 packed;
    packed.x = *reinterpret_cast<const uint32_t*>(&lo);
    packed.y = *reinterpret_cast<const uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(a.out + (static_cast<int64_t>(s) * a.value_heads + h) * D + col) =
        packed;
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill: shared helpers.

// Loads a 64-row tile into TileAt<kWidth> layout (mma.cuh); rows >= len are zero-filled. Thread i
// always moves 16-byte chunk i % kChunks of rows i / kChunks + j * kRowStep, so its swizzled column
// is the same for every j (the row step is a multiple of 8) and the loop unrolls into plain copies.
template <int kWidth, int kThreads>
__device__ __forceinline__ void load_tile(bf16* dst, const bf16* src, int64_t stride, int len) {
  constexpr int kChunks = kWidth / 8;
  constexpr int kRowStep = kThreads / kChunks;
  static_assert(kRowStep % 8 == 0 && C % kRowStep == 0, "row step keeps the swizzle");
  const int r0 = threadIdx.x / kChunks, c = threadIdx.x % kChunks;
  bf16* d = TileAt<kWidth>(dst, r0, c);
  const bf16* src_row = src + r0 * stride + c * 8;
#pragma unroll
  for (int j = 0; j < C / kRowStep; ++j) {
    const int r = r0 + j * kRowStep;
    CpAsync16(d + j * kRowStep * kWidth, r < len ? src_row + j * kRowStep * stride : src, r < len);
  }
}

// c += a * b for one m16n8k8 tile with tf32 inputs (fp32 bit patterns, rounded by the caller).
// Fragments as in mma.cuh with k = 8: a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4],
// a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]; C as for m16n8k16.
__device__ __forceinline__ void MmaTf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t Tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

struct PrefillWs {
  int32_t* chunk_off;  // [num_seqs + 1]
  float* carry;        // [H_v, 128, 128]: state between the pieces of a pipelined sequence
  float* gam;          // [T, H_v]
  float* qf;           // [T, H_v]
  float* kf;           // [T, H_v]
  bf16* w;             // [T, H_v, 128]
  bf16* u;             // [T, H_v, 128]
  bf16* p;             // [T, H_v, 64]
};

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

// Carves the workspace; returns the bytes needed (ws may be null to only count).
size_t carve(void* base, int32_t tokens, int32_t num_seqs, int32_t value_heads, PrefillWs* ws) {
  const size_t th = static_cast<size_t>(tokens) * value_heads;
  const size_t sizes[8] = {align256(sizeof(int32_t) * (num_seqs + 1)),
                           align256(sizeof(float) * value_heads * D * D),
                           align256(sizeof(float) * th),
                           align256(sizeof(float) * th),
                           align256(sizeof(float) * th),
                           align256(sizeof(bf16) * th * D),
                           align256(sizeof(bf16) * th * D),
                           align256(sizeof(bf16) * th * C)};
  char* p = static_cast<char*>(base);
  size_t off[8], total = 0;
  for (int i = 0; i < 8; ++i) {
    off[i] = total;
    total += sizes[i];
  }
  if (ws != nullptr) {
    ws->chunk_off = reinterpret_cast<int32_t*>(p + off[0]);
    ws->carry = reinterpret_cast<float*>(p + off[1]);
    ws->gam = reinterpret_cast<float*>(p + off[2]);
    ws->qf = reinterpret_cast<float*>(p + off[3]);
    ws->kf = reinterpret_cast<float*>(p + off[4]);
    ws->w = reinterpret_cast<bf16*>(p + off[5]);
    ws->u = reinterpret_cast<bf16*>(p + off[6]);
    ws->p = reinterpret_cast<bf16*>(p + off[7]);
  }
  return total;
}

// Sequences are few; one thread scans them.
__global__ void gdn_chunk_offsets_kernel(GdnArgs a, int32_t* chunk_off) {
  if (threadIdx.x != 0) return;
  int32_t n = 0;
  for (int s = 0; s < a.num_seqs; ++s) {
    chunk_off[s] = n;
    n += (a.cu_seqlens[s + 1] - a.cu_seqlens[s] + C - 1) / C;
  }
  chunk_off[a.num_seqs] = n;
}

// Finds the chunk's sequence (binary search over chunk_off); false when ci is past the last chunk.
__device__ __forceinline__ bool locate_chunk(const GdnArgs& a, const int32_t* chunk_off, int ci,
                                             int* start, int* len) {
  if (ci >= chunk_off[a.num_seqs]) return false;
  int lo = 0, hi = a.num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (chunk_off[mid] <= ci) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  *start = a.cu_seqlens[lo] + (ci - chunk_off[lo]) * C;
  *len = min(C, a.cu_seqlens[lo + 1] - *start);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Prefill pass 2: per-chunk UT transform. One CTA of 4 warps per (chunk, value head); every
// product runs on mma.sync tensor cores with operands in registers or swizzled shared memory.
//   1. k, q, v tiles land by cp.async; each thread computes one row norm (k or q), threads 0..63
//      one token's gates and the chunk-local cumulative log-decay.
//   2. k k^T (warps 0, 1) and q k^T (warps 2, 3), lower-triangular 16-row tiles only; warp pairs
//      take row tiles {0, 3} and {1, 2} so each does 10 n8 tiles. The gated A (strictly lower,
//      fp32, over the dead q tile) and P (lower incl. diagonal, bf16, to global) are formed in
//      registers.
//   3. T = (I + A)^-1 blockwise: warp b inverts diagonal 16x16 block b by forward substitution
//      (fp32), then the blocks below it by distance d = 1..3 (block (j + d, j) on warp j),
//        T_ij = -T_ii sum_{k=j}^{i-1} A_ik T_kj,
//      with tf32 mma (T is rounded to bf16 for W and U anyway, so tf32 products lose nothing
//      that matters).
//   4. W = T diag(beta e^gam / |k|) K and U = T diag(beta) V: warp w does rows 16w..16w+15
//      (k-steps past the diagonal block skipped), stored bf16 from the accumulators; v loads
//      over the dead A while W is computed.

constexpr int kLocalWarps = 4;
constexpr int kLocalThreads = kLocalWarps * 32;
constexpr int kPitchT = C + 4;  // fp32 pitch of A and T (conflict-free tf32 A-fragment loads)

// 52 KB, so 4 CTAs fit an SM. The qa region holds q (bf16 tile), then A (fp32), then v (bf16
// tile, loaded once A is dead, while W is computed); T's blocks right of the diagonal are never
// part of T and serve as the solve's per-warp scratch.
struct LocalSmem {
  bf16 k[C * D];  // TileAt<D>
  float qa[C * kPitchT];
  float t[C * kPitchT];  // T = (I + A)^-1 on and below the diagonal blocks
  float graw[C], gam[C], beta[C], rq[C], rk[C];
};
static_assert(sizeof(float) * C * kPitchT >= sizeof(bf16) * C * D, "q and v fit the qa region");

// One warp: m16 row tile `mt` of lhs * k^T over n8 tiles 0 .. 2 mt + 1 (up to the diagonal).
__device__ __forceinline__ void tri_tile(float (&acc)[8][4], const bf16* lhs, const bf16* k, int mt,
                                         int lane) {
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
  const FragAddr<D> la(lhs, mt * 16 + (lane % 16), lane / 16);
  const FragAddr<D> ka(k, (lane % 8) + (lane / 16) * 8, (lane / 8) % 2);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4];
    LdMatrixX4(af, la.at(kk));
#pragma unroll
    for (int n2 = 0; n2 < 4; ++n2) {
      if (n2 > mt) break;
      uint32_t bk[4];
      LdMatrixX4(bk, ka.at(kk, n2 * 16));
      Mma16816(acc[2 * n2], af, bk[0], bk[1]);
      Mma16816(acc[2 * n2 + 1], af, bk[2], bk[3]);
    }
  }
}

// dst (16x16, pitch dp) = scale * X Y over `steps` k8-steps: X is 16 x 8*steps at x (pitch xp),
// Y is 8*steps x 16 at y (pitch yp), all fp32 in shared memory, tf32 products.
__device__ __forceinline__ void block_product(float* dst, int dp, const float* x, int xp,
                                              const float* y, int yp, int steps, float scale,
                                              int lane) {
  const int g = lane / 4, t = lane % 4;
  float acc[2][4] = {};
  for (int s = 0; s < steps; ++s) {
    const uint32_t af[4] = {Tf32(x[g * xp + 8 * s + t]), Tf32(x[(g + 8) * xp + 8 * s + t]),
                            Tf32(x[g * xp + 8 * s + t + 4]), Tf32(x[(g + 8) * xp + 8 * s + t + 4])};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      MmaTf32(acc[nt], af, Tf32(y[(8 * s + t) * yp + 8 * nt + g]),
              Tf32(y[(8 * s + t + 4) * yp + 8 * nt + g]));
    }
  }
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    dst[g * dp + 8 * nt + 2 * t] = scale * acc[nt][0];
    dst[g * dp + 8 * nt + 2 * t + 1] = scale * acc[nt][1];
    dst[(g + 8) * dp + 8 * nt + 2 * t] = scale * acc[nt][2];
    dst[(g + 8) * dp + 8 * nt + 2 * t + 1] = scale * acc[nt][3];
  }
}

// W or U rows 16w..16w+15 = (T diag(f)) X with X the k or v tile; stored bf16 to dst rows < len.
__device__ __forceinline__ void tu_product(bf16* dst, int64_t row_stride, const float* tm,
                                           const float* f, const bf16* x, int w, int len,
                                           int lane) {
  const int g = lane / 4, t = lane % 4;
  float acc[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
  const FragAddr<D> xa(x, (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
  const float* tr = tm + (16 * w + g) * kPitchT;
#pragma unroll
  for (int kk = 0; kk < C / 16; ++kk) {
    if (kk > w) break;  // T is zero right of the diagonal block
    const int c0 = 16 * kk + 2 * t, c1 = c0 + 8;
    const float2 f0 = *reinterpret_cast<const float2*>(&f[c0]);
    const float2 f1 = *reinterpret_cast<const float2*>(&f[c1]);
    const float2 t00 = *reinterpret_cast<const float2*>(&tr[c0]);
    const float2 t10 = *reinterpret_cast<const float2*>(&tr[8 * kPitchT + c0]);
    const float2 t01 = *reinterpret_cast<const float2*>(&tr[c1]);
    const float2 t11 = *reinterpret_cast<const float2*>(&tr[8 * kPitchT + c1]);
    const uint32_t af[4] = {
        PackBf16(t00.x * f0.x, t00.y * f0.y), PackBf16(t10.x * f0.x, t10.y * f0.y),
        PackBf16(t01.x * f1.x, t01.y * f1.y), PackBf16(t11.x * f1.x, t11.y * f1.y)};
#pragma unroll
    for (int d2 = 0; d2 < D / 16; ++d2) {
      uint32_t bx[4];
      LdMatrixX4Trans(bx, xa.at(d2, kk * 16));
      Mma16816(acc[2 * d2], af, bx[0], bx[1]);
      Mma16816(acc[2 * d2 + 1], af, bx[2], bx[3]);
    }
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = 16 * w + g + 8 * half;
    if (r >= len) continue;
    bf16* row = dst + r * row_stride + 2 * t;
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
      *reinterpret_cast<__nv_bfloat162*>(row + 8 * nt) =
          __floats2bfloat162_rn(acc[nt][2 * half], acc[nt][2 * half + 1]);
  }
}

__global__ void __launch_bounds__(kLocalThreads, 4)
    gdn_chunk_local_kernel(GdnArgs a, PrefillWs ws, int chunk_base) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  LocalSmem& sm = *reinterpret_cast<LocalSmem*>(smem_raw);
  const int h = blockIdx.y;
  const int kh = h / (a.value_heads / a.key_heads);
  const int64_t hv = a.value_heads;
  int start = 0, len = 0;
  if (!locate_chunk(a, ws.chunk_off, chunk_base + blockIdx.x, &start, &len)) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, tq = lane % 4;

  // 1. Loads, gates, norms, cumulative log-decay.
  load_tile<D, kLocalThreads>(sm.k, a.k + static_cast<int64_t>(start) * a.k_stride + kh * D,
                              a.k_stride, len);
  bf16* sq = reinterpret_cast<bf16*>(sm.qa);
  load_tile<D, kLocalThreads>(sq, a.q + static_cast<int64_t>(start) * a.q_stride + kh * D,
                              a.q_stride, len);
  CpAsyncCommit();
  if (tid < C) {
    const Gate gt = tid < len ? load_gate(a.gates, start + tid, h) : Gate{0.0f, 0.0f};
    sm.graw[tid] = gt.g;
    sm.beta[tid] = gt.beta;
  }
  CpAsyncWait<0>();
  __syncthreads();
  {
    const int r = tid % C;
    const bf16* tile = tid < C ? sm.k : sq;
    float sq = 0.0f;
#pragma unroll
    for (int c = 0; c < D / 8; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(TileAt<D>(const_cast<bf16*>(tile), r, c));
      const __nv_bfloat162* p2 = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 f = __bfloat1622float2(p2[j]);
        sq = fmaf(f.x, f.x, fmaf(f.y, f.y, sq));
      }
    }
    if (tid < C) {
      sm.rk[r] = 1.0f / sqrtf(sq + kL2Eps);
    } else {
      sm.rq[r] = a.scale / sqrtf(sq + kL2Eps);
    }
  }
  if (tid < C) {  // inclusive scan of g over the chunk: shuffles per warp, warp 1 adds warp 0's sum
    float cum = sm.graw[tid];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float up = __shfl_up_sync(0xffffffffu, cum, o);
      if (lane >= o) cum += up;
    }
    if (tid >= 32) cum += warp_sum(sm.graw[lane]);
    sm.gam[tid] = cum;
  }

  // 2. k k^T / q k^T for row tiles {w % 2, 3 - w % 2}.
  const bool is_q = warp >= 2;
  const int mts[2] = {warp % 2, 3 - warp % 2};
  float acc[2][8][4];
#pragma unroll
  for (int i = 0; i < 2; ++i) tri_tile(acc[i], is_q ? sq : sm.k, sm.k, mts[i], lane);
  __syncthreads();  // norms and gam visible; q dead (A overwrites it)
  const float glast = sm.gam[len - 1];
  if (tid < len) {
    const int64_t idx = static_cast<int64_t>(start + tid) * hv + h;
    const float cum = sm.gam[tid];
    ws.gam[idx] = cum;
    ws.qf[idx] = sm.rq[tid] * expf(cum);
    ws.kf[idx] = sm.rk[tid] * expf(glast - cum);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int mt = mts[i];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = 16 * mt + g + 8 * half;
      const float gr = sm.gam[r];
      const float rowf = is_q ? sm.rq[r] : sm.beta[r] * sm.rk[r];
      bf16* prow = ws.p + ((start + r) * hv + h) * C;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt > 2 * mt + 1) break;
        float vals[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int l = 8 * nt + 2 * tq + j;
          const bool keep = is_q ? l <= r : l < r;
          vals[j] =
              keep ? rowf * sm.rk[l] * __expf(gr - sm.gam[l]) * acc[i][nt][2 * half + j] : 0.0f;
        }
        if (is_q) {
          if (r < len)
            *reinterpret_cast<__nv_bfloat162*>(prow + 8 * nt + 2 * tq) =
                __floats2bfloat162_rn(vals[0], vals[1]);
        } else {
          *reinterpret_cast<float2*>(&sm.qa[r * kPitchT + 8 * nt + 2 * tq]) =
              make_float2(vals[0], vals[1]);
        }
      }
    }
  }
  __syncthreads();

  // 3a. Diagonal block `warp` by forward substitution: lane c (and its twin c + 16) owns column c,
  // T[i][c] = delta_ic - sum_{l<i} A[i][l] T[l][c]. Blocks right of the diagonal are never read.
  {
    const int b = warp, c = lane % 16;
    const float* ab = sm.qa + 16 * b * kPitchT + 16 * b;
    float col[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      float acc_i = 0.0f;
#pragma unroll
      for (int l = 0; l < i; ++l) acc_i = fmaf(ab[i * kPitchT + l], col[l], acc_i);
      col[i] = i < c ? 0.0f : (i == c ? 1.0f : -acc_i);
    }
    if (lane < 16) {
#pragma unroll
      for (int i = 0; i < 16; ++i) sm.t[(16 * b + i) * kPitchT + 16 * b + c] = col[i];
    }
  }
  __syncthreads();
  // 3b. Off-diagonal blocks, one distance at a time; block (i, j = i - d) on warp j, with block
  // (j, 3) of T (right of the diagonal, j < 3) as its scratch.
  for (int d = 1; d < C / 16; ++d) {
    const int j = warp, i = warp + d;
    if (i < C / 16) {
      float* m = sm.t + 16 * j * kPitchT + 48;
      block_product(m, kPitchT, sm.qa + 16 * i * kPitchT + 16 * j, kPitchT,
                    sm.t + 16 * j * kPitchT + 16 * j, kPitchT, 2 * d, 1.0f, lane);
      __syncwarp();
      block_product(sm.t + 16 * i * kPitchT + 16 * j, kPitchT, sm.t + 16 * i * kPitchT + 16 * i,
                    kPitchT, m, kPitchT, 2, -1.0f, lane);
      __syncwarp();  // the scratch is rewritten at the next distance
    }
    __syncthreads();
  }

  // 4. W (while v loads over the dead A), then U.
  bf16* sv = reinterpret_cast<bf16*>(sm.qa);
  load_tile<D, kLocalThreads>(sv, a.v + static_cast<int64_t>(start) * a.v_stride + h * D,
                              a.v_stride, len);
  CpAsyncCommit();
  float* fw = sm.graw;  // graw is dead: reuse it for W's column factors
  if (tid < C) fw[tid] = sm.beta[tid] * expf(sm.gam[tid]) * sm.rk[tid];
  __syncthreads();
  tu_product(ws.w + (start * hv + h) * D, hv * D, sm.t, fw, sm.k, warp, len, lane);
  CpAsyncWait<0>();
  __syncthreads();
  tu_product(ws.u + (start * hv + h) * D, hv * D, sm.t, sm.beta, sv, warp, len, lane);
}

// ---------------------------------------------------------------------------------------------
// Prefill pass 3: the sequential state pass. One CTA per (sequence, value head, 64 value columns
// of the state); each of its 4 warps owns 16 value columns, i.e. S^T rows [16w, 16w + 16) x all
// 128 keys, as mma.sync accumulators (16 n8 tiles, 64 floats per lane). Keeping S^T rather than S
// makes the accumulator tile pair of keys 16kk..16kk+15 the A fragment of k-step kk (mma.cuh), so
// every product below takes S or V_new straight from registers and a warp never waits for
// another: per chunk (tokens along the n dimension, X = S^T W^T, Y = S^T Q^T)
//   Vn^T = U^T - S^T W^T;  O^T = (S^T Q^T) diag(qf) + Vn^T P^T;  S^T = e^gam_last S^T + Vn^T
//   diag(kf) K
// W, Q, K, P tiles are read by the 4 warps from shared memory with ldmatrix; the next chunk's
// tiles load (cp.async) while this one computes, with one block barrier per chunk.

constexpr int kStateWarps = 4;
constexpr int kStateThreads = kStateWarps * 32;
constexpr int kVCols = 16 * kStateWarps;  // value columns per CTA
constexpr int kPitchO = 24;               // bf16 pitch of a warp's 64 x 16 output staging tile

struct ChunkTiles {  // swizzled tiles (mma.cuh TileAt): rows = the chunk's 64 tokens
  bf16 w[C * D];
  bf16 q[C * D];
  bf16 k[C * D];
  bf16 p[C * C];
  bf16 u[C * kVCols];  // this CTA's value columns
  float qf[C], kf[C], gam[C];
};
struct StateSmem {
  ChunkTiles buf[2];
  bf16 out[kStateWarps][C * kPitchO];
};

// Rows >= len are zero-filled (tiles and scalars), so padded tokens add nothing to S.
__device__ __forceinline__ void load_chunk(const GdnArgs& a, const PrefillWs& ws, ChunkTiles& t,
                                           int start, int len, int h, int kh, int vb) {
  const int64_t hv = a.value_heads;
  load_tile<D, kStateThreads>(t.w, ws.w + (start * hv + h) * D, hv * D, len);
  load_tile<D, kStateThreads>(t.q, a.q + static_cast<int64_t>(start) * a.q_stride + kh * D,
                              a.q_stride, len);
  load_tile<D, kStateThreads>(t.k, a.k + static_cast<int64_t>(start) * a.k_stride + kh * D,
                              a.k_stride, len);
  load_tile<C, kStateThreads>(t.p, ws.p + (start * hv + h) * C, hv * C, len);
  load_tile<kVCols, kStateThreads>(t.u, ws.u + (start * hv + h) * D + vb, hv * D, len);
  // Per-token scalars: rows are hv floats apart, so 4-byte async copies.
  for (int i = threadIdx.x; i < 3 * C; i += kStateThreads) {
    const int which = i / C, r = i % C;
    float* dst = which == 0 ? t.qf : which == 1 ? t.kf : t.gam;
    const float* src = which == 0 ? ws.qf : which == 1 ? ws.kf : ws.gam;
    const bool valid = r < len;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(SmemAddr(dst + r)),
                 "l"(valid ? src + (start + r) * hv + h : src), "r"(valid ? 4 : 0));
  }
}

// Chunks [c0, c1) of every sequence (c1 clipped to its length): the state comes from the slot
// (zero when slot < 0) when c0 == 0, else from ws.carry; it goes to the slot (if any) when the
// range ends the sequence, else to ws.carry (pipelined single sequence, see gdn_chunk_prefill).
__global__ void __launch_bounds__(kStateThreads, 1)
    gdn_chunk_state_kernel(GdnArgs a, PrefillWs ws, int c0, int c1) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  StateSmem& sm = *reinterpret_cast<StateSmem*>(smem_raw);
  const int vb = blockIdx.x * kVCols;
  const int h = blockIdx.y;
  const int s = blockIdx.z;
  const int kh = h / (a.value_heads / a.key_heads);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, tq = lane % 4;
  const int seq_start = a.cu_seqlens[s];
  const int seq_len = a.cu_seqlens[s + 1] - seq_start;
  if (seq_len == 0) return;
  const int nchunks = min((seq_len + C - 1) / C, c1);
  if (c0 >= nchunks) return;
  float* slot_state = state_ptr(a, s, h);
  float* carry = ws.carry + static_cast<int64_t>(h) * D * D;
  const float* state = c0 == 0 ? slot_state : carry;
  float* state_out = nchunks == (seq_len + C - 1) / C ? slot_state : carry;
  const int vrow = vb + warp * 16 + g;  // value column of accumulator rows g (e < 2) / g + 8

  // st[nt][e] = S^T[vrow + 8 (e >> 1)][8 nt + 2 tq + (e & 1)] = S[key][value].
  float st[D / 8][4];
#pragma unroll
  for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      st[nt][e] = state ? state[(8 * nt + 2 * tq + (e & 1)) * D + vrow + 8 * (e >> 1)] : 0.0f;

  // ldmatrix addressing (mma.cuh FragAddr), set up on buffer 0; buffer 1 is kBufBytes further.
  // B operands read as [n][k] tiles (W, Q: n = token, k = key; P: n = query token, k = key token),
  // U^T as the accumulator layout of [token][value] (transposed), K as a [k = token][n = key] tile.
  constexpr uint32_t kBufBytes = sizeof(ChunkTiles);
  const int nk_row = (lane % 8) + (lane / 16) * 8, nk_x = (lane / 8) % 2;
  const FragAddr<D> wa(sm.buf[0].w, nk_row, nk_x);
  const FragAddr<D> qa(sm.buf[0].q, nk_row, nk_x);
  const FragAddr<C> pa(sm.buf[0].p, nk_row, nk_x);
  const uint32_t ua = SmemAddr(TileAt<kVCols>(sm.buf[0].u, nk_row, 2 * warp + nk_x));  // U^T rows
  const FragAddr<D> ka(sm.buf[0].k, (lane % 8) + ((lane / 8) % 2) * 8, lane / 16);
  bf16* so = sm.out[warp];

  load_chunk(a, ws, sm.buf[0], seq_start + c0 * C, min(C, seq_len - c0 * C), h, kh, vb);
  CpAsyncCommit();
  for (int ch = c0; ch < nchunks; ++ch) {
    const int start = seq_start + ch * C;
    const int len = min(C, seq_start + seq_len - start);
    const int buf = (ch - c0) & 1;
    const ChunkTiles& t = sm.buf[buf];
    const uint32_t boff = buf * kBufBytes;
    CpAsyncWait<0>();  // this chunk's tiles have landed
    __syncthreads();   // ... for every thread, and everyone is done with the other buffer
    if (ch + 1 < nchunks) {
      load_chunk(a, ws, sm.buf[buf ^ 1], start + C, min(C, seq_start + seq_len - start - C), h, kh,
                 vb);
    }
    CpAsyncCommit();

    // X = S^T W^T and Y = S^T Q^T (16 values x 64 tokens each), S^T rounded to bf16 once per
    // k-step.
    float x[C / 8][4], y[C / 8][4];
#pragma unroll
    for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) x[nt][e] = y[nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t sa[4];
      AccToA(sa, st[2 * kk], st[2 * kk + 1]);
#pragma unroll
      for (int n2 = 0; n2 < C / 16; ++n2) {
        uint32_t bw[4], bq[4];
        LdMatrixX4(bw, wa.at(kk, n2 * 16) + boff);
        LdMatrixX4(bq, qa.at(kk, n2 * 16) + boff);
        Mma16816(x[2 * n2], sa, bw[0], bw[1]);
        Mma16816(x[2 * n2 + 1], sa, bw[2], bw[3]);
        Mma16816(y[2 * n2], sa, bq[0], bq[1]);
        Mma16816(y[2 * n2 + 1], sa, bq[2], bq[3]);
      }
    }
    // Vn^T = U^T - X (in x), read U^T in the accumulator layout with a transposing ldmatrix.
#pragma unroll
    for (int n2 = 0; n2 < C / 16; ++n2) {
      uint32_t ut[4];
      LdMatrixX4Trans(ut, ua + n2 * 16 * kVCols * 2 + boff);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float2 lo =
            __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ut[2 * half]));
        const float2 hi =
            __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ut[2 * half + 1]));
        float* v = x[2 * n2 + half];
        v[0] = lo.x - v[0];
        v[1] = lo.y - v[1];
        v[2] = hi.x - v[2];
        v[3] = hi.y - v[3];
      }
    }
    // O^T = Y diag(qf) + Vn^T P^T; P is lower triangular, so key-token block kk only meets query
    // tokens n2 >= kk.
#pragma unroll
    for (int nt = 0; nt < C / 8; ++nt) {
      const float2 qf = *reinterpret_cast<const float2*>(&t.qf[8 * nt + 2 * tq]);
      y[nt][0] *= qf.x;
      y[nt][1] *= qf.y;
      y[nt][2] *= qf.x;
      y[nt][3] *= qf.y;
    }
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      uint32_t va[4];
      AccToA(va, x[2 * kk], x[2 * kk + 1]);
#pragma unroll
      for (int n2 = kk; n2 < C / 16; ++n2) {
        uint32_t bp[4];
        LdMatrixX4(bp, pa.at(kk, n2 * 16) + boff);
        Mma16816(y[2 * n2], va, bp[0], bp[1]);
        Mma16816(y[2 * n2 + 1], va, bp[2], bp[3]);
      }
    }
    // O rows go out as 16-byte pieces: transpose through this warp's staging tile.
#pragma unroll
    for (int nt = 0; nt < C / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        so[(8 * nt + 2 * tq + (e & 1)) * kPitchO + g + 8 * (e >> 1)] = __float2bfloat16(y[nt][e]);
    __syncwarp();
    for (int i = lane; i < 2 * len; i += 32) {
      const int row = i / 2, half = i % 2;
      *reinterpret_cast<uint4*>(
          a.out + (static_cast<int64_t>(start + row) * a.value_heads + h) * D + vb + warp * 16 +
          half * 8) = *reinterpret_cast<const uint4*>(&so[row * kPitchO + half * 8]);
    }
    // S^T = e^gam_last S^T + (Vn^T diag(kf)) K.
    const float decay = __expf(t.gam[len - 1]);
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nt][e] *= decay;
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      const float2 k0 = *reinterpret_cast<const float2*>(&t.kf[16 * kk + 2 * tq]);
      const float2 k1 = *reinterpret_cast<const float2*>(&t.kf[16 * kk + 8 + 2 * tq]);
      const uint32_t va[4] = {PackBf16(x[2 * kk][0] * k0.x, x[2 * kk][1] * k0.y),
                              PackBf16(x[2 * kk][2] * k0.x, x[2 * kk][3] * k0.y),
                              PackBf16(x[2 * kk + 1][0] * k1.x, x[2 * kk + 1][1] * k1.y),
                              PackBf16(x[2 * kk + 1][2] * k1.x, x[2 * kk + 1][3] * k1.y)};
#pragma unroll
      for (int d2 = 0; d2 < D / 16; ++d2) {
        uint32_t bk[4];
        LdMatrixX4Trans(bk, ka.at(d2, kk * 16) + boff);
        Mma16816(st[2 * d2], va, bk[0], bk[1]);
        Mma16816(st[2 * d2 + 1], va, bk[2], bk[3]);
      }
    }
  }
  CpAsyncWait<0>();
  if (state_out) {
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        state_out[(8 * nt + 2 * tq + (e & 1)) * D + vrow + 8 * (e >> 1)] = st[nt][e];
  }
}

// Chunks per piece of a pipelined single sequence (see gdn_chunk_prefill): 4K tokens, so a 16K
// prompt has 4 pieces and its first state piece starts after a quarter of the per-chunk pass.
constexpr int kPieceChunks = 64;

// The high-priority stream the state pieces run on, and the event that orders them, one pair per
// device (created on first use, never destroyed: they live as long as the process).
struct PipelineStreams {
  std::mutex mu;
  cudaStream_t state = nullptr;
  cudaEvent_t ready = nullptr;
};
PipelineStreams& pipeline_streams() {
  static std::mutex init_mu;
  static std::map<int, PipelineStreams> per_device;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard lock(init_mu);
  PipelineStreams& ps = per_device[device];
  if (ps.state == nullptr) {
    int lowest = 0, highest = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lowest, &highest));
    CUDA_CHECK(cudaStreamCreateWithPriority(&ps.state, cudaStreamNonBlocking, highest));
    CUDA_CHECK(cudaEventCreateWithFlags(&ps.ready, cudaEventDisableTiming));
  }
  return ps;
}

}  // namespace

size_t gdn_chunk_prefill_workspace_bytes(int32_t total_tokens, int32_t num_seqs,
                                         int32_t /*key_heads*/, int32_t value_heads) {
  return carve(nullptr, total_tokens, num_seqs, value_heads, nullptr);
}

void gdn_chunk_prefill(const GdnArgs& a, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream) {
  if (a.num_seqs == 0 || a.total_tokens == 0) return;
  PrefillWs ws;
  const size_t need = carve(workspace, a.total_tokens, a.num_seqs, a.value_heads, &ws);
  if (workspace_bytes < need)
    CudaFail(cudaErrorInvalidValue, "gdn workspace too small", __FILE__, __LINE__);
  // Opt in to more than 48 KiB of shared memory (cheap; not a stream operation, so capturable).
  CUDA_CHECK(cudaFuncSetAttribute(gdn_chunk_local_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(sizeof(LocalSmem))));
  CUDA_CHECK(cudaFuncSetAttribute(gdn_chunk_state_kernel,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(sizeof(StateSmem))));
  gdn_chunk_offsets_kernel<<<1, 32, 0, stream>>>(a, ws.chunk_off);
  CUDA_CHECK_LAUNCH();
  const dim3 state_grid(D / kVCols, a.value_heads, a.num_seqs);
  auto local = [&](cudaStream_t st, int chunk_base, int chunks) {
    gdn_chunk_local_kernel<<<dim3(chunks, a.value_heads), kLocalThreads, sizeof(LocalSmem), st>>>(
        a, ws, chunk_base);
    CUDA_CHECK_LAUNCH();
  };
  auto state = [&](cudaStream_t st, int c0, int c1) {
    gdn_chunk_state_kernel<<<state_grid, kStateThreads, sizeof(StateSmem), st>>>(a, ws, c0, c1);
    CUDA_CHECK_LAUNCH();
  };
  const int chunks = (a.total_tokens + C - 1) / C;  // of the only sequence, when num_seqs == 1
  if (a.num_seqs > 1 || chunks <= kPieceChunks) {
    local(stream, 0, a.total_tokens / C + a.num_seqs);
    state(stream, 0, INT32_MAX);
    return;
  }
  // One long sequence: its state pass occupies only 2 x value_heads SMs, so the per-chunk pass
  // of piece p + 1 runs (on `stream`) while the state pass of piece p runs on a high-priority
  // stream beside it, each state piece waiting for its chunks; the state crosses pieces in
  // ws.carry. Fork and join go through events, so this stays capturable.
  PipelineStreams& ps = pipeline_streams();
  std::lock_guard lock(ps.mu);
  for (int c0 = 0; c0 < chunks; c0 += kPieceChunks) {
    const int n = std::min(kPieceChunks, chunks - c0);
    local(stream, c0, n);
    CUDA_CHECK(cudaEventRecord(ps.ready, stream));
    CUDA_CHECK(cudaStreamWaitEvent(ps.state, ps.ready, 0));
    state(ps.state, c0, c0 + n);
  }
  CUDA_CHECK(cudaEventRecord(ps.ready, ps.state));
  CUDA_CHECK(cudaStreamWaitEvent(stream, ps.ready, 0));
}

void gdn_chunk_prefill_ref(const GdnArgs& a, cudaStream_t stream) {
  launch_ref(a, stream);
}

void gdn_decode(const GdnArgs& a, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  // Grid z (sequences) allows 65535; the engine's decode batches are far below that.
  gdn_decode_kernel<<<dim3(D / (kDecTileCols * kDecWarps), a.value_heads, a.num_seqs), kDecThreads,
                      0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void gdn_decode_ref(const GdnArgs& a, cudaStream_t stream) {
  GdnArgs one = a;
  one.cu_seqlens = nullptr;  // row s is sequence s
  launch_ref(one, stream);
}

}  // namespace prfaas::kernels::cuda
