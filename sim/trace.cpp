#include "sim/trace.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string_view>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace prfaas::sim {
namespace {

using json = nlohmann::json;

Status RowError(const std::string& name, int64_t line, const std::string& field,
                const std::string& what) {
  return InvalidArgument(name + ":" + std::to_string(line) + ": field '" + field + "': " + what);
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot open trace file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Calls fn(line_number, line) for every non-blank line; stops at the first error.
template <typename Fn>
Status ForEachLine(const std::string& text, Fn fn) {
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    ++line_no;
    std::string_view line(text.data() + pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") != std::string_view::npos) {
      PRFAAS_RETURN_IF_ERROR(fn(line_no, line));
    }
    pos = end + 1;
  }
  return Status::Ok();
}

Result<int64_t> JsonInt(const json& obj, const char* field, const std::string& name, int64_t line,
                        bool required = true, int64_t fallback = 0) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    if (!required) return fallback;
    return RowError(name, line, field, "missing");
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::floor(v) == v) return static_cast<int64_t>(v);
  }
  return RowError(name, line, field, "expected integer, got " + it->dump());
}

Result<double> JsonNumber(const json& obj, const char* field, const std::string& name,
                          int64_t line) {
  auto it = obj.find(field);
  if (it == obj.end()) return RowError(name, line, field, "missing");
  if (!it->is_number()) return RowError(name, line, field, "expected number, got " + it->dump());
  double v = it->get<double>();
  if (!std::isfinite(v) || v < 0) return RowError(name, line, field, "must be finite and >= 0");
  return v;
}

Status JsonHashes(const json& obj, const std::string& name, int64_t line,
                  std::vector<uint64_t>& out) {
  auto it = obj.find("hash_ids");
  if (it == obj.end()) return Status::Ok();
  if (!it->is_array()) return RowError(name, line, "hash_ids", "expected array of integers");
  out.reserve(it->size());
  for (const auto& h : *it) {
    if (!h.is_number_integer()) {
      return RowError(name, line, "hash_ids", "expected integer element, got " + h.dump());
    }
    out.push_back(static_cast<uint64_t>(h.get<int64_t>()));
  }
  return Status::Ok();
}

Status CheckLengths(const TraceRequest& r, const std::string& name, int64_t line,
                    const char* in_field, const char* out_field) {
  if (r.input_tokens <= 0) return RowError(name, line, in_field, "must be > 0");
  if (r.output_tokens < 0) return RowError(name, line, out_field, "must be >= 0");
  return Status::Ok();
}

Result<json> ParseJsonLine(std::string_view line, const std::string& name, int64_t line_no) {
  json obj = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded() || !obj.is_object()) {
    return InvalidArgument(name + ":" + std::to_string(line_no) + ": not a JSON object");
  }
  return obj;
}

void SortByArrival(Trace& t) {
  std::stable_sort(
      t.requests.begin(), t.requests.end(),
      [](const TraceRequest& a, const TraceRequest& b) { return a.arrival_s < b.arrival_s; });
}

void Rebase(Trace& t) {
  if (t.requests.empty()) return;
  double t0 = t.requests.front().arrival_s;
  for (auto& r : t.requests) r.arrival_s -= t0;
}

// Splits a CSV line on commas. The supported formats never quote fields.
std::vector<std::string_view> SplitCsv(std::string_view line) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (true) {
    size_t c = line.find(',', pos);
    if (c == std::string_view::npos) {
      out.push_back(line.substr(pos));
      break;
    }
    out.push_back(line.substr(pos, c - pos));
    pos = c + 1;
  }
  for (auto& f : out) {
    while (!f.empty() && (f.front() == ' ' || f.front() == '"')) f.remove_prefix(1);
    while (!f.empty() && (f.back() == ' ' || f.back() == '"')) f.remove_suffix(1);
  }
  return out;
}

