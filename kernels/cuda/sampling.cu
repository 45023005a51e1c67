// Device sampling: argmax and sorted temperature / top-k / top-p draws. See sampling.h.
#include <algorithm>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "kernels/cuda/common.h"
#include "kernels/cuda/sampling.h"

namespace prfaas::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Same generator as kernels/cpu/sampling.cpp: the draw depends on (seed, counter) only.
__host__ __device__ inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

__device__ inline double UniformDraw(uint64_t seed, uint64_t counter) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

__global__ void ArgmaxRefKernel(const float* logits, int64_t rows, int64_t vocab, int32_t* out) {
  const int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (r >= rows) return;
  const float* l = logits + r * vocab;
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (l[i] > l[best]) best = i;
  out[r] = static_cast<int32_t>(best);
}

// (value, index) pair order: larger value first, then smaller index; NaN never wins.
struct ArgMaxPair {
  float v;
  int32_t i;
};
struct ArgMaxOp {
  __device__ ArgMaxPair operator()(const ArgMaxPair& a, const ArgMaxPair& b) const {
    if (a.i < 0) return b;
    if (b.i < 0) return a;
    return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
  }
};

__global__ void ArgmaxKernel(const float* logits, int64_t vocab, int32_t* out) {
  using Reduce = cub::BlockReduce<ArgMaxPair, kThreads>;
  __shared__ typename Reduce::TempStorage tmp;
  const float* l = logits + blockIdx.x * vocab;
  ArgMaxPair best{0.0f, -1};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = l[i];
    // Strictly greater keeps the lowest index within a thread (indices rise).
    if (best.i < 0 || v > best.v) best = {v, static_cast<int32_t>(i)};
  }
  const ArgMaxPair r = Reduce(tmp).Reduce(best, ArgMaxOp());
  if (threadIdx.x == 0) out[blockIdx.x] = r.i < 0 ? 0 : r.i;
}

__global__ void FillIotaKernel(int32_t* idx, int32_t* offsets, int64_t rows, int64_t vocab) {
  const int64_t total = rows * vocab;
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < total;
       e += int64_t{gridDim.x} * blockDim.x)
    idx[e] = static_cast<int32_t>(e % vocab);
  for (int64_t r = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; r <= rows;
       r += int64_t{gridDim.x} * blockDim.x)
    offsets[r] = static_cast<int32_t>(r * vocab);
}

// One block per row over the candidates sorted by (logit desc, index asc). Follows the CPU
// SampleToken step for step: keep top_k, probabilities relative to the top logit, smallest prefix
// reaching top_p, then the first candidate whose cumulative mass exceeds u * total.
__global__ void PickKernel(const float* sorted, const int32_t* idx, int64_t vocab,
                           const SamplingParams* params, const uint64_t* counters, int32_t* out) {
  using Scan = cub::BlockScan<double, kThreads>;
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ typename Reduce::TempStorage red_tmp;
  __shared__ double shared_total;
  __shared__ int found;
  const int64_t r = blockIdx.x;
  const float* l = sorted + r * vocab;
  const int32_t* ix = idx + r * vocab;
  const SamplingParams p = params[r];
  if (p.temperature <= 0.0f || p.top_k == 1) {
    if (threadIdx.x == 0) out[r] = ix[0];
    return;
  }
  int64_t keep = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  const double top = l[0];
  const double temp = p.temperature;
  auto prob = [&](int64_t i) {
    return i < keep ? exp((static_cast<double>(l[i]) - top) / temp) : 0.0;
  };

  double part = 0;
  for (int64_t i = threadIdx.x; i < keep; i += kThreads) part += prob(i);
  double total = Reduce(red_tmp).Sum(part);
  if (threadIdx.x == 0) shared_total = total;
  __syncthreads();
  total = shared_total;

  // Scans `keep` candidates in tiles; returns the first index whose inclusive cumulative value
  // (of prob(i) * mul) satisfies pred(cum), or -1.
  auto first_where = [&](double mul, auto pred) -> int64_t {
    double carry = 0;
    for (int64_t base = 0; base < keep; base += kThreads) {
      const int64_t i = base + threadIdx.x;
      const double v = i < keep ? prob(i) * mul : 0.0;
      double incl, tile_sum;
      Scan(scan_tmp).InclusiveSum(v, incl, tile_sum);
      if (threadIdx.x == 0) found = kThreads;
      __syncthreads();
      if (i < keep && pred(carry + incl)) atomicMin(&found, static_cast<int>(threadIdx.x));
      __syncthreads();
      const int f = found;
      __syncthreads();
      if (f < kThreads) return base + f;
      carry += tile_sum;
    }
    return -1;
  };

  if (p.top_p < 1.0f) {
    const double top_p = p.top_p;
    const int64_t n = first_where(1.0 / total, [&](double cum) { return cum >= top_p; });
    if (n >= 0) keep = n + 1;
    part = 0;
    for (int64_t i = threadIdx.x; i < keep; i += kThreads) part += prob(i);
    total = Reduce(red_tmp).Sum(part);
    if (threadIdx.x == 0) shared_total = total;
    __syncthreads();
    total = shared_total;
  }
  const double target = UniformDraw(p.seed, counters[r]) * total;
  const int64_t pick = first_where(1.0, [&](double cum) { return target < cum; });
  if (threadIdx.x == 0) out[r] = ix[pick >= 0 ? pick : keep - 1];
}

