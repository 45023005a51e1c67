// Linear-layer GEMMs through cuBLASLt: y[m, n] = x[m, k] · w[n, k]^T (+ beta * y), w being a
// PyTorch nn.Linear weight [out, in] row-major, like kernels/cpu Linear.
//
// Input dtypes: x and w both bf16 or both fp32; accumulation always fp32 (CUBLAS_COMPUTE_32F,
// never TF32, so the fp32 mode is a true fp32 product usable for exactness checks against the
// CPU engine). Output y: fp32 or bf16. beta = 1 fuses a residual add (y += x·w^T).
//
// The cuBLASLt handle and a workspace are created once per device and thread; matmul descriptors
// and the chosen algorithm are cached per (shape, dtypes, beta != 0). Results are deterministic for
// a fixed shape but (unlike LinearRowInvariant on CPU) a row may round differently when m changes,
// because cuBLASLt may choose another algorithm.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace prfaas::kernels::cuda {

enum class DType : uint8_t { kF32, kBF16 };

struct GemmArgs {
  const void* x = nullptr;  // [m, k] row-major, dtype in
  const void* w = nullptr;  // [n, k] row-major, dtype in
  void* y = nullptr;        // [m, n] row-major, dtype out
  int64_t m = 0, n = 0, k = 0;
  DType in = DType::kF32;
  DType out = DType::kF32;
  float beta = 0.0f;  // 0: y = x w^T; 1: y += x w^T
};

// Launches on `stream`. Aborts (CUDA_CHECK-style, with the cuBLAS status) on an unsupported
// combination or a failed call.
void Linear(const GemmArgs& args, cudaStream_t stream);

// Plain reference: one thread per output, fp32 accumulate in k order. Same arguments.
void LinearRef(const GemmArgs& args, cudaStream_t stream);

}  // namespace prfaas::kernels::cuda
