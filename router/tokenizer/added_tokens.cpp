#include "router/tokenizer/added_tokens.h"

#include <algorithm>

namespace prfaas::router {
namespace {

bool IsAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

AddedTokens::AddedTokens(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const AddedToken& t = tokens_[i];
    by_first_byte_[static_cast<unsigned char>(t.content[0])].push_back(i);
    by_content_.emplace(t.content, i);
    by_id_.emplace(t.id, i);
  }
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](size_t a, size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

void AddedTokens::Split(std::string_view text, std::vector<Piece>* out) const {
  size_t gap_start = 0;  // start of the plain text not yet emitted
  size_t i = 0;
  while (i < text.size()) {
    const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[i])];
    const AddedToken* hit = nullptr;
    for (size_t idx : bucket) {
      if (text.compare(i, tokens_[idx].content.size(), tokens_[idx].content) == 0) {
        hit = &tokens_[idx];
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t gap_end = i;
    if (hit->lstrip) {
      while (gap_end > gap_start && IsAsciiSpace(text[gap_end - 1])) --gap_end;
    }
    if (gap_end > gap_start) out->push_back({text.substr(gap_start, gap_end - gap_start), {}});
    out->push_back({text.substr(i, hit->content.size()), hit->id});
    i += hit->content.size();
    if (hit->rstrip) {
      while (i < text.size() && IsAsciiSpace(text[i])) ++i;
    }
    gap_start = i;
  }
  if (gap_start < text.size()) out->push_back({text.substr(gap_start), {}});
}

std::optional<TokenId> AddedTokens::Find(std::string_view content) const {
  auto it = by_content_.find(std::string(content));
  if (it == by_content_.end()) return std::nullopt;
  return tokens_[it->second].id;
}

const AddedToken* AddedTokens::ById(TokenId id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

}  // namespace prfaas::router
