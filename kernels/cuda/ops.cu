// Small ops: reference kernels (one thread per row / element) and fast kernels (one block per row,
// block-wide reductions). See ops.h for contracts.
#include <cmath>

#include "kernels/cuda/common.h"
#include "kernels/cuda/ops.h"

namespace prfaas::kernels::cuda {
namespace {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float SiluF(float x) {
  return x / (1.0f + expf(-x));
}

int RowThreads(int64_t dim) {
  // Enough threads to cover the row once where possible, rounded up to whole warps.
  const int64_t t = ceil_div<int64_t>(dim, 32) * 32;
  return static_cast<int>(t < kRowThreads ? t : kRowThreads);
}

// ---------------------------------------------------------------- embedding
template <typename W>
__global__ void EmbeddingRefKernel(const W* table, int64_t dim, const int32_t* ids, int64_t rows,
                                   float* out) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  for (int64_t i = 0; i < dim; ++i) out[r * dim + i] = to_float(table[ids[r] * dim + i]);
}

template <typename W>
__global__ void EmbeddingKernel(const W* table, int64_t dim, const int32_t* ids, float* out) {
  const int64_t r = blockIdx.x;
  const W* src = table + static_cast<int64_t>(ids[r]) * dim;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) out[r * dim + i] = to_float(src[i]);
}

// ---------------------------------------------------------------- rmsnorm
template <typename T>
__global__ void RmsNormRefKernel(const T* x, int64_t xs, int64_t rows, int64_t dim, const float* w,
                                 float eps, T* y, int64_t ys) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) {
    const double v = to_float(x[r * xs + i]);
    ss += v * v;
  }
  const float inv = static_cast<float>(1.0 / sqrt(ss / dim + eps));
  for (int64_t i = 0; i < dim; ++i)
    y[r * ys + i] = from_float<T>(to_float(x[r * xs + i]) * inv * (1.0f + w[i]));
}

template <typename T>
__global__ void RmsNormKernel(const T* x, int64_t xs, int64_t dim, const float* w, float eps, T* y,
                              int64_t ys) {
  const T* xr = x + blockIdx.x * xs;
  T* yr = y + blockIdx.x * ys;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_float(xr[i]);
    ss += static_cast<double>(v) * v;
  }
  ss = block_sum_double(ss);
  const float inv = static_cast<float>(1.0 / sqrt(ss / dim + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    yr[i] = from_float<T>(to_float(xr[i]) * inv * (1.0f + w[i]));
}

// ---------------------------------------------------------------- gated rmsnorm
template <typename T>
__global__ void GatedRmsNormRefKernel(const T* x, const T* z, int64_t rows, int64_t dim,
                                      const float* w, float eps, T* y) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  double ss = 0;
  for (int64_t i = 0; i < dim; ++i) {
    const double v = to_float(x[r * dim + i]);
    ss += v * v;
  }
  const float inv = static_cast<float>(1.0 / sqrt(ss / dim + eps));
  for (int64_t i = 0; i < dim; ++i) {
    const int64_t j = r * dim + i;
    y[j] = from_float<T>(to_float(x[j]) * inv * w[i] * SiluF(to_float(z[j])));
  }
}

template <typename T>
__global__ void GatedRmsNormKernel(const T* x, const T* z, int64_t dim, const float* w, float eps,
                                   T* y) {
  const int64_t base = blockIdx.x * dim;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = to_float(x[base + i]);
    ss += static_cast<double>(v) * v;
  }
  ss = block_sum_double(ss);
  const float inv = static_cast<float>(1.0 / sqrt(ss / dim + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    y[base + i] = from_float<T>(to_float(x[base + i]) * inv * w[i] * SiluF(to_float(z[base + i])));
}

// ---------------------------------------------------------------- rope
template <typename T>
__global__ void ApplyRopeRefKernel(T* x, int64_t rows, int64_t row_stride, int64_t heads,
                                   int64_t head_dim, int64_t rot_dim, const int32_t* positions,
                                   const float* inv_freq) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  const int64_t half = rot_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    T* xh = x + r * row_stride + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      float c, s;
      rope_cos_sin(positions[r], inv_freq[i], &c, &s);
      const float x1 = to_float(xh[i]), x2 = to_float(xh[i + half]);
      xh[i] = from_float<T>(x1 * c - x2 * s);
      xh[i + half] = from_float<T>(x2 * c + x1 * s);
    }
  }
}

// One block per row; threads cover (head, i < half) pairs.
template <typename T>
__global__ void ApplyRopeKernel(T* x, int64_t row_stride, int64_t heads, int64_t head_dim,
                                int64_t rot_dim, const int32_t* positions, const float* inv_freq) {
  const int64_t half = rot_dim / 2;
  const int32_t pos = positions[blockIdx.x];
  T* xr = x + blockIdx.x * row_stride;
  for (int64_t p = threadIdx.x; p < heads * half; p += blockDim.x) {
    const int64_t h = p / half, i = p % half;
    float c, s;
    rope_cos_sin(pos, inv_freq[i], &c, &s);
    T* xh = xr + h * head_dim;
    const float x1 = to_float(xh[i]), x2 = to_float(xh[i + half]);
    xh[i] = from_float<T>(x1 * c - x2 * s);
    xh[i + half] = from_float<T>(x2 * c + x1 * s);
  }
}

