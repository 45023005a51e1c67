// Tokenizer: text <-> token ids for the models prfaas serves.
//
// Two implementations sit behind this interface:
//   * ByteTokenizer (byte_tokenizer.h): ids 0..255 are raw bytes, 256..259 are ChatML specials;
//     used by the small embedded byte-level model.
//   * HfBpeTokenizer (hf_bpe_tokenizer.h): a HuggingFace tokenizer.json with a byte-level BPE
//     model (Qwen2/2.5/3/3-Next vocabularies).
//
// Contract shared by every implementation:
//   * Encode never fails. Text that is not valid UTF-8 is repaired first (each maximal invalid
//     subsequence becomes U+FFFD), exactly as Decode repairs output.
//   * With SpecialTokens::kRecognize (the default) special/added token strings such as
//     "<|im_end|>" inside the text become their single ids (leftmost-longest match, before any
//     normalisation), as HuggingFace `tokenizers` does. Use kAsText for untrusted text that must
//     never produce control tokens.
//   * Decode fails only on ids outside the vocabulary. Token bytes that do not form valid UTF-8
//     are replaced by U+FFFD.
//   * Implementations are immutable after construction and safe to use from many threads.
//
//   PRFAAS_ASSIGN_OR_RETURN(auto tok, LoadTokenizer("/models/qwen3/tokenizer.json"));
//   std::vector<TokenId> ids = tok->Encode("<|im_start|>user\nhi<|im_end|>\n");
//   StreamDecoder stream(*tok);
//   for (TokenId id : generated) { PRFAAS_ASSIGN_OR_RETURN(std::string piece, stream.Add(id)); ...
//   }
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace prfaas::router {

using TokenId = int32_t;

// Whether special/added token strings in the input text are turned into their ids.
enum class SpecialTokens { kRecognize, kAsText };

// Ids of the control tokens the router and engine care about; absent when the vocabulary has
// no such token.
struct SpecialTokenIds {
  std::optional<TokenId> end_of_text;  // <|endoftext|>
  std::optional<TokenId> im_start;     // <|im_start|>
  std::optional<TokenId> im_end;       // <|im_end|>
  std::optional<TokenId> pad;          // <|pad|> (byte model); Qwen pads with <|endoftext|>

  // Tokens that end generation for a ChatML model: <|im_end|> then <|endoftext|> (those present).
  std::vector<TokenId> StopIds() const;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::vector<TokenId> Encode(std::string_view text,
                                      SpecialTokens special = SpecialTokens::kRecognize) const = 0;

  // Appends the raw bytes token `id` stands for (possibly a partial UTF-8 sequence).
  // InvalidArgument when id is not in the vocabulary.
  virtual Status AppendTokenBytes(TokenId id, std::string* out) const = 0;

  // True for tokens flagged special (<|im_end|>, <|endoftext|>); Decode's skip_special drops
  // them. Plain added tokens such as Qwen's <think> are recognised in text but are not special.
  virtual bool IsSpecial(TokenId id) const = 0;

  // The id of an added/special token given its exact text, e.g. "<|im_end|>".
  virtual std::optional<TokenId> SpecialTokenId(std::string_view content) const = 0;

  virtual SpecialTokenIds Specials() const = 0;

  // One past the largest id the tokenizer can produce or decode.
  virtual int32_t VocabSize() const = 0;

  // Short description for logs and /v1/models, e.g. "byte" or "hf-bpe:<path>".
  virtual std::string Name() const = 0;

  // Concatenated token bytes as UTF-8 (invalid sequences -> U+FFFD); special tokens are dropped
  // when skip_special is set.
  Result<std::string> Decode(std::span<const TokenId> ids, bool skip_special = false) const;
};

// Incremental detokenizer for streamed output. Add() returns the text that became complete with
// this token; bytes of a UTF-8 sequence that is still incomplete are held back until the tokens
// that complete it arrive. The concatenation of every Add() result and Finish() equals
// Decode(all ids) with the same skip_special.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // InvalidArgument for an id outside the vocabulary (the decoder state is unchanged).
  Result<std::string> Add(TokenId id);

  // Returns the held-back remainder (an incomplete tail becomes U+FFFD) and resets the decoder.
  std::string Finish();

  // Bytes currently held back.
  size_t pending_bytes() const { return pending_.size(); }

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;
};

// Builds a tokenizer from a spec: "byte" for the embedded byte-level model, otherwise the path
// of a HuggingFace tokenizer.json.
Result<std::unique_ptr<Tokenizer>> LoadTokenizer(std::string_view spec);

}  // namespace prfaas::router