template <typename T>
void Grow(T** ptr, int64_t* cap, int64_t want) {
  if (want <= *cap) return;
  if (*ptr) CUDA_CHECK(cudaFree(*ptr));
  CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(ptr), sizeof(T) * want));
  *cap = want;
}

}  // namespace

void ArgmaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                cudaStream_t stream) {
  if (rows == 0) return;
  ArgmaxKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(logits, vocab, out);
  CUDA_CHECK_LAUNCH();
}

void ArgmaxRowsRef(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                   cudaStream_t stream) {
  if (rows == 0) return;
  ArgmaxRefKernel<<<static_cast<unsigned>(ceil_div<int64_t>(rows, 64)), 64, 0, stream>>>(
      logits, rows, vocab, out);
  CUDA_CHECK_LAUNCH();
}

Sampler::~Sampler() {
  for (void* p : {static_cast<void*>(keys_), static_cast<void*>(idx_in_),
                  static_cast<void*>(idx_out_), static_cast<void*>(offsets_), sort_tmp_,
                  static_cast<void*>(params_), static_cast<void*>(counters_)})
    if (p) (void)cudaFree(p);
}

void Sampler::Reserve(int64_t rows, int64_t vocab, size_t sort_bytes) {
  int64_t items = cap_items_;
  Grow(&keys_, &items, rows * vocab);
  items = cap_items_;
  Grow(&idx_in_, &items, rows * vocab);
  items = cap_items_;
  Grow(&idx_out_, &items, rows * vocab);
  cap_items_ = items;
  int64_t r = cap_rows_;
  Grow(&offsets_, &r, rows + 1);
  r = cap_rows_;
  Grow(&params_, &r, rows + 1);
  r = cap_rows_;
  Grow(&counters_, &r, rows + 1);
  cap_rows_ = r;
  if (sort_bytes > cap_sort_) {
    if (sort_tmp_) CUDA_CHECK(cudaFree(sort_tmp_));
    CUDA_CHECK(cudaMalloc(&sort_tmp_, sort_bytes));
    cap_sort_ = sort_bytes;
  }
}

void Sampler::Sample(const float* logits, int64_t rows, int64_t vocab, const SamplingParams* params,
                     const uint64_t* counters, int32_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  const int items = static_cast<int>(rows * vocab);
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, sort_bytes, logits, keys_, idx_in_, idx_out_, items, static_cast<int>(rows),
      offsets_, offsets_ + 1, 0, 32, stream));
  Reserve(rows, vocab, sort_bytes);
  FillIotaKernel<<<static_cast<unsigned>(std::min<int64_t>(ceil_div<int64_t>(items, 256), 4096)),
                   256, 0, stream>>>(idx_in_, offsets_, rows, vocab);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      sort_tmp_, sort_bytes, logits, keys_, idx_in_, idx_out_, items, static_cast<int>(rows),
      offsets_, offsets_ + 1, 0, 32, stream));
  // Copies from pageable memory return once the host data is staged, so the arrays may go away.
  CUDA_CHECK(cudaMemcpyAsync(params_, params, sizeof(SamplingParams) * rows, cudaMemcpyHostToDevice,
                             stream));
  CUDA_CHECK(cudaMemcpyAsync(counters_, counters, sizeof(uint64_t) * rows, cudaMemcpyHostToDevice,
                             stream));
  PickKernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(keys_, idx_out_, vocab, params_,
                                                                   counters_, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace prfaas::kernels::cuda
