#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "engine/config.h"
#include "sim/cost_model.h"
#include "sim/model.h"

namespace prfaas::sim {
namespace {

TEST(ModelSpec, QwenNextConfigMatchesByteBudgetTable) {
  // Dimensions from reference/hybrid-models-and-kernels.md §3.1 (with a dense MLP: the engine's
  // parser, which the simulator uses, rejects MoE); expected bytes from its §4.
  const std::string cfg =
      R"({"model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48,
    "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256, "full_attention_interval": 4,
    "linear_num_key_heads": 16, "linear_num_value_heads": 32, "linear_key_head_dim": 128,
    "linear_value_head_dim": 128, "linear_conv_kernel_dim": 4, "intermediate_size": 5120,
    "vocab_size": 151936})";
  const auto dir = std::filesystem::temp_directory_path() /
                   ("sim_model_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << cfg;
  auto m = ModelFromConfigJson((dir / "config.json").string());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->num_full_attn_layers, 12);
  EXPECT_DOUBLE_EQ(m->kv_bytes_per_token, 24576);
  EXPECT_DOUBLE_EQ(m->state_bytes_per_seq, 77266944);
  // Dense: every parameter is active; the engine's count.
  auto engine_cfg = engine::ParseModelConfig(cfg);
  ASSERT_TRUE(engine_cfg.ok());
  EXPECT_DOUBLE_EQ(m->total_params, static_cast<double>(engine_cfg->ParameterCount()));
  EXPECT_DOUBLE_EQ(m->active_params, m->total_params);
  // A directory holding config.json reads the same.
  auto from_dir = ModelFromConfigJson(dir.string());
  ASSERT_TRUE(from_dir.ok()) << from_dir.status();
  EXPECT_DOUBLE_EQ(from_dir->state_bytes_per_seq, m->state_bytes_per_seq);
  // fp32 (the CPU engine) doubles the KV and the conv state; the fp32 SSM state stays.
  auto fp32 = ModelFromConfigJson(dir.string(), ModelDtypes{4, 4, 4, 4});
  ASSERT_TRUE(fp32.ok());
  EXPECT_DOUBLE_EQ(fp32->kv_bytes_per_token, 2 * m->kv_bytes_per_token);
  EXPECT_DOUBLE_EQ(fp32->state_bytes_per_seq,
                   static_cast<double>(engine_cfg->StateBytesPerSequence(4, 4)));
  // The MoE preset has the same shapes and MoE parameter counts.
  auto preset = ModelPreset("qwen3-next-80b");
  ASSERT_TRUE(preset.ok());
  EXPECT_DOUBLE_EQ(preset->kv_bytes_per_token, m->kv_bytes_per_token);
  EXPECT_DOUBLE_EQ(preset->state_bytes_per_seq, m->state_bytes_per_seq);
  EXPECT_GT(preset->total_params, 60e9);
  EXPECT_LT(preset->active_params, 6e9);
  // The engine's parser errors come through with the file named.
  std::ofstream(dir / "moe.json") << R"({"model_type": "qwen3_next", "num_experts": 512})";
  auto moe = ModelFromConfigJson((dir / "moe.json").string());
  ASSERT_FALSE(moe.ok());
  EXPECT_NE(moe.status().message().find("moe.json"), std::string::npos) << moe.status();
  EXPECT_NE(moe.status().message().find("MoE"), std::string::npos) << moe.status();
  EXPECT_FALSE(ModelFromConfigJson((dir / "missing.json").string()).ok());
  std::filesystem::remove_all(dir);
}

TEST(ModelSpec, EmbeddedModelSizedAsTheEngineSizesIt) {
  // The model `prfaas up` serves: the simulator must size it exactly as the engine does.
  auto m = ModelFromConfigJson(std::string(PRFAAS_SOURCE_DIR) + "/models/kjv-tiny",
                               ModelDtypes{4, 4, 4, 4});
  ASSERT_TRUE(m.ok()) << m.status();
  auto c = engine::LoadModelConfig(std::string(PRFAAS_SOURCE_DIR) + "/models/kjv-tiny");
  ASSERT_TRUE(c.ok());
  EXPECT_DOUBLE_EQ(m->kv_bytes_per_token, static_cast<double>(c->KvBytesPerToken(4)));
  EXPECT_DOUBLE_EQ(m->state_bytes_per_seq, static_cast<double>(c->StateBytesPerSequence(4, 4)));
  EXPECT_EQ(m->num_full_attn_layers, 2);
  // Engine presets are simulator presets too.
  auto tiny = ModelPreset("tiny");
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_GT(tiny->kv_bytes_per_token, 0);
}

TEST(ModelSpec, KimiLinearMlaLatent) {
  auto m = ModelPreset("kimi-linear-48b");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->num_layers, 27);
  EXPECT_DOUBLE_EQ(m->kv_bytes_per_token, 8064);
  EXPECT_DOUBLE_EQ(m->state_bytes_per_seq, 43417600);
  EXPECT_FALSE(ModelPreset("gpt-5").ok());
}

TEST(ModelSpec, Paper1tTransferSizesMatchTable5) {
  auto m = ModelPreset("paper-1t");
  ASSERT_TRUE(m.ok());
  const double mib = 1024.0 * 1024;
  // Table 5: 190.8 / 308.9 / 701.3 / 2316.3 MiB at 1K / 8K / 32K / 128K; the fit is within 3%.
  const std::pair<int64_t, double> table[] = {
      {1024, 190.8}, {8192, 308.9}, {32768, 701.3}, {131072, 2316.3}};
  for (auto [len, size] : table) EXPECT_NEAR(m->TransferBytes(len) / mib / size, 1.0, 0.03) << len;
}

