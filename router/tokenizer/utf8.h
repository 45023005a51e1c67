// UTF-8 repair shared by encoding (input sanitising) and decoding (output repair).
//
// Invalid input is handled the way Rust's String::from_utf8_lossy and WHATWG do: every maximal
// subpart of an ill-formed sequence becomes one U+FFFD. Because the scan is strictly left to
// right, repairing a byte stream in chunks (holding back an incomplete tail) yields the same text
// as repairing it at once, which is what StreamDecoder relies on.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace prfaas::router::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Appends the repaired form of `in` to *out and returns how many bytes of `in` were consumed.
// When `final` is false, a trailing sequence that is valid so far but incomplete is not consumed
// (the caller keeps it for later); when true it becomes U+FFFD and everything is consumed.
size_t AppendRepaired(std::string_view in, bool final, std::string* out);

// True when `in` is entirely well-formed UTF-8.
bool IsValid(std::string_view in);

// Appends the UTF-8 encoding of code point `cp` (must be a scalar value).
void AppendCodePoint(char32_t cp, std::string* out);

}  // namespace prfaas::router::utf8
