// Gated DeltaNet GPU kernels vs the float64 CPU recurrence (kernels/cpu/ref.h): chunked prefill
// (fast and reference kernels) over varlen batches with initial states in a strided slot pool,
// and the decode step. Inputs are fresh random bf16 values, q/k/v are strided views into one
// [q | k | v | pad] row as the engine passes them, outputs are poisoned with NaN before each
// call, and untouched slots must stay bit-identical.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/ref.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/gdn.h"

namespace prfaas::kernels::cuda {
namespace {

constexpr int D = kGdnHeadDim;

float RoundBf16(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

template <typename T>
T* Upload(const std::vector<T>& h) {
  T* d = nullptr;
  CUDA_CHECK(cudaMalloc(&d, sizeof(T) * std::max<size_t>(h.size(), 1)));
  CUDA_CHECK(cudaMemcpy(d, h.data(), sizeof(T) * h.size(), cudaMemcpyHostToDevice));
  return d;
}
template <typename T>
std::vector<T> Download(const T* d, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, sizeof(T) * n, cudaMemcpyDeviceToHost));
  return h;
}

// ||a - b|| / ||b||; NaN anywhere in a gives NaN (which fails every <= check).
double RelErr(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// One problem: T tokens in `lens` sequences, raw inputs kept on the host as floats (already
// bf16-rounded) and on the device as bf16 in a strided row layout.
struct Problem {
  int hk, hv, num_seqs, total;
  std::vector<int32_t> cu, slots;
  int64_t row;                  // elements per token row: [q (hk*D) | k (hk*D) | v (hv*D) | 8 pad]
  int64_t gate_row;             // [b (hv) | a (hv) | 8 pad]
  std::vector<float> x, gates;  // [total, row], [total, gate_row]
  std::vector<float> a_log, dt_bias;
  int num_slots;
  int64_t slot_stride;
  std::vector<float> pool;  // [num_slots, slot_stride]
  float scale = 1.0f / std::sqrt(static_cast<float>(D));
};

Problem MakeProblem(std::mt19937& rng, int hk, int hv, const std::vector<int>& lens,
                    const std::vector<int32_t>& slots, int num_slots, bool zero_gate_bias) {
  Problem p;
  p.hk = hk;
  p.hv = hv;
  p.num_seqs = static_cast<int>(lens.size());
  p.cu.push_back(0);
  for (int l : lens) p.cu.push_back(p.cu.back() + l);
  p.total = p.cu.back();
  p.slots = slots;
  p.row = 2 * hk * D + hv * D + 8;
  p.gate_row = 2 * hv + 8;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  p.x.resize(static_cast<size_t>(p.total) * p.row);
  for (auto& v : p.x) v = RoundBf16(nd(rng));
  p.gates.resize(static_cast<size_t>(p.total) * p.gate_row);
  for (int64_t t = 0; t < p.total; ++t) {
    for (int j = 0; j < hv; ++j) {
      p.gates[t * p.gate_row + j] = RoundBf16(2.0f * nd(rng));               // b -> beta
      p.gates[t * p.gate_row + hv + j] = RoundBf16(-6.0f + 6.0f * ud(rng));  // a -> decay
    }
  }
  for (int j = 0; j < hv; ++j) {
    p.a_log.push_back(std::log(1.0f + 3.0f * ud(rng)));
    p.dt_bias.push_back(zero_gate_bias ? 0.0f : 0.3f * nd(rng));
  }
  p.num_slots = num_slots;
  p.slot_stride = static_cast<int64_t>(hv) * D * D + 64;  // gap: neighbouring pool data
  p.pool.resize(static_cast<size_t>(num_slots) * p.slot_stride);
  for (auto& v : p.pool) v = 0.5f * nd(rng);
  return p;
}

float Softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}

// float64 reference over every sequence; returns out [total, hv, D] and updates pool in place.
std::vector<double> Reference(const Problem& p, std::vector<float>& pool) {
  std::vector<double> out(static_cast<size_t>(p.total) * p.hv * D);
  const int64_t kd = static_cast<int64_t>(p.hk) * D, vd = static_cast<int64_t>(p.hv) * D;
  for (int s = 0; s < p.num_seqs; ++s) {
    const int t = p.cu[s + 1] - p.cu[s];
    if (t == 0) continue;
    std::vector<double> q(t * kd), k(t * kd), v(t * vd), g(t * p.hv), beta(t * p.hv), o(t * vd);
    std::vector<double> st(p.hv * D * D, 0.0);
    float* slot = p.slots[s] >= 0 ? pool.data() + p.slots[s] * p.slot_stride : nullptr;
    if (slot) {
      for (size_t i = 0; i < st.size(); ++i) st[i] = slot[i];
    }
    for (int i = 0; i < t; ++i) {
      const float* r = &p.x[(p.cu[s] + i) * p.row];
      for (int64_t e = 0; e < kd; ++e) {
        q[i * kd + e] = r[e];
        k[i * kd + e] = r[kd + e];
      }
      for (int64_t e = 0; e < vd; ++e) v[i * vd + e] = r[2 * kd + e];
      const float* gr = &p.gates[(p.cu[s] + i) * p.gate_row];
      for (int j = 0; j < p.hv; ++j) {
        beta[i * p.hv + j] = 1.0 / (1.0 + std::exp(-static_cast<double>(gr[j])));
        g[i * p.hv + j] = -std::exp(static_cast<double>(p.a_log[j])) *
                          static_cast<double>(Softplus(gr[p.hv + j] + p.dt_bias[j]));
      }
    }
    const cpu::GdnShape shape{t, p.hk, p.hv, D, D};
    cpu::ref::GatedDeltaRuleRecurrent(shape, q.data(), k.data(), v.data(), g.data(), beta.data(),
                                      p.scale, st.data(), o.data());
    std::copy(o.begin(), o.end(), out.begin() + p.cu[s] * vd);
    if (slot) {
      for (size_t i = 0; i < st.size(); ++i) slot[i] = static_cast<float>(st[i]);
    }
  }
  return out;
}

struct DeviceProblem {
  __nv_bfloat16 *x = nullptr, *gates = nullptr, *out = nullptr;
  float *a_log = nullptr, *dt_bias = nullptr, *pool = nullptr;
  int32_t *cu = nullptr, *slots = nullptr;
  GdnArgs args;

