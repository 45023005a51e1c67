// Gated DeltaNet kernels (see gdn.h for the contract, kernels/cpu/gdn.cpp for the algebra).
//
// Prefill = three launches:
//   1. gdn_chunk_offsets: chunk_off[s] = number of 64-token chunks before sequence s.
//   2. gdn_chunk_local (fully parallel, one CTA per chunk x value head): the per-chunk UT
//      transform. With K, Q raw (unnormalised) bf16 tiles and the norms folded into fp32 scalars:
//        A = strict_lower(beta_i e^(g_i - g_l) k^_i.k^_l),  T = (I + A)^-1 (blocked
//        forward substitution in fp32),  W = T diag(beta e^g) K^,  U = T diag(beta) V,
//        P = lower(e^(g_i - g_l) q^_i.k^_l)  (intra-chunk attention, diagonal included),
//      and the per-token scalars gam (chunk-local cumulative g), qf = e^gam / |q| * scale and
//      kf = e^(gam_last - gam) / |k|. All products run on tensor cores (WMMA bf16, fp32 acc).
//   3. gdn_chunk_state (sequential over chunks): one CTA per sequence x value head x 32-column
//      block of the state, so a single sequence still occupies value_heads * 4 CTAs. The state
//      block (128 x 32 fp32) lives in accumulator fragments; per chunk:
//        Vn = U - W S;  O = qf * (Q S) + P Vn;  S = e^gam_last S + K^T (kf * Vn)
//      with the next chunk's tiles prefetched by cp.async while this one computes.
// Only W, U (bf16, [T, H_v, 128]), P (bf16 [T, H_v, 64]) and three fp32 scalars per token and
// head cross between 2 and 3 (fla additionally round-trips per-chunk states and v_new).
//
// Decode: one warp per (sequence, value head, 16 state columns); each lane keeps 16 rows x 4
// columns of the fp32 state in registers (read once, written once) and the reductions over d_k
// are warp shuffles, so nothing but the state's own loads stands between a load and its store.
#include <mma.h>

#include "kernels/cuda/common.h"
#include "kernels/cuda/gdn.h"

namespace prfaas::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
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
// Prefill: cp.async helpers and the shared-memory tile shapes.

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16-byte async copy; when !valid the destination is zero-filled and src is not read.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Copies rows [0, C) of a (rows x width bf16) global tile into smem with row pitch `pitch`
// elements; rows >= len are zero-filled. width is a multiple of 8.
template <int kWidth, int kThreads>
__device__ __forceinline__ void copy_rows(bf16* dst, int pitch, const bf16* src, int64_t stride,
                                          int len) {
  constexpr int kPerRow = kWidth / 8;
  for (int i = threadIdx.x; i < C * kPerRow; i += kThreads) {
    const int r = i / kPerRow, c = (i % kPerRow) * 8;
    const bool valid = r < len;
    cp_async16(dst + r * pitch + c, valid ? src + r * stride + c : src, valid);
  }
}

constexpr int kPitchD = D + 8;  // bf16 row pitch of 128-wide tiles
constexpr int kPitchC = C + 8;  // bf16 row pitch of 64-wide tiles
constexpr int kPitchF = C + 4;  // fp32 row pitch of 64-wide tiles
constexpr int kPitchW = D + 4;  // fp32 row pitch of 128-wide tiles

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major>;
using FragAc = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major>;
using FragBc = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

