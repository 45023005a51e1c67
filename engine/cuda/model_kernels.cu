// Model glue kernels of the GPU forward. See model_kernels.h.
#include "engine/cuda/model_kernels.h"
#include "kernels/cuda/common.h"

namespace prfaas::engine::gpu {
namespace {

using kernels::cuda::block_sum_double;
using kernels::cuda::ceil_div;
using kernels::cuda::from_float;
using kernels::cuda::rope_cos_sin;
using kernels::cuda::to_float;

__device__ __forceinline__ float SiluF(float x) {
  return x / (1.0f + expf(-x));
}

int WarpRound(int64_t n) {
  const int64_t t = ceil_div<int64_t>(n, 32) * 32;
  return static_cast<int>(t < 1024 ? t : 1024);
}

// ---------------------------------------------------------------- attention prep
// Grid (rows, hq + 2*hkv): head slot < hq is a q head, then k heads, then v heads.
template <typename T>
__global__ void AttnPrepKernel(const T* qkv, int64_t hq, int64_t hkv, int64_t d,
                               const float* q_norm, const float* k_norm, float eps,
                               const int32_t* positions, const float* inv_freq, int64_t rot_dim,
                               T* q, T* gate, T* k, T* v) {
  extern __shared__ float buf[];  // [d]
  const int64_t r = blockIdx.x, slot = blockIdx.y;
  const int64_t width = hq * 2 * d + 2 * hkv * d;
  const T* row = qkv + r * width;
  const int i = threadIdx.x;
  if (slot >= hq + hkv) {  // v: plain copy
    const int64_t h = slot - hq - hkv;
    if (i < d) v[(r * hkv + h) * d + i] = row[hq * 2 * d + hkv * d + h * d + i];
    return;
  }
  const bool is_q = slot < hq;
  const int64_t h = is_q ? slot : slot - hq;
  const T* src = is_q ? row + h * 2 * d : row + hq * 2 * d + h * d;
  const float* w = is_q ? q_norm : k_norm;
  T* dst = is_q ? q + (r * hq + h) * d : k + (r * hkv + h) * d;
  if (is_q && i < d) gate[(r * hq + h) * d + i] = src[d + i];
  const float x = i < d ? to_float(src[i]) : 0.0f;
  const double ss = block_sum_double(static_cast<double>(x) * x);
  const float inv = static_cast<float>(1.0 / sqrt(ss / d + eps));
  if (i < d) buf[i] = x * inv * (1.0f + w[i]);
  __syncthreads();
  if (i >= d) return;
  const int64_t half = rot_dim / 2;
  float y = buf[i];
  if (i < rot_dim) {
    const int64_t f = i < half ? i : i - half;
    float c, s;
    rope_cos_sin(positions[r], inv_freq[f], &c, &s);
    y = i < half ? buf[i] * c - buf[i + half] * s : buf[i] * c + buf[i - half] * s;
  }
  dst[i] = from_float<T>(y);
}

// ---------------------------------------------------------------- paged KV
__device__ __forceinline__ int64_t BlockOffset(const BatchMeta& m, int32_t span, int64_t pos,
                                               int64_t bs, int64_t row) {
  const int32_t blk = m.block_tables[span * m.bt_stride + pos / bs];
  return int64_t{blk} * 2 * bs * row + (pos % bs) * row;
}

template <typename T>
__global__ void PagedKvWriteKernel(const T* k, const T* v, BatchMeta m, T* base, int64_t bs,
                                   int64_t row) {
  const int64_t r = blockIdx.x;
  const int64_t off = BlockOffset(m, m.row_span[r], m.positions[r], bs, row);
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    base[off + i] = k[r * row + i];
    base[off + bs * row + i] = v[r * row + i];
  }
}

// One warp per (row, q head); lane l owns elements l, l+32, ... of the head (E per lane).
template <typename T, int E>
__global__ void PagedAttentionKernel(const T* q, BatchMeta m, const T* base, int64_t bs, int64_t hq,
                                     int64_t hkv, int64_t d, float scale, T* out) {
  const int64_t warp = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= m.rows * hq) return;
  const int64_t r = warp / hq, h = warp % hq, kvh = h / (hq / hkv);
  const int64_t row = hkv * d;
  const int32_t span = m.row_span[r];
  const int64_t pos = m.positions[r];
  float qr[E], acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t i = lane + 32 * e;
    qr[e] = i < d ? to_float(q[(r * hq + h) * d + i]) : 0.0f;
    acc[e] = 0.0f;
  }
  float run_max = -INFINITY, run_sum = 0.0f;
  for (int64_t j = 0; j <= pos; ++j) {
    const T* kr = base + BlockOffset(m, span, j, bs, row) + kvh * d;
    float dot = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int64_t i = lane + 32 * e;
      if (i < d) dot += qr[e] * to_float(kr[i]);
    }
    for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float s = dot * scale;
    const float mx = fmaxf(run_max, s);
    const float corr = expf(run_max - mx);  // 0 on the first key
    const float p = expf(s - mx);
    run_sum = run_sum * corr + p;
    run_max = mx;
    const T* vr = kr + bs * row;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      const int64_t i = lane + 32 * e;
      acc[e] = acc[e] * corr + (i < d ? p * to_float(vr[i]) : 0.0f);
    }
  }
  const float inv = 1.0f / run_sum;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const int64_t i = lane + 32 * e;
    if (i < d) out[(r * hq + h) * d + i] = from_float<T>(acc[e] * inv);
  }
}

