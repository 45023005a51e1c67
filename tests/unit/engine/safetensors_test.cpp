// safetensors writer/reader round trips, malformed files, and weight loading in both GDN namings.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "engine/safetensors.h"
#include "engine/weights.h"

namespace prfaas::engine {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("prfaas_st_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
    rng_.seed(std::random_device{}());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::vector<float> Rand(size_t n) {
    std::uniform_real_distribution<float> d(-2, 2);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
  // Writes a file with an arbitrary header text and `data_bytes` zero bytes of data.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes,
                       int64_t declared_len = -1) {
    std::ofstream out(Path(name), std::ios::binary);
    const uint64_t n = declared_len < 0 ? header.size() : static_cast<uint64_t>(declared_len);
    out.write(reinterpret_cast<const char*>(&n), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    std::string zeros(data_bytes, '\0');
    out.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
    return Path(name);
  }
  fs::path dir_;
  std::mt19937 rng_;
};

TEST_F(SafetensorsTest, RoundTripF32AndBf16) {
  auto a = Rand(6 * 5), b = Rand(7);
  ASSERT_TRUE(WriteSafetensors(Path("x.safetensors"), {{"a", "F32", {6, 5}, PackFloats(a, "F32")},
                                                       {"b", "BF16", {7}, PackFloats(b, "BF16")}})
                  .ok());
  auto f = SafetensorsFile::Open(Path("x.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status();
  auto ra = (*f)->ReadFloat32("a", {6, 5});
  ASSERT_TRUE(ra.ok());
  EXPECT_EQ(*ra, a);
  auto rb = (*f)->ReadFloat32("b", {7});
  ASSERT_TRUE(rb.ok());
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ((*rb)[i], Bf16ToFloat(FloatToBf16(b[i])));
    EXPECT_NEAR((*rb)[i], b[i], std::abs(b[i]) / 128);
  }
  EXPECT_EQ((*f)->ReadFloat32("a", {5, 6}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->ReadFloat32("zzz", {1}).status().code(), StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, MalformedFilesGiveClearErrors) {
  auto expect_error = [&](const std::string& path, const std::string& needle) {
    auto f = SafetensorsFile::Open(path);
    ASSERT_FALSE(f.ok()) << path;
    EXPECT_NE(f.status().message().find(needle), std::string::npos) << f.status();
  };
  expect_error(WriteRaw("empty", "", 0), "not a valid JSON");
  {
    std::ofstream out(Path("tiny"), std::ios::binary);
    out << "abc";
  }
  expect_error(Path("tiny"), "truncated");
  expect_error(WriteRaw("badjson", "{\"a\": [", 0), "not a valid JSON");
  expect_error(WriteRaw("hdrlen", "{}", 0, 1000), "truncated header");
  expect_error(WriteRaw("dtype", R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}})", 2),
               "unknown dtype");
  expect_error(WriteRaw("shape", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
               "do not match shape");
  expect_error(
      WriteRaw(
          "overlap",
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
          12),
      "overlaps");
  expect_error(WriteRaw("gap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
               "gap");
  expect_error(WriteRaw("trunc", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 10),
               "truncated");
  expect_error(WriteRaw("trailing", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 9),
               "trailing");
  expect_error(WriteRaw("noentry", R"({"a":{"dtype":"F32"}})", 0), "needs dtype");
  expect_error(Path("does-not-exist"), "cannot open");
  // A valid file with an integer tensor cannot be read as weights.
  auto p = WriteRaw("int", R"({"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})", 4);
  auto f = SafetensorsFile::Open(p);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_FALSE((*f)->ReadFloat32("a", {1}).ok());
}

void ExpectWeightsEqual(const ModelWeights& a, const ModelWeights& b) {
  ASSERT_EQ(a.layers.size(), b.layers.size());
  EXPECT_EQ(a.embed, b.embed);
  EXPECT_EQ(a.lm_head, b.lm_head);
  EXPECT_EQ(a.final_norm, b.final_norm);
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const auto& x = a.layers[i];
    const auto& y = b.layers[i];
    EXPECT_EQ(x.attn.qkv_proj, y.attn.qkv_proj);
    EXPECT_EQ(x.attn.o_proj, y.attn.o_proj);
    EXPECT_EQ(x.attn.q_norm, y.attn.q_norm);
    EXPECT_EQ(x.gdn.in_proj, y.gdn.in_proj) << "layer " << i;
    EXPECT_EQ(x.gdn.conv1d, y.gdn.conv1d);
    EXPECT_EQ(x.gdn.a_log, y.gdn.a_log);
    EXPECT_EQ(x.gdn.dt_bias, y.gdn.dt_bias);
    EXPECT_EQ(x.gdn.norm, y.gdn.norm);
    EXPECT_EQ(x.gdn.out_proj, y.gdn.out_proj);
    EXPECT_EQ(x.gate_up, y.gate_up);
    EXPECT_EQ(x.down, y.down);
    EXPECT_EQ(x.input_norm, y.input_norm);
    EXPECT_EQ(x.post_norm, y.post_norm);
  }
}

TEST_F(SafetensorsTest, WeightsRoundTripInBothGdnNamings) {
  auto cfg = PresetModelConfig("tiny");
  ASSERT_TRUE(cfg.ok());
  auto w = SyntheticWeights(*cfg, std::random_device{}());
  ASSERT_TRUE(w.ok());
  for (auto naming : {GdnNaming::kSplit, GdnNaming::kInterleaved}) {
    fs::remove(Path("model.safetensors"));
    ASSERT_TRUE(SaveWeights(*cfg, *w, Path("model.safetensors"), "F32", naming).ok());
    auto f = SafetensorsFile::Open(Path("model.safetensors"));
    ASSERT_TRUE(f.ok());
    EXPECT_EQ((*f)->Has("model.layers.0.linear_attn.in_proj_qkvz.weight"),
              naming == GdnNaming::kInterleaved);
    EXPECT_EQ((*f)->Has("model.layers.0.linear_attn.in_proj_qkv.weight"),
              naming == GdnNaming::kSplit);
    auto back = LoadWeights(*cfg, dir_.string());
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectWeightsEqual(*w, *back);
  }
}

TEST_F(SafetensorsTest, InterleavedLayoutIsPerKeyHeadGroup) {
  // Hand-built check of the de-interleave: mark each canonical in_proj row with its index and
  // verify where the writer put a few rows (group g = [q | k | v(r heads) | z(r heads)]).
  auto cfg = PresetModelConfig("tiny");  // H_k 2, H_v 4 (r = 2), d_k = d_v = 16, hidden 64
  ASSERT_TRUE(cfg.ok());
  auto w = SyntheticWeights(*cfg, 1);
  ASSERT_TRUE(w.ok());
  auto& in = w->layers[0].gdn.in_proj;
  const int64_t h = 64, rows = static_cast<int64_t>(in.size()) / h;
  for (int64_t r = 0; r < rows; ++r) in[r * h] = static_cast<float>(r);
  ASSERT_TRUE(
      SaveWeights(*cfg, *w, Path("model.safetensors"), "F32", GdnNaming::kInterleaved).ok());
  auto f = SafetensorsFile::Open(Path("model.safetensors"));
  ASSERT_TRUE(f.ok());
  auto qkvz = (*f)->ReadFloat32("model.layers.0.linear_attn.in_proj_qkvz.weight", {128 + 64, h});
  ASSERT_TRUE(qkvz.ok()) << qkvz.status();
  // Group 1 starts at row 96: q of key head 1 = canonical rows 16..31.
  EXPECT_EQ((*qkvz)[96 * h], 16.0f);
  // k of key head 1 = canonical 32 + 16 = 48, at row 96 + 16.
  EXPECT_EQ((*qkvz)[112 * h], 48.0f);
  // v of value heads 2,3 = canonical 64 + 32 = 96, at row 96 + 32.
  EXPECT_EQ((*qkvz)[128 * h], 96.0f);
  // z of value heads 2,3 = canonical 128 + 32 = 160, at row 96 + 64.
  EXPECT_EQ((*qkvz)[160 * h], 160.0f);
  auto ba = (*f)->ReadFloat32("model.layers.0.linear_attn.in_proj_ba.weight", {8, h});
  ASSERT_TRUE(ba.ok());
  // Group 1 of ba = [b2 b3 a2 a3]; b2 = canonical 192 + 2, a2 = canonical 196 + 2.
  EXPECT_EQ((*ba)[4 * h], 194.0f);
  EXPECT_EQ((*ba)[6 * h], 198.0f);
}

TEST_F(SafetensorsTest, LoaderRejectsWrongShapesAndMissingTensors) {
  auto cfg = PresetModelConfig("tiny");
  ASSERT_TRUE(cfg.ok());
  auto w = SyntheticWeights(*cfg, 3);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(SaveWeights(*cfg, *w, Path("model.safetensors"), "BF16", GdnNaming::kSplit).ok());
  auto other = *cfg;
  other.intermediate_size = 64;
  auto bad = LoadWeights(other, dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("gate_proj"), std::string::npos) << bad.status();
  auto ok = LoadWeights(*cfg, dir_.string());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->embed[5], Bf16ToFloat(FloatToBf16(w->embed[5])));
  EXPECT_FALSE(LoadWeights(*cfg, Path("nowhere")).ok());
}

}  // namespace
}  // namespace prfaas::engine
