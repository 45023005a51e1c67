// GPU small ops (kernels/cuda/ops.h), reference and fast kernels, against the float64 CPU
// references (kernels/cpu/ref.h) with fresh random inputs and NaN-poisoned outputs.
// Error metric: max |gpu - ref| / max |ref| over the output. Tolerances: fp32 1e-5 (bit-level
// differences of expf/sqrt only), bf16 1e-2 (inputs are rounded to bf16 before the reference, so
// this measures the kernel, not the input quantisation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/ref.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/ops.h"

namespace prfaas::kernels::cuda {
namespace {

using bf16 = __nv_bfloat16;

#define SKIP_WITHOUT_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device present"

uint64_t FreshSeed() {
  const uint64_t s = std::random_device{}();
  std::printf("seed %llu\n", static_cast<unsigned long long>(s));
  return s;
}

template <typename T>
double Round(double v) {
  if constexpr (std::is_same_v<T, float>) {
    return static_cast<float>(v);
  } else {
    return __bfloat162float(__float2bfloat16(static_cast<float>(v)));
  }
}

// Device copy of host doubles as T; poison() fills with NaN bytes.
template <typename T>
struct Dev {
  T* p = nullptr;
  int64_t n = 0;
  explicit Dev(int64_t count) : n(count) {
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), sizeof(T) * std::max<int64_t>(n, 1)));
    poison();
  }
  Dev(const std::vector<double>& h) : Dev(static_cast<int64_t>(h.size())) { put(h); }
  ~Dev() { (void)cudaFree(p); }
  void poison() { CUDA_CHECK(cudaMemset(p, 0xff, sizeof(T) * std::max<int64_t>(n, 1))); }
  void put(const std::vector<double>& h) {
    std::vector<T> t(h.size());
    for (size_t i = 0; i < h.size(); ++i) {
      if constexpr (std::is_same_v<T, float>) {
        t[i] = static_cast<float>(h[i]);
      } else {
        t[i] = __float2bfloat16(static_cast<float>(h[i]));
      }
    }
    CUDA_CHECK(cudaMemcpy(p, t.data(), sizeof(T) * t.size(), cudaMemcpyHostToDevice));
  }
  std::vector<double> get() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> t(n);
    CUDA_CHECK(cudaMemcpy(t.data(), p, sizeof(T) * n, cudaMemcpyDeviceToHost));
    std::vector<double> h(n);
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<T, float>) {
        h[i] = t[i];
      } else {
        h[i] = __bfloat162float(t[i]);
      }
    }
    return h;
  }
};

// Random values already rounded to T, so the reference sees exactly the kernel's inputs.
template <typename T>
std::vector<double> Random(std::mt19937_64& rng, int64_t n, double lo = -2, double hi = 2) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = Round<T>(d(rng));
  return v;
}

// max |got - want| / max |want|; any NaN fails.
double RelErr(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num = std::max(num, std::fabs(got[i] - want[i]));
    den = std::max(den, std::fabs(want[i]));
  }
  return den > 0 ? num / den : num;
}

template <typename T>
double Tol() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

template <typename T>
class OpsTest : public ::testing::Test {};
using Types = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(OpsTest, Types);

TYPED_TEST(OpsTest, EmbeddingGathersRows) {
  using T = TypeParam;
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  const int64_t vocab = 300, dim = 72, rows = 67;
  auto table = Random<T>(rng, vocab * dim);
  std::vector<int32_t> ids(rows);
  for (auto& i : ids) i = static_cast<int32_t>(rng() % vocab);
  std::vector<double> want(rows * dim);
  cpu::ref::Embedding(table.data(), vocab, dim, ids, want.data());
  Dev<T> dt(table);
  Dev<int32_t> di(rows);
  CUDA_CHECK(cudaMemcpy(di.p, ids.data(), sizeof(int32_t) * rows, cudaMemcpyHostToDevice));
  for (bool fast : {false, true}) {
    Dev<float> out(rows * dim);
    if (fast) {
      Embedding<T>(dt.p, dim, di.p, rows, out.p, nullptr);
    } else {
      EmbeddingRef<T>(dt.p, dim, di.p, rows, out.p, nullptr);
    }
    EXPECT_EQ(out.get(), want) << (fast ? "fast" : "ref");  // a gather is exact
  }
}

TYPED_TEST(OpsTest, RmsNormZeroCentredWithStrides) {
  using T = TypeParam;
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  for (int64_t dim : {16, 63, 1000, 4096}) {
    for (int64_t rows : {1, 3, 65}) {
      const int64_t xs = dim + 5;  // x rows inside a wider buffer
      auto x = Random<T>(rng, rows * xs);
      auto w = Random<float>(rng, dim, -0.5, 0.5);
      std::vector<double> dense(rows * dim), want(rows * dim);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < dim; ++i) dense[r * dim + i] = x[r * xs + i];
      cpu::ref::RmsNorm(dense.data(), rows, dim, w.data(), 1e-6, want.data());
      Dev<T> dx(x);
      Dev<float> dw(w);
      for (bool fast : {false, true}) {
        Dev<T> y(rows * dim);
        if (fast) {
          RmsNorm<T>(dx.p, xs, rows, dim, dw.p, 1e-6f, y.p, dim, nullptr);
        } else {
          RmsNormRef<T>(dx.p, xs, rows, dim, dw.p, 1e-6f, y.p, dim, nullptr);
        }
        const double err = RelErr(y.get(), want);
        EXPECT_LE(err, Tol<T>()) << "dim " << dim << " rows " << rows << (fast ? " fast" : " ref");
      }
    }
  }
}

