// HfBpeTokenizer on small hand-built tokenizer.json files: BPE rank order, both merge spellings,
// ignore_merges, added tokens, NFC, and clear errors for malformed files.
#include "router/tokenizer/hf_bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

namespace prfaas::router {
namespace {

using Json = nlohmann::json;

constexpr const char* kQwenPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// A byte-level vocabulary: the 256 byte symbols take ids 0..255 in byte order, then each extra
// token (spelled in raw bytes) gets the next id. `merges` are raw-byte pairs.
struct Spec {
  std::vector<std::string> extra;
  std::vector<std::pair<std::string, std::string>> merges;
  bool pair_merges = false;
  bool ignore_merges = false;
  bool nfc = true;
};

Json MakeTokenizerJson(const Spec& spec) {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteLevelEncode(std::string(1, static_cast<char>(b)))] = b;
  int next = 256;
  for (const auto& t : spec.extra) vocab[ByteLevelEncode(t)] = next++;
  Json merges = Json::array();
  for (const auto& [a, b] : spec.merges) {
    if (spec.pair_merges) {
      merges.push_back(Json::array({ByteLevelEncode(a), ByteLevelEncode(b)}));
    } else {
      merges.push_back(ByteLevelEncode(a) + " " + ByteLevelEncode(b));
    }
  }
  Json j;
  j["version"] = "1.0";
  j["added_tokens"] = Json::array({
      {{"id", next}, {"content", "<|endoftext|>"}, {"special", true}},
      {{"id", next + 1}, {"content", "<|im_start|>"}, {"special", true}},
      {{"id", next + 2}, {"content", "<|im_end|>"}, {"special", true}},
      {{"id", next + 3}, {"content", "<think>"}, {"special", false}},
  });
  j["normalizer"] = spec.nfc ? Json{{"type", "NFC"}} : Json(nullptr);
  j["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       Json::array({{{"type", "Split"},
                     {"pattern", {{"Regex", kQwenPattern}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
  j["post_processor"] = nullptr;
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", spec.ignore_merges},
                {"vocab", vocab},
                {"merges", merges}};
  return j;
}

std::unique_ptr<HfBpeTokenizer> Make(const Spec& spec) {
  auto r = HfBpeTokenizer::FromJson(MakeTokenizerJson(spec).dump(), "test");
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? std::move(r).value() : nullptr;
}

std::vector<TokenId> Bytes(std::string_view s) {
  std::vector<TokenId> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

TEST(ByteLevel, Gpt2Alphabet) {
  EXPECT_EQ(ByteLevelChar('A'), U'A');
  EXPECT_EQ(ByteLevelChar(' '), U'\u0120');   // Ġ
  EXPECT_EQ(ByteLevelChar('\n'), U'\u010A');  // Ċ
  EXPECT_EQ(ByteLevelChar(0), U'\u0100');
  EXPECT_EQ(ByteLevelChar(127), U'\u0121');
  EXPECT_EQ(ByteLevelChar(173), U'\u0143');
  EXPECT_EQ(ByteLevelChar(255), U'\u00FF');
}

TEST(HfBpe, MergesFollowRankNotPosition) {
  // "abc": with "b c" ranked first we get a|bc, with "a b" first ab|c.
  auto bc_first = Make({.extra = {"bc", "ab"}, .merges = {{"b", "c"}, {"a", "b"}}});
  auto ab_first = Make({.extra = {"bc", "ab"}, .merges = {{"a", "b"}, {"b", "c"}}});
  ASSERT_TRUE(bc_first && ab_first);
  EXPECT_EQ(bc_first->Encode("abc"), (std::vector<TokenId>{'a', 256}));
  EXPECT_EQ(ab_first->Encode("abc"), (std::vector<TokenId>{257, 'c'}));
}

TEST(HfBpe, EqualRanksMergeLeftmostFirstAndChain) {
  auto tok = Make({.extra = {"aa", "aaaa"}, .merges = {{"a", "a"}, {"aa", "aa"}}});
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->Encode("aaa"), (std::vector<TokenId>{256, 'a'}));
  EXPECT_EQ(tok->Encode("aaaaa"), (std::vector<TokenId>{257, 'a'}));
  EXPECT_EQ(tok->Encode("aaaaaaaa"), (std::vector<TokenId>{257, 257}));
}

TEST(HfBpe, StringAndPairMergesAgree) {
  Spec spec{
      .extra = {"he", "ll", "hell", "hello", " w", " wo"},
      .merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {" w", "o"}}};
  auto strings = Make(spec);
  spec.pair_merges = true;
  auto pairs = Make(spec);
  ASSERT_TRUE(strings && pairs);
  const std::string text = "hello world, hell hello";
  EXPECT_EQ(strings->Encode(text), pairs->Encode(text));
  EXPECT_EQ(strings->Encode("hello world"), (std::vector<TokenId>{259, 261, 'r', 'l', 'd'}));
  EXPECT_EQ(*strings->Decode(strings->Encode(text)), text);
}

TEST(HfBpe, IgnoreMergesEmitsWholeVocabWords) {
  // "abc" is in the vocabulary but no merge chain reaches it.
  Spec spec{.extra = {"abc"}, .merges = {}};
  auto plain = Make(spec);
  spec.ignore_merges = true;
  auto ignoring = Make(spec);
  ASSERT_TRUE(plain && ignoring);
  EXPECT_EQ(plain->Encode("abc"), Bytes("abc"));
  EXPECT_EQ(ignoring->Encode("abc"), (std::vector<TokenId>{256}));
  EXPECT_EQ(ignoring->Encode("abcd"), Bytes("abcd"));
}

TEST(HfBpe, AddedTokensAndSpecialIds) {
  auto tok = Make({});
  ASSERT_TRUE(tok);
  EXPECT_EQ(tok->VocabSize(), 260);
  EXPECT_EQ(tok->Specials().end_of_text, 256);
  EXPECT_EQ(tok->Specials().im_start, 257);
  EXPECT_EQ(tok->Specials().im_end, 258);
  EXPECT_FALSE(tok->Specials().pad.has_value());
  EXPECT_EQ(tok->SpecialTokenId("<think>"), 259);
  EXPECT_TRUE(tok->IsSpecial(258));
  EXPECT_FALSE(tok->IsSpecial(259));  // added but not special: kept by skip_special
  EXPECT_EQ(tok->Encode("x<|im_end|>y"), (std::vector<TokenId>{'x', 258, 'y'}));
  EXPECT_EQ(tok->Encode("<|im_end|>", SpecialTokens::kAsText), Bytes("<|im_end|>"));
  const std::vector<TokenId> ids{257, 'h', 259, 258};
  EXPECT_EQ(*tok->Decode(ids), "<|im_start|>h<think><|im_end|>");
  EXPECT_EQ(*tok->Decode(ids, true), "h<think>");
  EXPECT_FALSE(tok->Decode(std::vector<TokenId>{260}).ok());
}

TEST(HfBpe, NfcAppliesOutsideAddedTokens) {
  auto nfc = Make({});
  auto raw = Make({.nfc = false});
  ASSERT_TRUE(nfc && raw);
  // e + COMBINING ACUTE -> é (C3 A9).
  EXPECT_EQ(nfc->Encode("e\xCC\x81"), Bytes("\xC3\xA9"));
  EXPECT_EQ(raw->Encode("e\xCC\x81"), Bytes("e\xCC\x81"));
}

TEST(HfBpe, LongPiecesAndRandomTextRoundTrip) {
  auto tok = Make({.extra = {"aa", "  "}, .merges = {{"a", "a"}, {" ", " "}}});
  ASSERT_TRUE(tok);
  const std::string long_word(100000, 'a');
  EXPECT_EQ(tok->Encode(long_word), std::vector<TokenId>(50000, 256));
  const std::string spaces(100001, ' ');
  EXPECT_EQ(*tok->Decode(tok->Encode(spaces + "x")), spaces + "x");

  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  const char* alphabet[] = {"a", " ", "\n", "\r\n", "1", "'s", "é", "中", "😀", "\t", ".", "<"};
  for (int i = 0; i < 200; ++i) {
    std::string s;
    for (size_t k = rng() % 30; k > 0; --k) s += alphabet[rng() % std::size(alphabet)];
    ASSERT_EQ(*tok->Decode(tok->Encode(s)), s) << "seed " << seed;
  }
}

TEST(HfBpe, ConcurrentEncodeMatchesSerial) {
  auto tok = Make({.extra = {"he", "ll", "hell", "hello"},
                   .merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}}});
  ASSERT_TRUE(tok);
  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  const char* words[] = {"hello", "hell", " hello", "he", "llo", "中文", "😀", "\n", "42"};
  std::vector<std::string> texts(64);
  for (auto& t : texts) {
    for (size_t k = 1 + rng() % 20; k > 0; --k) t += words[rng() % std::size(words)];
  }
  std::vector<std::vector<TokenId>> serial;
  for (const auto& t : texts) serial.push_back(tok->Encode(t));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int th = 0; th < 4; ++th) {
    threads.emplace_back([&, th] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t j = (i + static_cast<size_t>(th * 7 + rep)) % texts.size();
          if (tok->Encode(texts[j]) != serial[j]) ++mismatches;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0) << "seed " << seed;
}

