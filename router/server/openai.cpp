#include "router/server/openai.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace prfaas::router {

using nlohmann::json;

std::string ApiError::Body() const {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json{{"error", e}}.dump();
}

ApiError BadRequest(std::string message, std::string param) {
  ApiError e;
  e.http_status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

namespace {

// Reads an optional number field within [lo, hi].
template <typename T>
std::optional<ApiError> ReadNumber(const json& body, const char* key, double lo, double hi,
                                   T* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return BadRequest(fmt::format("'{}' must be a number", key), key);
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return BadRequest(fmt::format("'{}' is {} but must be in [{}, {}]", key, v, lo, hi), key);
  }
  if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer() && !it->is_number_unsigned()) {
      return BadRequest(fmt::format("'{}' must be an integer", key), key);
    }
  }
  *out = static_cast<T>(v);
  return std::nullopt;
}

std::optional<ApiError> ReadBool(const json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return BadRequest(fmt::format("'{}' must be a boolean", key), key);
  *out = it->get<bool>();
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> ParseCompletionRequest(std::string_view body, bool chat,
                                               const ApiLimits& limits,
                                               const std::string& model_name,
                                               CompletionRequest* out) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadRequest("request body is not valid JSON");
  if (!j.is_object()) return BadRequest("request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (auto it = j.find("model"); it != j.end() && !it->is_null()) {
    if (!it->is_string()) return BadRequest("'model' must be a string", "model");
    r.model = it->get<std::string>();
    if (!r.model.empty() && r.model != model_name) {
      ApiError e;
      e.http_status = 404;
      e.message = fmt::format("The model '{}' does not exist; this server serves '{}'", r.model,
                              model_name);
      e.param = "model";
      e.code = "model_not_found";
      return e;
    }
  }
  if (chat) {
    auto it = j.find("messages");
    if (it == j.end()) return BadRequest("'messages' is required", "messages");
    if (!it->is_array()) return BadRequest("'messages' must be an array", "messages");
    auto msgs = ChatMessagesFromJson(*it);
    if (!msgs.ok()) return BadRequest(msgs.status().message(), "messages");
    if (msgs->empty()) return BadRequest("'messages' must not be empty", "messages");
    // Rendering checks roles; doing it here turns a bad role into a 400 before admission.
    if (auto rendered = RenderChatML(*msgs); !rendered.ok()) {
      return BadRequest(rendered.status().message(), "messages");
    }
    r.messages = std::move(*msgs);
  } else {
    auto it = j.find("prompt");
    if (it == j.end()) return BadRequest("'prompt' is required", "prompt");
    if (it->is_string()) {
      r.prompt = it->get<std::string>();
    } else if (it->is_array() && it->size() == 1 && (*it)[0].is_string()) {
      r.prompt = (*it)[0].get<std::string>();
    } else if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) {
      std::vector<int32_t> ids;
      for (const auto& v : *it) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
          return BadRequest("'prompt' token ids must be non-negative integers", "prompt");
        }
        ids.push_back(v.get<int32_t>());
      }
      r.prompt_ids = std::move(ids);
    } else {
      return BadRequest("'prompt' must be a string, a one-string array or an array of token ids",
                        "prompt");
    }
    if (!r.prompt_ids && r.prompt.empty()) return BadRequest("'prompt' is empty", "prompt");
    if (auto e = ReadBool(j, "echo", &r.echo)) return e;
    if (r.echo) return BadRequest("'echo' is not supported", "echo");
  }
  // Chat uses max_completion_tokens (newer) or max_tokens.
  r.max_tokens = limits.default_max_tokens;
  const char* max_key =
      chat && j.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (auto it = j.find(max_key); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer())
      return BadRequest(fmt::format("'{}' must be an integer", max_key), max_key);
    const int64_t v = it->get<int64_t>();
    if (v < 1) return BadRequest(fmt::format("'{}' must be at least 1", max_key), max_key);
    if (v > limits.max_tokens) {
      return BadRequest(fmt::format("'{}' is {} but this server allows at most {}", max_key, v,
                                    limits.max_tokens),
                        max_key);
    }
    r.max_tokens = static_cast<int32_t>(v);
  }
  if (auto e = ReadNumber(j, "temperature", 0.0, 2.0, &r.temperature)) return e;
  if (auto e = ReadNumber(j, "top_p", 0.0, 1.0, &r.top_p)) return e;
  if (auto e = ReadNumber(j, "top_k", -1.0, 1e6, &r.top_k)) return e;
  if (r.top_k < 0) r.top_k = 0;
  if (auto e = ReadNumber(j, "seed", 0.0, 1.8e19, &r.seed)) return e;
  if (auto e = ReadBool(j, "stream", &r.stream)) return e;
  if (auto e = ReadBool(j, "ignore_eos", &r.ignore_eos)) return e;
  if (auto it = j.find("n"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<int64_t>() != 1) {
      return BadRequest("only 'n' = 1 is supported", "n");
    }
  }
  if (auto it = j.find("stop"); it != j.end() && !it->is_null()) {
    if (!(it->is_array() && it->empty())) {
      return BadRequest("'stop' sequences are not supported (stop tokens of the model apply)",
                        "stop");
    }
  }
  if (auto it = j.find("stream_options"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) return BadRequest("'stream_options' must be an object", "stream_options");
    if (auto e = ReadBool(*it, "include_usage", &r.include_usage)) return e;
  }
  *out = std::move(r);
  return std::nullopt;
}