struct PrefillWs {
  int32_t* chunk_off;  // [num_seqs + 1]
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
  const size_t sizes[7] = {align256(sizeof(int32_t) * (num_seqs + 1)),
                           align256(sizeof(float) * th),
                           align256(sizeof(float) * th),
                           align256(sizeof(float) * th),
                           align256(sizeof(bf16) * th * D),
                           align256(sizeof(bf16) * th * D),
                           align256(sizeof(bf16) * th * C)};
  char* p = static_cast<char*>(base);
  size_t off[7], total = 0;
  for (int i = 0; i < 7; ++i) {
    off[i] = total;
    total += sizes[i];
  }
  if (ws != nullptr) {
    ws->chunk_off = reinterpret_cast<int32_t*>(p + off[0]);
    ws->gam = reinterpret_cast<float*>(p + off[1]);
    ws->qf = reinterpret_cast<float*>(p + off[2]);
    ws->kf = reinterpret_cast<float*>(p + off[3]);
    ws->w = reinterpret_cast<bf16*>(p + off[4]);
    ws->u = reinterpret_cast<bf16*>(p + off[5]);
    ws->p = reinterpret_cast<bf16*>(p + off[6]);
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
// Prefill pass 2: per-chunk UT transform.

constexpr int kLocalThreads = 256;
constexpr int kLocalWarps = kLocalThreads / 32;

struct LocalSmem {
  bf16 k[C * kPitchD];
  bf16 q[C * kPitchD];
  bf16 v[C * kPitchD];
  float f0[C * kPitchF];  // k k^T, then A; with f1 the fp32 staging of W / U
  float f1[C * kPitchF];  // q k^T, then T
  bf16 tw[C * kPitchC];   // T diag(beta e^gam / |k|)
  bf16 tu[C * kPitchC];   // T diag(beta)
  float gam[C], beta[C], rq[C], rk[C];
};
static_assert(sizeof(float) * 2 * C * kPitchF >= sizeof(float) * C * kPitchW, "staging fits");

__global__ void __launch_bounds__(kLocalThreads, 2)
    gdn_chunk_local_kernel(GdnArgs a, PrefillWs ws) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  LocalSmem& sm = *reinterpret_cast<LocalSmem*>(smem_raw);
  const int h = blockIdx.y;
  const int kh = h / (a.value_heads / a.key_heads);
  const int hv = a.value_heads;
  int start = 0, len = 0;
  if (!locate_chunk(a, ws.chunk_off, blockIdx.x, &start, &len)) return;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  copy_rows<D, kLocalThreads>(
      sm.k, kPitchD, a.k + static_cast<int64_t>(start) * a.k_stride + kh * D, a.k_stride, len);
  copy_rows<D, kLocalThreads>(
      sm.q, kPitchD, a.q + static_cast<int64_t>(start) * a.q_stride + kh * D, a.q_stride, len);
  copy_rows<D, kLocalThreads>(sm.v, kPitchD, a.v + static_cast<int64_t>(start) * a.v_stride + h * D,
                              a.v_stride, len);
  cp_async_commit();
  if (tid < C) {
    const Gate gt = tid < len ? load_gate(a.gates, start + tid, h) : Gate{0.0f, 0.0f};
    sm.gam[tid] = gt.g;
    sm.beta[tid] = gt.beta;
  }
  cp_async_wait<0>();
  __syncthreads();
  // Inverse norms (one warp per 8 rows) and the chunk-local cumulative log-decay.
  for (int r = warp; r < C; r += kLocalWarps) {
    float sq = 0.0f, sk = 0.0f;
#pragma unroll
    for (int i = 0; i < D / 32; ++i) {
      const float qv = __bfloat162float(sm.q[r * kPitchD + lane + 32 * i]);
      const float kv = __bfloat162float(sm.k[r * kPitchD + lane + 32 * i]);
      sq += qv * qv;
      sk += kv * kv;
    }
    sq = warp_sum(sq);
    sk = warp_sum(sk);
    if (lane == 0) {
      sm.rq[r] = a.scale / sqrtf(sq + kL2Eps);
      sm.rk[r] = 1.0f / sqrtf(sk + kL2Eps);
    }
  }
  // Chunk-local inclusive cumsum of g: a shuffle scan per warp; warp 1 adds warp 0's total.
  float cum = 0.0f;
  if (tid < C) {
    cum = sm.gam[tid];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float up = __shfl_up_sync(0xffffffffu, cum, o);
      if (lane >= o) cum += up;
    }
    if (tid >= 32) cum += warp_sum(sm.gam[lane]);
  }
  // k k^T and q k^T, lower-triangular 16x16 tiles only (10 each).
  {
    constexpr int kTiles = 10;
    for (int job = warp; job < 2 * kTiles; job += kLocalWarps) {
      const int t = job % kTiles;
      int ti = 0;
      while ((ti + 1) * (ti + 2) / 2 <= t) ++ti;
      const int tj = t - ti * (ti + 1) / 2;
      const bf16* lhs = job < kTiles ? sm.k : sm.q;
      float* dst = job < kTiles ? sm.f0 : sm.f1;
      FragC acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA fa;
        FragBc fb;
        wmma::load_matrix_sync(fa, lhs + ti * 16 * kPitchD + kk * 16, kPitchD);
        wmma::load_matrix_sync(fb, sm.k + tj * 16 * kPitchD + kk * 16, kPitchD);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(dst + ti * 16 * kPitchF + tj * 16, acc, kPitchF, wmma::mem_row_major);
    }
  }
  __syncthreads();
  if (tid < C) sm.gam[tid] = cum;  // every thread has finished reading the raw g values
  __syncthreads();
  const float glast = sm.gam[len - 1];
  if (tid < len) {
    const int64_t idx = static_cast<int64_t>(start + tid) * hv + h;
    ws.gam[idx] = cum;
    ws.qf[idx] = sm.rq[tid] * expf(cum);
    ws.kf[idx] = sm.rk[tid] * expf(glast - cum);
  }
  // A (in f0) and P (to global, bf16). Thread tid always sees column l = tid % C, so the
  // column factors are loaded once.
  {
    const int l = tid % C;
    const float gl = sm.gam[l], rkl = sm.rk[l];
    bf16* prow = ws.p + (static_cast<int64_t>(start) * hv + h) * C + l;
    for (int i = tid / C; i < C; i += kLocalThreads / C) {
      const bool live = i < len;
      const float decay = l <= i && live ? __expf(sm.gam[i] - gl) : 0.0f;
      const float av = l < i ? sm.beta[i] * sm.rk[i] * rkl * sm.f0[i * kPitchF + l] * decay : 0.0f;
      sm.f0[i * kPitchF + l] = av;
      if (live) {
        const float pv = l <= i ? sm.rq[i] * rkl * sm.f1[i * kPitchF + l] * decay : 0.0f;
        prow[static_cast<int64_t>(i) * hv * C] = __float2bfloat16(pv);
      }
    }
  }
  __syncthreads();
  // T = (I + A)^-1 in 16x16 blocks (T in f1; its strictly upper blocks are never written and are
  // masked when read). Diagonal blocks by forward substitution, column j of block b solved by the
  // 4 lanes 4(16b + j) .. +3 (a column needs only its own earlier rows); then the blocks below the
  // diagonal, one block-diagonal at a time: T_ij = -T_ii sum_{k=j}^{i-1} A_ik T_kj.
  {
    constexpr int B = 16;
    float* tm = sm.f1;
    const int b = tid / (4 * B), j = (tid / 4) % B, part = tid % 4;
    const int col = b * B + j;
    for (int i = 0; i < B; ++i) {
      const int row = b * B + i;
      float acc = 0.0f;
      for (int l = j + part; l < i; l += 4)
        acc += sm.f0[row * kPitchF + b * B + l] * tm[(b * B + l) * kPitchF + col];
      acc += __shfl_xor_sync(0xffffffffu, acc, 1);
      acc += __shfl_xor_sync(0xffffffffu, acc, 2);
      if (part == 0) tm[row * kPitchF + col] = i < j ? 0.0f : (i == j ? 1.0f : -acc);
      __syncwarp();
    }
    float* m =
        reinterpret_cast<float*>(sm.tw);  // scratch: 3 blocks of 16 x 16 fp32 (tw unused yet)
    static_assert(sizeof(LocalSmem::tw) >= sizeof(float) * 3 * B * B, "scratch fits");
    for (int d = 1; d < C / B; ++d) {
      __syncthreads();  // blocks of distance < d are final
      const int nblk = C / B - d;
      for (int e = tid; e < nblk * B * B; e += kLocalThreads) {
        const int bi = d + e / (B * B), bj = bi - d, r = (e / B) % B, c = e % B;
        float acc = 0.0f;
        for (int k = bj * B; k < bi * B; ++k)
          acc += sm.f0[(bi * B + r) * kPitchF + k] * tm[k * kPitchF + bj * B + c];
        m[e] = acc;
      }
      __syncthreads();
      for (int e = tid; e < nblk * B * B; e += kLocalThreads) {
        const int bi = d + e / (B * B), bj = bi - d, r = (e / B) % B, c = e % B;
        const float* mb = m + (e / (B * B)) * B * B;
        float acc = 0.0f;
        for (int k = 0; k <= r; ++k) acc += tm[(bi * B + r) * kPitchF + bi * B + k] * mb[k * B + c];
        tm[(bi * B + r) * kPitchF + bj * B + c] = -acc;
      }
    }
  }
  __syncthreads();
  {
    const int l = tid % C;  // fixed column again: W's factor beta e^gam / |k|, U's factor beta
    const float fu = sm.beta[l], fw = fu * __expf(sm.gam[l]) * sm.rk[l];
    for (int i = tid / C; i < C; i += kLocalThreads / C) {
      const float t = l <= i ? sm.f1[i * kPitchF + l] : 0.0f;
      sm.tw[i * kPitchC + l] = __float2bfloat16(t * fw);
      sm.tu[i * kPitchC + l] = __float2bfloat16(t * fu);
    }
  }
  __syncthreads();
  // W = Tw K and U = Tu V: 8 column tiles each, row tile = warp % 4, column tiles split by warp/4.
  FragC accw[4], accu[4];
  {
    const int ti = warp % 4, tn0 = (warp / 4) * 4;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      wmma::fill_fragment(accw[n], 0.0f);
      wmma::fill_fragment(accu[n], 0.0f);
    }
#pragma unroll
    for (int kk = 0; kk < C / 16; ++kk) {
      FragA fw, fu;
      wmma::load_matrix_sync(fw, sm.tw + ti * 16 * kPitchC + kk * 16, kPitchC);
      wmma::load_matrix_sync(fu, sm.tu + ti * 16 * kPitchC + kk * 16, kPitchC);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        FragB fk, fv;
        wmma::load_matrix_sync(fk, sm.k + kk * 16 * kPitchD + (tn0 + n) * 16, kPitchD);
        wmma::load_matrix_sync(fv, sm.v + kk * 16 * kPitchD + (tn0 + n) * 16, kPitchD);
        wmma::mma_sync(accw[n], fw, fk, accw[n]);
        wmma::mma_sync(accu[n], fu, fv, accu[n]);
      }
    }
  }
  float* stage = sm.f0;  // f0 + f1, [C][kPitchW] fp32
  for (int pass = 0; pass < 2; ++pass) {
    const int ti = warp % 4, tn0 = (warp / 4) * 4;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      float* dst = stage + ti * 16 * kPitchW + (tn0 + n) * 16;
      if (pass == 0) {
        wmma::store_matrix_sync(dst, accw[n], kPitchW, wmma::mem_row_major);
      } else {
        wmma::store_matrix_sync(dst, accu[n], kPitchW, wmma::mem_row_major);
      }
    }
    __syncthreads();
    bf16* dst = pass == 0 ? ws.w : ws.u;
    for (int e = tid; e < len * (D / 8); e += kLocalThreads) {
      const int i = e / (D / 8), c = (e % (D / 8)) * 8;
      alignas(16) bf16 pk[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) pk[j] = __float2bfloat16(stage[i * kPitchW + c + j]);
      *reinterpret_cast<uint4*>(dst + (static_cast<int64_t>(start + i) * hv + h) * D + c) =
          *reinterpret_cast<const uint4*>(pk);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill pass 3: the sequential state pass over one 32-column block of one head's state.

constexpr int kStateThreads = 256;    // 8 warps: one 16-row slab of the state each
constexpr int kSCols = 32;            // state columns per CTA
constexpr int kPitchS = kSCols + 8;   // bf16 pitch of 32-wide tiles
constexpr int kPitchSF = kSCols + 4;  // fp32 pitch of 32-wide tiles

struct ChunkTiles {
  bf16 w[C * kPitchD];
  bf16 q[C * kPitchD];
  bf16 k[C * kPitchD];
  bf16 p[C * kPitchC];
  bf16 u[C * kPitchS];
  float qf[C], kf[C], gam[C];
};
struct StateSmem {
  ChunkTiles buf[2];
  bf16 sb[D * kPitchS];       // state block, bf16 operand copy
  bf16 vn[C * kPitchS];       // V_new
  bf16 vk[C * kPitchS];       // kf * V_new
  float stage[D * kPitchSF];  // fp32 staging (state, then V_new / O partials)
};

__device__ __forceinline__ void load_chunk(const GdnArgs& a, const PrefillWs& ws, ChunkTiles& t,
                                           int start, int len, int h, int kh, int cb) {
  const int64_t hv = a.value_heads;
  copy_rows<D, kStateThreads>(t.w, kPitchD, ws.w + (start * hv + h) * D, hv * D, len);
  copy_rows<D, kStateThreads>(t.q, kPitchD, a.q + static_cast<int64_t>(start) * a.q_stride + kh * D,
                              a.q_stride, len);
  copy_rows<D, kStateThreads>(t.k, kPitchD, a.k + static_cast<int64_t>(start) * a.k_stride + kh * D,
                              a.k_stride, len);
  copy_rows<C, kStateThreads>(t.p, kPitchC, ws.p + (start * hv + h) * C, hv * C, len);
  copy_rows<kSCols, kStateThreads>(t.u, kPitchS, ws.u + (start * hv + h) * D + cb, hv * D, len);
  // Per-token scalars: rows are hv floats apart, so 4-byte async copies; padded rows read as 0.
  for (int i = threadIdx.x; i < 3 * C; i += kStateThreads) {
    const int which = i / C, r = i % C;
    float* dst = which == 0 ? t.qf : which == 1 ? t.kf : t.gam;
    const float* src = which == 0 ? ws.qf : which == 1 ? ws.kf : ws.gam;
    const bool valid = r < len;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst + r)),
                 "l"(valid ? src + (start + r) * hv + h : src), "r"(valid ? 4 : 0));
  }
}

