// Causal GQA attention over a paged bf16 KV cache on the GPU: varlen prefill (flash-style, online
// softmax) and batched paged decode (flash-decoding, balanced over the SMs). Same math as the CPU
// kernel kernels/cpu PagedCausalAttention: out = softmax(scale * q k^T, causal) v, query head h
// reads kv head h / (q_heads / kv_heads), fp32 accumulation and softmax, bf16 in and out.
//
// Paged cache (per attention layer), the GPU twin of engine/cache.h's KvBlockPool: block b holds
// tokens [i*block_size, (i+1)*block_size) of a sequence whose block table has b at index i; K of
// block b starts at k_cache + b * block_stride and is laid out [block_size, kv_heads, head_dim]
// (bf16, row-major), V likewise from v_cache. block_stride is in elements, so the engine's
// interleaved pool ([layer][block][K|V][block_size][row]) is k_cache = K(layer, 0),
// v_cache = K(layer, 0) + block_size * row, block_stride = 2 * block_size * row.
//
// Both entry points first WRITE the new tokens' K/V into the cache (at positions
// first_pos .. first_pos + t - 1 of each sequence, through its block table) and then attend over
// positions 0 .. first_pos + t - 1, so cached prefixes and fresh tokens are handled alike. The
// blocks covering those positions must already be allocated in the block table. A sequence's new
// query rows must not share blocks with another sequence's new rows (copy-on-write is the
// caller's).
//
// Every pointer in AttentionBatch is device memory; q/k_new/v_new/out and the caches must be
// 16-byte aligned (rows are moved as 16-byte vectors). All calls are asynchronous on `stream`,
// allocate nothing and are CUDA-graph capturable (decode takes a caller-owned workspace).
// The *_ref functions are plain, obviously-correct CUDA kernels (one warp per query row and head)
// with the same contract, used by tests and as the fallback for shapes the fast kernels do not
// cover. Fast paths: head_dim 128 or 256, q_heads / kv_heads <= 16 (decode) and any group
// (prefill); other head_dims (multiple of 8, <= 512) go to the reference kernels automatically.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace prfaas::kernels::cuda {

struct PagedKvCache {
  __nv_bfloat16* k_cache = nullptr;  // K of block 0; block b at k_cache + b * block_stride
  __nv_bfloat16* v_cache = nullptr;  // V of block 0; block b at v_cache + b * block_stride
  int64_t block_stride = 0;          // elements between consecutive blocks (>= block_size * row)
  int32_t block_size = 0;            // tokens per block, any value >= 1 (engine default 64)
  const int32_t* block_tables = nullptr;  // [num_seqs, block_table_stride] int32 block ids
  int32_t block_table_stride = 0;         // entries per row of block_tables
};

// One batch of sequences. Sequence s has t_s = cu_seqlens[s+1] - cu_seqlens[s] new tokens (rows
// cu_seqlens[s] .. cu_seqlens[s+1]-1 of q/k_new/v_new/out) at positions first_pos[s] ..
// first_pos[s]
// + t_s - 1; its context after this call is first_pos[s] + t_s tokens. t_s may be 0 (nothing
// written or computed for it).
struct AttentionBatch {
  const __nv_bfloat16* q = nullptr;      // [total_tokens, q_heads, head_dim] (normed + rotated)
  const __nv_bfloat16* k_new = nullptr;  // [total_tokens, kv_heads, head_dim] (normed + rotated)
  const __nv_bfloat16* v_new = nullptr;  // [total_tokens, kv_heads, head_dim]
  __nv_bfloat16* out = nullptr;          // [total_tokens, q_heads, head_dim]; never aliases inputs
  const int32_t* cu_seqlens = nullptr;   // [num_seqs + 1], cu_seqlens[0] = 0; decode: may be null
                                         // (then row s is sequence s, one token each)
  const int32_t* first_pos = nullptr;    // [num_seqs] cached tokens before this call's rows
  PagedKvCache cache;
  int32_t num_seqs = 0;
  int32_t total_tokens = 0;    // cu_seqlens[num_seqs] (decode: num_seqs)
  int32_t max_new_tokens = 0;  // host-side bound on max_s t_s (sizes the prefill grid)
  int32_t max_context = 0;     // host-side bound on max_s first_pos[s] + t_s (sizes decode work)
  int32_t q_heads = 0;
  int32_t kv_heads = 0;  // divides q_heads
  int32_t head_dim = 0;  // multiple of 8, <= 512; fast paths 128 and 256
  float scale = 0.0f;    // usually 1 / sqrt(head_dim)
};

// Writes k_new / v_new rows into the paged cache (the first step of both entry points below;
// exposed for callers that fill a cache without attending, e.g. imported prefixes).
void PagedKvWrite(const AttentionBatch& batch, cudaStream_t stream);

// Varlen causal prefill (any t_s >= 0, any first_pos). Fast kernel: Hopper wgmma bf16 tensor
// cores (sm_90a), cp.async double-buffered K/V tiles read straight from the paged cache.
void AttentionPrefill(const AttentionBatch& batch, cudaStream_t stream);
void AttentionPrefillRef(const AttentionBatch& batch, cudaStream_t stream);

// Paged decode: exactly one new token per sequence (cu_seqlens null or cu_seqlens[s] = s,
// total_tokens = num_seqs). The keys of all sequences are spread evenly over one wave of
// persistent blocks (a block may finish one sequence's range and start the next; a long context
// is shared by several blocks), whose partial results a second kernel merges, using `workspace`
// (at least AttentionDecodeWorkspaceBytes for this batch's num_seqs / q_heads / head_dim /
// max_context). A smaller workspace, or null, means one block per (sequence, kv head): still
// correct, slower for long or uneven contexts. The size depends on the current device's SM count.
size_t AttentionDecodeWorkspaceBytes(int32_t num_seqs, int32_t q_heads, int32_t head_dim,
                                     int32_t max_context);
void AttentionDecode(const AttentionBatch& batch, void* workspace, size_t workspace_bytes,
                     cudaStream_t stream);
void AttentionDecodeRef(const AttentionBatch& batch, cudaStream_t stream);

}  // namespace prfaas::kernels::cuda
