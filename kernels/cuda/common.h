// Shared helpers for the CUDA kernels: error checking, bf16 conversion, integer ceil-div.
//
// CUDA_CHECK(expr) aborts with file:line, the expression and the CUDA error string when a runtime
// call fails. Kernel launches are checked with CUDA_CHECK_LAUNCH() right after the <<<>>> (it
// reads cudaGetLastError, which does not synchronise). Host code that wants a Status instead of
// an abort compares against cudaSuccess itself and uses CudaErrorText().
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace prfaas::kernels::cuda {

// Aborts the process: a failed CUDA call leaves the context in an unknown state and every kernel
// here is called from code that cannot recover from that.
[[noreturn]] inline void CudaFail(cudaError_t err, const char* expr, const char* file, int line) {
  std::fprintf(stderr, "CUDA error %s (%s) at %s:%d: %s\n", cudaGetErrorName(err),
               cudaGetErrorString(err), file, line, expr);
  std::abort();
}

// Returns a short text for a failed call, for callers that turn it into a Status.
inline const char* CudaErrorText(cudaError_t err) {
  return cudaGetErrorString(err);
}

// Integer ceil(a / b) for positive b; usable in host and device code and in launch configs.
template <typename T>
__host__ __device__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// bf16 <-> fp32. Round-to-nearest-even on the way down, exact on the way up.
__host__ __device__ inline float bf16_to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__host__ __device__ inline __nv_bfloat16 float_to_bf16(float v) {
  return __float2bfloat16(v);
}

// Loads/stores that let one templated kernel read and write either fp32 or bf16 buffers while
// computing in fp32.
__host__ __device__ inline float to_float(float v) {
  return v;
}
__host__ __device__ inline float to_float(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
template <typename T>
__host__ __device__ inline T from_float(float v);
template <>
__host__ __device__ inline float from_float<float>(float v) {
  return v;
}
template <>
__host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}

// RoPE cos/sin for one (position, inv_freq) pair: the angle is the fp32 product (as HF and the CPU
// engine round it), cos/sin are taken in double and rounded, so they match the host's libm.
__host__ __device__ inline void rope_cos_sin(int32_t pos, float inv_freq, float* c, float* s) {
  const float ang = static_cast<float>(pos) * inv_freq;
  *c = static_cast<float>(cos(static_cast<double>(ang)));
  *s = static_cast<float>(sin(static_cast<double>(ang)));
}

#ifdef __CUDACC__
// Sum of a double over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the
// result. Norms keep their sum of squares in double like the CPU kernels, so the normaliser
// rounds the same way. Contains __syncthreads: call from all threads of the block.
__device__ inline double block_sum_double(double v) {
  __shared__ double warp_sums[32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double total = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x / 32); ++i) total += warp_sums[i];
  __syncthreads();  // warp_sums is reused by the next call
  return total;
}
#endif

// True when a CUDA device is usable (tests GTEST_SKIP otherwise).
inline bool DeviceAvailable() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return false;
  }
  return n > 0;
}

}  // namespace prfaas::kernels::cuda

#define CUDA_CHECK(expr)                                                              \
  do {                                                                                \
    const cudaError_t prfaas_cuda_err_ = (expr);                                      \
    if (prfaas_cuda_err_ != cudaSuccess) {                                            \
      ::prfaas::kernels::cuda::CudaFail(prfaas_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                                 \
  } while (0)

// Checks the most recent kernel launch (configuration errors); does not synchronise.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