__global__ void __launch_bounds__(kStateThreads, 1)
    gdn_chunk_state_kernel(GdnArgs a, PrefillWs ws) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  StateSmem& sm = *reinterpret_cast<StateSmem*>(smem_raw);
  const int cb = blockIdx.x * kSCols;
  const int h = blockIdx.y;
  const int s = blockIdx.z;
  const int kh = h / (a.value_heads / a.key_heads);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int seq_start = a.cu_seqlens[s];
  const int seq_len = a.cu_seqlens[s + 1] - seq_start;
  if (seq_len == 0) return;
  const int nchunks = (seq_len + C - 1) / C;
  float* state = state_ptr(a, s, h);

  // Warp w keeps state rows [16w, 16w + 16) x 32 columns as two accumulator fragments.
  FragC st[2];
  if (state) {
    for (int e = tid; e < D * kSCols; e += kStateThreads) {
      const int r = e / kSCols, c = e % kSCols;
      sm.stage[r * kPitchSF + c] = state[r * D + cb + c];
    }
    __syncthreads();
#pragma unroll
    for (int n = 0; n < 2; ++n)
      wmma::load_matrix_sync(st[n], sm.stage + warp * 16 * kPitchSF + n * 16, kPitchSF,
                             wmma::mem_row_major);
  } else {
#pragma unroll
    for (int n = 0; n < 2; ++n) wmma::fill_fragment(st[n], 0.0f);
  }
  __syncthreads();

  // Converts this warp's 16 x 32 fp32 block at `src` (pitch kPitchSF) to bf16: lane -> half a row.
  const int crow = lane / 2, ccol = (lane % 2) * 16;

  load_chunk(a, ws, sm.buf[0], seq_start, min(C, seq_len), h, kh, cb);
  cp_async_commit();
  for (int ch = 0; ch < nchunks; ++ch) {
    const int start = seq_start + ch * C;
    const int len = min(C, seq_start + seq_len - start);
    ChunkTiles& t = sm.buf[ch & 1];
    if (ch + 1 < nchunks) {
      load_chunk(a, ws, sm.buf[(ch + 1) & 1], start + C, min(C, seq_start + seq_len - start - C), h,
                 kh, cb);
    }
    cp_async_commit();
    // (a) bf16 copy of the state block: each warp stages and converts its own 16 rows.
#pragma unroll
    for (int n = 0; n < 2; ++n)
      wmma::store_matrix_sync(sm.stage + warp * 16 * kPitchSF + n * 16, st[n], kPitchSF,
                              wmma::mem_row_major);
    __syncwarp();
    {
      const int r = warp * 16 + crow;
#pragma unroll
      for (int j = 0; j < 16; j += 4) {
        const float4 f = *reinterpret_cast<const float4*>(&sm.stage[r * kPitchSF + ccol + j]);
        __nv_bfloat162* d = reinterpret_cast<__nv_bfloat162*>(&sm.sb[r * kPitchS + ccol + j]);
        d[0] = __floats2bfloat162_rn(f.x, f.y);
        d[1] = __floats2bfloat162_rn(f.z, f.w);
      }
    }
    cp_async_wait<1>();  // this chunk's tiles have landed (the next chunk's may be in flight)
    __syncthreads();
    // (b) warps 0-3: W S for row tile w (-> V_new);  warps 4-7: Q S for row tile w-4.
    float* stage_v = sm.stage;  // [C][kPitchSF]
    float* stage_o = sm.stage + C * kPitchSF;
    const int rt = warp % 4;
    const bool is_v = warp < 4;
    {
      FragC acc[2];
#pragma unroll
      for (int n = 0; n < 2; ++n) wmma::fill_fragment(acc[n], 0.0f);
      const bf16* lhs = (is_v ? t.w : t.q) + rt * 16 * kPitchD;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        FragA fa;
        wmma::load_matrix_sync(fa, lhs + kk * 16, kPitchD);
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          FragB fs;
          wmma::load_matrix_sync(fs, sm.sb + kk * 16 * kPitchS + n * 16, kPitchS);
          wmma::mma_sync(acc[n], fa, fs, acc[n]);
        }
      }
      float* dst = (is_v ? stage_v : stage_o) + rt * 16 * kPitchSF;