  explicit DeviceProblem(const Problem& p, bool decode) {
    std::vector<__nv_bfloat16> xb(p.x.size()), gb(p.gates.size());
    for (size_t i = 0; i < xb.size(); ++i) xb[i] = __float2bfloat16(p.x[i]);
    for (size_t i = 0; i < gb.size(); ++i) gb[i] = __float2bfloat16(p.gates[i]);
    x = Upload(xb);
    gates = Upload(gb);
    a_log = Upload(p.a_log);
    dt_bias = Upload(p.dt_bias);
    pool = Upload(p.pool);
    cu = Upload(p.cu);
    slots = Upload(p.slots);
    const size_t out_n = static_cast<size_t>(p.total) * p.hv * D;
    CUDA_CHECK(cudaMalloc(&out, sizeof(__nv_bfloat16) * std::max<size_t>(out_n, 1)));
    const int64_t kd = static_cast<int64_t>(p.hk) * D;
    args.q = x;
    args.k = x + kd;
    args.v = x + 2 * kd;
    args.q_stride = args.k_stride = args.v_stride = p.row;
    args.gates = {gates + p.hv, gates, p.gate_row, a_log, dt_bias};
    args.out = out;
    args.cu_seqlens = decode ? nullptr : cu;
    args.slots = slots;
    args.states = {pool, p.slot_stride};
    args.scale = p.scale;
    args.num_seqs = p.num_seqs;
    args.total_tokens = p.total;
    args.key_heads = p.hk;
    args.value_heads = p.hv;
    Poison(out_n);
  }
  void Poison(size_t out_n) {
    CUDA_CHECK(cudaMemset(out, 0xff, sizeof(__nv_bfloat16) * out_n));  // bf16 NaN
  }
  ~DeviceProblem() {
    for (void* ptr : {static_cast<void*>(x), static_cast<void*>(gates), static_cast<void*>(out),
                      static_cast<void*>(a_log), static_cast<void*>(dt_bias),
                      static_cast<void*>(pool), static_cast<void*>(cu), static_cast<void*>(slots)})
      CUDA_CHECK(cudaFree(ptr));
  }
};

std::vector<double> ToDouble(const std::vector<__nv_bfloat16>& v) {
  std::vector<double> d(v.size());
  for (size_t i = 0; i < v.size(); ++i) d[i] = __bfloat162float(v[i]);
  return d;
}

// Compares outputs per sequence and the states of every slot (slots not written by the call must
// be bit-identical to their initial contents).
void Check(const Problem& p, const std::vector<double>& ref_out, const std::vector<float>& ref_pool,
           const DeviceProblem& dp, double out_tol, double state_tol, const char* what) {
  const int64_t vd = static_cast<int64_t>(p.hv) * D;
  double worst_out = 0.0, worst_state = 0.0;
  const auto out = ToDouble(Download(dp.out, static_cast<size_t>(p.total) * vd));
  for (int s = 0; s < p.num_seqs; ++s) {
    if (p.cu[s + 1] == p.cu[s]) continue;
    std::vector<double> a(out.begin() + p.cu[s] * vd, out.begin() + p.cu[s + 1] * vd);
    std::vector<double> b(ref_out.begin() + p.cu[s] * vd, ref_out.begin() + p.cu[s + 1] * vd);
    const double err = RelErr(a, b);
    worst_out = std::max(worst_out, err);
    EXPECT_LE(err, out_tol) << what << ": output of sequence " << s << " (len "
                            << p.cu[s + 1] - p.cu[s] << ")";
  }
  const auto pool = Download(dp.pool, p.pool.size());
  for (int slot = 0; slot < p.num_slots; ++slot) {
    const size_t off = static_cast<size_t>(slot) * p.slot_stride;
    std::vector<double> a(pool.begin() + off, pool.begin() + off + p.slot_stride);
    std::vector<double> b(ref_pool.begin() + off, ref_pool.begin() + off + p.slot_stride);
    bool touched = false;
    for (int s = 0; s < p.num_seqs; ++s)
      touched |= p.slots[s] == slot && p.cu.size() > 1 && p.cu[s + 1] > p.cu[s];
    if (touched) {
      worst_state = std::max(worst_state, RelErr(a, b));
      EXPECT_LE(RelErr(a, b), state_tol) << what << ": state of slot " << slot;
    } else {
      EXPECT_EQ(0,
                std::memcmp(pool.data() + off, p.pool.data() + off, sizeof(float) * p.slot_stride))
          << what << ": slot " << slot << " changed but no sequence used it";
    }
  }
  std::printf("%s: worst rel err output %.3g, state %.3g\n", what, worst_out, worst_state);
}

class GdnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  }
};

