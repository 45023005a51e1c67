// HfBpeTokenizer: a HuggingFace `tokenizer.json` with a byte-level BPE model (GPT-2 style), as
// shipped with Qwen2/2.5/3/3-Next.
//
// Encode runs the same pipeline as HuggingFace `tokenizers`:
//   1. added/special tokens are split off the raw text first (leftmost-longest match);
//   2. every remaining gap is normalised (NFC via utf8proc when the file asks for it);
//   3. the pre-tokenizer regexes split it (PCRE2 in UTF + UCP mode, "Isolated" behaviour);
//   4. each piece's UTF-8 bytes are mapped to the GPT-2 byte alphabet and merged by BPE
//      (lowest merge rank first, leftmost on ties); results are cached per piece.
// Decode maps token characters back to bytes (the ByteLevel decoder).
//
// Supported configuration (anything else is rejected at load time with an Unimplemented error
// naming the field): normalizer null | NFC | Sequence of those; pre_tokenizer Split{Regex|String,
// behavior Isolated, invert false} and ByteLevel{add_prefix_space false, use_regex any} or a
// Sequence of them ending in ByteLevel; model BPE with merges as "a b" strings or ["a","b"] pairs,
// ignore_merges, no dropout, no subword prefix/suffix; decoder ByteLevel or null. Post-processors
// are ignored (Qwen's adds nothing). Added tokens with single_word are rejected; `normalized` is
// ignored (added tokens are always matched on the raw text).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

// The GPT-2 bytes_to_unicode alphabet: printable bytes map to themselves, the other 68 bytes
// (0-32, 127-160, 173) map in increasing order to U+0100, U+0101, ...
char32_t ByteLevelChar(unsigned char byte);

// UTF-8 of the byte-level characters for each byte of `bytes` (how vocab entries are spelled).
std::string ByteLevelEncode(std::string_view bytes);

class HfBpeTokenizer final : public Tokenizer {
 public:
  // Reads and validates a tokenizer.json. Errors name the path and the offending field.
  static Result<std::unique_ptr<HfBpeTokenizer>> Load(const std::string& path);
  // Same from the JSON text; `origin` names it in error messages.
  static Result<std::unique_ptr<HfBpeTokenizer>> FromJson(std::string_view json_text,
                                                          std::string origin);
  ~HfBpeTokenizer() override;

  std::vector<TokenId> Encode(std::string_view text,
                              SpecialTokens special = SpecialTokens::kRecognize) const override;
  Status AppendTokenBytes(TokenId id, std::string* out) const override;
  bool IsSpecial(TokenId id) const override;
  std::optional<TokenId> SpecialTokenId(std::string_view content) const override;
  SpecialTokenIds Specials() const override;
  int32_t VocabSize() const override;
  std::string Name() const override;

 private:
  struct Impl;
  explicit HfBpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace prfaas::router
