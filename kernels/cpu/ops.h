// float32 CPU kernels for hybrid-attention models (Qwen3-Next / Qwen3.5: Gated DeltaNet + gated
// GQA).
//
// Every kernel takes raw row-major float32 buffers plus sizes; callers own the memory and validate
// sizes (kernels assert nothing beyond debug asserts). Outputs never alias inputs unless stated.
// Math follows HF transformers' Qwen3-Next exactly (docs: /work/shared/reference/
// hybrid-models-and-kernels.md §1). A float64 twin of each kernel lives in kernels/cpu/ref.h and is
// used only by tests.
//
// Determinism: all kernels are deterministic for a fixed input. LinearRowInvariant and the
// attention / conv / GDN kernels additionally give bit-identical results for a row regardless of
// how many other rows share the call, which is what makes batch composition invisible to a
// sequence. Linear (OpenBLAS) does not have that property and is used where the row set is fixed
// by the sequence itself (prefill chunks).
#pragma once

#include <cstdint>
#include <span>

namespace prfaas::kernels::cpu {

// out[i, :] = table[ids[i], :]. ids must be in [0, vocab).
void Embedding(const float* table, int64_t vocab, int64_t dim, std::span<const int32_t> ids,
               float* out);

// Zero-centred RMSNorm over the last dim: y = x / sqrt(mean(x^2) + eps) * (1 + w).
// x, y: [rows, dim] (y may equal x).
void RmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* y);

// Gated RMSNorm of the GDN output: y = x / sqrt(mean(x^2) + eps) * w * silu(z), PLAIN weight.
// x, z, y: [rows, dim] (y may equal x).
void GatedRmsNorm(const float* x, const float* z, int64_t rows, int64_t dim, const float* weight,
                  float eps, float* y);

// Partial rotary embedding, rotate-half (non-interleaved) on the first rot_dim dims of each head.
// x: [rows, heads, head_dim] with row stride row_stride floats (in place); row r sits at
// positions[r]; inv_freq_i = theta^(-2i/rot_dim).
void ApplyRope(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
               int64_t rot_dim, const int32_t* positions, float theta);

// y[m, n] = sum_k x[m, k] * w[n, k]  (w is a PyTorch nn.Linear weight [n, k]). OpenBLAS sgemm.
void Linear(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y);

// Same product, but each y[i, j] is computed by the same instruction sequence whatever m is and
// wherever row i sits, so a row's result never depends on the other rows in the call.
void LinearRowInvariant(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y);

// Dot-product block used by Linear* and attention: y[i*ldy + j] = sum_k a[i*lda + k] * b[j*ldb + k]
// for i < m, j < n. Row-invariant in the sense above. Single-threaded.
void DotBlock(const float* a, int64_t lda, int64_t m, const float* b, int64_t ldb, int64_t n,
              int64_t k, float* y, int64_t ldy);

// out = silu(gate) * up, elementwise over n values.
void SwiGLU(const float* gate, const float* up, int64_t n, float* out);

// out = x * sigmoid(gate), elementwise (attention output gate). out may equal x.
void SigmoidGateMul(const float* x, const float* gate, int64_t n, float* out);

// Causal depthwise conv1d followed by SiLU, carrying state across calls (prefill and decode use
// the same kernel; decode is t = 1).
//   x: [t, channels], w: [channels, k] (HF conv1d weight [C, 1, K] squeezed),
//   state: [k - 1, channels], the k-1 most recent PRE-conv inputs (zeros for a fresh sequence);
//          updated in place to the last k-1 inputs after this call.
//   y[s, c] = silu(sum_i w[c, i] * xx[s + i, c]) where xx = concat(state, x).
void CausalConv1d(const float* x, int64_t t, int64_t channels, const float* w, int64_t k,
                  float* state, float* y);

// Shapes of one Gated DeltaNet call over t tokens of a single sequence.
struct GdnShape {
  int64_t t = 0;
  int64_t key_heads = 0;    // H_k; value head j reads key head j / (value_heads / key_heads)
  int64_t value_heads = 0;  // H_v
  int64_t key_dim = 0;      // d_k
  int64_t value_dim = 0;    // d_v
};

// Gated delta rule. q, k: [t, H_k, d_k] (raw; L2-normalised inside with eps 1e-6, q then scaled by
// `scale`), v: [t, H_v, d_v], g: [t, H_v] log-decay (<= 0), beta: [t, H_v] in (0, 1).
// state: [H_v, d_k, d_v] fp32 (K-major), read as the initial state and overwritten by the final
// state. out: [t, H_v, d_v].
//   S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
void GatedDeltaRuleRecurrent(const GdnShape& shape, const float* q, const float* k, const float* v,
                             const float* g, const float* beta, float scale, float* state,
                             float* out);

// Same result computed chunkwise (WY / UT transform, chunk_size tokens per chunk, default 64).
void GatedDeltaRuleChunked(const GdnShape& shape, const float* q, const float* k, const float* v,
                           const float* g, const float* beta, float scale, float* state, float* out,
                           int64_t chunk_size = 64);

// A paged view of one layer's K and V cache for one sequence: logical block i holds tokens
// [i*block_size, (i+1)*block_size), each block laid out [block_size, kv_heads, head_dim].
struct PagedKvView {
  const float* const* k_blocks = nullptr;
  const float* const* v_blocks = nullptr;
  int64_t num_blocks = 0;
  int64_t block_size = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
};

// Causal GQA attention for t query rows of one sequence at positions first_pos .. first_pos+t-1,
// against cached keys 0 .. first_pos+t-1 (the caller has written this chunk's K/V already).
// q: [t, q_heads, head_dim] (normed + rotated), out: [t, q_heads, head_dim]. Query head h uses kv
// head h / (q_heads / kv_heads). Softmax in fp32 with a running max.
void PagedCausalAttention(const float* q, int64_t t, int64_t q_heads, int64_t first_pos,
                          const PagedKvView& kv, float scale, float* out);

// Sampling controls. temperature <= 0 means greedy (lowest index wins ties).
struct SamplingParams {
  float temperature = 0.0f;
  int32_t top_k = 0;   // 0 = off
  float top_p = 1.0f;  // 1 = off
  uint64_t seed = 0;
};

// Picks a token from logits. Deterministic: the random draw is a pure function of
// (params.seed, counter), so a sequence passes its own step counter and gets the same token
// whatever batch it is in.
int32_t SampleToken(std::span<const float> logits, const SamplingParams& params, uint64_t counter);

}  // namespace prfaas::kernels::cpu
