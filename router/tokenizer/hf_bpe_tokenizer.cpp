#include "router/tokenizer/hf_bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <unordered_map>

#include "router/tokenizer/added_tokens.h"
#include "router/tokenizer/utf8.h"

namespace prfaas::router {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr TokenId kMaxTokenId = 1 << 24;  // far above any real vocabulary; guards bad files
constexpr size_t kMaxCachedPieceBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

const std::array<char32_t, 256>& ByteToCharTable() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

// Decodes one well-formed UTF-8 code point at s[*i], advancing *i.
char32_t NextCodePoint(std::string_view s, size_t* i) {
  const auto b0 = static_cast<unsigned char>(s[*i]);
  int len = b0 < 0x80 ? 1 : b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
  char32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[*i + k]) & 0x3F);
  *i += len;
  return cp;
}

// ---- JSON access with errors that say where -----------------------------------------------

class Loader {
 public:
  explicit Loader(std::string origin) : origin_(std::move(origin)) {}

  Status Error(const std::string& where, const std::string& what) const {
    return InvalidArgument("tokenizer " + origin_ + ": " + where + ": " + what);
  }
  Status Unsupported(const std::string& where, const std::string& what) const {
    return Unimplemented("tokenizer " + origin_ + ": " + where + ": " + what);
  }

  Result<const Json*> Field(const Json& obj, const std::string& where, const char* key,
                            Json::value_t type) const {
    auto it = obj.find(key);
    const std::string path = where.empty() ? key : where + "." + key;
    if (it == obj.end()) return Error(path, "missing");
    const bool ok =
        type == Json::value_t::number_integer
            ? it->is_number_integer()
            : it->type() == type || (type == Json::value_t::boolean && it->is_boolean());
    if (!ok)
      return Error(path, std::string("expected ") + TypeName(type) + ", got " + it->type_name());
    return &*it;
  }

  // Optional boolean that defaults when absent or null.
  Result<bool> Flag(const Json& obj, const std::string& where, const char* key,
                    bool fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return Error(where + "." + key, "expected a boolean");
    return it->get<bool>();
  }

 private:
  static const char* TypeName(Json::value_t t) {
    switch (t) {
      case Json::value_t::object: return "an object";
      case Json::value_t::array: return "an array";
      case Json::value_t::string: return "a string";
      case Json::value_t::boolean: return "a boolean";
      case Json::value_t::number_integer: return "an integer";
      default: return "another type";
    }
  }

  std::string origin_;
};

// A compiled pre-tokenizer regex. The code is immutable and shared by all threads; match data
// is created per Encode call.
struct Regex {
  pcre2_code* code = nullptr;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  Regex(Regex&& o) noexcept : code(std::exchange(o.code, nullptr)) {}
  ~Regex() {
    if (code) pcre2_code_free(code);
  }
};

}  // namespace

char32_t ByteLevelChar(unsigned char byte) {
  return ByteToCharTable()[byte];
}

std::string ByteLevelEncode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) utf8::AppendCodePoint(ByteLevelChar(b), &out);
  return out;
}

struct HfBpeTokenizer::Impl {
  std::string origin;
  bool nfc = false;
  std::vector<Regex> splits;  // applied in order; each piece of one feeds the next
  bool ignore_merges = false;

  std::unordered_map<std::string, TokenId> vocab;  // byte-level spelling -> id
  std::array<TokenId, 256> byte_ids{};
  struct Merge {
    int32_t rank;
    TokenId merged;
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left id << 32 | right id)

  AddedTokens added;
  std::vector<std::string> id_bytes;  // raw bytes per id, for decoding
  std::vector<uint8_t> id_known;      // 1 when the id exists

  // Lets the cache be probed with a string_view, without building a std::string per piece.
  struct ViewHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  mutable std::shared_mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<TokenId>, ViewHash, std::equal_to<>> cache;

