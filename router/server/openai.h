// OpenAI-compatible request parsing and response formatting for the router's HTTP front door.
//
// Pure functions (no I/O) so the wire format is unit-testable: ParseCompletionRequest validates a
// /v1/completions or /v1/chat/completions body against the configured limits, and the Format*
// functions build the JSON bodies and SSE chunks. Errors are ApiErrors that map one-to-one onto
// OpenAI error objects {"error": {"message", "type", "param", "code"}} with an HTTP status.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "router/tokenizer/chat_template.h"

namespace prfaas::router {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty -> null
  std::string code;   // empty -> null

  std::string Body() const;  // the JSON error object
};

ApiError BadRequest(std::string message, std::string param = {});

struct ApiLimits {
  int64_t max_prompt_tokens = 131072;  // checked after tokenization (CheckPromptLength)
  int32_t max_tokens = 32768;          // max_tokens above this is rejected
  int32_t default_max_tokens = 256;    // when the request gives none
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                              // completions: text prompt
  std::optional<std::vector<int32_t>> prompt_ids;  // completions: pre-tokenized prompt
  std::vector<ChatMessage> messages;               // chat
  int32_t max_tokens = 0;
  float temperature = 1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;
  bool echo = false;
};

// Parses and validates the body. `model_name` is the served model: a request naming another
// model gets 404 model_not_found (an empty/absent model is accepted).
std::optional<ApiError> ParseCompletionRequest(std::string_view body, bool chat,
                                               const ApiLimits& limits,
                                               const std::string& model_name,
                                               CompletionRequest* out);

// 400 context_length_exceeded when prompt_tokens > limit, or prompt + max_tokens does not fit.
std::optional<ApiError> CheckPromptLength(int64_t prompt_tokens, const CompletionRequest& req,
                                          const ApiLimits& limits);

struct ResponseMeta {
  std::string id;       // "cmpl-<request id>" / "chatcmpl-<request id>"
  int64_t created = 0;  // unix seconds
  std::string model;
};

struct UsageCounts {
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
};

// finish_reason: "stop" | "length" | "" (null).
std::string FormatFullResponse(const CompletionRequest& req, const ResponseMeta& meta,
                               std::string_view text, std::string_view finish_reason,
                               const UsageCounts& usage);
// One SSE event "data: {...}\n\n". For chat the first chunk should carry `role_delta`.
std::string FormatStreamChunk(const CompletionRequest& req, const ResponseMeta& meta,
                              std::string_view text, std::string_view finish_reason,
                              bool role_delta = false);
std::string FormatStreamUsage(const CompletionRequest& req, const ResponseMeta& meta,
                              const UsageCounts& usage);
std::string FormatStreamError(const ApiError& error);
inline constexpr std::string_view kStreamDone = "data: [DONE]\n\n";

std::string FormatModels(const std::string& model_name, int64_t created);

// Constant-time comparison of an "Authorization" header with "Bearer <token>".
bool BearerMatches(std::string_view header, std::string_view token);

}  // namespace prfaas::router
