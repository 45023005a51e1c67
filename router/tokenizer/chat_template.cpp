#include "router/tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

namespace prfaas::router {

Result<std::string> RenderChatML(std::span<const ChatMessage> messages,
                                 const ChatTemplateOptions& options) {
  if (messages.empty()) return InvalidArgument("messages: at least one message is required");
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant") {
      return InvalidArgument("messages[" + std::to_string(i) + "].role: unsupported role '" +
                             m.role + "' (expected system, user or assistant)");
    }
    out += "<|im_start|>";
    out += m.role;
    out += '\n';
    out += m.content;
    out += "<|im_end|>\n";
  }
  if (options.add_generation_prompt) {
    out += "<|im_start|>assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return out;
}

Result<std::vector<ChatMessage>> ChatMessagesFromJson(const nlohmann::json& messages) {
  if (!messages.is_array()) return InvalidArgument("messages: expected an array");
  std::vector<ChatMessage> out;
  out.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const auto& m = messages[i];
    if (!m.is_object()) return InvalidArgument(where + ": expected an object");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return InvalidArgument(where + ".role: expected a string");
    }
    ChatMessage msg{role->get<std::string>(), ""};
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      // allowed (e.g. an assistant turn that only called tools); renders empty
    } else if (content->is_string()) {
      msg.content = content->get<std::string>();
    } else if (content->is_array()) {
      for (size_t k = 0; k < content->size(); ++k) {
        const std::string pw = where + ".content[" + std::to_string(k) + "]";
        const auto& part = (*content)[k];
        if (!part.is_object()) return InvalidArgument(pw + ": expected an object");
        auto type = part.find("type");
        if (type == part.end() || *type != "text") {
          return InvalidArgument(pw + ".type: only \"text\" parts are supported");
        }
        auto text = part.find("text");
        if (text == part.end() || !text->is_string()) {
          return InvalidArgument(pw + ".text: expected a string");
        }
        msg.content += text->get<std::string>();
      }
    } else {
      return InvalidArgument(where + ".content: expected a string, an array of parts or null");
    }
    out.push_back(std::move(msg));
  }
  return out;
}

}  // namespace prfaas::router