// ---------------------------------------------------------------- causal conv
constexpr int kMaxK = 8;

// Grid (channel tiles, spans); each thread walks its channel through the span's tokens with the
// last K-1 inputs in registers, then stores them back as the new state (oldest row first).
template <typename T>
__global__ void CausalConvKernel(const T* x, int64_t xs, BatchMeta m, int64_t channels, int64_t k,
                                 const float* w, float* conv_base, int64_t slot_stride, T* y) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int32_t span = blockIdx.y;
  if (c >= channels) return;
  float* state = conv_base + int64_t{m.span_slot[span]} * slot_stride;
  const int64_t hist = k - 1;
  float win[kMaxK];
  float wc[kMaxK];
  for (int64_t i = 0; i < k; ++i) wc[i] = w[c * k + i];
  for (int64_t i = 0; i < hist; ++i) win[i] = state[i * channels + c];
  const int64_t r0 = m.span_row0[span], t = m.span_len[span];
  for (int64_t s = 0; s < t; ++s) {
    win[hist] = to_float(x[(r0 + s) * xs + c]);
    float acc = 0.0f;
    for (int64_t i = 0; i < k; ++i) acc += wc[i] * win[i];
    y[(r0 + s) * channels + c] = from_float<T>(SiluF(acc));
    for (int64_t i = 0; i < hist; ++i) win[i] = win[i + 1];
  }
  for (int64_t i = 0; i < hist; ++i) state[i * channels + c] = win[i];
}

