// ModelConfig parsing, presets, byte accounting and `model info`.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/cli.h"
#include "engine/config.h"

namespace prfaas::engine {
namespace {

nlohmann::json TinyJson() {
  return {{"model_type", "qwen3_next"},
          {"hidden_size", 64},
          {"num_hidden_layers", 4},
          {"layer_types",
           {"linear_attention", "linear_attention", "linear_attention", "full_attention"}},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"head_dim", 16},
          {"partial_rotary_factor", 0.25},
          {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-6},
          {"vocab_size", 260},
          {"intermediate_size", 128},
          {"linear_num_key_heads", 2},
          {"linear_num_value_heads", 4},
          {"linear_key_head_dim", 16},
          {"linear_value_head_dim", 16},
          {"linear_conv_kernel_dim", 4},
          {"tie_word_embeddings", true},
          {"hidden_act", "silu"},
          {"attn_output_gate", true},
          {"eos_token_id", 256}};
}

TEST(ModelConfigTest, ParsesLayerTypesAndInterval) {
  auto c = ParseModelConfig(TinyJson().dump());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_full_attention_layers(), 1);
  EXPECT_EQ(c->layer_types[3], LayerKind::kFullAttention);
  EXPECT_EQ(c->rotary_dim(), 4);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->eos_token_id, 256);
  auto j = TinyJson();
  j.erase("layer_types");
  j["num_hidden_layers"] = 8;
  j["full_attention_interval"] = 4;
  auto c2 = ParseModelConfig(j.dump());
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(c2->num_full_attention_layers(), 2);
  EXPECT_EQ(c2->layer_types[7], LayerKind::kFullAttention);
  EXPECT_EQ(c2->layer_types[4], LayerKind::kLinearAttention);
  EXPECT_EQ(c2->LayoutString(), "2 x [linear linear linear full]");
  // Nested text_config (Qwen3.5 multimodal wrapper).
  nlohmann::json nested = {{"text_config", TinyJson()}};
  nested["text_config"]["model_type"] = "qwen3_5_text";
  EXPECT_TRUE(ParseModelConfig(nested.dump()).ok());
}

TEST(ModelConfigTest, RejectsUnsupportedWithClearErrors) {
  auto j = TinyJson();
  j["num_experts"] = 512;
  auto moe = ParseModelConfig(j.dump());
  ASSERT_FALSE(moe.ok());
  EXPECT_EQ(moe.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(moe.status().message().find("MoE"), std::string::npos);

  j = TinyJson();
  j["layer_types"][1] = "sliding_attention";
  auto bad_layer = ParseModelConfig(j.dump());
  ASSERT_FALSE(bad_layer.ok());
  EXPECT_NE(bad_layer.status().message().find("sliding_attention"), std::string::npos);

  j = TinyJson();
  j.erase("linear_num_value_heads");
  auto missing = ParseModelConfig(j.dump());
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("linear_num_value_heads"), std::string::npos);

  j = TinyJson();
  j["model_type"] = "llama";
  EXPECT_FALSE(ParseModelConfig(j.dump()).ok());
  j = TinyJson();
  j["num_key_value_heads"] = 3;
  EXPECT_FALSE(ParseModelConfig(j.dump()).ok());
  j = TinyJson();
  j["hidden_size"] = "big";
  EXPECT_FALSE(ParseModelConfig(j.dump()).ok());
  EXPECT_FALSE(ParseModelConfig("{not json").ok());
  j = TinyJson();
  j["layer_types"].erase(0);
  EXPECT_FALSE(ParseModelConfig(j.dump()).ok());
}

TEST(ModelConfigTest, Qwen3NextByteAccountingMatchesHandComputation) {
  auto c = PresetModelConfig("qwen3-next-80b");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->num_full_attention_layers(), 12);
  EXPECT_EQ(c->num_linear_attention_layers(), 36);
  // 12 layers x 2 (K,V) x 2 kv heads x 256 x 2 bytes = 24 KiB.
  EXPECT_EQ(c->KvBytesPerToken(2), 24 * 1024);
  EXPECT_EQ(c->KvBytesPerToken(4), 48 * 1024);
  // Per GDN layer: 32 x 128 x 128 x 4 = 2,097,152 (ssm fp32) + 3 x 8192 x 2 = 49,152 (conv bf16).
  EXPECT_EQ(c->SsmStateBytes(4), 36 * 2097152);
  EXPECT_EQ(c->ConvStateBytes(2), 36 * 49152);
  EXPECT_EQ(c->StateBytesPerSequence(2, 4), 77266944);
  auto q35 = PresetModelConfig("qwen3.5-9b");
  ASSERT_TRUE(q35.ok());
  EXPECT_EQ(q35->KvBytesPerToken(2), 32768);
  EXPECT_FALSE(PresetModelConfig("nope").ok());
}

TEST(ModelConfigTest, ModelInfoPrintsSizes) {
  auto c = PresetModelConfig("qwen3-next-80b");
  ASSERT_TRUE(c.ok());
  auto js = FormatModelInfo(*c, "json");
  ASSERT_TRUE(js.ok());
  auto j = nlohmann::json::parse(*js);
  EXPECT_EQ(j["kv_bytes_per_token_bf16"], 24576);
  EXPECT_EQ(j["state_bytes_per_sequence"], 77266944);
  EXPECT_EQ(j["layout"], "12 x [linear linear linear full]");
  auto table = FormatModelInfo(*c, "table");
  ASSERT_TRUE(table.ok());
  EXPECT_NE(table->find("24.00 KiB"), std::string::npos);
  EXPECT_FALSE(FormatModelInfo(*c, "xml").ok());
  // Parameter count of the tiny preset, by hand: embeddings 260*64*2 + final norm 64 +
  // 3 GDN layers + 1 attention layer.
  auto t = PresetModelConfig("tiny");
  ASSERT_TRUE(t.ok());
  const int64_t mlp = 2 * 64 + 3 * 64 * 128;
  const int64_t gdn = (128 + 64 + 8) * 64 + 128 * 4 + 8 + 16 + 64 * 64;
  const int64_t attn = 4 * 32 * 64 + 2 * 2 * 16 * 64 + 64 * 64 + 32;
  EXPECT_EQ(t->ParameterCount(), 260 * 64 * 2 + 64 + 3 * (mlp + gdn) + (mlp + attn));
}

TEST(ModelConfigTest, ModelInfoCommandPrintsJson) {
  CLI::App app{"prfaas"};
  RegisterModelCommands(app);
  ::testing::internal::CaptureStdout();
  app.parse("model info --model qwen3-next-80b -o json", false);
  const std::string out = ::testing::internal::GetCapturedStdout();
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["kv_bytes_per_token_bf16"], 24576);
  EXPECT_EQ(j["full_attention_layers"], 12);
  CLI::App bad{"prfaas"};
  RegisterModelCommands(bad);
  EXPECT_THROW(bad.parse("model info --model no-such-model", false), CLI::RuntimeError);
}

}  // namespace
}  // namespace prfaas::engine
