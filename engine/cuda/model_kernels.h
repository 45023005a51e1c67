// Model-specific CUDA kernels of the engine's GPU forward: the glue between the generic ops
// (kernels/cuda) — attention q/k/v preparation, paged KV write, and simple fp32-accumulating
// attention, causal conv and Gated DeltaNet kernels that work for every head size and for fp32 as
// well as bf16 activations (the fast kernels of kernels/cuda/{attention,gdn,conv1d}.h are bf16
// only and take d = 128 for GDN; the backend uses them where they apply).
//
// Layouts are those of the CPU engine (engine/cache.h) on the device:
//   KV pool of one attention layer: layer_base = pool + layer * num_blocks * 2 * bs * row; block b
//     holds K [bs, kv_heads, head_dim] at layer_base + 2*b*bs*row and V right after it.
//   State pool: slot s at states + s * slot_stride floats, per GDN layer [conv | ssm] as the host.
// T is float or __nv_bfloat16 (activations, KV); math in fp32, norms in double, state fp32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace prfaas::engine::gpu {

// Row/sequence bookkeeping of one forward call, on the device. Rows are spans' tokens in order.
struct BatchMeta {
  int32_t rows = 0;
  int32_t spans = 0;
  const int32_t* positions = nullptr;     // [rows] absolute position of each row
  const int32_t* row_span = nullptr;      // [rows] span index of each row
  const int32_t* span_row0 = nullptr;     // [spans + 1] (cu_seqlens: the last entry is rows)
  const int32_t* span_pos0 = nullptr;     // [spans] position of each span's first row
  const int32_t* span_len = nullptr;      // [spans]
  const int32_t* span_slot = nullptr;     // [spans] state slot
  const int32_t* block_tables = nullptr;  // [spans, bt_stride]
  int32_t bt_stride = 0;
  int32_t max_len = 0;      // host-side max span length
  int32_t max_context = 0;  // host-side max pos0 + t
};

// From a fused qkv projection row [per q head: q(D) | gate(D)] [k (Hkv*D)] [v (Hkv*D)]:
// q = rope(rmsnorm(q) * (1 + q_norm)), k likewise with k_norm, gate and v copied. Outputs dense:
// q, gate [rows, hq, d]; k, v [rows, hkv, d]. inv_freq: device [rot_dim/2].
template <typename T>
void AttnPrep(const T* qkv, int64_t rows, int64_t hq, int64_t hkv, int64_t d, const float* q_norm,
              const float* k_norm, float eps, const int32_t* positions, const float* inv_freq,
              int64_t rot_dim, T* q, T* gate, T* k, T* v, cudaStream_t stream);

// Writes rows' k/v ([rows, row] each, row = hkv*d) into the paged cache at their positions.
template <typename T>
void PagedKvWrite(const T* k, const T* v, const BatchMeta& meta, T* layer_base, int64_t bs,
                  int64_t row, cudaStream_t stream);

// Causal GQA attention of each row over its sequence's keys 0..position (one warp per row and
// head, online softmax in fp32). q, out: [rows, hq, d]; d <= 512.
template <typename T>
void PagedAttention(const T* q, const BatchMeta& meta, const T* layer_base, int64_t bs, int64_t hq,
                    int64_t hkv, int64_t d, float scale, T* out, cudaStream_t stream);

// Causal depthwise conv + SiLU over each span with its slot's conv state ([K-1, channels], updated
// in place), as kernels/cpu CausalConv1d. x rows at stride x_stride; y dense [rows, channels].
// conv_base = states + offset of this layer's conv state in a slot. K <= 8.
template <typename T>
void CausalConv(const T* x, int64_t x_stride, const BatchMeta& meta, int64_t channels, int64_t k,
                const float* w, float* conv_base, int64_t slot_stride, T* y, cudaStream_t stream);

// Gated DeltaNet recurrence over each span's tokens, gates from the raw in_proj outputs, fused
// with the gated RMSNorm of the output (as the CPU GdnMixer: recurrent kernel, then GatedRmsNorm).
struct GdnLayer {
  int64_t key_heads = 0, value_heads = 0, key_dim = 0, value_dim = 0;
  const float* a_log = nullptr;    // [H_v]
  const float* dt_bias = nullptr;  // [H_v]
  const float* norm = nullptr;     // [d_v], plain weight
  float eps = 1e-6f;
  float scale = 0.0f;         // q scale, d_k^-0.5
  float* ssm_base = nullptr;  // states + offset of this layer's ssm state in a slot
  int64_t slot_stride = 0;    // floats
};
// qkv: conv output [rows, 2*H_k*d_k + H_v*d_v] (q | k | v); proj: in_proj rows at proj_stride with
// z at column z_col, b at b_col, a at a_col. out: [rows, H_v, d_v]. d_k in {16, 32, 64, 128}.
template <typename T>
void GdnRecurrent(const GdnLayer& layer, const T* qkv, const T* proj, int64_t proj_stride,
                  int64_t z_col, int64_t b_col, int64_t a_col, const BatchMeta& meta, T* out,
                  cudaStream_t stream);

// out[i, :] = x[idx[i], :] for i < n (fp32 rows of width h).
void GatherRows(const float* x, const int32_t* idx, int64_t n, int64_t h, float* out,
                cudaStream_t stream);

}  // namespace prfaas::engine::gpu
