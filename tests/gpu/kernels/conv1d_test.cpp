// Causal conv1d + SiLU GPU kernels vs the float64 CPU reference (kernels/cpu/ref.h): varlen
// prefill (fast and reference kernels) with conv states in a strided slot pool, and the decode
// update. Fresh random bf16 inputs in a strided row, NaN-poisoned outputs; state rows are copies
// of inputs, so they must match the reference exactly; untouched slots must not change.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/ref.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/conv1d.h"

namespace prfaas::kernels::cuda {
namespace {

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

class Conv1dTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device";
  }
};

enum class Mode { kPrefill, kPrefillRef, kUpdate };

void RunConv(Mode mode, int channels, int ksize, const std::vector<int>& lens,
             const std::vector<int32_t>& slots, int num_slots, int64_t x_stride, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int num_seqs = static_cast<int>(lens.size());
  std::vector<int32_t> cu{0};
  for (int l : lens) cu.push_back(cu.back() + l);
  const int total = cu.back();
  std::vector<__nv_bfloat16> xb(static_cast<size_t>(total) * x_stride);
  for (auto& v : xb) v = __float2bfloat16(nd(rng));
  std::vector<float> w(static_cast<size_t>(channels) * ksize);
  for (auto& v : w) v = 0.5f * nd(rng);
  const int hist = ksize - 1;
  const int64_t slot_stride = static_cast<int64_t>(hist) * channels + 16;
  std::vector<float> pool(static_cast<size_t>(num_slots) * slot_stride);
  for (auto& v : pool) v = nd(rng);

  // float64 reference, sequence by sequence.
  std::vector<double> ref_y(static_cast<size_t>(total) * channels);
  std::vector<float> ref_pool = pool;
  std::vector<double> wd(w.begin(), w.end());
  for (int s = 0; s < num_seqs; ++s) {
    const int t = lens[s];
    std::vector<double> x(static_cast<size_t>(t) * channels), st(hist * channels, 0.0);
    for (int i = 0; i < t; ++i)
      for (int c = 0; c < channels; ++c)
        x[i * channels + c] = __bfloat162float(xb[(cu[s] + i) * x_stride + c]);
    float* slot = slots[s] >= 0 ? ref_pool.data() + slots[s] * slot_stride : nullptr;
    if (slot)
      for (int i = 0; i < hist * channels; ++i) st[i] = slot[i];
    cpu::ref::CausalConv1d(x.data(), t, channels, wd.data(), ksize, st.data(),
                           ref_y.data() + static_cast<size_t>(cu[s]) * channels);
    if (slot)
      for (int i = 0; i < hist * channels; ++i) slot[i] = static_cast<float>(st[i]);
  }

  __nv_bfloat16* dx = Upload(xb);
  float* dw = Upload(w);
  float* dpool = Upload(pool);
  int32_t* dcu = Upload(cu);
  int32_t* dslots = Upload(slots);
  __nv_bfloat16* dy = nullptr;
  const size_t yn = static_cast<size_t>(total) * channels;
  CUDA_CHECK(cudaMalloc(&dy, sizeof(__nv_bfloat16) * std::max<size_t>(yn, 1)));
  CUDA_CHECK(cudaMemset(dy, 0xff, sizeof(__nv_bfloat16) * yn));  // bf16 NaN
  Conv1dArgs a;
  a.x = dx;
  a.x_stride = x_stride;
  a.weight = dw;
  a.y = dy;
  a.cu_seqlens = mode == Mode::kUpdate ? nullptr : dcu;
  a.slots = dslots;
  a.states = {dpool, slot_stride};
  a.num_seqs = num_seqs;
  a.total_tokens = total;
  a.channels = channels;
  a.kernel_size = ksize;
  switch (mode) {
    case Mode::kPrefill: causal_conv1d_prefill(a, nullptr); break;
    case Mode::kPrefillRef: causal_conv1d_prefill_ref(a, nullptr); break;
    case Mode::kUpdate: causal_conv1d_update(a, nullptr); break;
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto y = Download(dy, yn);
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < yn; ++i) {
    const double d = __bfloat162float(y[i]) - ref_y[i];
    num += d * d;
    den += ref_y[i] * ref_y[i];
  }
  const double rel = std::sqrt(num / std::max(den, 1e-300));
  EXPECT_LE(rel, 5e-3) << "conv output";  // bf16 output rounding is ~1e-3
  const auto got_pool = Download(dpool, pool.size());
  for (int slot = 0; slot < num_slots; ++slot) {
    const size_t off = static_cast<size_t>(slot) * slot_stride;
    // Whole stride: the gap after the state must stay untouched too.
    EXPECT_EQ(
        0, std::memcmp(got_pool.data() + off, ref_pool.data() + off, sizeof(float) * slot_stride))
        << "conv state of slot " << slot;
  }
  for (void* p : {static_cast<void*>(dx), static_cast<void*>(dw), static_cast<void*>(dpool),
                  static_cast<void*>(dcu), static_cast<void*>(dslots), static_cast<void*>(dy)})
    CUDA_CHECK(cudaFree(p));
}

// Lengths shorter than, equal to and longer than the history, an empty sequence, a stateless one.
const std::vector<int> kLens = {1, 2, 3, 4, 0, 100, 257};
const std::vector<int32_t> kSlots = {3, 0, 6, 1, 2, -1, 5};

TEST_F(Conv1dTest, PrefillAlignedRows) {
  RunConv(Mode::kPrefill, 8192 / 16, 4, kLens, kSlots, 8, 8192 / 16 + 64, 1);
}

TEST_F(Conv1dTest, PrefillOddPairStride) {
  RunConv(Mode::kPrefill, 64, 4, kLens, kSlots, 8, 64 + 2, 2);  // rows not 16-byte aligned
}

TEST_F(Conv1dTest, PrefillKernelSize2And8) {
  RunConv(Mode::kPrefill, 96, 2, kLens, kSlots, 8, 96, 3);
  RunConv(Mode::kPrefill, 96, 8, kLens, kSlots, 8, 96, 4);
}

TEST_F(Conv1dTest, PrefillQwen3NextChannels) {
  RunConv(Mode::kPrefill, 8192, 4, {700, 5, 64}, {1, 0, 2}, 3, 8192 + 4096 + 72, 5);
}

TEST_F(Conv1dTest, PrefillManyShortSequencesInOneTile) {
  RunConv(Mode::kPrefill, 32, 4, {1, 0, 2, 1, 3, 0, 5, 1, 1, 20}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9},
          10, 40, 8);
}

TEST_F(Conv1dTest, PrefillReference) {
  RunConv(Mode::kPrefillRef, 64, 4, kLens, kSlots, 8, 72, 6);
}

TEST_F(Conv1dTest, DecodeUpdate) {
  RunConv(Mode::kUpdate, 8192, 4, std::vector<int>(9, 1), {8, 7, 6, 5, 4, 3, 2, 1, -1}, 10,
          8192 + 8, 7);
}

}  // namespace
}  // namespace prfaas::kernels::cuda