Result<int64_t> CsvInt(std::string_view s, const std::string& name, int64_t line,
                       const std::string& field) {
  if (s.empty()) return RowError(name, line, field, "empty");
  int64_t v = 0;
  size_t i = 0;
  bool neg = false;
  if (s[0] == '-') {
    neg = true;
    i = 1;
  }
  // Some exports write integers as "123.0".
  size_t dot = s.find('.');
  std::string_view digits = s.substr(i, dot == std::string_view::npos ? s.npos : dot - i);
  if (dot != std::string_view::npos &&
      s.substr(dot + 1).find_first_not_of('0') != std::string_view::npos) {
    return RowError(name, line, field, "expected integer, got '" + std::string(s) + "'");
  }
  if (digits.empty())
    return RowError(name, line, field, "expected integer, got '" + std::string(s) + "'");
  for (char c : digits) {
    if (c < '0' || c > '9') {
      return RowError(name, line, field, "expected integer, got '" + std::string(s) + "'");
    }
    v = v * 10 + (c - '0');
  }
  return neg ? -v : v;
}

Result<double> CsvDouble(std::string_view s, const std::string& name, int64_t line,
                         const std::string& field) {
  std::string tmp(s);
  char* end = nullptr;
  double v = std::strtod(tmp.c_str(), &end);
  if (tmp.empty() || end != tmp.c_str() + tmp.size() || !std::isfinite(v)) {
    return RowError(name, line, field, "expected number, got '" + tmp + "'");
  }
  return v;
}

// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

uint64_t Mix(uint64_t a, uint64_t b) {
  // splitmix64 finaliser over a combination; good enough to make distinct block ids.
  uint64_t z = a * 0x9E3779B97F4A7C15ULL + b + 0x632BE59BD9B4E019ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Fast path for the flat JSON objects of Mooncake/Bailian rows: numbers, strings and integer
// arrays only. It accepts nothing it does not fully understand; any surprise (or a missing or
// mistyped field) returns false and the caller re-parses the line with nlohmann::json, which
// produces the precise error. A DOM per line would cost ~10x more on the 12K-row trace.
struct FlatRow {
  double timestamp = -1;
  int64_t input = -1, output = -1;
  int64_t chat_id = -1, parent = -1, turn = 0;
  bool has_ts = false, has_in = false, has_out = false;
  std::vector<uint64_t> hashes;
};

class FlatParser {
 public:
  explicit FlatParser(std::string_view s) : s_(s) {}

  bool Parse(FlatRow& row) {
    Ws();
    if (!Eat('{')) return false;
    Ws();
    if (Eat('}')) return Done();
    while (true) {
      std::string_view key;
      if (!String(&key)) return false;
      Ws();
      if (!Eat(':')) return false;
      Ws();
      if (Peek() == '[') {
        if (key != "hash_ids") return false;
        if (!IntArray(row.hashes)) return false;
      } else if (Peek() == '"') {
        if (key == "timestamp" || key == "input_length" || key == "output_length" ||
            key == "chat_id" || key == "parent_chat_id" || key == "turn") {
          return false;  // mistyped known field: let the full parser report it
        }
        if (!String(nullptr)) return false;
      } else {
        double v;
        bool integral;
        if (!Number(&v, &integral)) return false;
        if (key == "timestamp") {
          row.timestamp = v;
          row.has_ts = true;
        } else if (key == "input_length" || key == "output_length" || key == "chat_id" ||
                   key == "parent_chat_id" || key == "turn") {
          if (!integral) return false;
          auto iv = static_cast<int64_t>(v);
          if (key == "input_length")
            row.input = iv, row.has_in = true;
          else if (key == "output_length")
            row.output = iv, row.has_out = true;
          else if (key == "chat_id")
            row.chat_id = iv;
          else if (key == "parent_chat_id")
            row.parent = iv;
          else
            row.turn = iv;
        }
      }
      Ws();
      if (Eat(',')) {
        Ws();
        continue;
      }
      if (Eat('}')) return Done();
      return false;
    }
  }

 private:
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  bool Eat(char c) {
    if (Peek() != c) return false;
    ++i_;
    return true;
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  bool Done() {
    Ws();
    return i_ == s_.size();
  }
  bool String(std::string_view* out) {
    if (!Eat('"')) return false;
    size_t start = i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\') return false;  // escapes: leave to the full parser
      ++i_;
    }
    if (i_ >= s_.size()) return false;
    if (out) *out = s_.substr(start, i_ - start);
    ++i_;
    return true;
  }
  bool Number(double* v, bool* integral) {
    size_t start = i_;
    bool neg = Eat('-');
    int64_t iv = 0;
    size_t digits = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9' && digits < 18) {
      iv = iv * 10 + (s_[i_] - '0');
      ++i_;
      ++digits;
    }
    if (digits == 0) return false;
    char c = Peek();
    if (c == '.' || c == 'e' || c == 'E' || (c >= '0' && c <= '9')) {
      std::string tmp(s_.substr(start, s_.size() - start));
      char* end = nullptr;
      double d = std::strtod(tmp.c_str(), &end);
      if (end == tmp.c_str()) return false;
      i_ = start + static_cast<size_t>(end - tmp.c_str());
      *v = d;
      *integral = std::floor(d) == d;
      return std::isfinite(d);
    }
    *v = static_cast<double>(neg ? -iv : iv);
    *integral = true;
    return true;
  }
  bool IntArray(std::vector<uint64_t>& out) {
    if (!Eat('[')) return false;
    Ws();
    if (Eat(']')) return true;
    while (true) {
      double v;
      bool integral;
      if (!Number(&v, &integral) || !integral) return false;
      out.push_back(static_cast<uint64_t>(static_cast<int64_t>(v)));
      Ws();
      if (Eat(']')) return true;
      if (!Eat(',')) return false;
      Ws();
    }
  }

  std::string_view s_;
  size_t i_ = 0;
};