// ---- malformed files ------------------------------------------------------------------------

struct BadCase {
  const char* name;
  std::function<void(Json&)> mutate;
  StatusCode code;
  const char* message_part;
};

TEST(HfBpe, MalformedFilesGiveClearErrors) {
  const std::vector<BadCase> cases = {
      {"no model", [](Json& j) { j.erase("model"); }, StatusCode::kInvalidArgument,
       "model: missing"},
      {"wordpiece", [](Json& j) { j["model"]["type"] = "WordPiece"; }, StatusCode::kUnimplemented,
       "model.type"},
      {"vocab array", [](Json& j) { j["model"]["vocab"] = Json::array(); },
       StatusCode::kInvalidArgument, "model.vocab: expected an object"},
      {"vocab id string", [](Json& j) { j["model"]["vocab"]["zz"] = "7"; },
       StatusCode::kInvalidArgument, "model.vocab[\"zz\"]"},
      {"duplicate id", [](Json& j) { j["model"]["vocab"]["zz"] = 5; }, StatusCode::kInvalidArgument,
       "used more than once"},
      {"missing byte", [](Json& j) { j["model"]["vocab"].erase("A"); },
       StatusCode::kInvalidArgument, "byte 65"},
      {"merge no space", [](Json& j) { j["model"]["merges"].push_back("ab"); },
       StatusCode::kInvalidArgument, "model.merges[1]"},
      {"merge number", [](Json& j) { j["model"]["merges"][0] = 3; }, StatusCode::kInvalidArgument,
       "model.merges[0]"},
      {"merge oov", [](Json& j) { j["model"]["merges"].push_back("x y"); },
       StatusCode::kInvalidArgument, "not in model.vocab"},
      {"merges missing", [](Json& j) { j["model"].erase("merges"); }, StatusCode::kInvalidArgument,
       "model.merges: missing"},
      {"added no id", [](Json& j) { j["added_tokens"][1].erase("id"); },
       StatusCode::kInvalidArgument, "added_tokens[1].id: missing"},
      {"added empty", [](Json& j) { j["added_tokens"][0]["content"] = ""; },
       StatusCode::kInvalidArgument, "added_tokens[0].content"},
      {"added dup", [](Json& j) { j["added_tokens"][1]["content"] = "<|endoftext|>"; },
       StatusCode::kInvalidArgument, "duplicate"},
      {"single word", [](Json& j) { j["added_tokens"][0]["single_word"] = true; },
       StatusCode::kUnimplemented, "single_word"},
      {"bad regex",
       [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}"; },
       StatusCode::kInvalidArgument, "bad regex at offset"},
      {"behavior", [](Json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       StatusCode::kUnimplemented, "behavior"},
      {"no byte level", [](Json& j) { j["pre_tokenizer"] = nullptr; }, StatusCode::kUnimplemented,
       "ByteLevel"},
      {"normalizer",
       [](Json& j) {
         j["normalizer"] = {{"type", "Lowercase"}};
       },
       StatusCode::kUnimplemented, "Lowercase"},
      {"decoder",
       [](Json& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       StatusCode::kUnimplemented, "decoder"},
      {"prefix", [](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       StatusCode::kUnimplemented, "continuing_subword_prefix"},
  };
  for (const BadCase& c : cases) {
    Json j = MakeTokenizerJson({.extra = {"ab"}, .merges = {{"a", "b"}}});
    c.mutate(j);
    auto r = HfBpeTokenizer::FromJson(j.dump(), "bad.json");
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_EQ(r.status().code(), c.code) << c.name << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.message_part), std::string::npos)
        << c.name << ": " << r.status();
    EXPECT_NE(r.status().message().find("bad.json"), std::string::npos) << c.name;
  }
}

TEST(HfBpe, LoadReportsPathAndJsonErrors) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("prfaas_tok_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "tokenizer.json").string();
  std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {)";
  auto r = HfBpeTokenizer::Load(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("JSON"), std::string::npos) << r.status();

  std::ofstream(path) << MakeTokenizerJson({}).dump();
  auto ok = LoadTokenizer(path);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->Name(), "hf-bpe:" + path);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace prfaas::router