TEST(AnalyticCost, HybridShipsFarLessKvPerComputeThanDense) {
  // Φ_kv = bytes / prefill time at 32K on 8xH200. Paper Table 3: Qwen3.5-397B (hybrid) emits 4x
  // less than Qwen3-235B (dense attention) at similar active compute; the analytic model must at
  // least show a clear gap.
  auto hw = HardwarePreset("h200");
  ASSERT_TRUE(hw.ok());
  auto hybrid = *ModelPreset("qwen3.5-397b");
  auto dense = *ModelPreset("qwen3-235b");
  AnalyticCostModel ch(hybrid, *hw, 8), cd(dense, *hw, 8);
  PrefillItem it{0, 32768};
  double phi_h = hybrid.TransferBytes(32768) * 8 / ch.PrefillSeconds({&it, 1});
  double phi_d = dense.TransferBytes(32768) * 8 / cd.PrefillSeconds({&it, 1});
  EXPECT_GT(phi_d / phi_h, 2.0);
}

TEST(AnalyticCost, MonotoneAndHardwareOrdered) {
  auto m = *ModelPreset("paper-1t");
  AnalyticCostModel h200(m, *HardwarePreset("H200"), 8), h20(m, *HardwarePreset("H20"), 8);
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int64_t> len(1, 100000);
  for (int k = 0; k < 50; ++k) {
    int64_t a = len(rng), b = a + len(rng);
    PrefillItem ia{0, a}, ib{0, b};
    // Short passes are bound by streaming the weights (a flat floor), so only non-decreasing
    // holds everywhere; strictly increasing holds once compute dominates (checked below).
    EXPECT_LE(h200.PrefillSeconds({&ia, 1}), h200.PrefillSeconds({&ib, 1}));
    EXPECT_LT(h200.PrefillSeconds({&ib, 1}), h20.PrefillSeconds({&ib, 1}));
    // A cached prefix never costs more, and saves compute where compute dominates.
    PrefillItem cached{a, b - a};
    EXPECT_LE(h200.PrefillSeconds({&cached, 1}), h200.PrefillSeconds({&ib, 1}));
    if (a >= 16384) {
      EXPECT_LT(h200.PrefillSeconds({&ia, 1}), h200.PrefillSeconds({&ib, 1})) << a << " " << b;
      EXPECT_LT(h200.PrefillSeconds({&cached, 1}), h200.PrefillSeconds({&ib, 1})) << a << " " << b;
    }
    EXPECT_LE(h20.DecodeStepSeconds(8, a), h20.DecodeStepSeconds(8, b));
    EXPECT_LE(h20.DecodeStepSeconds(4, a), h20.DecodeStepSeconds(32, a));
  }
  // The weight-streaming floor: once a pass touches every expert, short passes cost the same.
  PrefillItem t1{0, 64}, t2{0, 128};
  EXPECT_EQ(h200.PrefillSeconds({&t1, 1}), h200.PrefillSeconds({&t2, 1}));
  EXPECT_EQ(h200.PrefillSeconds({}), 0.0);
  EXPECT_FALSE(HardwarePreset("TPU9").ok());
}

TEST(ProfileCost, InterpolatesAndChargesFixedCostOncePerBatch) {
  const std::string j = R"({"format": "prfaas-profile/1", "prefill": [
      {"tokens": 1000, "seconds": 1.0}, {"tokens": 3000, "seconds": 2.0}],
      "decode": [{"batch": 1, "context_tokens": 1000, "seconds": 0.010},
                 {"batch": 1, "context_tokens": 3000, "seconds": 0.020},
                 {"batch": 9, "context_tokens": 1000, "seconds": 0.030},
                 {"batch": 9, "context_tokens": 3000, "seconds": 0.050}]})";
  auto p = ProfileCostModel::FromJsonText(j, "p");
  ASSERT_TRUE(p.ok()) << p.status();
  PrefillItem a{0, 2000};
  EXPECT_NEAR((*p)->PrefillSeconds({&a, 1}), 1.5, 1e-12);
  // T(0) = 0.5 by extrapolation: two 1000-token prompts cost 0.5 + 2 * 0.5.
  PrefillItem two[] = {{0, 1000}, {0, 1000}};
  EXPECT_NEAR((*p)->PrefillSeconds(two), 1.5, 1e-12);
  // Cached prefix: T(3000) - T(1000) + T(0).
  PrefillItem c{1000, 2000};
  EXPECT_NEAR((*p)->PrefillSeconds({&c, 1}), 1.5, 1e-12);
  // Bilinear decode: batch 5, 2000 tokens per sequence.
  EXPECT_NEAR((*p)->DecodeStepSeconds(5, 10000), 0.5 * (0.015 + 0.040), 1e-12);
  (*p)->Scale(2.0);
  EXPECT_NEAR((*p)->PrefillSeconds({&a, 1}), 3.0, 1e-12);
}

TEST(ProfileCost, RejectsMalformedProfiles) {
  EXPECT_FALSE(ProfileCostModel::FromJsonText("{}", "p").ok());
  EXPECT_FALSE(
      ProfileCostModel::FromJsonText(R"({"format": "prfaas-profile/1", "prefill": []})", "p").ok());
  auto neg = ProfileCostModel::FromJsonText(
      R"({"format": "prfaas-profile/1", "prefill": [{"tokens": 10, "seconds": -1}],
          "decode": [{"batch": 1, "seconds": 0.01}]})",
      "p");
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.status().message().find("prefill[0]"), std::string::npos);
  EXPECT_FALSE(ProfileCostModel::FromFile("/nonexistent/profile.json").ok());
}

}  // namespace
}  // namespace prfaas::sim