// A fast-path row is usable only if it has every field the format requires with valid values.
bool FastRow(std::string_view line, bool seconds, TraceRequest& r) {
  FlatRow row;
  FlatParser p(line);
  if (!p.Parse(row) || !row.has_ts || !row.has_in || !row.has_out) return false;
  if (row.timestamp < 0 || row.input <= 0 || row.output < 0) return false;
  r.arrival_s = seconds ? row.timestamp : row.timestamp / 1000.0;
  r.input_tokens = row.input;
  r.output_tokens = row.output;
  r.block_hashes = std::move(row.hashes);
  r.session_id = row.parent >= 0 ? row.parent : row.chat_id;
  r.turn = static_cast<int32_t>(row.turn);
  return true;
}

}  // namespace

Result<TraceFormat> ParseTraceFormat(const std::string& name) {
  if (name == "mooncake") return TraceFormat::kMooncake;
  if (name == "azure") return TraceFormat::kAzure;
  if (name == "bailian" || name == "qwen-bailian") return TraceFormat::kBailian;
  if (name == "burstgpt") return TraceFormat::kBurstGpt;
  return InvalidArgument("unknown trace format '" + name +
                         "' (expected mooncake, azure, bailian or burstgpt)");
}

Result<Trace> LoadTrace(TraceFormat format, const std::string& path, const LoadOptions& opts) {
  PRFAAS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  switch (format) {
    case TraceFormat::kMooncake:
      return ParseMooncake(text, path, opts.block_tokens > 0 ? opts.block_tokens : 512);
    case TraceFormat::kBailian:
      return ParseBailian(text, path, opts.block_tokens > 0 ? opts.block_tokens : 16);
    case TraceFormat::kAzure: return ParseAzure(text, path);
    case TraceFormat::kBurstGpt: return ParseBurstGpt(text, path, opts.keep_failed);
  }
  return Internal("unreachable trace format");
}

