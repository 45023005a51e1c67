#include "router/tokenizer/byte_tokenizer.h"

#include <string>

#include "router/tokenizer/utf8.h"

namespace prfaas::router {

ByteTokenizer::ByteTokenizer()
    : added_({{"<|endoftext|>", kEndOfText},
              {"<|im_start|>", kImStart},
              {"<|im_end|>", kImEnd},
              {"<|pad|>", kPad}}) {}

std::vector<TokenId> ByteTokenizer::Encode(std::string_view text, SpecialTokens special) const {
  std::string repaired;
  if (!utf8::IsValid(text)) {
    utf8::AppendRepaired(text, /*final=*/true, &repaired);
    text = repaired;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size());
  auto append_bytes = [&](std::string_view s) {
    for (unsigned char c : s) ids.push_back(c);
  };
  if (special == SpecialTokens::kAsText) {
    append_bytes(text);
    return ids;
  }
  std::vector<AddedTokens::Piece> pieces;
  added_.Split(text, &pieces);
  for (const auto& piece : pieces) {
    if (piece.id) {
      ids.push_back(*piece.id);
    } else {
      append_bytes(piece.text);
    }
  }
  return ids;
}

Status ByteTokenizer::AppendTokenBytes(TokenId id, std::string* out) const {
  if (id >= 0 && id < 256) {
    out->push_back(static_cast<char>(id));
    return Status::Ok();
  }
  if (const AddedToken* t = added_.ById(id)) {
    out->append(t->content);
    return Status::Ok();
  }
  return InvalidArgument("token id " + std::to_string(id) + " is outside the byte vocabulary [0, " +
                         std::to_string(kVocabSize) + ")");
}

std::optional<TokenId> ByteTokenizer::SpecialTokenId(std::string_view content) const {
  return added_.Find(content);
}

SpecialTokenIds ByteTokenizer::Specials() const {
  return {.end_of_text = kEndOfText, .im_start = kImStart, .im_end = kImEnd, .pad = kPad};
}

}  // namespace prfaas::router
