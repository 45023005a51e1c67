// Token sampling on the device: greedy argmax and temperature / top-k / top-p with the same
// counter-based random draw as kernels/cpu SampleToken (SplitMix64 of (seed, counter)), so a
// sequence samples reproducibly whatever batch it is in, and the GPU and CPU pick the same token
// except where probabilities differ in the last bits at a bucket edge.
//
// logits: device fp32 [rows, vocab]; out: device int32 [rows]. Launches on `stream`.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/ops.h"  // SamplingParams

namespace prfaas::kernels::cuda {

using kernels::cpu::SamplingParams;

// out[r] = argmax_j logits[r, j], lowest index on ties. One block per row (fast) / one thread per
// row (reference).
void ArgmaxRows(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                cudaStream_t stream);
void ArgmaxRowsRef(const float* logits, int64_t rows, int64_t vocab, int32_t* out,
                   cudaStream_t stream);

// Samples one token per row with per-row params and counters (host arrays, `rows` long). Rows with
// temperature <= 0 or top_k == 1 are greedy. Candidates are ordered by (logit desc, index asc)
// with a stable segmented radix sort; probabilities are exp((l - max) / T) in double as on the
// CPU. Holds its scratch between calls; not thread-safe.
class Sampler {
 public:
  Sampler() = default;
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  void Sample(const float* logits, int64_t rows, int64_t vocab, const SamplingParams* params,
              const uint64_t* counters, int32_t* out, cudaStream_t stream);

 private:
  void Reserve(int64_t rows, int64_t vocab, size_t sort_bytes);
  int64_t cap_items_ = 0, cap_rows_ = 0;
  size_t cap_sort_ = 0;
  float* keys_ = nullptr;
  int32_t* idx_in_ = nullptr;
  int32_t* idx_out_ = nullptr;
  int32_t* offsets_ = nullptr;
  void* sort_tmp_ = nullptr;
  SamplingParams* params_ = nullptr;
  uint64_t* counters_ = nullptr;
};

}  // namespace prfaas::kernels::cuda