Result<Trace> ParseMooncake(const std::string& text, const std::string& name,
                            int32_t block_tokens) {
  Trace t;
  t.source = "mooncake:" + name;
  t.block_tokens = block_tokens;
  PRFAAS_RETURN_IF_ERROR(ForEachLine(text, [&](int64_t ln, std::string_view line) -> Status {
    TraceRequest r;
    if (FastRow(line, /*seconds=*/false, r)) {
      r.session_id = -1;
      r.turn = 0;
      t.requests.push_back(std::move(r));
      return Status::Ok();
    }
    PRFAAS_ASSIGN_OR_RETURN(json obj, ParseJsonLine(line, name, ln));
    PRFAAS_ASSIGN_OR_RETURN(double ts_ms, JsonNumber(obj, "timestamp", name, ln));
    r.arrival_s = ts_ms / 1000.0;
    PRFAAS_ASSIGN_OR_RETURN(r.input_tokens, JsonInt(obj, "input_length", name, ln));
    PRFAAS_ASSIGN_OR_RETURN(r.output_tokens, JsonInt(obj, "output_length", name, ln));
    PRFAAS_RETURN_IF_ERROR(CheckLengths(r, name, ln, "input_length", "output_length"));
    PRFAAS_RETURN_IF_ERROR(JsonHashes(obj, name, ln, r.block_hashes));
    t.requests.push_back(std::move(r));
    return Status::Ok();
  }));
  SortByArrival(t);
  return t;
}

Result<Trace> ParseBailian(const std::string& text, const std::string& name, int32_t block_tokens) {
  Trace t;
  t.source = "bailian:" + name;
  t.block_tokens = block_tokens;
  PRFAAS_RETURN_IF_ERROR(ForEachLine(text, [&](int64_t ln, std::string_view line) -> Status {
    TraceRequest r;
    if (FastRow(line, /*seconds=*/true, r)) {
      t.requests.push_back(std::move(r));
      return Status::Ok();
    }
    PRFAAS_ASSIGN_OR_RETURN(json obj, ParseJsonLine(line, name, ln));
    PRFAAS_ASSIGN_OR_RETURN(r.arrival_s, JsonNumber(obj, "timestamp", name, ln));
    PRFAAS_ASSIGN_OR_RETURN(r.input_tokens, JsonInt(obj, "input_length", name, ln));
    PRFAAS_ASSIGN_OR_RETURN(r.output_tokens, JsonInt(obj, "output_length", name, ln));
    PRFAAS_RETURN_IF_ERROR(CheckLengths(r, name, ln, "input_length", "output_length"));
    PRFAAS_ASSIGN_OR_RETURN(r.session_id, JsonInt(obj, "chat_id", name, ln, false, -1));
    PRFAAS_ASSIGN_OR_RETURN(int64_t parent, JsonInt(obj, "parent_chat_id", name, ln, false, -1));
    PRFAAS_ASSIGN_OR_RETURN(int64_t turn, JsonInt(obj, "turn", name, ln, false, 0));
    // Group a conversation under its root chat so session statistics are per conversation.
    if (parent >= 0) r.session_id = parent;
    r.turn = static_cast<int32_t>(turn);
    PRFAAS_RETURN_IF_ERROR(JsonHashes(obj, name, ln, r.block_hashes));
    t.requests.push_back(std::move(r));
    return Status::Ok();
  }));
  SortByArrival(t);
  Rebase(t);
  return t;
}

namespace {
// Whole seconds since the epoch and the fraction, kept apart so 7-digit fractions survive the
// subtraction of a 1.7e9-second base (a double holds only ~7 significant digits after it).
struct DateTime {
  int64_t seconds = 0;
  double fraction = 0;
};
Result<DateTime> ParseDateTime(const std::string& s);
}  // namespace

Result<double> ParseDateTimeSeconds(const std::string& s) {
  PRFAAS_ASSIGN_OR_RETURN(DateTime d, ParseDateTime(s));
  return static_cast<double>(d.seconds) + d.fraction;
}

