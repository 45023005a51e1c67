#include "router/tokenizer/byte_tokenizer.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "router/tokenizer/utf8.h"

namespace prfaas::router {
namespace {

std::mt19937_64 FreshRng() {
  const uint64_t seed = std::random_device{}();
  std::cerr << "seed " << seed << "\n";
  return std::mt19937_64(seed);
}

// Random valid UTF-8 mixing ASCII, 2-, 3- and 4-byte code points.
std::string RandomUtf8(std::mt19937_64& rng, size_t chars) {
  std::string s;
  for (size_t i = 0; i < chars; ++i) {
    char32_t cp = 0;
    switch (rng() % 4) {
      case 0: cp = 0x20 + rng() % 0x5F; break;
      case 1: cp = 0x80 + rng() % 0x780; break;
      case 2: cp = 0x800 + rng() % (0xD000 - 0x800); break;
      default: cp = 0x10000 + rng() % 0x100000; break;
    }
    utf8::AppendCodePoint(cp, &s);
  }
  return s;
}

TEST(ByteTokenizer, EncodesBytesAndRecognisesSpecials) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.Encode("hi"), (std::vector<TokenId>{'h', 'i'}));
  EXPECT_EQ(tok.Encode("é"), (std::vector<TokenId>{0xC3, 0xA9}));
  EXPECT_EQ(tok.Encode("<|im_start|>u\n<|im_end|><|endoftext|><|pad|>"),
            (std::vector<TokenId>{257, 'u', '\n', 258, 256, 259}));
  // Near-misses stay bytes.
  const std::string partial = "<|im_start|<|im_end";
  EXPECT_EQ(tok.Encode(partial).size(), partial.size());
  // kAsText never produces control tokens.
  const std::vector<TokenId> as_text = tok.Encode("<|im_end|>", SpecialTokens::kAsText);
  EXPECT_EQ(as_text.size(), 10u);
  for (TokenId id : as_text) EXPECT_LT(id, 256);
}

TEST(ByteTokenizer, SpecialIdsAndVocab) {
  ByteTokenizer tok;
  EXPECT_EQ(tok.VocabSize(), 260);
  const SpecialTokenIds s = tok.Specials();
  EXPECT_EQ(s.end_of_text, 256);
  EXPECT_EQ(s.im_start, 257);
  EXPECT_EQ(s.im_end, 258);
  EXPECT_EQ(s.pad, 259);
  EXPECT_EQ(s.StopIds(), (std::vector<TokenId>{258, 256}));
  EXPECT_EQ(tok.SpecialTokenId("<|im_end|>"), 258);
  EXPECT_FALSE(tok.SpecialTokenId("<|im_end").has_value());
  EXPECT_TRUE(tok.IsSpecial(257));
  EXPECT_FALSE(tok.IsSpecial(255));
  EXPECT_FALSE(tok.IsSpecial(260));
}

TEST(ByteTokenizer, RoundTripsRandomText) {
  ByteTokenizer tok;
  auto rng = FreshRng();
  for (int i = 0; i < 200; ++i) {
    const std::string s = RandomUtf8(rng, rng() % 64);
    auto text = tok.Decode(tok.Encode(s));
    ASSERT_TRUE(text.ok()) << text.status();
    ASSERT_EQ(*text, s);
  }
}

TEST(ByteTokenizer, DecodeRejectsUnknownIdsAndSkipsSpecials) {
  ByteTokenizer tok;
  const std::vector<TokenId> bad{'a', 260};
  auto r = tok.Decode(bad);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("260"), std::string::npos);
  EXPECT_FALSE(tok.Decode(std::vector<TokenId>{-1}).ok());

  const std::vector<TokenId> ids{257, 'a', 258};
  EXPECT_EQ(*tok.Decode(ids), "<|im_start|>a<|im_end|>");
  EXPECT_EQ(*tok.Decode(ids, /*skip_special=*/true), "a");
}

TEST(ByteTokenizer, InvalidUtf8InputIsRepaired) {
  ByteTokenizer tok;
  // A lone continuation byte and a truncated 3-byte sequence each become one U+FFFD.
  const std::vector<TokenId> ids = tok.Encode(
      "a\x80"
      "b\xE2\x82");
  EXPECT_EQ(*tok.Decode(ids),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
}

TEST(Utf8, RepairsMaximalSubparts) {
  auto repair = [](std::string_view in) {
    std::string out;
    EXPECT_EQ(utf8::AppendRepaired(in, true, &out), in.size());
    return out;
  };
  const std::string r(utf8::kReplacement);
  EXPECT_EQ(repair("ok"), "ok");
  EXPECT_EQ(repair("\xE2\x82"), r);                      // truncated: one subpart
  EXPECT_EQ(repair("\xF0\x80"), r + r);                  // F0 80 is not a valid start
  EXPECT_EQ(repair("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(repair("\xC0\xAF"), r + r);                  // overlong
  EXPECT_EQ(repair("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(repair("\xE2\x82\xAC"), "\xE2\x82\xAC");     // euro sign is fine

  std::string out;
  EXPECT_EQ(utf8::AppendRepaired("a\xF0\x9F\x98", /*final=*/false, &out), 1u);
  EXPECT_EQ(out, "a");
}

TEST(StreamDecoder, HoldsBackIncompleteUtf8) {
  ByteTokenizer tok;
  StreamDecoder dec(tok);
  // U+1F600 (F0 9F 98 80) arrives one byte per token.
  EXPECT_EQ(*dec.Add(0xF0), "");
  EXPECT_EQ(*dec.Add(0x9F), "");
  EXPECT_EQ(*dec.Add(0x98), "");
  EXPECT_EQ(dec.pending_bytes(), 3u);
  EXPECT_EQ(*dec.Add(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(*dec.Add('x'), "x");
  // An unknown id is an error and leaves the state alone.
  EXPECT_EQ(*dec.Add(0xC3), "");
  EXPECT_FALSE(dec.Add(999).ok());
  EXPECT_EQ(*dec.Add(0xA9), "é");
  // A tail that never completes comes out of Finish as U+FFFD.
  EXPECT_EQ(*dec.Add(0xE2), "");
  EXPECT_EQ(dec.Finish(), utf8::kReplacement);
  EXPECT_EQ(dec.pending_bytes(), 0u);
}

TEST(StreamDecoder, ConcatenationEqualsDecodeOnRandomIds) {
  ByteTokenizer tok;
  auto rng = FreshRng();
  for (int round = 0; round < 300; ++round) {
    std::vector<TokenId> ids;
    const size_t n = rng() % 40;
    for (size_t i = 0; i < n; ++i) {
      // Bias towards high bytes so partial and invalid sequences are common.
      ids.push_back(rng() % 3 == 0 ? static_cast<TokenId>(rng() % 260)
                                   : static_cast<TokenId>(0x80 + rng() % 0x80));
    }
    for (bool skip : {false, true}) {
      StreamDecoder dec(tok, skip);
      std::string streamed;
      for (TokenId id : ids) streamed += *dec.Add(id);
      streamed += dec.Finish();
      ASSERT_EQ(streamed, *tok.Decode(ids, skip));
      ASSERT_TRUE(utf8::IsValid(streamed));
    }
  }
}

TEST(LoadTokenizer, ByteSpecAndBadPath) {
  auto byte = LoadTokenizer("byte");
  ASSERT_TRUE(byte.ok()) << byte.status();
  EXPECT_EQ((*byte)->Name(), "byte");
  auto missing = LoadTokenizer("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
}

}  // namespace
}  // namespace prfaas::router