// ---------------------------------------------------------------- gated delta rule
// Grid (value heads, spans), one thread per state column j < d_v holding S[:, j] (DK floats) in
// registers; per token: q/k L2-normalised in shared memory, then
//   S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q   (CPU recurrent order)
// and the gated RMSNorm of o with z.
template <typename T, int DK>
__global__ void GdnRecurrentKernel(GdnLayer L, const T* qkv, const T* proj, int64_t ps,
                                   int64_t z_col, int64_t b_col, int64_t a_col, BatchMeta m,
                                   T* out) {
  __shared__ float qn[DK], kn[DK];
  __shared__ float gate[2];
  const int64_t hv = L.value_heads, dv = L.value_dim;
  const int64_t j_head = blockIdx.x;
  const int32_t span = blockIdx.y;
  const int64_t kh = j_head / (hv / L.key_heads);
  const int64_t kd = L.key_heads * DK;
  const int64_t cd = 2 * kd + hv * dv;
  const int c = threadIdx.x;
  float* st = L.ssm_base + int64_t{m.span_slot[span]} * L.slot_stride + j_head * DK * dv;
  float s[DK];
#pragma unroll
  for (int i = 0; i < DK; ++i) s[i] = c < dv ? st[i * dv + c] : 0.0f;
  const int64_t r0 = m.span_row0[span], t = m.span_len[span];
  for (int64_t tok = 0; tok < t; ++tok) {
    const int64_t r = r0 + tok;
    const T* row = qkv + r * cd;
    // L2 norms (eps 1e-6 inside the sqrt, as kernels/cpu), q also scaled.
    float qs = 0.0f, ks = 0.0f;
    for (int i = c; i < DK; i += blockDim.x) {
      const float qv = to_float(row[kh * DK + i]), kv = to_float(row[kd + kh * DK + i]);
      qn[i] = qv;
      kn[i] = kv;
      qs += qv * qv;
      ks += kv * kv;
    }
    const double qss = block_sum_double(qs), kss = block_sum_double(ks);
    const float qinv = L.scale / sqrtf(static_cast<float>(qss) + 1e-6f);
    const float kinv = 1.0f / sqrtf(static_cast<float>(kss) + 1e-6f);
    if (c == 0) {
      const float b = to_float(proj[r * ps + b_col + j_head]);
      const float a = to_float(proj[r * ps + a_col + j_head]) + L.dt_bias[j_head];
      const float sp = a > 20.0f ? a : log1pf(expf(a));
      gate[0] = expf(-expf(L.a_log[j_head]) * sp);  // exp(g)
      gate[1] = 1.0f / (1.0f + expf(-b));           // beta
    }
    __syncthreads();
    const float alpha = gate[0], beta = gate[1];
    float o = 0.0f;
    if (c < dv) {
      float u = 0.0f;
#pragma unroll
      for (int i = 0; i < DK; ++i) {
        s[i] *= alpha;
        u += s[i] * (kn[i] * kinv);
      }
      u = beta * (to_float(row[2 * kd + j_head * dv + c]) - u);
#pragma unroll
      for (int i = 0; i < DK; ++i) {
        s[i] += (kn[i] * kinv) * u;
        o += s[i] * (qn[i] * qinv);
      }
    }
    // Gated RMSNorm over the head's d_v outputs: o / rms(o) * w * silu(z).
    const double oss = block_sum_double(static_cast<double>(o) * o);
    const float inv = static_cast<float>(1.0 / sqrt(oss / dv + L.eps));
    if (c < dv) {
      const float z = to_float(proj[r * ps + z_col + j_head * dv + c]);
      out[(r * hv + j_head) * dv + c] = from_float<T>(o * inv * L.norm[c] * SiluF(z));
    }
    __syncthreads();  // qn/kn/gate are rewritten by the next token
  }
  if (c < dv) {
#pragma unroll
    for (int i = 0; i < DK; ++i) st[i * dv + c] = s[i];
  }
}

__global__ void GatherRowsKernel(const float* x, const int32_t* idx, int64_t h, float* out) {
  const float* src = x + int64_t{idx[blockIdx.x]} * h;
  for (int64_t i = threadIdx.x; i < h; i += blockDim.x) out[blockIdx.x * h + i] = src[i];
}

}  // namespace

