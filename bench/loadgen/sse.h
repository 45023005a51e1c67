// Server-sent events as OpenAI-compatible servers stream them (`stream: true`): an incremental
// parser that accepts the body in arbitrary pieces (an event may be split across reads anywhere,
// including between '\r' and '\n'), and a decoder for one `data:` payload of a completion or
// chat-completion chunk.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace prfaas::bench {

class SseParser {
 public:
  // Appends the data of every event completed by `bytes` to `events` (several `data:` lines of
  // one event are joined with '\n'; comments and other fields are ignored). Lines end with "\n"
  // or "\r\n"; an event ends with an empty line.
  void Feed(std::string_view bytes, std::vector<std::string>& events);
  // At end of stream: dispatches a last event that was not followed by an empty line.
  void Finish(std::vector<std::string>& events);

 private:
  void Line(std::string_view line, std::vector<std::string>& events);
  std::string partial_;  // bytes of an unfinished line
  std::string data_;
  bool has_data_ = false;
};

// One decoded `data:` payload.
struct StreamChunk {
  bool done = false;         // the `[DONE]` sentinel
  std::string text;          // choices[0].text or choices[0].delta.content ("" if none)
  bool has_content = false;  // the chunk carried a non-empty text
  std::optional<std::string> finish_reason;
  std::optional<int64_t> completion_tokens;  // usage.completion_tokens when present
  std::optional<int64_t> prompt_tokens;      // usage.prompt_tokens when present
  std::optional<std::string> error;          // an in-stream {"error": ...} object
};

// InvalidArgument when the payload is neither `[DONE]` nor a JSON object.
Result<StreamChunk> ParseOpenAiChunk(std::string_view data);

}  // namespace prfaas::bench