struct PrefillCase {
  int hk, hv;
  std::vector<int> lens;
  std::vector<int32_t> slots;
  int num_slots;
};

void RunPrefill(const PrefillCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const Problem p = MakeProblem(rng, c.hk, c.hv, c.lens, c.slots, c.num_slots, false);
  std::vector<float> ref_pool = p.pool;
  const auto ref_out = Reference(p, ref_pool);
  {
    DeviceProblem dp(p, false);
    const size_t ws_bytes = gdn_chunk_prefill_workspace_bytes(p.total, p.num_seqs, p.hk, p.hv);
    void* ws = nullptr;
    CUDA_CHECK(cudaMalloc(&ws, ws_bytes));
    CUDA_CHECK(cudaMemset(ws, 0xff, ws_bytes));  // nothing may rely on a clean workspace
    gdn_chunk_prefill(dp.args, ws, ws_bytes, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    Check(p, ref_out, ref_pool, dp, 1e-2, 1e-2, "gdn_chunk_prefill");
    CUDA_CHECK(cudaFree(ws));
  }
  {
    DeviceProblem dp(p, false);
    gdn_chunk_prefill_ref(dp.args, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    Check(p, ref_out, ref_pool, dp, 4e-3, 1e-4, "gdn_chunk_prefill_ref");
  }
}

TEST_F(GdnTest, PrefillSingleSequenceSmallHeads) {
  RunPrefill({2, 4, {200}, {1}, 2}, 1);
}

TEST_F(GdnTest, PrefillChunkBoundaries) {
  // Lengths around the chunk size, an empty sequence and a stateless one (slot -1).
  RunPrefill({1, 2, {1, 63, 64, 65, 0, 128, 129, 7}, {4, 0, 7, 2, -1, 5, 1, 3}, 9}, 2);
}

TEST_F(GdnTest, PrefillQwen3NextHeadsVarlen) {
  RunPrefill({16, 32, {300, 77, 640}, {2, 0, 1}, 4}, 3);
}

TEST_F(GdnTest, PrefillLongSequenceCarriesState) {
  RunPrefill({2, 4, {2000}, {0}, 1}, 4);
}

// One sequence longer than a pipeline piece (64 chunks): the per-chunk and state passes run
// piecewise on two streams and the state crosses pieces through the workspace (3 pieces, the last
// partial), with and without a state slot.
TEST_F(GdnTest, PrefillPipelinedSingleSequence) {
  RunPrefill({2, 4, {9000}, {1}, 2}, 5);
  RunPrefill({2, 4, {4200}, {-1}, 1}, 6);
}

void RunDecode(int hk, int hv, int batch, int steps, uint32_t seed) {
  std::mt19937 rng(seed);
  // Slots in reverse order with a gap, so slot index != sequence index.
  std::vector<int32_t> slots(batch);
  for (int i = 0; i < batch; ++i) slots[i] = batch - i;
  Problem p = MakeProblem(rng, hk, hv, std::vector<int>(batch, 1), slots, batch + 2, false);
  std::vector<float> ref_pool = p.pool;
  DeviceProblem fast(p, true), slow(p, true);
  for (int step = 0; step < steps; ++step) {
    if (step > 0) {  // fresh token inputs for every step, same states
      std::mt19937 r2(seed * 101 + step);
      Problem next = MakeProblem(r2, hk, hv, std::vector<int>(batch, 1), slots, batch + 2, false);
      p.x = next.x;
      p.gates = next.gates;
      std::vector<__nv_bfloat16> xb(p.x.size()), gb(p.gates.size());
      for (size_t i = 0; i < xb.size(); ++i) xb[i] = __float2bfloat16(p.x[i]);
      for (size_t i = 0; i < gb.size(); ++i) gb[i] = __float2bfloat16(p.gates[i]);
      for (DeviceProblem* dp : {&fast, &slow}) {
        CUDA_CHECK(cudaMemcpy(dp->x, xb.data(), sizeof(xb[0]) * xb.size(), cudaMemcpyHostToDevice));
        CUDA_CHECK(
            cudaMemcpy(dp->gates, gb.data(), sizeof(gb[0]) * gb.size(), cudaMemcpyHostToDevice));
        dp->Poison(static_cast<size_t>(batch) * hv * D);
      }
    }
    const auto ref_out = Reference(p, ref_pool);
    gdn_decode(fast.args, nullptr);
    gdn_decode_ref(slow.args, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    Check(p, ref_out, ref_pool, fast, 4e-3, 1e-4, "gdn_decode");
    Check(p, ref_out, ref_pool, slow, 4e-3, 1e-4, "gdn_decode_ref");
  }
}

TEST_F(GdnTest, DecodeQwen3NextHeads) {
  RunDecode(16, 32, 5, 3, 11);
}

TEST_F(GdnTest, DecodeSmallHeadsBatch) {
  RunDecode(2, 8, 33, 2, 12);
}

}  // namespace
}  // namespace prfaas::kernels::cuda
