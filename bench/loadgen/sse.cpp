#include "bench/loadgen/sse.h"

#include <nlohmann/json.hpp>

namespace prfaas::bench {

void SseParser::Feed(std::string_view bytes, std::vector<std::string>& events) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    const size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) {
      partial_.append(bytes.substr(pos));
      return;
    }
    std::string_view piece = bytes.substr(pos, nl - pos);
    pos = nl + 1;
    if (!partial_.empty()) {
      partial_.append(piece);
      std::string line = std::move(partial_);
      partial_.clear();
      Line(line, events);
    } else {
      Line(piece, events);
    }
  }
}

void SseParser::Finish(std::vector<std::string>& events) {
  if (!partial_.empty()) {
    std::string line = std::move(partial_);
    partial_.clear();
    Line(line, events);
  }
  Line("", events);
}

void SseParser::Line(std::string_view line, std::vector<std::string>& events) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) {
    if (has_data_) events.push_back(std::move(data_));
    data_.clear();
    has_data_ = false;
    return;
  }
  if (line.front() == ':') return;  // comment / keep-alive
  const size_t colon = line.find(':');
  std::string_view field = line.substr(0, colon);
  if (field != "data") return;
  std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

Result<StreamChunk> ParseOpenAiChunk(std::string_view data) {
  StreamChunk c;
  if (data == "[DONE]") {
    c.done = true;
    return c;
  }
  using json = nlohmann::json;
  json j = json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("stream chunk is not a JSON object: '" +
                           std::string(data.substr(0, 120)) + "'");
  }
  if (auto e = j.find("error"); e != j.end() && !e->is_null()) {
    if (e->is_object() && e->contains("message") && (*e)["message"].is_string()) {
      c.error = (*e)["message"].get<std::string>();
    } else {
      c.error = e->dump();
    }
    return c;
  }
  if (auto ch = j.find("choices"); ch != j.end() && ch->is_array() && !ch->empty()) {
    const json& c0 = (*ch)[0];
    if (c0.is_object()) {
      if (auto t = c0.find("text"); t != c0.end() && t->is_string()) {
        c.text = t->get<std::string>();
      } else if (auto d = c0.find("delta"); d != c0.end() && d->is_object()) {
        if (auto ct = d->find("content"); ct != d->end() && ct->is_string()) {
          c.text = ct->get<std::string>();
        }
      }
      if (auto f = c0.find("finish_reason"); f != c0.end() && f->is_string()) {
        c.finish_reason = f->get<std::string>();
      }
    }
  }
  c.has_content = !c.text.empty();
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (auto ct = u->find("completion_tokens"); ct != u->end() && ct->is_number_integer()) {
      c.completion_tokens = ct->get<int64_t>();
    }
    if (auto pt = u->find("prompt_tokens"); pt != u->end() && pt->is_number_integer()) {
      c.prompt_tokens = pt->get<int64_t>();
    }
  }
  return c;
}

}  // namespace prfaas::bench
