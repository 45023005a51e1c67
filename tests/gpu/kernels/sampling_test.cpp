// Device sampling (kernels/cuda/sampling.h) against the CPU SampleToken: greedy must be identical
// (ties to the lowest index); temperature / top-k / top-p draws use the same (seed, counter)
// generator and must pick the same token except where a double probability sum differs in the
// last bits right at a bucket edge (allowed: 0.5% of draws). A distribution check against the
// float64 SamplingProbabilities guards against both sides being wrong the same way.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/ref.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/sampling.h"

namespace prfaas::kernels::cuda {
namespace {

struct DevLogits {
  float* p = nullptr;
  int32_t* out = nullptr;
  DevLogits(const std::vector<float>& h, int64_t rows) {
    CUDA_CHECK(cudaMalloc(&p, sizeof(float) * h.size()));
    CUDA_CHECK(cudaMemcpy(p, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&out, sizeof(int32_t) * rows));
    CUDA_CHECK(cudaMemset(out, 0xff, sizeof(int32_t) * rows));
  }
  ~DevLogits() {
    (void)cudaFree(p);
    (void)cudaFree(out);
  }
  std::vector<int32_t> Tokens(int64_t rows) const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<int32_t> t(rows);
    CUDA_CHECK(cudaMemcpy(t.data(), out, sizeof(int32_t) * rows, cudaMemcpyDeviceToHost));
    return t;
  }
};

std::vector<float> RandomLogits(std::mt19937_64& rng, int64_t rows, int64_t vocab) {
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> l(rows * vocab);
  for (auto& v : l) v = d(rng);
  return l;
}

TEST(Sampling, ArgmaxMatchesCpuWithTies) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  for (int64_t vocab : {1, 7, 260, 4096, 151936}) {
    const int64_t rows = 9;
    auto l = RandomLogits(rng, rows, vocab);
    // Plant ties for the maximum in some rows: the lowest index must win.
    for (int64_t r = 0; r < rows; r += 2) {
      const int64_t a = rng() % vocab, b = rng() % vocab;
      l[r * vocab + a] = l[r * vocab + b] = 100.0f;
    }
    DevLogits d(l, rows);
    for (bool fast : {false, true}) {
      if (fast) {
        ArgmaxRows(d.p, rows, vocab, d.out, nullptr);
      } else {
        ArgmaxRowsRef(d.p, rows, vocab, d.out, nullptr);
      }
      const auto got = d.Tokens(rows);
      for (int64_t r = 0; r < rows; ++r) {
        std::span<const float> row(l.data() + r * vocab, vocab);
        EXPECT_EQ(got[r], cpu::SampleToken(row, {}, 0)) << "vocab " << vocab << " row " << r;
      }
    }
  }
}

TEST(Sampling, DrawsMatchCpuSampler) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const SamplingParams settings[] = {{0.0f, 0, 1.0f, 1}, {1.0f, 0, 1.0f, 2},   {0.7f, 50, 1.0f, 3},
                                     {1.0f, 0, 0.9f, 4}, {0.8f, 40, 0.95f, 5}, {1.3f, 1, 1.0f, 6}};
  int64_t total = 0, same = 0;
  Sampler sampler;
  for (int64_t vocab : {260, 4096, 32000}) {
    const int64_t rows = 48;
    auto l = RandomLogits(rng, rows, vocab);
    DevLogits d(l, rows);
    for (const SamplingParams& base : settings) {
      std::vector<SamplingParams> params(rows, base);
      std::vector<uint64_t> counters(rows);
      for (int64_t r = 0; r < rows; ++r) {
        params[r].seed = base.seed * 1000 + static_cast<uint64_t>(r);
        counters[r] = rng() % 1000;
      }
      sampler.Sample(d.p, rows, vocab, params.data(), counters.data(), d.out, nullptr);
      const auto got = d.Tokens(rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int32_t want =
            cpu::SampleToken({l.data() + r * vocab, size_t(vocab)}, params[r], counters[r]);
        ASSERT_GE(got[r], 0);
        ASSERT_LT(got[r], vocab);
        ++total;
        same += got[r] == want;
        if (base.temperature <= 0 || base.top_k == 1) {
          EXPECT_EQ(got[r], want) << "greedy row " << r;
        }
      }
    }
  }
  std::printf("identical draws: %lld / %lld\n", static_cast<long long>(same),
              static_cast<long long>(total));
  EXPECT_GE(same, total - total / 200);
}

TEST(Sampling, EmpiricalDistributionFollowsReference) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  // One row replicated: each copy draws with its own counter, so the histogram estimates the
  // sampling distribution after temperature / top-k / top-p.
  std::mt19937_64 rng(std::random_device{}());
  const int64_t vocab = 64, rows = 20000;
  std::vector<float> one(vocab);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (auto& v : one) v = nd(rng);
  std::vector<float> l(rows * vocab);
  for (int64_t r = 0; r < rows; ++r) std::copy(one.begin(), one.end(), l.begin() + r * vocab);
  const SamplingParams p{0.9f, 20, 0.9f, 77};
  std::vector<SamplingParams> params(rows, p);
  std::vector<uint64_t> counters(rows);
  for (int64_t r = 0; r < rows; ++r) counters[r] = static_cast<uint64_t>(r);
  DevLogits d(l, rows);
  Sampler sampler;
  sampler.Sample(d.p, rows, vocab, params.data(), counters.data(), d.out, nullptr);
  const auto got = d.Tokens(rows);
  std::vector<double> probs(vocab), hist(vocab, 0.0);
  cpu::ref::SamplingProbabilities(one, p, probs.data());
  for (int32_t t : got) hist[t] += 1.0 / rows;
  for (int64_t i = 0; i < vocab; ++i) {
    // 5 sigma of a binomial proportion, plus exact zeros outside the kept set.
    const double sigma = std::sqrt(std::max(probs[i] * (1 - probs[i]), 1e-12) / rows);
    if (probs[i] == 0.0) {
      EXPECT_EQ(hist[i], 0.0) << "token " << i << " is outside top-k/top-p";
    } else {
      EXPECT_NEAR(hist[i], probs[i], 5 * sigma + 1e-9) << "token " << i;
    }
  }
}

}  // namespace
}  // namespace prfaas::kernels::cuda
