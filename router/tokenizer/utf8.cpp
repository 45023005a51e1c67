#include "router/tokenizer/utf8.h"

#include <cstdint>

namespace prfaas::router::utf8 {
namespace {

// Length of a well-formed sequence given its lead byte and the allowed range of its second
// byte (Unicode Table 3-7); 0 for bytes that cannot start a sequence.
struct Lead {
  int len;
  uint8_t lo, hi;
};

Lead Classify(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};  // excludes surrogates
  if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // caps at U+10FFFF
  if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
  return {0, 0, 0};
}

}  // namespace

size_t AppendRepaired(std::string_view in, bool final, std::string* out) {
  const auto* p = reinterpret_cast<const uint8_t*>(in.data());
  const size_t n = in.size();
  size_t i = 0;
  size_t run_start = 0;  // start of the current stretch of valid bytes, copied in bulk
  auto flush_run = [&](size_t end) { out->append(in.data() + run_start, end - run_start); };
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const Lead lead = Classify(p[i]);
    if (lead.len == 0) {
      flush_run(i);
      out->append(kReplacement);
      run_start = ++i;
      continue;
    }
    // Walk the continuation bytes; k counts how many bytes of the sequence are well-formed.
    size_t k = 1;
    while (k < static_cast<size_t>(lead.len) && i + k < n) {
      const uint8_t c = p[i + k];
      const bool ok = (k == 1) ? (c >= lead.lo && c <= lead.hi) : (c >= 0x80 && c <= 0xBF);
      if (!ok) break;
      ++k;
    }
    if (k == static_cast<size_t>(lead.len)) {
      i += k;
      continue;
    }
    if (i + k == n && !final) {  // valid so far, just cut off: hold it back
      flush_run(i);
      return i;
    }
    flush_run(i);
    out->append(kReplacement);
    i += k;
    run_start = i;
  }
  flush_run(n);
  return n;
}

bool IsValid(std::string_view in) {
  std::string scratch;
  // Fast path: ASCII-only text is the common case for prompts.
  bool ascii = true;
  for (unsigned char c : in) ascii &= c < 0x80;
  if (ascii) return true;
  AppendRepaired(in, true, &scratch);
  return scratch == in;
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace prfaas::router::utf8
