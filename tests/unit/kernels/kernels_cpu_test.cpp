// CPU kernels against their float64 references (kernels/cpu/ref.h), with fresh random inputs,
// odd lengths and NaN-poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cpu/ref.h"

namespace prfaas::kernels::cpu {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }
  std::vector<float> Rand(int64_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng_);
    return v;
  }
  static std::vector<double> D(const std::vector<float>& v) { return {v.begin(), v.end()}; }
  static std::vector<float> Poisoned(int64_t n) {
    return std::vector<float>(static_cast<size_t>(n), kNaN);
  }
  uint32_t seed_ = 0;
  std::mt19937 rng_;
};

// max |got - want| <= atol + rtol * max|want|; NaN in got never passes.
void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double rtol,
                 double atol = 0.0) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  const double tol = atol + rtol * scale;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << "NaN at " << i;
    ASSERT_LE(std::abs(got[i] - want[i]), tol)
        << "at " << i << " got " << got[i] << " want " << want[i];
  }
}

TEST_F(KernelTest, EmbeddingMatchesReference) {
  SCOPED_TRACE(seed_);
  const int64_t vocab = 37, dim = 19;
  auto table = Rand(vocab * dim);
  std::vector<int32_t> ids = {0, 36, 5, 5, 17};
  auto out = Poisoned(ids.size() * dim);
  Embedding(table.data(), vocab, dim, ids, out.data());
  std::vector<double> want(ids.size() * dim);
  auto td = D(table);
  ref::Embedding(td.data(), vocab, dim, ids, want.data());
  ExpectClose(out, want, 0.0);
}

TEST_F(KernelTest, NormsMatchReference) {
  SCOPED_TRACE(seed_);
  for (int64_t dim : {1, 3, 63, 64, 65, 1000}) {
    const int64_t rows = 5;
    auto x = Rand(rows * dim, -3, 3), z = Rand(rows * dim, -3, 3), w = Rand(dim);
    auto y = Poisoned(rows * dim), yg = Poisoned(rows * dim);
    RmsNorm(x.data(), rows, dim, w.data(), 1e-6f, y.data());
    GatedRmsNorm(x.data(), z.data(), rows, dim, w.data(), 1e-6f, yg.data());
    auto xd = D(x), zd = D(z), wd = D(w);
    std::vector<double> want(rows * dim), wantg(rows * dim);
    ref::RmsNorm(xd.data(), rows, dim, wd.data(), 1e-6, want.data());
    ref::GatedRmsNorm(xd.data(), zd.data(), rows, dim, wd.data(), 1e-6, wantg.data());
    ExpectClose(y, want, 1e-6);
    ExpectClose(yg, wantg, 1e-6);
  }
}

TEST_F(KernelTest, RopeMatchesReference) {
  SCOPED_TRACE(seed_);
  const int64_t rows = 65, heads = 3, head_dim = 32, stride = heads * head_dim + 5;
  for (int64_t rot : {8, 32}) {
    auto x = Rand(rows * stride);
    std::vector<int32_t> pos(rows);
    std::uniform_int_distribution<int32_t> pd(0, 40000);
    for (auto& p : pos) p = pd(rng_);
    auto xd = D(x);
    ApplyRope(x.data(), rows, stride, heads, head_dim, rot, pos.data(), 1e6f);
    ref::ApplyRope(xd.data(), rows, stride, heads, head_dim, rot, pos.data(), 1e6f);
    ExpectClose(x, xd, 1e-5);
  }
}

TEST_F(KernelTest, LinearMatchesReferenceAndRowInvariant) {
  SCOPED_TRACE(seed_);
  for (int64_t m : {1, 3, 63, 64, 65}) {
    const int64_t k = 67, n = 131;
    auto x = Rand(m * k), w = Rand(n * k);
    auto xd = D(x), wd = D(w);
    std::vector<double> want(m * n);
    ref::Linear(xd.data(), m, k, wd.data(), n, want.data());
    auto y = Poisoned(m * n), yi = Poisoned(m * n);
    Linear(x.data(), m, k, w.data(), n, y.data());
    LinearRowInvariant(x.data(), m, k, w.data(), n, yi.data());
    ExpectClose(y, want, 1e-5);
    ExpectClose(yi, want, 1e-5);
    // Every row alone gives bit-identical results to the row inside the batch.
    for (int64_t r = 0; r < m; ++r) {
      auto one = Poisoned(n);
      LinearRowInvariant(x.data() + r * k, 1, k, w.data(), n, one.data());
      for (int64_t j = 0; j < n; ++j)
        ASSERT_EQ(one[j], yi[r * n + j]) << "row " << r << " col " << j;
    }
  }
}

TEST_F(KernelTest, ElementwiseMatchReference) {
  SCOPED_TRACE(seed_);
  const int64_t n = 1000;
  auto a = Rand(n, -8, 8), b = Rand(n, -8, 8);
  auto ad = D(a), bd = D(b);
  auto y = Poisoned(n), y2 = Poisoned(n);
  std::vector<double> want(n), want2(n);
  SwiGLU(a.data(), b.data(), n, y.data());
  ref::SwiGLU(ad.data(), bd.data(), n, want.data());
  SigmoidGateMul(a.data(), b.data(), n, y2.data());
  ref::SigmoidGateMul(ad.data(), bd.data(), n, want2.data());
  ExpectClose(y, want, 1e-6);
  ExpectClose(y2, want2, 1e-6);
}