#pragma unroll
      for (int n = 0; n < 2; ++n)
        wmma::store_matrix_sync(dst + n * 16, acc[n], kPitchSF, wmma::mem_row_major);
    }
    __syncwarp();
    if (is_v) {  // V_new = U - W S, and kf * V_new for the state update
      const int r = rt * 16 + crow;
      const float kf = t.kf[r];
#pragma unroll
      for (int j = 0; j < 16; j += 2) {
        const float2 ws2 = *reinterpret_cast<const float2*>(&stage_v[r * kPitchSF + ccol + j]);
        const float2 u2 = __bfloat1622float2(
            *reinterpret_cast<const __nv_bfloat162*>(&t.u[r * kPitchS + ccol + j]));
        const float v0 = u2.x - ws2.x, v1 = u2.y - ws2.y;
        *reinterpret_cast<__nv_bfloat162*>(&sm.vn[r * kPitchS + ccol + j]) =
            __floats2bfloat162_rn(v0, v1);
        *reinterpret_cast<__nv_bfloat162*>(&sm.vk[r * kPitchS + ccol + j]) =
            __floats2bfloat162_rn(v0 * kf, v1 * kf);
      }
    }
    __syncthreads();
    // (c) O = qf * (Q S) + P V_new: warp w does row tile w % 4, column tile w / 4.
    {
      const int ct = warp / 4;
      FragC ap;
      wmma::fill_fragment(ap, 0.0f);
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        FragA fp;
        FragB fv;
        wmma::load_matrix_sync(fp, t.p + rt * 16 * kPitchC + kk * 16, kPitchC);
        wmma::load_matrix_sync(fv, sm.vn + kk * 16 * kPitchS + ct * 16, kPitchS);
        wmma::mma_sync(ap, fp, fv, ap);
      }
      // Own 16 x 16 tile of stage_v (V_new staging is dead after the barrier above).
      float* tile = stage_v + rt * 16 * kPitchSF + ct * 16;
      wmma::store_matrix_sync(tile, ap, kPitchSF, wmma::mem_row_major);
      __syncwarp();
      const int r = lane / 2, c = (lane % 2) * 8;  // 8 outputs per lane
      const int row = rt * 16 + r;
      if (row < len) {
        const float qf = t.qf[row];
        const float* o1 = stage_o + row * kPitchSF + ct * 16 + c;
        alignas(16) __nv_bfloat162 pk[4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
          pk[j] = __floats2bfloat162_rn(qf * o1[2 * j] + tile[r * kPitchSF + c + 2 * j],
                                        qf * o1[2 * j + 1] + tile[r * kPitchSF + c + 2 * j + 1]);
        *reinterpret_cast<uint4*>(a.out +
                                  (static_cast<int64_t>(start + row) * a.value_heads + h) * D + cb +
                                  ct * 16 + c) = *reinterpret_cast<const uint4*>(pk);
      }
    }
    // (d) S = e^gam_last S + K^T (kf * V_new) for this warp's 16 state rows.
    {
      const float decay = __expf(t.gam[len - 1]);
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < st[n].num_elements; ++e) st[n].x[e] *= decay;
#pragma unroll
      for (int kk = 0; kk < C / 16; ++kk) {
        FragAc fk;
        wmma::load_matrix_sync(fk, t.k + kk * 16 * kPitchD + warp * 16, kPitchD);
#pragma unroll
        for (int n = 0; n < 2; ++n) {
          FragB fv;
          wmma::load_matrix_sync(fv, sm.vk + kk * 16 * kPitchS + n * 16, kPitchS);
          wmma::mma_sync(st[n], fk, fv, st[n]);
        }
      }
    }
    __syncthreads();  // tiles of this chunk, sb, vn/vk and stage are reused next iteration
  }
  cp_async_wait<0>();
  if (state) {
#pragma unroll
    for (int n = 0; n < 2; ++n)
      wmma::store_matrix_sync(sm.stage + warp * 16 * kPitchSF + n * 16, st[n], kPitchSF,
                              wmma::mem_row_major);
    __syncthreads();
    for (int e = tid; e < D * kSCols; e += kStateThreads) {
      const int r = e / kSCols, c = e % kSCols;
      state[r * D + cb + c] = sm.stage[r * kPitchSF + c];
    }
  }
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
  const int max_chunks = a.total_tokens / C + a.num_seqs;
  gdn_chunk_local_kernel<<<dim3(max_chunks, a.value_heads), kLocalThreads, sizeof(LocalSmem),
                           stream>>>(a, ws);
  CUDA_CHECK_LAUNCH();
  gdn_chunk_state_kernel<<<dim3(D / kSCols, a.value_heads, a.num_seqs), kStateThreads,
                           sizeof(StateSmem), stream>>>(a, ws);
  CUDA_CHECK_LAUNCH();
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
