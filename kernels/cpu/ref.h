// Naive float64 reference kernels, one per fast kernel in kernels/cpu/ops.h with the same name
// and shapes. Used only by tests: they are slow, single-threaded and written for obviousness.
// The one deliberate float32 step: RoPE angles are rounded like HF transformers does
// (float32 inv_freq and position * inv_freq), since that rounding is part of the model.
#pragma once

#include <cstdint>
#include <span>

#include "kernels/cpu/ops.h"

namespace prfaas::kernels::cpu::ref {

void Embedding(const double* table, int64_t vocab, int64_t dim, std::span<const int32_t> ids,
               double* out);
void RmsNorm(const double* x, int64_t rows, int64_t dim, const double* weight, double eps,
             double* y);
void GatedRmsNorm(const double* x, const double* z, int64_t rows, int64_t dim, const double* weight,
                  double eps, double* y);
void ApplyRope(double* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, float theta);
void Linear(const double* x, int64_t m, int64_t k, const double* w, int64_t n, double* y);
void SwiGLU(const double* gate, const double* up, int64_t n, double* out);
void SigmoidGateMul(const double* x, const double* gate, int64_t n, double* out);
void CausalConv1d(const double* x, int64_t t, int64_t channels, const double* w, int64_t k,
                  double* state, double* y);
void GatedDeltaRuleRecurrent(const GdnShape& shape, const double* q, const double* k,
                             const double* v, const double* g, const double* beta, double scale,
                             double* state, double* out);
// Contiguous (unpaged) causal GQA attention: k, v: [first_pos + t, kv_heads, head_dim].
void CausalAttention(const double* q, int64_t t, int64_t q_heads, int64_t first_pos,
                     const double* k, const double* v, int64_t kv_heads, int64_t head_dim,
                     double scale, double* out);
// Sampling distribution after temperature / top-k / top-p (probabilities over the vocab).
void SamplingProbabilities(std::span<const float> logits, const SamplingParams& params,
                           double* probs);

}  // namespace prfaas::kernels::cpu::ref