TEST_F(KernelTest, CausalConvPrefillThenStepsMatchesReference) {
  SCOPED_TRACE(seed_);
  const int64_t ch = 13;
  for (int64_t k : {2, 4}) {
    for (int64_t t : {1, 3, 63, 64, 65, 1000}) {
      auto x = Rand(t * ch), w = Rand(ch * k);
      auto init = Rand((k - 1) * ch);
      auto xd = D(x), wd = D(w), sd = D(init);
      std::vector<double> want(t * ch);
      ref::CausalConv1d(xd.data(), t, ch, wd.data(), k, sd.data(), want.data());
      // Fast kernel: a prefill of the first half, then single-token steps.
      auto state = init;
      auto y = Poisoned(t * ch);
      const int64_t first = t / 2;
      CausalConv1d(x.data(), first, ch, w.data(), k, state.data(), y.data());
      for (int64_t s = first; s < t; ++s)
        CausalConv1d(x.data() + s * ch, 1, ch, w.data(), k, state.data(), y.data() + s * ch);
      ExpectClose(y, want, 1e-5);
      ExpectClose(state, sd, 0.0);
    }
  }
}

struct GdnInputs {
  std::vector<float> q, k, v, g, beta, state;
};

class GdnTest : public KernelTest {
 protected:
  GdnInputs Make(const GdnShape& s, bool with_state) {
    GdnInputs in;
    in.q = Rand(s.t * s.key_heads * s.key_dim);
    in.k = Rand(s.t * s.key_heads * s.key_dim);
    in.v = Rand(s.t * s.value_heads * s.value_dim);
    in.g = Rand(s.t * s.value_heads, -1.0f, 0.0f);
    in.beta = Rand(s.t * s.value_heads, 0.0f, 1.0f);
    in.state = with_state ? Rand(s.value_heads * s.key_dim * s.value_dim)
                          : std::vector<float>(s.value_heads * s.key_dim * s.value_dim, 0.0f);
    return in;
  }
};

TEST_F(GdnTest, RecurrentAndChunkedMatchReference) {
  SCOPED_TRACE(seed_);
  for (int64_t t : {1, 3, 63, 64, 65, 1000}) {
    for (bool with_state : {false, true}) {
      for (int64_t chunk : {4, 16, 64}) {
        if (t == 1000 && chunk != 64) continue;
        GdnShape s{t, 2, 4, 16, 8};
        auto in = Make(s, with_state);
        const float scale = 1.0f / std::sqrt(16.0f);
        std::vector<double> want(t * s.value_heads * s.value_dim);
        auto sd = D(in.state);
        ref::GatedDeltaRuleRecurrent(s, D(in.q).data(), D(in.k).data(), D(in.v).data(),
                                     D(in.g).data(), D(in.beta).data(), scale, sd.data(),
                                     want.data());
        auto st1 = in.state, st2 = in.state;
        auto o1 = Poisoned(want.size()), o2 = Poisoned(want.size());
        GatedDeltaRuleRecurrent(s, in.q.data(), in.k.data(), in.v.data(), in.g.data(),
                                in.beta.data(), scale, st1.data(), o1.data());
        GatedDeltaRuleChunked(s, in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(),
                              scale, st2.data(), o2.data(), chunk);
        SCOPED_TRACE(::testing::Message()
                     << "t=" << t << " state=" << with_state << " chunk=" << chunk);
        ExpectClose(o1, want, 1e-5);
        ExpectClose(o2, want, 1e-5);
        ExpectClose(st1, sd, 1e-5);
        ExpectClose(st2, sd, 1e-5);
      }
    }
  }
}

// The acceptance check: 2,000 tokens, chunked vs recurrent in fp32, rel err < 1e-5.
TEST_F(GdnTest, ChunkedAgreesWithRecurrentOver2000Tokens) {
  SCOPED_TRACE(seed_);
  for (bool with_state : {false, true}) {
    GdnShape s{2000, 2, 4, 32, 32};
    auto in = Make(s, with_state);
    const float scale = 1.0f / std::sqrt(32.0f);
    auto st1 = in.state, st2 = in.state;
    auto o1 = Poisoned(s.t * s.value_heads * s.value_dim), o2 = Poisoned(o1.size());
    GatedDeltaRuleRecurrent(s, in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(),
                            scale, st1.data(), o1.data());
    GatedDeltaRuleChunked(s, in.q.data(), in.k.data(), in.v.data(), in.g.data(), in.beta.data(),
                          scale, st2.data(), o2.data(), 64);
    double num = 0, den = 0;
    for (size_t i = 0; i < o1.size(); ++i) {
      ASSERT_FALSE(std::isnan(o1[i]) || std::isnan(o2[i]));
      num = std::max(num, std::abs(static_cast<double>(o2[i]) - o1[i]));
      den = std::max(den, std::abs(static_cast<double>(o1[i])));
    }
    EXPECT_LT(num / den, 1e-5) << "with_state=" << with_state;
    std::vector<double> st1d = D(st1);
    ExpectClose(st2, st1d, 1e-5);
  }
}