template <typename T>
void AttnPrep(const T* qkv, int64_t rows, int64_t hq, int64_t hkv, int64_t d, const float* q_norm,
              const float* k_norm, float eps, const int32_t* positions, const float* inv_freq,
              int64_t rot_dim, T* q, T* gate, T* k, T* v, cudaStream_t stream) {
  if (rows == 0) return;
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(hq + 2 * hkv));
  AttnPrepKernel<<<grid, WarpRound(d), sizeof(float) * d, stream>>>(
      qkv, hq, hkv, d, q_norm, k_norm, eps, positions, inv_freq, rot_dim, q, gate, k, v);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void PagedKvWrite(const T* k, const T* v, const BatchMeta& meta, T* layer_base, int64_t bs,
                  int64_t row, cudaStream_t stream) {
  if (meta.rows == 0) return;
  PagedKvWriteKernel<<<static_cast<unsigned>(meta.rows), WarpRound(row), 0, stream>>>(
      k, v, meta, layer_base, bs, row);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void PagedAttention(const T* q, const BatchMeta& meta, const T* layer_base, int64_t bs, int64_t hq,
                    int64_t hkv, int64_t d, float scale, T* out, cudaStream_t stream) {
  if (meta.rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(ceil_div<int64_t>(meta.rows * hq * 32, 128));
  const int e = static_cast<int>(ceil_div<int64_t>(d, 32));
#define PRFAAS_ATTN_CASE(N)                                                            \
  if (e <= N) {                                                                        \
    PagedAttentionKernel<T, N>                                                         \
        <<<blocks, 128, 0, stream>>>(q, meta, layer_base, bs, hq, hkv, d, scale, out); \
    CUDA_CHECK_LAUNCH();                                                               \
    return;                                                                            \
  }
  PRFAAS_ATTN_CASE(1)
  PRFAAS_ATTN_CASE(2)
  PRFAAS_ATTN_CASE(4)
  PRFAAS_ATTN_CASE(8)
  PRFAAS_ATTN_CASE(16)
#undef PRFAAS_ATTN_CASE
  std::fprintf(stderr, "PagedAttention: head_dim %lld > 512\n", static_cast<long long>(d));
  std::abort();
}

template <typename T>
void CausalConv(const T* x, int64_t x_stride, const BatchMeta& meta, int64_t channels, int64_t k,
                const float* w, float* conv_base, int64_t slot_stride, T* y, cudaStream_t stream) {
  if (meta.rows == 0) return;
  if (k < 1 || k > kMaxK) {
    std::fprintf(stderr, "CausalConv: kernel size %lld outside 1..%d\n", static_cast<long long>(k),
                 kMaxK);
    std::abort();
  }
  const dim3 grid(static_cast<unsigned>(ceil_div<int64_t>(channels, 128)),
                  static_cast<unsigned>(meta.spans));
  CausalConvKernel<<<grid, 128, 0, stream>>>(x, x_stride, meta, channels, k, w, conv_base,
                                             slot_stride, y);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void GdnRecurrent(const GdnLayer& layer, const T* qkv, const T* proj, int64_t proj_stride,
                  int64_t z_col, int64_t b_col, int64_t a_col, const BatchMeta& meta, T* out,
                  cudaStream_t stream) {
  if (meta.rows == 0) return;
  const dim3 grid(static_cast<unsigned>(layer.value_heads), static_cast<unsigned>(meta.spans));
  const int threads = WarpRound(layer.value_dim);
#define PRFAAS_GDN_CASE(N)                                                                       \
  if (layer.key_dim == N) {                                                                      \
    GdnRecurrentKernel<T, N><<<grid, threads, 0, stream>>>(layer, qkv, proj, proj_stride, z_col, \
                                                           b_col, a_col, meta, out);             \
    CUDA_CHECK_LAUNCH();                                                                         \
    return;                                                                                      \
  }
  PRFAAS_GDN_CASE(16)
  PRFAAS_GDN_CASE(32)
  PRFAAS_GDN_CASE(64)
  PRFAAS_GDN_CASE(128)
#undef PRFAAS_GDN_CASE
  std::fprintf(stderr, "GdnRecurrent: key head dim %lld not in {16, 32, 64, 128}\n",
               static_cast<long long>(layer.key_dim));
  std::abort();
}

void GatherRows(const float* x, const int32_t* idx, int64_t n, int64_t h, float* out,
                cudaStream_t stream) {
  if (n == 0) return;
  GatherRowsKernel<<<static_cast<unsigned>(n), WarpRound(h), 0, stream>>>(x, idx, h, out);
  CUDA_CHECK_LAUNCH();
}

#define PRFAAS_MODEL_INSTANTIATE(T)                                                                \
  template void AttnPrep<T>(const T*, int64_t, int64_t, int64_t, int64_t, const float*,            \
                            const float*, float, const int32_t*, const float*, int64_t, T*, T*,    \
                            T*, T*, cudaStream_t);                                                 \
  template void PagedKvWrite<T>(const T*, const T*, const BatchMeta&, T*, int64_t, int64_t,        \
                                cudaStream_t);                                                     \
  template void PagedAttention<T>(const T*, const BatchMeta&, const T*, int64_t, int64_t, int64_t, \
                                  int64_t, float, T*, cudaStream_t);                               \
  template void CausalConv<T>(const T*, int64_t, const BatchMeta&, int64_t, int64_t, const float*, \
                              float*, int64_t, T*, cudaStream_t);                                  \
  template void GdnRecurrent<T>(const GdnLayer&, const T*, const T*, int64_t, int64_t, int64_t,    \
                                int64_t, const BatchMeta&, T*, cudaStream_t);
PRFAAS_MODEL_INSTANTIATE(float)
PRFAAS_MODEL_INSTANTIATE(__nv_bfloat16)
#undef PRFAAS_MODEL_INSTANTIATE

}  // namespace prfaas::engine::gpu