  static uint64_t Key(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  void EncodeGap(std::string_view text, std::vector<TokenId>* out) const;
  void SplitAndEmit(size_t level, std::string_view piece, pcre2_match_data* md,
                    std::vector<TokenId>* out) const;
  void EncodeWord(std::string_view word, std::vector<TokenId>* out) const;
  void Bpe(std::string_view word, std::vector<TokenId>* out) const;
};

void HfBpeTokenizer::Impl::EncodeGap(std::string_view text, std::vector<TokenId>* out) const {
  std::string normalized;
  if (nfc) {
    bool ascii = true;  // NFC leaves ASCII unchanged; skip utf8proc for it
    for (unsigned char c : text) ascii &= c < 0x80;
    if (!ascii) {
      utf8proc_uint8_t* dst = nullptr;
      const utf8proc_ssize_t n =
          utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                       static_cast<utf8proc_ssize_t>(text.size()), &dst,
                       static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
      // The input was repaired to valid UTF-8, so n < 0 means out of memory; keep it unnormalised.
      if (n >= 0) {
        normalized.assign(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
        text = normalized;
      }
      std::free(dst);
    }
  }
  pcre2_match_data* md = splits.empty() ? nullptr : pcre2_match_data_create(4, nullptr);
  SplitAndEmit(0, text, md, out);
  if (md) pcre2_match_data_free(md);
}

void HfBpeTokenizer::Impl::SplitAndEmit(size_t level, std::string_view piece, pcre2_match_data* md,
                                        std::vector<TokenId>* out) const {
  if (piece.empty()) return;
  if (level == splits.size()) {
    EncodeWord(piece, out);
    return;
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t emitted = 0;  // end of the last piece handed on
  size_t offset = 0;
  while (offset < piece.size()) {
    const int rc = pcre2_match(splits[level].code, subject, piece.size(), offset,
                               PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) {  // no further match: the rest is one gap
      if (rc != PCRE2_ERROR_NOMATCH) {
        // Only resource limits can get here (the input is valid UTF-8); say so once.
        static std::once_flag warned;
        std::call_once(warned, [rc] {
          spdlog::warn(
              "tokenizer: pre-tokenizer regex failed with PCRE2 error {}; the rest of "
              "the piece is encoded unsplit",
              rc);
        });
      }
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t start = ov[0], end = ov[1];
    if (start > emitted) SplitAndEmit(level + 1, piece.substr(emitted, start - emitted), md, out);
    if (end > start) {
      SplitAndEmit(level + 1, piece.substr(start, end - start), md, out);
      emitted = end;
      offset = end;
    } else {  // empty match: step over one character
      emitted = start;
      size_t next = start;
      NextCodePoint(piece, &next);
      offset = next;
    }
  }
  if (emitted < piece.size()) SplitAndEmit(level + 1, piece.substr(emitted), md, out);
}

void HfBpeTokenizer::Impl::EncodeWord(std::string_view word, std::vector<TokenId>* out) const {
  if (ignore_merges) {
    auto it = vocab.find(ByteLevelEncode(word));
    if (it != vocab.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (word.size() == 1) {
    out->push_back(byte_ids[static_cast<unsigned char>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::shared_lock lock(cache_mu);
    auto it = cache.find(word);
    if (it != cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out->size();
  Bpe(word, out);
  if (cacheable) {
    std::vector<TokenId> ids(out->begin() + static_cast<std::ptrdiff_t>(first), out->end());
    std::unique_lock lock(cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();  // crude bound; hot words come back
    cache.emplace(std::string(word), std::move(ids));
  }
}

// Merges the lowest-ranked adjacent pair until none applies. A min-heap of candidate pairs keyed
// by (rank, position) gives the same order as repeated leftmost-lowest scans in O(n log n);
// candidates made stale by an earlier merge are recognised by their changed ids and skipped.
void HfBpeTokenizer::Impl::Bpe(std::string_view word, std::vector<TokenId>* out) const {
  struct Symbol {
    TokenId id;
    int prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int pos;
    TokenId left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const int n = static_cast<int>(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    sym[i] = {byte_ids[static_cast<unsigned char>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int pos) {
    const int nx = sym[pos].next;
    if (nx < 0) return;
    auto it = merges.find(Key(sym[pos].id, sym[nx].id));
    if (it != merges.end()) {
      heap.push({it->second.rank, pos, sym[pos].id, sym[nx].id, it->second.merged});
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    if (!left.alive || left.id != c.left || left.next < 0) continue;
    Symbol& right = sym[left.next];
    if (right.id != c.right) continue;
    left.id = c.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

// ---- loading --------------------------------------------------------------------------------

namespace {

Result<Regex> CompileRegex(const Loader& ld, const std::string& where, std::string_view pattern,
                           bool literal) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  uint32_t options = PCRE2_UTF | PCRE2_UCP;
  if (literal) options |= PCRE2_LITERAL;
  Regex re;
  re.code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                          &err, &err_offset, nullptr);
  if (re.code == nullptr) {
    std::array<PCRE2_UCHAR, 256> msg{};
    pcre2_get_error_message(err, msg.data(), msg.size());
    return ld.Error(where, "bad regex at offset " + std::to_string(err_offset) + ": " +
                               reinterpret_cast<const char*>(msg.data()));
  }
  // JIT is an optimisation only; the interpreter gives the same matches if it is unavailable.
  pcre2_jit_compile(re.code, PCRE2_JIT_COMPLETE);
  return re;
}

Status ParseNormalizer(const Loader& ld, const Json& j, const std::string& where, bool* nfc) {
  if (j.is_null()) return Status::Ok();
  if (!j.is_object()) return ld.Error(where, "expected an object or null");
  PRFAAS_ASSIGN_OR_RETURN(const Json* type, ld.Field(j, where, "type", Json::value_t::string));
  const auto t = type->get<std::string>();
  if (t == "NFC") {
    *nfc = true;
    return Status::Ok();
  }
  if (t == "Sequence") {
    PRFAAS_ASSIGN_OR_RETURN(const Json* list,
                            ld.Field(j, where, "normalizers", Json::value_t::array));
    for (size_t i = 0; i < list->size(); ++i) {
      PRFAAS_RETURN_IF_ERROR(
          ParseNormalizer(ld, (*list)[i], where + ".normalizers[" + std::to_string(i) + "]", nfc));
    }
    return Status::Ok();
  }
  return ld.Unsupported(where, "normalizer type '" + t + "' is not supported (only NFC)");
}

// Appends the regex steps of a pre-tokenizer; *byte_level is set once ByteLevel is seen.
Status ParsePreTokenizer(const Loader& ld, const Json& j, const std::string& where,
                         std::vector<Regex>* splits, bool* byte_level) {
  if (!j.is_object()) return ld.Error(where, "expected an object");
  PRFAAS_ASSIGN_OR_RETURN(const Json* type, ld.Field(j, where, "type", Json::value_t::string));
  const auto t = type->get<std::string>();
  if (*byte_level) return ld.Unsupported(where, "pre-tokenizer after ByteLevel is not supported");
  if (t == "Sequence") {
    PRFAAS_ASSIGN_OR_RETURN(const Json* list,
                            ld.Field(j, where, "pretokenizers", Json::value_t::array));
    for (size_t i = 0; i < list->size(); ++i) {
      PRFAAS_RETURN_IF_ERROR(ParsePreTokenizer(
          ld, (*list)[i], where + ".pretokenizers[" + std::to_string(i) + "]", splits, byte_level));
    }
    return Status::Ok();
  }
  if (t == "Split") {
    PRFAAS_ASSIGN_OR_RETURN(const Json* pattern,
                            ld.Field(j, where, "pattern", Json::value_t::object));
    PRFAAS_ASSIGN_OR_RETURN(const Json* behavior,
                            ld.Field(j, where, "behavior", Json::value_t::string));
    if (behavior->get<std::string>() != "Isolated") {
      return ld.Unsupported(where + ".behavior", "only \"Isolated\" is supported, got \"" +
                                                     behavior->get<std::string>() + "\"");
    }
    PRFAAS_ASSIGN_OR_RETURN(bool invert, ld.Flag(j, where, "invert", false));
    if (invert) return ld.Unsupported(where + ".invert", "inverted splits are not supported");
    const bool literal = pattern->contains("String");
    const char* key = literal ? "String" : "Regex";
    PRFAAS_ASSIGN_OR_RETURN(const Json* text,
                            ld.Field(*pattern, where + ".pattern", key, Json::value_t::string));
    PRFAAS_ASSIGN_OR_RETURN(
        Regex re, CompileRegex(ld, where + ".pattern." + key, text->get<std::string>(), literal));
    splits->push_back(std::move(re));
    return Status::Ok();
  }
  if (t == "ByteLevel") {
    PRFAAS_ASSIGN_OR_RETURN(bool prefix, ld.Flag(j, where, "add_prefix_space", true));
    if (prefix) {
      return ld.Unsupported(where + ".add_prefix_space", "add_prefix_space=true is not supported");
    }
    PRFAAS_ASSIGN_OR_RETURN(bool use_regex, ld.Flag(j, where, "use_regex", true));
    if (use_regex) {
      PRFAAS_ASSIGN_OR_RETURN(Regex re, CompileRegex(ld, where, kGpt2Pattern, false));
      splits->push_back(std::move(re));
    }
    *byte_level = true;
    return Status::Ok();
  }
  return ld.Unsupported(where, "pre-tokenizer type '" + t + "' is not supported");
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFound("tokenizer " + path + ": cannot open file");
  const std::streamsize size = in.tellg();
  if (size < 0) return DataLoss("tokenizer " + path + ": cannot determine file size");
  std::string text(static_cast<size_t>(size), '\0');
  in.seekg(0);
  if (!in.read(text.data(), size)) return DataLoss("tokenizer " + path + ": read error");
  return text;
}

}  // namespace

Result<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::Load(const std::string& path) {
  PRFAAS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return FromJson(text, path);
}

Result<std::unique_ptr<HfBpeTokenizer>> HfBpeTokenizer::FromJson(std::string_view json_text,
                                                                 std::string origin) {
  const Loader ld(origin);
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {
    return ld.Error("JSON", e.what());
  }
  if (!root.is_object()) return ld.Error("top level", "expected a JSON object");
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;

  // model
  PRFAAS_ASSIGN_OR_RETURN(const Json* model, ld.Field(root, "", "model", Json::value_t::object));
  if (auto it = model->find("type"); it != model->end() && *it != "BPE") {
    return ld.Unsupported("model.type", "only BPE models are supported, got " + it->dump());
  }
  if (auto it = model->find("dropout"); it != model->end() && !it->is_null() && *it != 0) {
    return ld.Unsupported("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model->find(key);
    if (it != model->end() && !it->is_null() && *it != "") {
      return ld.Unsupported(std::string("model.") + key, "must be empty for byte-level BPE");
    }
  }
  PRFAAS_ASSIGN_OR_RETURN(impl->ignore_merges, ld.Flag(*model, "model", "ignore_merges", false));

  PRFAAS_ASSIGN_OR_RETURN(const Json* vocab,
                          ld.Field(*model, "model", "vocab", Json::value_t::object));
  TokenId max_id = -1;
  impl->vocab.reserve(vocab->size());
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer()) {
      return ld.Error("model.vocab[\"" + token + "\"]", "expected an integer id");
    }
    const auto id = id_json.get<int64_t>();
    if (id < 0 || id >= kMaxTokenId) {
      return ld.Error("model.vocab[\"" + token + "\"]",
                      "id " + std::to_string(id) + " out of range");
    }
    impl->vocab.emplace(token, static_cast<TokenId>(id));
    max_id = std::max(max_id, static_cast<TokenId>(id));
  }

  // added tokens
  std::vector<AddedToken> added;
  if (auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) return ld.Error("added_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      const Json& a = (*it)[i];
      if (!a.is_object()) return ld.Error(where, "expected an object");
      PRFAAS_ASSIGN_OR_RETURN(const Json* id,
                              ld.Field(a, where, "id", Json::value_t::number_integer));
      PRFAAS_ASSIGN_OR_RETURN(const Json* content,
                              ld.Field(a, where, "content", Json::value_t::string));
      AddedToken t;
      t.content = content->get<std::string>();
      const auto id64 = id->get<int64_t>();
      if (id64 < 0 || id64 >= kMaxTokenId) {
        return ld.Error(where + ".id", "id " + std::to_string(id64) + " out of range");
      }
      t.id = static_cast<TokenId>(id64);
      if (t.content.empty()) return ld.Error(where + ".content", "empty");
      PRFAAS_ASSIGN_OR_RETURN(t.special, ld.Flag(a, where, "special", false));
      PRFAAS_ASSIGN_OR_RETURN(t.lstrip, ld.Flag(a, where, "lstrip", false));
      PRFAAS_ASSIGN_OR_RETURN(t.rstrip, ld.Flag(a, where, "rstrip", false));
      PRFAAS_ASSIGN_OR_RETURN(bool single_word, ld.Flag(a, where, "single_word", false));
      if (single_word) return ld.Unsupported(where + ".single_word", "not supported");
      for (const AddedToken& prev : added) {
        if (prev.content == t.content)
          return ld.Error(where, "duplicate content " + content->dump());
      }
      max_id = std::max(max_id, t.id);
      added.push_back(std::move(t));
    }
  }

  impl->id_bytes.assign(static_cast<size_t>(max_id) + 1, std::string());
  impl->id_known.assign(static_cast<size_t>(max_id) + 1, 0);
  // Inverse of the byte-level alphabet, indexed by code point (all of them are below U+0144).
  std::array<int16_t, 0x144> char_to_byte;
  char_to_byte.fill(-1);
  for (int b = 0; b < 256; ++b) char_to_byte[ByteLevelChar(static_cast<unsigned char>(b))] = b;
  for (const auto& [token, id] : impl->vocab) {
    if (impl->id_known[id]) {
      return ld.Error("model.vocab", "id " + std::to_string(id) + " is used more than once");
    }
    impl->id_known[id] = 1;
    // ByteLevel decoding; a token with characters outside the byte alphabet decodes to its own
    // UTF-8 (what the HuggingFace ByteLevel decoder does).
    // (The JSON parser only accepts valid UTF-8, so the keys can be walked without checks.)
    std::string bytes;
    bool all_mapped = true;
    for (size_t i = 0; all_mapped && i < token.size();) {
      const char32_t cp = NextCodePoint(token, &i);
      all_mapped = cp < char_to_byte.size() && char_to_byte[cp] >= 0;
      if (all_mapped) bytes.push_back(static_cast<char>(char_to_byte[cp]));
    }
    impl->id_bytes[id] = all_mapped ? std::move(bytes) : token;
  }
  for (const AddedToken& t : added) {
    impl->id_known[t.id] = 1;
    impl->id_bytes[t.id] = t.content;
  }
  for (int b = 0; b < 256; ++b) {
    const std::string ch = ByteLevelEncode(std::string(1, static_cast<char>(b)));
    auto it = impl->vocab.find(ch);
    if (it == impl->vocab.end()) {
      return ld.Error("model.vocab", "byte-level symbol for byte " + std::to_string(b) + " ('" +
                                         ch + "') is missing; not a byte-level BPE vocabulary");
    }
    impl->byte_ids[b] = it->second;
  }

  // merges
  PRFAAS_ASSIGN_OR_RETURN(const Json* merges,
                          ld.Field(*model, "model", "merges", Json::value_t::array));
  impl->merges.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    const Json& m = (*merges)[i];
    std::string a, b;
    if (m.is_string()) {
      const auto s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() ||
          s.find(' ', sp + 1) != std::string::npos) {
        return ld.Error(where, "expected \"left right\" with exactly one space, got " + m.dump());
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      return ld.Error(where, "expected a string \"a b\" or a pair [\"a\", \"b\"], got " + m.dump());
    }
    auto ia = impl->vocab.find(a), ib = impl->vocab.find(b), im = impl->vocab.find(a + b);
    if (ia == impl->vocab.end() || ib == impl->vocab.end() || im == impl->vocab.end()) {
      return ld.Error(where, "merge " + m.dump() + " uses or makes a token not in model.vocab");
    }
    // A repeated pair keeps its first (best) rank.
    impl->merges.emplace(Impl::Key(ia->second, ib->second),
                         Impl::Merge{static_cast<int32_t>(i), im->second});
  }

  // normalizer / pre-tokenizer / decoder
  if (auto it = root.find("normalizer"); it != root.end()) {
    PRFAAS_RETURN_IF_ERROR(ParseNormalizer(ld, *it, "normalizer", &impl->nfc));
  }
  bool byte_level = false;
  if (auto it = root.find("pre_tokenizer"); it != root.end() && !it->is_null()) {
    PRFAAS_RETURN_IF_ERROR(ParsePreTokenizer(ld, *it, "pre_tokenizer", &impl->splits, &byte_level));
  }
  if (!byte_level) {
    return ld.Unsupported("pre_tokenizer",
                          "no ByteLevel pre-tokenizer; only byte-level BPE is "
                          "supported");
  }
  if (auto it = root.find("decoder"); it != root.end() && !it->is_null()) {
    if (!it->is_object() || it->value("type", "") != "ByteLevel") {
      return ld.Unsupported(
          "decoder", "only the ByteLevel decoder is supported, got " + it->dump().substr(0, 80));
    }
  }
  impl->added = AddedTokens(std::move(added));
  return std::unique_ptr<HfBpeTokenizer>(new HfBpeTokenizer(std::move(impl)));
}

HfBpeTokenizer::HfBpeTokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HfBpeTokenizer::~HfBpeTokenizer() = default;

std::vector<TokenId> HfBpeTokenizer::Encode(std::string_view text, SpecialTokens special) const {
  std::string repaired;
  if (!utf8::IsValid(text)) {
    utf8::AppendRepaired(text, /*final=*/true, &repaired);
    text = repaired;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 1);
  if (special == SpecialTokens::kAsText) {
    impl_->EncodeGap(text, &ids);
    return ids;
  }
  std::vector<AddedTokens::Piece> pieces;
  impl_->added.Split(text, &pieces);
  for (const auto& piece : pieces) {
    if (piece.id) {
      ids.push_back(*piece.id);
    } else {
      impl_->EncodeGap(piece.text, &ids);
    }
  }
  return ids;
}

Status HfBpeTokenizer::AppendTokenBytes(TokenId id, std::string* out) const {
  if (id < 0 || id >= VocabSize() || !impl_->id_known[id]) {
    return InvalidArgument("token id " + std::to_string(id) + " is not in the vocabulary of " +
                           impl_->origin);
  }
  out->append(impl_->id_bytes[id]);
  return Status::Ok();
}

bool HfBpeTokenizer::IsSpecial(TokenId id) const {
  const AddedToken* t = impl_->added.ById(id);
  return t != nullptr && t->special;
}

std::optional<TokenId> HfBpeTokenizer::SpecialTokenId(std::string_view content) const {
  return impl_->added.Find(content);
}

SpecialTokenIds HfBpeTokenizer::Specials() const {
  return {.end_of_text = impl_->added.Find("<|endoftext|>"),
          .im_start = impl_->added.Find("<|im_start|>"),
          .im_end = impl_->added.Find("<|im_end|>"),
          .pad = impl_->added.Find("<|pad|>")};
}

int32_t HfBpeTokenizer::VocabSize() const {
  return static_cast<int32_t>(impl_->id_bytes.size());
}

std::string HfBpeTokenizer::Name() const {
  return "hf-bpe:" + impl_->origin;
}

}  // namespace prfaas::router