// ---------------------------------------------------------------- elementwise
template <typename T>
__global__ void SwiGLURefKernel(const T* gate, const T* up, int64_t rows, int64_t n,
                                int64_t in_stride, T* out) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  for (int64_t i = 0; i < n; ++i)
    out[r * n + i] =
        from_float<T>(SiluF(to_float(gate[r * in_stride + i])) * to_float(up[r * in_stride + i]));
}

// Grid-stride over all rows*n outputs: no per-row launch shape, full occupancy for any n.
template <typename T>
__global__ void SwiGLUKernel(const T* gate, const T* up, int64_t rows, int64_t n, int64_t in_stride,
                             T* out) {
  const int64_t total = rows * n;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / n, i = e % n;
    out[e] =
        from_float<T>(SiluF(to_float(gate[r * in_stride + i])) * to_float(up[r * in_stride + i]));
  }
}

__device__ __forceinline__ float GateMul(float x, float g) {
  return x / (1.0f + expf(-g));  // same form as the CPU kernel
}

template <typename T>
__global__ void SigmoidGateMulRefKernel(const T* x, const T* gate, int64_t rows, int64_t n,
                                        int64_t gs, T* out) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  for (int64_t i = 0; i < n; ++i)
    out[r * n + i] = from_float<T>(GateMul(to_float(x[r * n + i]), to_float(gate[r * gs + i])));
}

template <typename T>
__global__ void SigmoidGateMulKernel(const T* x, const T* gate, int64_t rows, int64_t n, int64_t gs,
                                     T* out) {
  const int64_t total = rows * n;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = e / n, i = e % n;
    out[e] = from_float<T>(GateMul(to_float(x[e]), to_float(gate[r * gs + i])));
  }
}

template <typename From, typename To>
__global__ void ConvertKernel(const From* in, int64_t n, To* out) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n;
       e += int64_t{gridDim.x} * blockDim.x)
    out[e] = from_float<To>(to_float(in[e]));
}

// Grid for grid-stride elementwise kernels: enough blocks to fill the card, no more.
unsigned ElementwiseBlocks(int64_t total) {
  const int64_t b = ceil_div<int64_t>(total, 256);
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

unsigned RefBlocks(int64_t rows) {
  return static_cast<unsigned>(ceil_div<int64_t>(rows, 64));
}

}  // namespace

