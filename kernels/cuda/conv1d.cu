// Causal depthwise conv1d + SiLU (see conv1d.h). Memory-bound: the fast prefill kernel walks a
// tile of rows per thread with the weights and the K-1 previous inputs in registers.
#include "kernels/cuda/common.h"
#include "kernels/cuda/conv1d.h"

namespace prfaas::kernels::cuda {
namespace {

__device__ __forceinline__ float silu(float x) {
  return x / (1.0f + __expf(-x));
}

// Index of the sequence that owns row `row`: the last s with cu_seqlens[s] <= row (empty
// sequences are skipped because their start equals the next one's).
__device__ __forceinline__ int find_seq(const int32_t* cu_seqlens, int num_seqs, int row) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu_seqlens[mid] <= row) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__device__ __forceinline__ const float* slot_ptr(const SlotPool& pool, int32_t slot) {
  return slot < 0 ? nullptr : pool.base + static_cast<int64_t>(slot) * pool.slot_stride;
}

// One thread per (2 channels, tile of kRows rows): the weights and a sliding window of the last
// K-1 inputs stay in registers, so each input element is read once per tile and every warp access
// is 128 contiguous bytes. Rows of a tile may span several sequences; the window restarts from
// the sequence's state (or zeros) at each sequence start. States are only read here.
constexpr int kRows = 16;

template <int K>
__global__ void conv1d_prefill_kernel(Conv1dArgs a) {
  constexpr int kHist = K - 1;
  const int pairs = a.channels / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int pair = static_cast<int>(idx % pairs);
  const int64_t row0 = idx / pairs * kRows;
  if (row0 >= a.total_tokens) return;
  const int row1 = static_cast<int>(row0 + kRows < a.total_tokens ? row0 + kRows : a.total_tokens);
  const int c = 2 * pair;
  float w0[K], w1[K];
#pragma unroll
  for (int i = 0; i < K; ++i) {
    w0[i] = a.weight[c * K + i];
    w1[i] = a.weight[(c + 1) * K + i];
  }
  int seq = find_seq(a.cu_seqlens, a.num_seqs, static_cast<int>(row0));
  int seq_begin = a.cu_seqlens[seq], seq_end = a.cu_seqlens[seq + 1];
  // Window = inputs at positions local-kHist .. local-1 of the current sequence.
  float h0[kHist > 0 ? kHist : 1], h1[kHist > 0 ? kHist : 1];
  auto load_window = [&](int row) {
    const int local = row - seq_begin;
    const float* state = slot_ptr(a.states, a.slots[seq]);
#pragma unroll
    for (int i = 0; i < kHist; ++i) {
      const int pos = local - kHist + i;
      if (pos >= 0) {
        const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(
            a.x + static_cast<int64_t>(seq_begin + pos) * a.x_stride + c));
        h0[i] = v.x;
        h1[i] = v.y;
      } else if (state != nullptr) {
        h0[i] = state[(pos + kHist) * a.channels + c];
        h1[i] = state[(pos + kHist) * a.channels + c + 1];
      } else {
        h0[i] = h1[i] = 0.0f;
      }
    }
  };
  load_window(static_cast<int>(row0));
  for (int row = static_cast<int>(row0); row < row1; ++row) {
    if (row >= seq_end) {  // next non-empty sequence starts here
      do {
        ++seq;
      } while (a.cu_seqlens[seq + 1] <= row);
      seq_begin = a.cu_seqlens[seq];
      seq_end = a.cu_seqlens[seq + 1];
      load_window(row);
    }
    const float2 x = __bfloat1622float2(
        *reinterpret_cast<const __nv_bfloat162*>(a.x + static_cast<int64_t>(row) * a.x_stride + c));
    float acc0 = w0[kHist] * x.x, acc1 = w1[kHist] * x.y;
#pragma unroll
    for (int i = 0; i < kHist; ++i) {
      acc0 += w0[i] * h0[i];
      acc1 += w1[i] * h1[i];
    }
    *reinterpret_cast<__nv_bfloat162*>(a.y + static_cast<int64_t>(row) * a.channels + c) =
        __floats2bfloat162_rn(silu(acc0), silu(acc1));
#pragma unroll
    for (int i = 0; i + 1 < kHist; ++i) {
      h0[i] = h0[i + 1];
      h1[i] = h1[i + 1];
    }
    if constexpr (kHist > 0) {
      h0[kHist - 1] = x.x;
      h1[kHist - 1] = x.y;
    }
  }
}

// One thread per (sequence, channel): the new state is the last K-1 rows of concat(state, x).
// All old rows are read into registers before any is written.
__global__ void conv1d_state_kernel(Conv1dArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(a.num_seqs) * a.channels) return;
  const int seq = static_cast<int>(idx / a.channels);
  const int c = static_cast<int>(idx % a.channels);
  if (a.slots[seq] < 0) return;
  float* state = a.states.base + static_cast<int64_t>(a.slots[seq]) * a.states.slot_stride;
  const int hist = a.kernel_size - 1;
  const int start = a.cu_seqlens[seq];
  const int t = a.cu_seqlens[seq + 1] - start;
  float old[kMaxConvKernel];
  for (int r = 0; r < hist; ++r) old[r] = state[r * a.channels + c];
  for (int r = 0; r < hist; ++r) {
    const int src = t + r;  // row of concat(state, x)
    state[r * a.channels + c] =
        src < hist
            ? old[src]
            : __bfloat162float(a.x[static_cast<int64_t>(start + src - hist) * a.x_stride + c]);
  }
}

