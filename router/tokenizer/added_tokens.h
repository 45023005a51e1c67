// AddedTokens: the special/added tokens of a vocabulary and the splitter that finds them in text.
//
// Split() cuts text into pieces that are either an added token (id set) or plain text (id empty),
// choosing the leftmost match and, among matches starting there, the longest, as HuggingFace
// `tokenizers` does. lstrip/rstrip tokens also swallow the ASCII whitespace beside them.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

struct AddedToken {
  std::string content;
  TokenId id = 0;
  bool special = true;
  bool lstrip = false;
  bool rstrip = false;
};

class AddedTokens {
 public:
  struct Piece {
    std::string_view text;      // the raw text of the piece (for a token: its matched content)
    std::optional<TokenId> id;  // set when the piece is an added token
  };

  AddedTokens() = default;
  // Contents must be non-empty and unique (the loaders check).
  explicit AddedTokens(std::vector<AddedToken> tokens);

  void Split(std::string_view text, std::vector<Piece>* out) const;

  std::optional<TokenId> Find(std::string_view content) const;
  const AddedToken* ById(TokenId id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  std::vector<AddedToken> tokens_;
  // Token indices bucketed by first byte, longest first, so the first hit is the longest match.
  std::array<std::vector<size_t>, 256> by_first_byte_;
  std::unordered_map<std::string, size_t> by_content_;
  std::unordered_map<TokenId, size_t> by_id_;
};

}  // namespace prfaas::router