TEST_F(KernelTest, PagedAttentionMatchesReference) {
  SCOPED_TRACE(seed_);
  const int64_t hq = 4, hkv = 2, d = 24;
  for (int64_t bs : {16, 64}) {
    for (int64_t t : {1, 3, 63, 64, 65, 1000}) {
      for (int64_t first : {int64_t{0}, int64_t{37}}) {
        if (t == 1000 && (bs != 64 || first != 0)) continue;  // keep the float64 reference cheap
        const int64_t total = first + t;
        auto k = Rand(total * hkv * d, -2, 2), v = Rand(total * hkv * d),
             q = Rand(t * hq * d, -2, 2);
        // Scatter the contiguous cache into blocks in a shuffled physical order.
        const int64_t nb = (total + bs - 1) / bs;
        std::vector<int64_t> perm(nb);
        for (int64_t i = 0; i < nb; ++i) perm[i] = i;
        std::shuffle(perm.begin(), perm.end(), rng_);
        std::vector<float> kp(nb * bs * hkv * d, kNaN), vp(kp.size(), kNaN);
        std::vector<const float*> kb(nb), vb(nb);
        for (int64_t b = 0; b < nb; ++b) {
          kb[b] = kp.data() + perm[b] * bs * hkv * d;
          vb[b] = vp.data() + perm[b] * bs * hkv * d;
          for (int64_t i = 0; i < bs && b * bs + i < total; ++i)
            for (int64_t x = 0; x < hkv * d; ++x) {
              const_cast<float*>(kb[b])[i * hkv * d + x] = k[(b * bs + i) * hkv * d + x];
              const_cast<float*>(vb[b])[i * hkv * d + x] = v[(b * bs + i) * hkv * d + x];
            }
        }
        PagedKvView view{kb.data(), vb.data(), nb, bs, hkv, d};
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        auto out = Poisoned(t * hq * d);
        PagedCausalAttention(q.data(), t, hq, first, view, scale, out.data());
        std::vector<double> want(out.size());
        ref::CausalAttention(D(q).data(), t, hq, first, D(k).data(), D(v).data(), hkv, d, scale,
                             want.data());
        SCOPED_TRACE(::testing::Message() << "bs=" << bs << " t=" << t << " first=" << first);
        ExpectClose(out, want, 1e-5);
        // A single query row (decode) is bit-identical to the same row inside the prefill.
        const int64_t r = t - 1;
        auto one = Poisoned(hq * d);
        PagedCausalAttention(q.data() + r * hq * d, 1, hq, first + r, view, scale, one.data());
        for (int64_t x = 0; x < hq * d; ++x) ASSERT_EQ(one[x], out[r * hq * d + x]);
      }
    }
  }
}

TEST_F(KernelTest, SamplingGreedyAndDeterminism) {
  SCOPED_TRACE(seed_);
  auto logits = Rand(260, -5, 5);
  int32_t best = 0;
  for (int32_t i = 1; i < 260; ++i)
    if (logits[i] > logits[best]) best = i;
  EXPECT_EQ(SampleToken(logits, {}, 0), best);
  EXPECT_EQ(SampleToken(logits, {1.0f, 1, 1.0f, 7}, 3), best);
  SamplingParams p{0.8f, 40, 0.9f, 1234};
  for (uint64_t c = 0; c < 50; ++c) EXPECT_EQ(SampleToken(logits, p, c), SampleToken(logits, p, c));
  // Ties: lowest index wins.
  std::vector<float> tie = {1.0f, 3.0f, 3.0f, 0.0f};
  EXPECT_EQ(SampleToken(tie, {}, 0), 1);
}

TEST_F(KernelTest, SamplingFrequenciesMatchReferenceDistribution) {
  SCOPED_TRACE(seed_);
  auto logits = Rand(12, -2, 2);
  const SamplingParams cases[] = {
      {1.0f, 0, 1.0f, 1}, {0.7f, 5, 1.0f, 2}, {1.3f, 0, 0.6f, 3}, {1.0f, 4, 0.8f, 4}};
  for (const auto& p : cases) {
    std::vector<double> probs(logits.size());
    ref::SamplingProbabilities(logits, p, probs.data());
    std::vector<int> count(logits.size(), 0);
    const int n = 20000;
    for (int i = 0; i < n; ++i) ++count[SampleToken(logits, p, static_cast<uint64_t>(i))];
    for (size_t j = 0; j < logits.size(); ++j) {
      if (probs[j] == 0.0) {
        EXPECT_EQ(count[j], 0) << "token " << j << " is outside top-k/top-p";
      } else {
        EXPECT_NEAR(static_cast<double>(count[j]) / n, probs[j], 0.015) << "token " << j;
      }
    }
  }
}

}  // namespace
}  // namespace prfaas::kernels::cpu
