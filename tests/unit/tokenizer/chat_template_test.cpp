#include "router/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "router/tokenizer/byte_tokenizer.h"

namespace prfaas::router {
namespace {

TEST(ChatTemplate, RendersChatMLWithGenerationPrompt) {
  const std::vector<ChatMessage> msgs{
      {"system", "You are helpful."}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "2+2?"}};
  auto p = RenderChatML(msgs);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p,
            "<|im_start|>system\nYou are helpful.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n"
            "<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, Options) {
  const std::vector<ChatMessage> msgs{{"user", "x"}};
  EXPECT_EQ(*RenderChatML(msgs, {.add_generation_prompt = false}),
            "<|im_start|>user\nx<|im_end|>\n");
  EXPECT_EQ(*RenderChatML(msgs, {.add_generation_prompt = true, .enable_thinking = false}),
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplate, RejectsBadInput) {
  EXPECT_EQ(RenderChatML({}).status().code(), StatusCode::kInvalidArgument);
  const std::vector<ChatMessage> msgs{{"user", "a"}, {"wizard", "b"}};
  auto r = RenderChatML(msgs);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("messages[1].role"), std::string::npos);
  EXPECT_NE(r.status().message().find("wizard"), std::string::npos);
}

TEST(ChatTemplate, EncodesWithByteTokenizerSpecials) {
  ByteTokenizer tok;
  const std::vector<ChatMessage> msgs{{"user", "hi"}};
  const std::vector<TokenId> ids = tok.Encode(*RenderChatML(msgs));
  const std::vector<TokenId> want{257, 'u', 's', 'e', 'r', '\n', 'h', 'i', 258, '\n', 257,
                                  'a', 's', 's', 'i', 's', 't',  'a', 'n', 't', '\n'};
  EXPECT_EQ(ids, want);
}

TEST(ChatTemplate, MessagesFromOpenAiJson) {
  const auto j = nlohmann::json::parse(R"([
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "part one, "},
                                 {"type": "text", "text": "part two"}]},
    {"role": "assistant", "content": null}
  ])");
  auto msgs = ChatMessagesFromJson(j);
  ASSERT_TRUE(msgs.ok()) << msgs.status();
  ASSERT_EQ(msgs->size(), 3u);
  EXPECT_EQ((*msgs)[0].role, "system");
  EXPECT_EQ((*msgs)[1].content, "part one, part two");
  EXPECT_EQ((*msgs)[2].content, "");
}

TEST(ChatTemplate, MessagesFromJsonErrorsNameTheElement) {
  auto expect_error = [](const char* text, const char* where) {
    auto r = ChatMessagesFromJson(nlohmann::json::parse(text));
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(where), std::string::npos) << r.status();
  };
  expect_error(R"({"role": "user"})", "messages: expected an array");
  expect_error(R"([{"content": "x"}])", "messages[0].role");
  expect_error(R"([{"role": "user", "content": 5}])", "messages[0].content");
  expect_error(R"([{"role": "user", "content": "a"},
                   {"role": "user", "content": [{"type": "image_url"}]}])",
               "messages[1].content[0].type");
  expect_error(R"([{"role": "user", "content": [{"type": "text"}]}])",
               "messages[0].content[0].text");
}

}  // namespace
}  // namespace prfaas::router
