// ByteTokenizer: the vocabulary of the embedded byte-level model.
//
// Ids 0..255 are the bytes themselves; 256 <|endoftext|>, 257 <|im_start|>, 258 <|im_end|>,
// 259 <|pad|>. Vocabulary size 260. Special token strings in text are recognised (see
// tokenizer.h); everything else is encoded byte by byte, so Decode(Encode(s)) == s for valid
// UTF-8 s.
#pragma once

#include "router/tokenizer/added_tokens.h"
#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr TokenId kEndOfText = 256;
  static constexpr TokenId kImStart = 257;
  static constexpr TokenId kImEnd = 258;
  static constexpr TokenId kPad = 259;
  static constexpr int32_t kVocabSize = 260;

  ByteTokenizer();

  std::vector<TokenId> Encode(std::string_view text,
                              SpecialTokens special = SpecialTokens::kRecognize) const override;
  Status AppendTokenBytes(TokenId id, std::string* out) const override;
  bool IsSpecial(TokenId id) const override { return id >= 256 && id < kVocabSize; }
  std::optional<TokenId> SpecialTokenId(std::string_view content) const override;
  SpecialTokenIds Specials() const override;
  int32_t VocabSize() const override { return kVocabSize; }
  std::string Name() const override { return "byte"; }

 private:
  AddedTokens added_;
};

}  // namespace prfaas::router