std::optional<ApiError> CheckPromptLength(int64_t prompt_tokens, const CompletionRequest& req,
                                          const ApiLimits& limits) {
  if (prompt_tokens == 0) return BadRequest("the prompt encodes to zero tokens", "prompt");
  if (prompt_tokens > limits.max_prompt_tokens) {
    ApiError e = BadRequest(
        fmt::format("This model's maximum prompt length is {} tokens; the prompt has {} tokens",
                    limits.max_prompt_tokens, prompt_tokens),
        req.chat ? "messages" : "prompt");
    e.code = "context_length_exceeded";
    return e;
  }
  return std::nullopt;
}

namespace {

json UsageJson(const UsageCounts& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

json FinishJson(std::string_view finish) {
  return finish.empty() ? json(nullptr) : json(std::string(finish));
}

json Head(const CompletionRequest& req, const ResponseMeta& meta, bool chunk) {
  const char* object =
      req.chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return json{
      {"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}};
}

}  // namespace

std::string FormatFullResponse(const CompletionRequest& req, const ResponseMeta& meta,
                               std::string_view text, std::string_view finish_reason,
                               const UsageCounts& usage) {
  json j = Head(req, meta, false);
  json choice = {{"index", 0}, {"finish_reason", FinishJson(finish_reason)}};
  if (req.chat) {
    choice["message"] = {{"role", "assistant"}, {"content", std::string(text)}};
  } else {
    choice["text"] = std::string(text);
    choice["logprobs"] = nullptr;
  }
  j["choices"] = json::array({choice});
  j["usage"] = UsageJson(usage);
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string FormatStreamChunk(const CompletionRequest& req, const ResponseMeta& meta,
                              std::string_view text, std::string_view finish_reason,
                              bool role_delta) {
  json j = Head(req, meta, true);
  json choice = {{"index", 0}, {"finish_reason", FinishJson(finish_reason)}};
  if (req.chat) {
    json delta = json::object();
    if (role_delta) delta["role"] = "assistant";
    if (!text.empty() || role_delta) delta["content"] = std::string(text);
    choice["delta"] = delta;
  } else {
    choice["text"] = std::string(text);
    choice["logprobs"] = nullptr;
  }
  j["choices"] = json::array({choice});
  return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

std::string FormatStreamUsage(const CompletionRequest& req, const ResponseMeta& meta,
                              const UsageCounts& usage) {
  json j = Head(req, meta, true);
  j["choices"] = json::array();
  j["usage"] = UsageJson(usage);
  return "data: " + j.dump() + "\n\n";
}

std::string FormatStreamError(const ApiError& error) {
  return "data: " + error.Body() + "\n\n";
}

std::string FormatModels(const std::string& model_name, int64_t created) {
  json m = {{"id", model_name}, {"object", "model"}, {"created", created}, {"owned_by", "prfaas"}};
  return json{{"object", "list"}, {"data", json::array({m})}}.dump();
}

bool BearerMatches(std::string_view header, std::string_view token) {
  constexpr std::string_view kPrefix = "Bearer ";
  if (header.size() < kPrefix.size()) return false;
  for (size_t i = 0; i < kPrefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(header[i])) !=
        std::tolower(static_cast<unsigned char>(kPrefix[i]))) {
      return false;
    }
  }
  std::string_view given = header.substr(kPrefix.size());
  unsigned diff = given.size() == token.size() ? 0u : 1u;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned>(given[i] ^ token[i % std::max<size_t>(1, token.size())]);
  }
  return diff == 0 && !token.empty();
}

}  // namespace prfaas::router
