// Agreement of the C++ engine with the PyTorch trainer on the shipped default model
// (models/kjv-tiny, trained by tools/train_tiny).
//
// models/kjv-tiny/reference.json holds what tools/train_tiny/model.py computed in float32 on the
// CPU from the bf16 weights in model.safetensors: next-token logits after a few prefixes of 4 fixed
// prompts, and the greedy 64-byte continuation of "In the beginning". The engine loads the same
// files with its own config parser and safetensors loader and must reproduce the logits to a
// relative error < 1e-3 and the greedy bytes exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace prfaas::engine {
namespace {

const std::string kModelDir = std::string(PRFAAS_SOURCE_DIR) + "/models/kjv-tiny";
constexpr double kMaxRelError = 1e-3;

nlohmann::json ReadReference() {
  std::ifstream in(kModelDir + "/reference.json");
  EXPECT_TRUE(in.good()) << "cannot open " << kModelDir << "/reference.json";
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str());
}

int32_t Argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// max_i |got_i - want_i| / max_i |want_i|; NaN in `got` gives +inf.
double RelError(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isnan(got[i])) return std::numeric_limits<double>::infinity();
    diff = std::max(diff, std::abs(got[i] - want[i]));
    scale = std::max(scale, std::abs(want[i]));
  }
  return diff / scale;
}

class KjvTinyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = LoadModelConfig(kModelDir);
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = new ModelConfig(config.value());
    auto weights = LoadWeights(*config_, kModelDir);
    ASSERT_TRUE(weights.ok()) << weights.status();
    weights_ = new std::shared_ptr<const ModelWeights>(
        std::make_shared<const ModelWeights>(std::move(weights).value()));
    reference_ = new nlohmann::json(ReadReference());
  }
  static void TearDownTestSuite() {
    delete config_;
    delete weights_;
    delete reference_;
  }
  void SetUp() override {
    ASSERT_NE(config_, nullptr);
    ASSERT_NE(weights_, nullptr);
  }

  static std::unique_ptr<Engine> MakeEngine(const EngineOptions& options) {
    auto e = Engine::Create(*config_, *weights_, options);
    EXPECT_TRUE(e.ok()) << e.status();
    return e.ok() ? std::move(e).value() : nullptr;
  }

  // Logits after prefilling `ids` into a fresh sequence, poisoned with NaN beforehand.
  static std::vector<float> PrefillLogits(Engine& e, const std::vector<int32_t>& ids) {
    std::vector<float> logits(static_cast<size_t>(config_->vocab_size), std::nanf(""));
    auto seq = e.AddSequence();
    EXPECT_TRUE(seq.ok()) << seq.status();
    SequenceId s = seq.value();
    Status st = e.Prefill({&s, 1}, {&ids, 1}, &logits);
    EXPECT_TRUE(st.ok()) << st;
    EXPECT_TRUE(e.Release(s).ok());
    return logits;
  }

  static ModelConfig* config_;
  static std::shared_ptr<const ModelWeights>* weights_;
  static nlohmann::json* reference_;
};

ModelConfig* KjvTinyTest::config_ = nullptr;
std::shared_ptr<const ModelWeights>* KjvTinyTest::weights_ = nullptr;
nlohmann::json* KjvTinyTest::reference_ = nullptr;

TEST_F(KjvTinyTest, ConfigIsTheByteLevelHybrid) {
  EXPECT_EQ(config_->vocab_size, 260);
  EXPECT_EQ(config_->eos_token_id, 256);
  EXPECT_EQ(config_->num_full_attention_layers(), 2);
  EXPECT_EQ(config_->num_linear_attention_layers(), 6);
  EXPECT_EQ(config_->layer_types[3], LayerKind::kFullAttention);
  EXPECT_EQ(config_->layer_types[7], LayerKind::kFullAttention);
}

// Every stored prefix of every prompt, under two prefill chunkings (one pass; 64-token passes
// that split the 163-byte prompt across GDN chunks and KV blocks).
TEST_F(KjvTinyTest, PromptLogitsMatchPyTorch) {
  EngineOptions one_pass;
  EngineOptions small_chunks;
  small_chunks.prefill_chunk = 64;
  small_chunks.kv_block_size = 16;
  double worst = 0;
  for (const EngineOptions& opt : {one_pass, small_chunks}) {
    auto e = MakeEngine(opt);
    ASSERT_NE(e, nullptr);
    const auto& prompts = (*reference_)["prompts"];
    ASSERT_EQ(prompts.size(), 4u);
    for (const auto& p : prompts) {
      const auto ids = p["ids"].get<std::vector<int32_t>>();
      const auto positions = p["positions"].get<std::vector<int64_t>>();
      ASSERT_EQ(positions.size(), p["logits"].size());
      for (size_t i = 0; i < positions.size(); ++i) {
        std::vector<int32_t> prefix(ids.begin(), ids.begin() + positions[i] + 1);
        const auto want = p["logits"][i].get<std::vector<double>>();
        ASSERT_EQ(want.size(), static_cast<size_t>(config_->vocab_size));
        const auto got = PrefillLogits(*e, prefix);
        const double err = RelError(got, want);
        worst = std::max(worst, err);
        EXPECT_LT(err, kMaxRelError)
            << "prompt \"" << p["text"].get<std::string>() << "\" position " << positions[i]
            << " prefill_chunk " << opt.prefill_chunk;
        // The next byte the trainer would pick is the one the engine picks.
        EXPECT_EQ(Argmax(got),
                  static_cast<int32_t>(std::max_element(want.begin(), want.end()) - want.begin()));
      }
    }
  }
  RecordProperty("max_rel_error", std::to_string(worst));
}

TEST_F(KjvTinyTest, GreedyContinuationMatchesPyTorchExactly) {
  const auto& g = (*reference_)["greedy"];
  const auto prompt = g["prompt_ids"].get<std::vector<int32_t>>();
  const auto want = g["ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(want.size(), 64u);
  auto e = MakeEngine({});
  ASSERT_NE(e, nullptr);
  SequenceId s = e->AddSequence().value();
  std::vector<float> logits(static_cast<size_t>(config_->vocab_size), std::nanf(""));
  ASSERT_TRUE(e->Prefill({&s, 1}, {&prompt, 1}, &logits).ok());
  std::vector<int32_t> got;
  while (got.size() < want.size()) {
    int32_t tok = kernels::cpu::SampleToken(logits, {}, got.size());  // temperature 0: greedy
    got.push_back(tok);
    std::fill(logits.begin(), logits.end(), std::nanf(""));
    ASSERT_TRUE(e->Decode({&s, 1}, {&tok, 1}, &logits).ok());
  }
  EXPECT_EQ(got, want) << "engine: \"" << std::string(got.begin(), got.end()) << "\"\npytorch: \""
                       << g["text"].get<std::string>() << "\"";
}

}  // namespace
}  // namespace prfaas::engine
