// cuBLASLt GEMMs (kernels/cuda/gemm.h) and the reference GEMM against the float64 CPU Linear.
// Error metric: max |gpu - ref| / max |ref|. fp32 mode must be a true fp32 product: 1e-5 (TF32
// would give ~1e-3 and fail). bf16 inputs (rounded before the reference) with fp32 output: 1e-5
// too, since accumulation is fp32; bf16 output: 1e-2.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/ref.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/gemm.h"

namespace prfaas::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Uploads doubles as fp32 or bf16 (returns the values actually stored, as doubles).
void* Upload(const std::vector<double>& h, DType t, std::vector<double>* stored) {
  void* p = nullptr;
  stored->resize(h.size());
  if (t == DType::kF32) {
    std::vector<float> f(h.begin(), h.end());
    for (size_t i = 0; i < h.size(); ++i) (*stored)[i] = f[i];
    CUDA_CHECK(cudaMalloc(&p, sizeof(float) * f.size()));
    CUDA_CHECK(cudaMemcpy(p, f.data(), sizeof(float) * f.size(), cudaMemcpyHostToDevice));
  } else {
    std::vector<bf16> b(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      b[i] = __float2bfloat16(static_cast<float>(h[i]));
      (*stored)[i] = __bfloat162float(b[i]);
    }
    CUDA_CHECK(cudaMalloc(&p, sizeof(bf16) * b.size()));
    CUDA_CHECK(cudaMemcpy(p, b.data(), sizeof(bf16) * b.size(), cudaMemcpyHostToDevice));
  }
  return p;
}

std::vector<double> Download(const void* p, int64_t n, DType t) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> h(n);
  if (t == DType::kF32) {
    std::vector<float> f(n);
    CUDA_CHECK(cudaMemcpy(f.data(), p, sizeof(float) * n, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; ++i) h[i] = f[i];
  } else {
    std::vector<bf16> b(n);
    CUDA_CHECK(cudaMemcpy(b.data(), p, sizeof(bf16) * n, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; ++i) h[i] = __bfloat162float(b[i]);
  }
  return h;
}

double RelErr(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num = std::max(num, std::fabs(got[i] - want[i]));
    den = std::max(den, std::fabs(want[i]));
  }
  return num / den;
}

struct Case {
  DType in, out;
  float beta;
  double tol;
};

TEST(Gemm, MatchesFloat64Linear) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  const uint64_t seed = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(-1, 1);
  struct Shape {
    int64_t m, n, k;
  };
  const Case cases[] = {{DType::kF32, DType::kF32, 0.0f, 1e-5},
                        {DType::kF32, DType::kF32, 1.0f, 1e-5},
                        {DType::kBF16, DType::kF32, 0.0f, 1e-5},
                        {DType::kBF16, DType::kF32, 1.0f, 1e-5},
                        {DType::kBF16, DType::kBF16, 0.0f, 1e-2}};
  for (Shape s : {Shape{1, 260, 64}, Shape{3, 4096, 512}, Shape{64, 1408, 512},
                  Shape{257, 768, 1000}, Shape{512, 512, 1408}}) {
    std::vector<double> x(s.m * s.k), w(s.n * s.k), y0(s.m * s.n);
    for (auto& v : x) v = d(rng);
    for (auto& v : w) v = d(rng);
    for (auto& v : y0) v = d(rng);
    for (const Case& c : cases) {
      std::vector<double> xs, ws, ys;
      void* dx = Upload(x, c.in, &xs);
      void* dw = Upload(w, c.in, &ws);
      std::vector<double> want(s.m * s.n);
      cpu::ref::Linear(xs.data(), s.m, s.k, ws.data(), s.n, want.data());
      for (bool fast : {false, true}) {
        // beta = 1 accumulates into y0; beta = 0 must ignore the (NaN-poisoned) output.
        void* dy = nullptr;
        if (c.beta != 0.0f) {
          dy = Upload(y0, c.out, &ys);
        } else {
          const size_t bytes = (c.out == DType::kF32 ? 4 : 2) * s.m * s.n;
          CUDA_CHECK(cudaMalloc(&dy, bytes));
          CUDA_CHECK(cudaMemset(dy, 0xff, bytes));
        }
        std::vector<double> expect = want;
        if (c.beta != 0.0f)
          for (size_t i = 0; i < expect.size(); ++i) expect[i] += ys[i];
        GemmArgs g{dx, dw, dy, s.m, s.n, s.k, c.in, c.out, c.beta};
        if (fast) {
          Linear(g, nullptr);
        } else {
          LinearRef(g, nullptr);
        }
        const double err = RelErr(Download(dy, s.m * s.n, c.out), expect);
        EXPECT_LE(err, c.tol) << "m " << s.m << " n " << s.n << " k " << s.k << " in " << int(c.in)
                              << " out " << int(c.out) << " beta " << c.beta
                              << (fast ? " cublasLt" : " ref");
        CUDA_CHECK(cudaFree(dy));
      }
      CUDA_CHECK(cudaFree(dx));
      CUDA_CHECK(cudaFree(dw));
    }
  }
}

TEST(Gemm, RepeatedShapeIsDeterministic) {
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_real_distribution<double> d(-1, 1);
  const int64_t m = 7, n = 300, k = 257;
  std::vector<double> x(m * k), w(n * k), xs, ws;
  for (auto& v : x) v = d(rng);
  for (auto& v : w) v = d(rng);
  void* dx = Upload(x, DType::kF32, &xs);
  void* dw = Upload(w, DType::kF32, &ws);
  void* dy = nullptr;
  CUDA_CHECK(cudaMalloc(&dy, sizeof(float) * m * n));
  GemmArgs g{dx, dw, dy, m, n, k, DType::kF32, DType::kF32, 0.0f};
  Linear(g, nullptr);
  const auto first = Download(dy, m * n, DType::kF32);
  CUDA_CHECK(cudaMemset(dy, 0xff, sizeof(float) * m * n));
  Linear(g, nullptr);  // cached plan
  EXPECT_EQ(Download(dy, m * n, DType::kF32), first);
  CUDA_CHECK(cudaFree(dx));
  CUDA_CHECK(cudaFree(dw));
  CUDA_CHECK(cudaFree(dy));
}

}  // namespace
}  // namespace prfaas::kernels::cuda