TYPED_TEST(OpsTest, GatedRmsNorm) {
  using T = TypeParam;
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  for (int64_t dim : {16, 128, 1000}) {
    const int64_t rows = 37;
    auto x = Random<T>(rng, rows * dim), z = Random<T>(rng, rows * dim);
    auto w = Random<float>(rng, dim, 0.5, 1.5);
    std::vector<double> want(rows * dim);
    cpu::ref::GatedRmsNorm(x.data(), z.data(), rows, dim, w.data(), 1e-6, want.data());
    Dev<T> dx(x), dz(z);
    Dev<float> dw(w);
    for (bool fast : {false, true}) {
      Dev<T> y(rows * dim);
      if (fast) {
        GatedRmsNorm<T>(dx.p, dz.p, rows, dim, dw.p, 1e-6f, y.p, nullptr);
      } else {
        GatedRmsNormRef<T>(dx.p, dz.p, rows, dim, dw.p, 1e-6f, y.p, nullptr);
      }
      EXPECT_LE(RelErr(y.get(), want), Tol<T>()) << "dim " << dim << (fast ? " fast" : " ref");
    }
  }
}

TYPED_TEST(OpsTest, PartialRopeRotateHalf) {
  using T = TypeParam;
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  struct Shape {
    int64_t heads, head_dim, rot_dim;
  };
  for (Shape s : {Shape{2, 16, 4}, Shape{4, 64, 16}, Shape{16, 256, 64}}) {
    const int64_t rows = 33, stride = s.heads * s.head_dim + 8;
    auto x = Random<T>(rng, rows * stride);
    std::vector<int32_t> pos(rows);
    for (auto& p : pos) p = static_cast<int32_t>(rng() % 200000);
    const float theta = 1e7f;
    std::vector<double> want = x;
    cpu::ref::ApplyRope(want.data(), rows, stride, s.heads, s.head_dim, s.rot_dim, pos.data(),
                        theta);
    std::vector<float> inv(s.rot_dim / 2);
    RopeInvFreq(s.rot_dim, theta, inv.data());
    Dev<float> dinv(static_cast<int64_t>(inv.size()));
    CUDA_CHECK(cudaMemcpy(dinv.p, inv.data(), sizeof(float) * inv.size(), cudaMemcpyHostToDevice));
    Dev<int32_t> dpos(rows);
    CUDA_CHECK(cudaMemcpy(dpos.p, pos.data(), sizeof(int32_t) * rows, cudaMemcpyHostToDevice));
    for (bool fast : {false, true}) {
      Dev<T> dx(x);
      if (fast) {
        ApplyRope<T>(dx.p, rows, stride, s.heads, s.head_dim, s.rot_dim, dpos.p, dinv.p, nullptr);
      } else {
        ApplyRopeRef<T>(dx.p, rows, stride, s.heads, s.head_dim, s.rot_dim, dpos.p, dinv.p,
                        nullptr);
      }
      const auto got = dx.get();
      EXPECT_LE(RelErr(got, want), Tol<T>()) << "head_dim " << s.head_dim;
      // Dims past rot_dim and the row padding are untouched.
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = s.heads * s.head_dim; i < stride; ++i)
          ASSERT_EQ(got[r * stride + i], x[r * stride + i]);
    }
  }
}

TYPED_TEST(OpsTest, SwiGLUAndSigmoidGate) {
  using T = TypeParam;
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  const int64_t rows = 19, n = 1408;
  auto gu = Random<T>(rng, rows * 2 * n, -6, 6);
  std::vector<double> want(rows * n);
  for (int64_t r = 0; r < rows; ++r)
    cpu::ref::SwiGLU(&gu[r * 2 * n], &gu[r * 2 * n + n], n, &want[r * n]);
  Dev<T> dgu(gu);
  for (bool fast : {false, true}) {
    Dev<T> out(rows * n);
    if (fast) {
      SwiGLU<T>(dgu.p, dgu.p + n, rows, n, 2 * n, out.p, nullptr);
    } else {
      SwiGLURef<T>(dgu.p, dgu.p + n, rows, n, 2 * n, out.p, nullptr);
    }
    EXPECT_LE(RelErr(out.get(), want), Tol<T>()) << (fast ? "swiglu fast" : "swiglu ref");
  }
  // Gate rows at a wider stride (the gate sits inside the q projection).
  auto x = Random<T>(rng, rows * n);
  std::vector<double> gate_dense(rows * n), want2(rows * n);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < n; ++i) gate_dense[r * n + i] = gu[r * 2 * n + i];
  cpu::ref::SigmoidGateMul(x.data(), gate_dense.data(), rows * n, want2.data());
  for (bool fast : {false, true}) {
    Dev<T> dx(x);
    if (fast) {
      SigmoidGateMul<T>(dx.p, dgu.p, rows, n, 2 * n, dx.p, nullptr);  // in place
    } else {
      SigmoidGateMulRef<T>(dx.p, dgu.p, rows, n, 2 * n, dx.p, nullptr);
    }
    EXPECT_LE(RelErr(dx.get(), want2), Tol<T>()) << (fast ? "gate fast" : "gate ref");
  }
}

TEST(OpsConvert, Bf16RoundTrip) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(FreshSeed());
  const int64_t n = 100003;
  auto x = Random<float>(rng, n, -1e3, 1e3);
  Dev<float> dx(x), back(n);
  Dev<bf16> mid(n);
  Convert<float, bf16>(dx.p, n, mid.p, nullptr);
  Convert<bf16, float>(mid.p, n, back.p, nullptr);
  const auto got = back.get();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], Round<bf16>(x[i])) << i;
}

}  // namespace
}  // namespace prfaas::kernels::cuda
