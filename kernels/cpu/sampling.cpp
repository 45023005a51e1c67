// Token sampling: greedy, temperature, top-k, top-p with a counter-based random draw.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/ops.h"

namespace prfaas::kernels::cpu {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [0, 1) from (seed, counter) only: no hidden generator state.
double UniformDraw(uint64_t seed, uint64_t counter) {
  const uint64_t bits = SplitMix64(SplitMix64(seed) ^ counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int32_t Argmax(std::span<const float> logits) {
  int32_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = static_cast<int32_t>(i);
  }
  return best;
}

}  // namespace

int32_t SampleToken(std::span<const float> logits, const SamplingParams& params, uint64_t counter) {
  if (logits.empty()) return -1;
  if (params.temperature <= 0.0f || params.top_k == 1) return Argmax(logits);
  // Candidates ordered by logit desc, index asc: a total order, so ties never depend on sort
  // internals.
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  size_t keep = idx.size();
  if (params.top_k > 0 && static_cast<size_t>(params.top_k) < keep) {
    keep = static_cast<size_t>(params.top_k);
    std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), before);
  } else {
    std::sort(idx.begin(), idx.end(), before);
  }
  std::vector<double> prob(keep);
  const double top = logits[idx[0]];
  double total = 0;
  for (size_t i = 0; i < keep; ++i) {
    prob[i] = std::exp((logits[idx[i]] - top) / params.temperature);
    total += prob[i];
  }
  if (params.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (at least one token).
    double cum = 0;
    size_t n = 0;
    while (n < keep) {
      cum += prob[n] / total;
      ++n;
      if (cum >= params.top_p) break;
    }
    keep = n;
    total = std::accumulate(prob.begin(), prob.begin() + keep, 0.0);
  }
  const double target = UniformDraw(params.seed, counter) * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += prob[i];
    if (target < cum) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace prfaas::kernels::cpu