namespace {
Result<DateTime> ParseDateTime(const std::string& s) {
  // YYYY-MM-DD HH:MM:SS[.f+]  (a 'T' separator is accepted too)
  auto bad = [&]() { return InvalidArgument("bad datetime '" + s + "'"); };
  if (s.size() < 19) return bad();
  auto num = [&](size_t pos, size_t len, int64_t& out) {
    out = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int64_t y, mo, d, h, mi, se;
  if (!num(0, 4, y) || s[4] != '-' || !num(5, 2, mo) || s[7] != '-' || !num(8, 2, d) ||
      (s[10] != ' ' && s[10] != 'T') || !num(11, 2, h) || s[13] != ':' || !num(14, 2, mi) ||
      s[16] != ':' || !num(17, 2, se)) {
    return bad();
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return bad();
  double frac = 0;
  if (s.size() > 19) {
    if (s[19] != '.' || s.size() == 20) return bad();
    double scale = 0.1;
    for (size_t i = 20; i < s.size(); ++i) {
      if (s[i] < '0' || s[i] > '9') return bad();
      frac += (s[i] - '0') * scale;
      scale /= 10;
    }
  }
  return DateTime{DaysFromCivil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se, frac};
}
}  // namespace

// Walks a CSV file whose first line names the columns. Resolves `columns` to indices (-1 when
// absent; the first `required` of them must be present), rejects rows whose field count differs
// from the header's, and calls row(line, fields, indices) for each data row.
template <typename Fn>
Status ForEachCsvRow(const std::string& text, const std::string& name,
                     const std::vector<std::string>& columns, size_t required, Fn row) {
  std::vector<int> idx;
  size_t ncols = 0;
  PRFAAS_RETURN_IF_ERROR(ForEachLine(text, [&](int64_t ln, std::string_view line) -> Status {
    auto f = SplitCsv(line);
    if (idx.empty()) {
      idx.assign(columns.size(), -1);
      for (size_t i = 0; i < f.size(); ++i) {
        for (size_t c = 0; c < columns.size(); ++c) {
          if (f[i] == columns[c]) idx[c] = static_cast<int>(i);
        }
      }
      for (size_t c = 0; c < required; ++c) {
        if (idx[c] >= 0) continue;
        std::string names;
        for (size_t k = 0; k < required; ++k) names += (k ? ", " : "") + columns[k];
        return InvalidArgument(name + ":" + std::to_string(ln) + ": header must name " + names);
      }
      ncols = f.size();
      return Status::Ok();
    }
    if (f.size() != ncols) {
      return InvalidArgument(name + ":" + std::to_string(ln) + ": expected " +
                             std::to_string(ncols) + " fields, got " + std::to_string(f.size()));
    }
    return row(ln, f, idx);
  }));
  if (idx.empty()) return InvalidArgument(name + ": empty file");
  return Status::Ok();
}

Result<Trace> ParseAzure(const std::string& text, const std::string& name) {
  Trace t;
  t.source = "azure:" + name;
  int64_t base = INT64_MIN;  // whole seconds of the first row
  PRFAAS_RETURN_IF_ERROR(ForEachCsvRow(
      text, name, {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}, 3,
      [&](int64_t ln, const std::vector<std::string_view>& f, const std::vector<int>& c) -> Status {
        TraceRequest r;
        auto ts = ParseDateTime(std::string(f[c[0]]));
        if (!ts.ok()) return RowError(name, ln, "TIMESTAMP", ts.status().message());
        if (base == INT64_MIN) base = ts->seconds;
        r.arrival_s = static_cast<double>(ts->seconds - base) + ts->fraction;
        PRFAAS_ASSIGN_OR_RETURN(r.input_tokens, CsvInt(f[c[1]], name, ln, "ContextTokens"));
        PRFAAS_ASSIGN_OR_RETURN(r.output_tokens, CsvInt(f[c[2]], name, ln, "GeneratedTokens"));
        PRFAAS_RETURN_IF_ERROR(CheckLengths(r, name, ln, "ContextTokens", "GeneratedTokens"));
        t.requests.push_back(std::move(r));
        return Status::Ok();
      }));
  SortByArrival(t);
  Rebase(t);
  return t;
}

Result<Trace> ParseBurstGpt(const std::string& text, const std::string& name, bool keep_failed) {
  Trace t;
  t.source = "burstgpt:" + name;
  PRFAAS_RETURN_IF_ERROR(ForEachCsvRow(
      text, name, {"Timestamp", "Request tokens", "Response tokens", "Session ID"}, 3,
      [&](int64_t ln, const std::vector<std::string_view>& f, const std::vector<int>& c) -> Status {
        TraceRequest r;
        PRFAAS_ASSIGN_OR_RETURN(r.arrival_s, CsvDouble(f[c[0]], name, ln, "Timestamp"));
        PRFAAS_ASSIGN_OR_RETURN(r.input_tokens, CsvInt(f[c[1]], name, ln, "Request tokens"));
        PRFAAS_ASSIGN_OR_RETURN(r.output_tokens, CsvInt(f[c[2]], name, ln, "Response tokens"));
        if (r.output_tokens == 0 && !keep_failed) return Status::Ok();
        PRFAAS_RETURN_IF_ERROR(CheckLengths(r, name, ln, "Request tokens", "Response tokens"));
        if (c[3] >= 0 && !f[c[3]].empty()) {
          auto sid = CsvInt(f[c[3]], name, ln, "Session ID");
          if (sid.ok()) r.session_id = *sid;
        }
        t.requests.push_back(std::move(r));
        return Status::Ok();
      }));
  SortByArrival(t);
  Rebase(t);
  return t;
}

Result<Trace> GenerateSynthetic(const SyntheticOptions& o) {
  if (o.num_requests <= 0) return InvalidArgument("synthetic: num_requests must be > 0");
  if (o.rate_rps <= 0) return InvalidArgument("synthetic: rate must be > 0");
  if (o.min_input <= 0 || o.max_input < o.min_input) {
    return InvalidArgument("synthetic: need 0 < min_input <= max_input");
  }
  if (o.arrival != "poisson" && o.arrival != "gamma") {
    return InvalidArgument("synthetic: arrival must be poisson or gamma, got '" + o.arrival + "'");
  }
  if (o.arrival == "gamma" && o.cv <= 0) return InvalidArgument("synthetic: gamma cv must be > 0");
  if (o.block_tokens <= 0) return InvalidArgument("synthetic: block_tokens must be > 0");

  Trace t;
  t.source = "synthetic:lognormal(" + std::to_string(o.mu) + "," + std::to_string(o.sigma) + ")";
  t.block_tokens = o.block_tokens;
  t.requests.reserve(static_cast<size_t>(o.num_requests));
  std::mt19937_64 rng(o.seed);
  std::lognormal_distribution<double> len(o.mu, o.sigma);
  auto draw_len = [&]() {
    // Rejection keeps the shape of the distribution inside the bounds (the paper truncates).
    for (int i = 0; i < 1000; ++i) {
      double v = std::round(len(rng));
      if (v >= static_cast<double>(o.min_input) && v <= static_cast<double>(o.max_input)) {
        return static_cast<int64_t>(v);
      }
    }
    return std::clamp<int64_t>(static_cast<int64_t>(std::exp(o.mu)), o.min_input, o.max_input);
  };
  std::exponential_distribution<double> expo(o.rate_rps);
  double k = 1.0 / (o.cv * o.cv);
  std::gamma_distribution<double> gam(k, 1.0 / (o.rate_rps * k));

  struct Session {
    int64_t context = 0;  // tokens of the conversation so far (prompt + answers)
    int32_t turns = 0;
  };
  std::vector<Session> sessions(static_cast<size_t>(std::max<int64_t>(o.sessions, 0)));
  std::uniform_int_distribution<int64_t> pick(0, std::max<int64_t>(o.sessions, 1) - 1);

  double now = 0;
  for (int64_t i = 0; i < o.num_requests; ++i) {
    if (i > 0) now += o.arrival == "poisson" ? expo(rng) : gam(rng);
    TraceRequest r;
    r.arrival_s = now;
    r.output_tokens = o.output_tokens;
    if (o.sessions <= 0) {
      r.input_tokens = draw_len();
    } else {
      int64_t s = pick(rng);
      Session& ss = sessions[static_cast<size_t>(s)];
      int64_t base = ss.turns == 0 ? o.system_prompt_tokens : ss.context;
      r.input_tokens = std::min<int64_t>(base + draw_len(), o.max_input);
      r.session_id = s;
      r.turn = ss.turns;
      // Chained hashes of full blocks: the system prompt's blocks are shared by all sessions,
      // the rest depend on the session, so they match exactly the tokens a session repeats.
      int64_t full = r.input_tokens / o.block_tokens;
      int64_t shared_blocks = o.system_prompt_tokens / o.block_tokens;
      uint64_t h = 0x5eed;
      for (int64_t b = 0; b < full; ++b) {
        h = Mix(h, b < shared_blocks ? static_cast<uint64_t>(b)
                                     : Mix(static_cast<uint64_t>(s) + 1, static_cast<uint64_t>(b)));
        r.block_hashes.push_back(h);
      }
      if (r.input_tokens % o.block_tokens != 0) {
        // A partial tail is never a reusable block: give it a hash unique to this request.
        r.block_hashes.push_back(Mix(h, Mix(~static_cast<uint64_t>(s), static_cast<uint64_t>(i))));
      }
      ss.context = r.input_tokens + r.output_tokens;
      ++ss.turns;
      if (ss.context >= o.max_input) ss = Session{};  // conversation ends at the context limit
    }
    t.requests.push_back(std::move(r));
  }
  return t;
}

Status TransformTrace(Trace& trace, const TransformOptions& o) {
  if (o.time_scale <= 0) return InvalidArgument("time_scale must be > 0");
  if (o.jitter_bucket_s < 0) return InvalidArgument("jitter bucket must be >= 0");
  auto& rs = trace.requests;
  if (o.window_start_s > 0 || o.window_end_s >= 0) {
    std::vector<TraceRequest> kept;
    for (auto& r : rs) {
      if (r.arrival_s < o.window_start_s) continue;
      if (o.window_end_s >= 0 && r.arrival_s >= o.window_end_s) continue;
      r.arrival_s -= o.window_start_s;
      kept.push_back(std::move(r));
    }
    rs = std::move(kept);
  }
  if (o.jitter_bucket_s > 0) {
    std::mt19937_64 rng(o.seed ^ 0x717e5ULL);
    std::uniform_real_distribution<double> u(0.0, o.jitter_bucket_s);
    for (auto& r : rs) {
      double bucket = std::floor(r.arrival_s / o.jitter_bucket_s) * o.jitter_bucket_s;
      r.arrival_s = bucket + u(rng);
    }
  }
  SortByArrival(trace);
  for (auto& r : rs) r.arrival_s *= o.time_scale;
  if (o.target_rate_rps > 0 && rs.size() > 1) {
    double span = rs.back().arrival_s - rs.front().arrival_s;
    if (span <= 0) return InvalidArgument("cannot rescale rate: all arrivals share one timestamp");
    double rate = static_cast<double>(rs.size() - 1) / span;
    double f = rate / o.target_rate_rps;
    for (auto& r : rs) r.arrival_s *= f;
  }
  if (o.max_requests > 0 && static_cast<int64_t>(rs.size()) > o.max_requests) {
    rs.resize(static_cast<size_t>(o.max_requests));
  }
  return Status::Ok();
}

}  // namespace prfaas::sim
