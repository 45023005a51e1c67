// Gated DeltaNet (Qwen3-Next / Qwen3.5 linear attention) on the GPU: varlen chunked prefill and a
// batched decode step, the GPU twins of kernels/cpu GatedDeltaRuleChunked / ...Recurrent.
//
// Math (per value head j, key head j / (value_heads / key_heads), as in ops.h):
//   q, k L2-normalised per token and head (eps 1e-6), q then times `scale`;
//   g = -exp(a_log[j]) * softplus(a + dt_bias[j])   (log-decay, <= 0),  beta = sigmoid(b)
//   S <- exp(g) S;  u = beta (v - S^T k);  S <- S + k u^T;  o = S^T q
// The gates are computed inside the kernels from the raw in_proj outputs a, b (exactly as
// engine.cpp computes them for the CPU kernels). head dims d_k = d_v = 128 (kGdnHeadDim).
//
// State: fp32 [value_heads, d_k, d_v] (K-major, as the CPU engine) per sequence, in a SlotPool
// (conv1d.h): for the engine's interleaved pool base = Ssm(layer, 0), slot_stride = floats per
// slot. Prefill reads the initial state from the sequence's slot and overwrites it with the final
// state; slot < 0 means a zero initial state and no write-back. Sequences of one call must use
// distinct slots. Decode requires slot >= 0.
//
// Precision: bf16 q/k/v/out, fp32 gates, state and accumulation; the prefill's matrix products
// take bf16 operands (tensor cores; the per-chunk triangular solve's off-diagonal blocks tf32), so
// expect ~1e-3..1e-2 relative error vs the fp32 recurrence.
//
// All pointers are device memory; calls are asynchronous on `stream`, allocate nothing (prefill
// takes a caller-owned workspace) and are CUDA-graph capturable. q/k/v may be strided views into
// the conv1d output row [q | k | v]; their pointers must be 16-byte aligned and their strides
// multiples of 8 elements (the kernels use 16-byte loads). out never aliases the inputs.
// The *_ref functions are plain fp32 recurrent kernels (one thread per value column) with the same
// contract, used by tests.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/conv1d.h"  // SlotPool

namespace prfaas::kernels::cuda {

inline constexpr int kGdnHeadDim = 128;  // d_k = d_v
inline constexpr int kGdnChunk = 64;     // prefill chunk length (tokens)

// Raw gate inputs, one row per token: g and beta are derived in-kernel (see above).
struct GdnGates {
  const __nv_bfloat16* a = nullptr;  // [tokens, value_heads], row stride `stride` elements
  const __nv_bfloat16* b = nullptr;  // [tokens, value_heads], row stride `stride` elements
  int64_t stride = 0;
  const float* a_log = nullptr;    // [value_heads]
  const float* dt_bias = nullptr;  // [value_heads]
};

struct GdnArgs {
  const __nv_bfloat16* q = nullptr;  // [tokens, key_heads, 128], row stride q_stride elements
  const __nv_bfloat16* k = nullptr;  // [tokens, key_heads, 128], row stride k_stride
  const __nv_bfloat16* v = nullptr;  // [tokens, value_heads, 128], row stride v_stride
  int64_t q_stride = 0, k_stride = 0, v_stride = 0;
  GdnGates gates;
  __nv_bfloat16* out = nullptr;         // [tokens, value_heads, 128], contiguous
  const int32_t* cu_seqlens = nullptr;  // prefill: [num_seqs + 1]; decode: ignored (row s = seq s)
  const int32_t* slots = nullptr;       // [num_seqs] state slot per sequence
  SlotPool states;
  float scale = 0.0f;  // usually 1/sqrt(128)
  int32_t num_seqs = 0;
  int32_t total_tokens = 0;  // cu_seqlens[num_seqs]; decode: == num_seqs
  int32_t key_heads = 0;
  int32_t value_heads = 0;  // multiple of key_heads
};

// Chunked prefill (chunk 64, WY/UT form): a parallel per-chunk pass (k k^T, triangular solve,
// W/U, intra-chunk q k^T) followed by the sequential state pass, which is split over
// value_heads x 2 column blocks of the state per sequence, each block's 64 columns over 4
// independent warps (value_heads * 2 SMs per sequence: 64 for Qwen3-Next). A single sequence of
// more than 4K tokens is pipelined in 4K-token pieces so that the parallel pass of the next piece
// uses the SMs the state pass leaves free: the state pieces run on a high-priority helper stream
// (created with an event on the first such call, one pair per device) that forks from and joins
// `stream` through events, so the call stays asynchronous and capturable. Sequences may have any
// length (incl. 0).
size_t gdn_chunk_prefill_workspace_bytes(int32_t total_tokens, int32_t num_seqs, int32_t key_heads,
                                         int32_t value_heads);
void gdn_chunk_prefill(const GdnArgs& args, void* workspace, size_t workspace_bytes,
                       cudaStream_t stream);
void gdn_chunk_prefill_ref(const GdnArgs& args, cudaStream_t stream);

// Decode step: one token per sequence, state read from and written back to its slot in place.
void gdn_decode(const GdnArgs& args, cudaStream_t stream);
void gdn_decode_ref(const GdnArgs& args, cudaStream_t stream);

}  // namespace prfaas::kernels::cuda
