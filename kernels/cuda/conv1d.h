// Causal depthwise conv1d + SiLU of the Gated DeltaNet mixer on the GPU, carrying the conv state
// across calls: the GPU twin of kernels/cpu CausalConv1d (same math, fp32 accumulation):
//   y[s, c] = silu(sum_i w[c, i] * xx[s + i, c]),  xx = concat(state, x) per sequence,
// and afterwards the sequence's state holds the last K-1 rows of xx (its most recent PRE-conv
// inputs), exactly as the CPU kernel leaves it.
//
// State slots: the conv state of sequence s lives in a slot pool, the GPU twin of engine/cache.h's
// StateSlotPool: slot `slot` starts at pool.base + slot * pool.slot_stride (floats) and holds
// [K-1, channels] fp32, row-major. For the engine's interleaved pool ([slot][layer][conv|ssm])
// base = Conv(layer, 0) and slot_stride = floats per slot. A slot index < 0 means "no state":
// the history is zeros and nothing is written back (benchmarks, stateless calls).
//
// All pointers are device memory; calls are asynchronous on `stream`, allocate nothing and are
// CUDA-graph capturable. Sequences of one call must use distinct slots. y never aliases x.
// The *_ref functions are plain one-thread-per-output kernels with the same contract (tests).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace prfaas::kernels::cuda {

// Per-sequence fp32 state storage addressed by slot index (shared by conv1d and GDN). base must be
// 16-byte aligned and slot_stride a multiple of 4 (the GDN decode moves the state as float4).
struct SlotPool {
  float* base = nullptr;    // slot 0
  int64_t slot_stride = 0;  // floats between consecutive slots
};

inline constexpr int kMaxConvKernel = 8;  // kernel_size limit (Qwen3-Next uses 4)

struct Conv1dArgs {
  const __nv_bfloat16* x = nullptr;  // [total_tokens, channels], row stride x_stride elements
  int64_t x_stride = 0;              // even; x 4-byte aligned (channel pairs are loaded together)
  const float* weight = nullptr;     // [channels, kernel_size] (HF [C, 1, K] squeezed), fp32
  __nv_bfloat16* y = nullptr;        // [total_tokens, channels], contiguous
  const int32_t* cu_seqlens = nullptr;  // [num_seqs + 1]; prefill only (update: row s = seq s)
  const int32_t* slots = nullptr;       // [num_seqs] state slot of each sequence (< 0: none)
  SlotPool states;
  int32_t num_seqs = 0;
  int32_t total_tokens = 0;  // cu_seqlens[num_seqs]; update: == num_seqs
  int32_t channels = 0;      // multiple of 8
  int32_t kernel_size = 0;   // 2 .. kMaxConvKernel
};

// Varlen prefill: sequence s covers rows cu_seqlens[s] .. cu_seqlens[s+1]-1 (may be empty).
// Two launches (outputs, then state write-back, so no block reads a state another overwrote).
void causal_conv1d_prefill(const Conv1dArgs& args, cudaStream_t stream);
void causal_conv1d_prefill_ref(const Conv1dArgs& args, cudaStream_t stream);

// Decode step: one token per sequence (row s of x belongs to sequence s; cu_seqlens ignored).
// One launch; each thread owns one (sequence, channel) and shifts its state in place.
void causal_conv1d_update(const Conv1dArgs& args, cudaStream_t stream);

}  // namespace prfaas::kernels::cuda
