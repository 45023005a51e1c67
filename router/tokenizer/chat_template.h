// ChatML prompt rendering for chat completions (Qwen3 vocabulary and the embedded byte model,
// which share the <|im_start|>/<|im_end|> markers).
//
//   <|im_start|>system\nYou are helpful.<|im_end|>\n
//   <|im_start|>user\nHi<|im_end|>\n
//   <|im_start|>assistant\n                       <- generation prompt
//
// This is the shape Qwen3's jinja template produces for plain text messages without tools.
// Not reproduced: tool calls/tool messages, and the template's stripping of <think> blocks from
// earlier assistant turns (assistant content is rendered verbatim). The rendered prompt is meant
// to be encoded with SpecialTokens::kRecognize so the markers become their ids; as with
// HuggingFace, marker text typed inside a message therefore also becomes a marker.
#pragma once

#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace prfaas::router {

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatTemplateOptions {
  // Append "<|im_start|>assistant\n" so the model answers next.
  bool add_generation_prompt = true;
  // Qwen3 "enable_thinking=false": the generation prompt also carries an empty think block.
  bool enable_thinking = true;
};

// InvalidArgument for an empty list or a role other than system/user/assistant.
Result<std::string> RenderChatML(std::span<const ChatMessage> messages,
                                 const ChatTemplateOptions& options = {});

// Reads an OpenAI `messages` array: [{"role": ..., "content": "text" | [{"type": "text",
// "text": ...}, ...] | null}, ...]. Text parts are concatenated; other part types are rejected.
// Errors name the offending element, e.g. "messages[2].content[0].type: ...".
Result<std::vector<ChatMessage>> ChatMessagesFromJson(const nlohmann::json& messages);

}  // namespace prfaas::router
