// Small CUDA ops of the hybrid model: embedding gather, zero-centred and gated RMSNorm, partial
// RoPE, SwiGLU, sigmoid gate, dtype casts. Each op has a plain reference kernel (`*Ref`, one thread
// per row or element, written for obviousness) and the fast one (same name without the suffix,
// one block per row with vectorised reductions); tests compare both against kernels/cpu.
//
// Conventions: all pointers are device pointers; launches go to `stream` and are asynchronous.
// Activations (`T`) are float or __nv_bfloat16 (instantiated for both), math and reductions in
// fp32, norm weights fp32. Row-major with an explicit row stride (in elements) where a row can sit
// inside a wider fused projection output. Outputs may alias inputs only where stated.
// Semantics match kernels/cpu/ops.h exactly (same formulas, same eps placement).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace prfaas::kernels::cuda {

// out[i, :] = table[ids[i], :] for i < rows. Table is fp32 or bf16 (weights), out fp32.
// ids: device int32 in [0, vocab).
template <typename W>
void Embedding(const W* table, int64_t dim, const int32_t* ids, int64_t rows, float* out,
               cudaStream_t stream);
template <typename W>
void EmbeddingRef(const W* table, int64_t dim, const int32_t* ids, int64_t rows, float* out,
                  cudaStream_t stream);

// Zero-centred RMSNorm: y = x / sqrt(mean(x^2) + eps) * (1 + w). x row r at x + r*x_stride,
// y row r at y + r*y_stride (dense rows of `dim`). y may equal x when the strides match.
template <typename T>
void RmsNorm(const T* x, int64_t x_stride, int64_t rows, int64_t dim, const float* weight,
             float eps, T* y, int64_t y_stride, cudaStream_t stream);
template <typename T>
void RmsNormRef(const T* x, int64_t x_stride, int64_t rows, int64_t dim, const float* weight,
                float eps, T* y, int64_t y_stride, cudaStream_t stream);

// Gated RMSNorm (GDN output): y = x / sqrt(mean(x^2) + eps) * w * silu(z), plain weight.
// x, z, y: [rows, dim] dense. y may equal x.
template <typename T>
void GatedRmsNorm(const T* x, const T* z, int64_t rows, int64_t dim, const float* weight, float eps,
                  T* y, cudaStream_t stream);
template <typename T>
void GatedRmsNormRef(const T* x, const T* z, int64_t rows, int64_t dim, const float* weight,
                     float eps, T* y, cudaStream_t stream);

// Rotate-half RoPE on the first rot_dim dims of each head, in place. x: [rows, heads, head_dim]
// with row stride row_stride elements; positions: device int32 [rows]. inv_freq: device fp32
// [rot_dim/2], computed on the host with RopeInvFreq so it rounds exactly like the CPU engine.
// Angles are pos * inv_freq in fp32 (as HF), cos/sin evaluated in double then rounded.
template <typename T>
void ApplyRope(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, const float* inv_freq,
               cudaStream_t stream);
template <typename T>
void ApplyRopeRef(T* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                  int64_t rot_dim, const int32_t* positions, const float* inv_freq,
                  cudaStream_t stream);
// Host helper: inv_freq[i] = 1 / theta^(2i/rot_dim) in fp32, identical to kernels/cpu ApplyRope.
void RopeInvFreq(int64_t rot_dim, float theta, float* inv_freq_host);

// out[r, i] = silu(gate[r, i]) * up[r, i] for i < n. gate/up rows at stride in_stride (so a fused
// [gate | up] projection is gate = gu, up = gu + n, in_stride = 2n); out dense [rows, n].
template <typename T>
void SwiGLU(const T* gate, const T* up, int64_t rows, int64_t n, int64_t in_stride, T* out,
            cudaStream_t stream);
template <typename T>
void SwiGLURef(const T* gate, const T* up, int64_t rows, int64_t n, int64_t in_stride, T* out,
               cudaStream_t stream);

// out[r, i] = x[r, i] * sigmoid(gate[r, i]) for i < n; x/out dense [rows, n], gate rows at stride
// gate_stride. out may equal x.
template <typename T>
void SigmoidGateMul(const T* x, const T* gate, int64_t rows, int64_t n, int64_t gate_stride, T* out,
                    cudaStream_t stream);
template <typename T>
void SigmoidGateMulRef(const T* x, const T* gate, int64_t rows, int64_t n, int64_t gate_stride,
                       T* out, cudaStream_t stream);

// Elementwise dtype conversion of n values (fp32 <-> bf16), e.g. before a bf16 GEMM.
template <typename From, typename To>
void Convert(const From* in, int64_t n, To* out, cudaStream_t stream);

}  // namespace prfaas::kernels::cuda