// Reference: one thread per (sequence, channel) walks the sequence, then writes the state.
__global__ void conv1d_prefill_ref_kernel(Conv1dArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(a.num_seqs) * a.channels) return;
  const int seq = static_cast<int>(idx / a.channels);
  const int c = static_cast<int>(idx % a.channels);
  const int hist = a.kernel_size - 1;
  const int start = a.cu_seqlens[seq];
  const int t = a.cu_seqlens[seq + 1] - start;
  float* state = a.slots[seq] < 0
                     ? nullptr
                     : a.states.base + static_cast<int64_t>(a.slots[seq]) * a.states.slot_stride;
  float win[kMaxConvKernel];  // the K-1 most recent inputs, oldest first
  for (int r = 0; r < hist; ++r) win[r] = state ? state[r * a.channels + c] : 0.0f;
  for (int s = 0; s < t; ++s) {
    const float xs = __bfloat162float(a.x[static_cast<int64_t>(start + s) * a.x_stride + c]);
    float acc = a.weight[c * a.kernel_size + hist] * xs;
    for (int i = 0; i < hist; ++i) acc += a.weight[c * a.kernel_size + i] * win[i];
    a.y[static_cast<int64_t>(start + s) * a.channels + c] = __float2bfloat16(silu(acc));
    for (int i = 0; i + 1 < hist; ++i) win[i] = win[i + 1];
    if (hist > 0) win[hist - 1] = xs;
  }
  if (state) {
    for (int r = 0; r < hist; ++r) state[r * a.channels + c] = win[r];
  }
}

// Decode: one thread per (sequence, channel); row s of x is sequence s's only token.
__global__ void conv1d_update_kernel(Conv1dArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(a.num_seqs) * a.channels) return;
  const int seq = static_cast<int>(idx / a.channels);
  const int c = static_cast<int>(idx % a.channels);
  const int hist = a.kernel_size - 1;
  float* state = a.slots[seq] < 0
                     ? nullptr
                     : a.states.base + static_cast<int64_t>(a.slots[seq]) * a.states.slot_stride;
  const float xs = __bfloat162float(a.x[static_cast<int64_t>(seq) * a.x_stride + c]);
  float acc = a.weight[c * a.kernel_size + hist] * xs;
  float win[kMaxConvKernel];
  for (int i = 0; i < hist; ++i) {
    win[i] = state ? state[i * a.channels + c] : 0.0f;
    acc += a.weight[c * a.kernel_size + i] * win[i];
  }
  a.y[static_cast<int64_t>(seq) * a.channels + c] = __float2bfloat16(silu(acc));
  if (state) {
    for (int i = 0; i + 1 < hist; ++i) state[i * a.channels + c] = win[i + 1];
    if (hist > 0) state[(hist - 1) * a.channels + c] = xs;
  }
}

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(ceil_div<int64_t>(n, kThreads));
}

}  // namespace

void causal_conv1d_prefill(const Conv1dArgs& a, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  if (a.total_tokens > 0) {
    const int64_t n = ceil_div<int64_t>(a.total_tokens, kRows) * (a.channels / 2);
    switch (a.kernel_size) {
#define PRFAAS_CONV_CASE(K) \
  case K: conv1d_prefill_kernel<K><<<blocks_for(n), kThreads, 0, stream>>>(a); break;
      PRFAAS_CONV_CASE(2)
      PRFAAS_CONV_CASE(3)
      PRFAAS_CONV_CASE(4)
      PRFAAS_CONV_CASE(5)
      PRFAAS_CONV_CASE(6)
      PRFAAS_CONV_CASE(7)
      PRFAAS_CONV_CASE(8)
#undef PRFAAS_CONV_CASE
      default:
        CudaFail(cudaErrorInvalidValue, "conv1d kernel_size outside 2..8", __FILE__, __LINE__);
    }
    CUDA_CHECK_LAUNCH();
  }
  conv1d_state_kernel<<<blocks_for(static_cast<int64_t>(a.num_seqs) * a.channels), kThreads, 0,
                        stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void causal_conv1d_prefill_ref(const Conv1dArgs& a, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  conv1d_prefill_ref_kernel<<<blocks_for(static_cast<int64_t>(a.num_seqs) * a.channels), kThreads,
                              0, stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

void causal_conv1d_update(const Conv1dArgs& a, cudaStream_t stream) {
  if (a.num_seqs == 0) return;
  conv1d_update_kernel<<<blocks_for(static_cast<int64_t>(a.num_seqs) * a.channels), kThreads, 0,
                         stream>>>(a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace prfaas::kernels::cuda
