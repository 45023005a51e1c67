// The CUDA backend in bf16 with the library kernels of kernels/cuda (attention.h, conv1d.h, gdn.h;
// EngineOptions.cuda_library_kernels) against the CPU engine. A separate executable from
// engine_cuda_test so that a fault in a library kernel cannot take the backend's own tests down.
// Tolerance: logit error (max |gpu - cpu| / max |cpu|) <= 1e-2 for prefill, decode and batched
// decode. "small-d128" is the small preset with 128-wide GDN heads, the one shape the library GDN
// kernels take (as Qwen3-Next); tiny and small exercise attention + conv1d only.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "engine/engine.h"
#include "kernels/cuda/common.h"

namespace prfaas::engine {
namespace {

using kernels::cpu::SampleToken;

double LogitErr(const float* got, const float* want, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num = std::max(num, std::fabs(double(got[i]) - want[i]));
    den = std::max(den, std::fabs(double(want[i])));
  }
  return num / den;
}

ModelConfig Config(const std::string& name) {
  if (name != "small-d128") return PresetModelConfig(name).value();
  ModelConfig c = PresetModelConfig("small").value();
  c.name = name;
  c.linear_key_head_dim = 128;
  c.linear_value_head_dim = 128;
  EXPECT_TRUE(c.Validate().ok());
  return c;
}

class EngineCudaLibraryTest : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineCudaLibraryTest, Bf16LibraryKernelsMatchCpu) {
  if (!kernels::cuda::DeviceAvailable()) GTEST_SKIP() << "no CUDA device present";
  const uint32_t seed = std::random_device{}();
  std::printf("seed %u preset %s\n", seed, GetParam());
  std::mt19937 rng(seed);
  const ModelConfig config = Config(GetParam());
  auto weights = std::make_shared<ModelWeights>(SyntheticWeights(config, seed).value());
  EngineOptions o;
  o.kv_block_size = 16;
  o.num_kv_blocks = 256;
  o.num_state_slots = 8;
  o.prefill_chunk = 64;
  auto cpu = Engine::Create(config, weights, o).value();
  o.device = "cuda";
  o.dtype = "bf16";
  o.cuda_library_kernels = true;
  auto gpu = Engine::Create(config, weights, o).value();
  const int64_t v = config.vocab_size;
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(v) - 1);
  // Three sequences of different lengths (prefill crosses chunk and block edges).
  std::vector<SequenceId> gs, cs;
  std::vector<int32_t> next;
  double worst = 0;
  for (int len : {100, 37, 1}) {
    std::vector<int32_t> p(len);
    for (auto& t : p) t = tok(rng);
    SequenceId g = gpu->AddSequence().value(), c = cpu->AddSequence().value();
    std::vector<float> gl, cl;
    ASSERT_TRUE(gpu->Prefill({&g, 1}, {&p, 1}, &gl).ok());
    ASSERT_TRUE(cpu->Prefill({&c, 1}, {&p, 1}, &cl).ok());
    worst = std::max(worst, LogitErr(gl.data(), cl.data(), v));
    gs.push_back(g);
    cs.push_back(c);
    next.push_back(SampleToken(cl, {}, 0));
  }
  std::printf("prefill max logit err %.3g\n", worst);
  // Batched decode, both fed the CPU's greedy tokens.
  for (int step = 0; step < 12; ++step) {
    std::vector<float> gl, cl;
    ASSERT_TRUE(gpu->Decode(gs, next, &gl).ok());
    ASSERT_TRUE(cpu->Decode(cs, next, &cl).ok());
    for (size_t i = 0; i < gs.size(); ++i) {
      worst = std::max(worst, LogitErr(gl.data() + i * v, cl.data() + i * v, v));
      next[i] = SampleToken({cl.data() + i * v, static_cast<size_t>(v)}, {}, 0);
    }
  }
  std::printf("prefill + batched decode max logit err %.3g\n", worst);
  EXPECT_LE(worst, 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Presets, EngineCudaLibraryTest,
                         ::testing::Values("tiny", "small", "small-d128"));

}  // namespace
}  // namespace prfaas::engine