template <typename W>
void Embedding(const W* table, int64_t dim, const int32_t* ids, int64_t rows, float* out,
               cudaStream_t stream) {
  if (rows == 0) return;
  EmbeddingKernel<<<static_cast<unsigned>(rows), RowThreads(dim), 0, stream>>>(table, dim, ids,
                                                                               out);
  CUDA_CHECK_LAUNCH();
}
template <typename W>
void EmbeddingRef(const W* table, int64_t dim, const int32_t* ids, int64_t rows, float* out,
                  cudaStream_t stream) {
  if (rows == 0) return;
  EmbeddingRefKernel<<<RefBlocks(rows), 64, 0, stream>>>(table, dim, ids, rows, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void RmsNorm(const T* x, int64_t x_stride, int64_t rows, int64_t dim, const float* weight,
             float eps, T* y, int64_t y_stride, cudaStream_t stream) {
  if (rows == 0) return;
  RmsNormKernel<<<static_cast<unsigned>(rows), RowThreads(dim), 0, stream>>>(
      x, x_stride, dim, weight, eps, y, y_stride);
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void RmsNormRef(const T* x, int64_t x_stride, int64_t rows, int64_t dim, const float* weight,
                float eps, T* y, int64_t y_stride, cudaStream_t stream) {
  if (rows == 0) return;
  RmsNormRefKernel<<<RefBlocks(rows), 64, 0, stream>>>(x, x_stride, rows, dim, weight, eps, y,
                                                       y_stride);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void GatedRmsNorm(const T* x, const T* z, int64_t rows, int64_t dim, const float* weight, float eps,
                  T* y, cudaStream_t stream) {
  if (rows == 0) return;
  GatedRmsNormKernel<<<static_cast<unsigned>(rows), RowThreads(dim), 0, stream>>>(x, z, dim, weight,
                                                                                  eps, y);
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void GatedRmsNormRef(const T* x, const T* z, int64_t rows, int64_t dim, const float* weight,
                     float eps, T* y, cudaStream_t stream) {
  if (rows == 0) return;
  GatedRmsNormRefKernel<<<RefBlocks(rows), 64, 0, stream>>>(x, z, rows, dim, weight, eps, y);
  CUDA_CHECK_LAUNCH();
}

void RopeInvFreq(int64_t rot_dim, float theta, float* inv_freq) {
  for (int64_t i = 0; i < rot_dim / 2; ++i)
    inv_freq[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rot_dim));
}

template <typename T>
void ApplyRope(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, const float* inv_freq,
               cudaStream_t stream) {
  if (rows == 0 || rot_dim < 2) return;
  ApplyRopeKernel<<<static_cast<unsigned>(rows), RowThreads(heads * rot_dim / 2), 0, stream>>>(
      x, row_stride, heads, head_dim, rot_dim, positions, inv_freq);
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void ApplyRopeRef(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                  int64_t rot_dim, const int32_t* positions, const float* inv_freq,
                  cudaStream_t stream) {
  if (rows == 0 || rot_dim < 2) return;
  ApplyRopeRefKernel<<<RefBlocks(rows), 64, 0, stream>>>(x, rows, row_stride, heads, head_dim,
                                                         rot_dim, positions, inv_freq);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void SwiGLU(const T* gate, const T* up, int64_t rows, int64_t n, int64_t in_stride, T* out,
            cudaStream_t stream) {
  if (rows * n == 0) return;
  SwiGLUKernel<<<ElementwiseBlocks(rows * n), 256, 0, stream>>>(gate, up, rows, n, in_stride, out);
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void SwiGLURef(const T* gate, const T* up, int64_t rows, int64_t n, int64_t in_stride, T* out,
               cudaStream_t stream) {
  if (rows * n == 0) return;
  SwiGLURefKernel<<<RefBlocks(rows), 64, 0, stream>>>(gate, up, rows, n, in_stride, out);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void SigmoidGateMul(const T* x, const T* gate, int64_t rows, int64_t n, int64_t gate_stride, T* out,
                    cudaStream_t stream) {
  if (rows * n == 0) return;
  SigmoidGateMulKernel<<<ElementwiseBlocks(rows * n), 256, 0, stream>>>(x, gate, rows, n,
                                                                        gate_stride, out);
  CUDA_CHECK_LAUNCH();
}
template <typename T>
void SigmoidGateMulRef(const T* x, const T* gate, int64_t rows, int64_t n, int64_t gate_stride,
                       T* out, cudaStream_t stream) {
  if (rows * n == 0) return;
  SigmoidGateMulRefKernel<<<RefBlocks(rows), 64, 0, stream>>>(x, gate, rows, n, gate_stride, out);
  CUDA_CHECK_LAUNCH();
}

template <typename From, typename To>
void Convert(const From* in, int64_t n, To* out, cudaStream_t stream) {
  if (n == 0) return;
  ConvertKernel<<<ElementwiseBlocks(n), 256, 0, stream>>>(in, n, out);
  CUDA_CHECK_LAUNCH();
}

// Explicit instantiations: fp32 and bf16 activations / weights.
#define PRFAAS_OPS_INSTANTIATE(T)                                                                  \
  template void Embedding<T>(const T*, int64_t, const int32_t*, int64_t, float*, cudaStream_t);    \
  template void EmbeddingRef<T>(const T*, int64_t, const int32_t*, int64_t, float*, cudaStream_t); \
  template void RmsNorm<T>(const T*, int64_t, int64_t, int64_t, const float*, float, T*, int64_t,  \
                           cudaStream_t);                                                          \
  template void RmsNormRef<T>(const T*, int64_t, int64_t, int64_t, const float*, float, T*,        \
                              int64_t, cudaStream_t);                                              \
  template void GatedRmsNorm<T>(const T*, const T*, int64_t, int64_t, const float*, float, T*,     \
                                cudaStream_t);                                                     \
  template void GatedRmsNormRef<T>(const T*, const T*, int64_t, int64_t, const float*, float, T*,  \
                                   cudaStream_t);                                                  \
  template void ApplyRope<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, const int32_t*,      \
                             const float*, cudaStream_t);                                          \
  template void ApplyRopeRef<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, const int32_t*,   \
                                const float*, cudaStream_t);                                       \
  template void SwiGLU<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, cudaStream_t);        \
  template void SwiGLURef<T>(const T*, const T*, int64_t, int64_t, int64_t, T*, cudaStream_t);     \
  template void SigmoidGateMul<T>(const T*, const T*, int64_t, int64_t, int64_t, T*,               \
                                  cudaStream_t);                                                   \
  template void SigmoidGateMulRef<T>(const T*, const T*, int64_t, int64_t, int64_t, T*,            \
                                     cudaStream_t);
PRFAAS_OPS_INSTANTIATE(float)
PRFAAS_OPS_INSTANTIATE(__nv_bfloat16)
#undef PRFAAS_OPS_INSTANTIATE

template void Convert<float, __nv_bfloat16>(const float*, int64_t, __nv_bfloat16*, cudaStream_t);
template void Convert<__nv_bfloat16, float>(const __nv_bfloat16*, int64_t, float*, cudaStream_t);

}  // namespace prfaas::kernels::cuda
