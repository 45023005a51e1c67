#include "router/tokenizer/tokenizer.h"

#include "router/tokenizer/byte_tokenizer.h"
#include "router/tokenizer/hf_bpe_tokenizer.h"
#include "router/tokenizer/utf8.h"

namespace prfaas::router {

std::vector<TokenId> SpecialTokenIds::StopIds() const {
  std::vector<TokenId> ids;
  if (im_end) ids.push_back(*im_end);
  if (end_of_text) ids.push_back(*end_of_text);
  return ids;
}

Result<std::string> Tokenizer::Decode(std::span<const TokenId> ids, bool skip_special) const {
  std::string bytes;
  for (TokenId id : ids) {
    if (skip_special && IsSpecial(id)) continue;
    PRFAAS_RETURN_IF_ERROR(AppendTokenBytes(id, &bytes));
  }
  std::string text;
  text.reserve(bytes.size());
  utf8::AppendRepaired(bytes, /*final=*/true, &text);
  return text;
}

Result<std::string> StreamDecoder::Add(TokenId id) {
  if (skip_special_ && tokenizer_.IsSpecial(id)) return std::string();
  const size_t before = pending_.size();
  Status s = tokenizer_.AppendTokenBytes(id, &pending_);
  if (!s.ok()) {
    pending_.resize(before);
    return s;
  }
  std::string text;
  const size_t used = utf8::AppendRepaired(pending_, /*final=*/false, &text);
  pending_.erase(0, used);
  return text;
}

std::string StreamDecoder::Finish() {
  std::string text;
  utf8::AppendRepaired(pending_, /*final=*/true, &text);
  pending_.clear();
  return text;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizer(std::string_view spec) {
  if (spec == "byte") return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  PRFAAS_ASSIGN_OR_RETURN(auto bpe, HfBpeTokenizer::Load(std::string(spec)));
  return std::unique_ptr<Tokenizer>(std::move(bpe));
}

}  // namespace prfaas::router
