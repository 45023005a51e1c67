// Wire format of the OpenAI front door: request validation, limits, response/SSE shapes, auth.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "router/server/openai.h"

namespace prfaas::router {
namespace {

using nlohmann::json;

std::optional<ApiError> Parse(const std::string& body, bool chat, CompletionRequest* out,
                              ApiLimits limits = {}) {
  return ParseCompletionRequest(body, chat, limits, "m", out);
}

TEST(OpenAiParse, CompletionFieldsAndDefaults) {
  CompletionRequest r;
  ApiLimits limits;
  limits.default_max_tokens = 33;
  ASSERT_FALSE(Parse(R"({"prompt":"hi","temperature":0.5,"top_p":0.9,"seed":7,"stream":true,
                        "stream_options":{"include_usage":true}})",
                     false, &r, limits));
  EXPECT_EQ(r.prompt, "hi");
  EXPECT_EQ(r.max_tokens, 33);
  EXPECT_FLOAT_EQ(r.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.top_p, 0.9f);
  EXPECT_EQ(r.seed, 7u);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FALSE(r.chat);
}

TEST(OpenAiParse, PromptForms) {
  CompletionRequest r;
  ASSERT_FALSE(Parse(R"({"prompt":["one"]})", false, &r));
  EXPECT_EQ(r.prompt, "one");
  ASSERT_FALSE(Parse(R"({"prompt":[1,2,3]})", false, &r));
  ASSERT_TRUE(r.prompt_ids.has_value());
  EXPECT_EQ(*r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_TRUE(Parse(R"({"prompt":[1,-2]})", false, &r));
  EXPECT_TRUE(Parse(R"({"prompt":""})", false, &r));
  EXPECT_TRUE(Parse(R"({"prompt":{"a":1}})", false, &r));
}

TEST(OpenAiParse, ChatMessagesAndMaxCompletionTokens) {
  CompletionRequest r;
  ASSERT_FALSE(Parse(R"({"messages":[{"role":"user","content":"yo"}],
                        "max_completion_tokens":9})",
                     true, &r));
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_EQ(r.messages[0].content, "yo");
  EXPECT_EQ(r.max_tokens, 9);
  auto e = Parse(R"({"messages":[{"role":"wizard","content":"x"}]})", true, &r);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->param, "messages");
  EXPECT_TRUE(Parse(R"({"messages":[]})", true, &r));
}

TEST(OpenAiParse, RejectsBadInput) {
  CompletionRequest r;
  struct Case {
    std::string body;
    int status;
    std::string param;
  };
  ApiLimits limits;
  limits.max_tokens = 100;
  const std::vector<Case> cases = {
      {"", 400, ""},
      {"[1,2]", 400, ""},
      {"{\"prompt\":\"x\"", 400, ""},
      {R"({})", 400, "prompt"},
      {R"({"prompt":"x","max_tokens":0})", 400, "max_tokens"},
      {R"({"prompt":"x","max_tokens":101})", 400, "max_tokens"},
      {R"({"prompt":"x","max_tokens":2.5})", 400, "max_tokens"},
      {R"({"prompt":"x","temperature":3})", 400, "temperature"},
      {R"({"prompt":"x","temperature":"hot"})", 400, "temperature"},
      {R"({"prompt":"x","stream":"yes"})", 400, "stream"},
      {R"({"prompt":"x","n":2})", 400, "n"},
      {R"({"prompt":"x","stop":["\n"]})", 400, "stop"},
      {R"({"prompt":"x","model":"other"})", 404, "model"},
  };
  for (const auto& c : cases) {
    auto e = ParseCompletionRequest(c.body, false, limits, "m", &r);
    ASSERT_TRUE(e.has_value()) << c.body;
    EXPECT_EQ(e->http_status, c.status) << c.body;
    EXPECT_EQ(e->param, c.param) << c.body;
    json j = json::parse(e->Body());
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_TRUE(j["error"].contains("type"));
    EXPECT_TRUE(j["error"].contains("code"));
  }
}

TEST(OpenAiParse, PromptLengthLimit) {
  CompletionRequest r;
  ApiLimits limits;
  limits.max_prompt_tokens = 10;
  EXPECT_FALSE(CheckPromptLength(10, r, limits));
  auto e = CheckPromptLength(11, r, limits);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->code, "context_length_exceeded");
  EXPECT_TRUE(CheckPromptLength(0, r, limits));
}

TEST(OpenAiFormat, FullAndStreamShapes) {
  CompletionRequest chat;
  chat.chat = true;
  ResponseMeta meta{"chatcmpl-1", 42, "m"};
  json full = json::parse(FormatFullResponse(chat, meta, "hey", "stop", {5, 2, 1}));
  EXPECT_EQ(full["object"], "chat.completion");
  EXPECT_EQ(full["choices"][0]["message"]["content"], "hey");
  EXPECT_EQ(full["usage"]["total_tokens"], 7);
  EXPECT_EQ(full["usage"]["prompt_tokens_details"]["cached_tokens"], 1);

  std::string chunk = FormatStreamChunk(chat, meta, "", "", true);
  ASSERT_EQ(chunk.rfind("data: ", 0), 0u);
  ASSERT_EQ(chunk.substr(chunk.size() - 2), "\n\n");
  json c = json::parse(chunk.substr(6));
  EXPECT_EQ(c["object"], "chat.completion.chunk");
  EXPECT_EQ(c["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());

  CompletionRequest text;
  json t = json::parse(FormatStreamChunk(text, meta, "ab", "length").substr(6));
  EXPECT_EQ(t["object"], "text_completion");
  EXPECT_EQ(t["choices"][0]["text"], "ab");
  EXPECT_EQ(t["choices"][0]["finish_reason"], "length");
  // Invalid UTF-8 from a partial token never breaks the JSON.
  EXPECT_NO_THROW(json::parse(FormatStreamChunk(text, meta, "\xff", "").substr(6)));
}

TEST(OpenAiAuth, BearerMatching) {
  EXPECT_TRUE(BearerMatches("Bearer abc", "abc"));
  EXPECT_TRUE(BearerMatches("bearer abc", "abc"));
  EXPECT_FALSE(BearerMatches("Bearer abd", "abc"));
  EXPECT_FALSE(BearerMatches("Bearer abcd", "abc"));
  EXPECT_FALSE(BearerMatches("Bearer ab", "abc"));
  EXPECT_FALSE(BearerMatches("abc", "abc"));
  EXPECT_FALSE(BearerMatches("", "abc"));
  EXPECT_FALSE(BearerMatches("Bearer ", ""));
}

}  // namespace
}  // namespace prfaas::router
