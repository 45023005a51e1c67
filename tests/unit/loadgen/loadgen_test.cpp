// Unit tests of the load generator's pure parts: prompt synthesis, SSE parsing, statistics,
// URL parsing, request bodies and workload building.
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/loadgen/client.h"
#include "bench/loadgen/prompt.h"
#include "bench/loadgen/sse.h"
#include "bench/loadgen/stats.h"
#include "bench/loadgen/workload.h"

namespace prfaas::bench {
namespace {

uint64_t FreshSeed() {
  return std::random_device{}() * 0x100000001ull + std::random_device{}();
}

TEST(PromptTest, SameIdSameTextAndPrefixProperty) {
  const uint64_t id = FreshSeed();
  const std::string a = BlockText(id, 512);
  EXPECT_EQ(a.size(), 512u);
  EXPECT_EQ(a, BlockText(id, 512));
  EXPECT_EQ(BlockText(id, 100), a.substr(0, 100));
  EXPECT_NE(a, BlockText(id + 1, 512));
}

TEST(PromptTest, SharedIdsGiveSharedPrefix) {
  const uint64_t x = FreshSeed(), y = x + 7, z = x + 13, w = x + 29;
  PromptSpec a{.tokens = 300, .block_ids = {x, y, z}, .block_tokens = 100, .unique_seed = 1};
  PromptSpec b{.tokens = 350, .block_ids = {x, y, w}, .block_tokens = 100, .unique_seed = 2};
  const std::string pa = SynthesizePrompt(a), pb = SynthesizePrompt(b);
  ASSERT_EQ(pa.size(), 300u);
  ASSERT_EQ(pb.size(), 350u);
  EXPECT_EQ(pa.substr(0, 200), pb.substr(0, 200));
  EXPECT_NE(pa.substr(200, 100), pb.substr(200, 100));
  // Same ids, different request: identical blocks, different unshared tail.
  PromptSpec c = a;
  c.tokens = 360;
  c.unique_seed = 3;
  PromptSpec d = c;
  d.unique_seed = 4;
  const std::string pc = SynthesizePrompt(c), pd = SynthesizePrompt(d);
  EXPECT_EQ(pc.substr(0, 300), pa);
  EXPECT_NE(pc.substr(300), pd.substr(300));
}

TEST(PromptTest, PartialLastBlockIsPrefixOfFullBlock) {
  const uint64_t x = FreshSeed(), y = x ^ 0x55;
  PromptSpec shortp{.tokens = 150, .block_ids = {x, y}, .block_tokens = 100, .unique_seed = 1};
  PromptSpec longp{.tokens = 200, .block_ids = {x, y}, .block_tokens = 100, .unique_seed = 2};
  EXPECT_EQ(SynthesizePrompt(longp).substr(0, 150), SynthesizePrompt(shortp));
  PromptSpec tiny{.tokens = 5, .block_ids = {x, y}, .block_tokens = 100, .unique_seed = 1};
  EXPECT_EQ(SynthesizePrompt(tiny), BlockText(x, 5));
}

TEST(PromptTest, PrintableAscii) {
  PromptSpec s{
      .tokens = 4096, .block_ids = {FreshSeed()}, .block_tokens = 64, .unique_seed = FreshSeed()};
  for (char c : SynthesizePrompt(s)) {
    ASSERT_TRUE(c == ' ' || (c >= 'a' && c <= 'z')) << int(c);
  }
}

TEST(SseTest, EventsSplitAnywhere) {
  const std::string stream =
      ": keep-alive\r\n\r\n"
      "data: {\"choices\":[{\"text\":\"a\"}]}\r\n\r\n"
      "data: {\"choices\":[{\"text\":\"b\"}]}\n\n"
      "event: x\ndata: line1\ndata: line2\n\n"
      "data: [DONE]\n\n";
  const std::vector<std::string> want = {"{\"choices\":[{\"text\":\"a\"}]}",
                                         "{\"choices\":[{\"text\":\"b\"}]}", "line1\nline2",
                                         "[DONE]"};
  // Every split position, including between '\r' and '\n'.
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    SseParser p;
    std::vector<std::string> got;
    p.Feed(std::string_view(stream).substr(0, cut), got);
    p.Feed(std::string_view(stream).substr(cut), got);
    ASSERT_EQ(got, want) << "cut at " << cut;
  }
  // One byte at a time.
  SseParser p;
  std::vector<std::string> got;
  for (char c : stream) p.Feed(std::string_view(&c, 1), got);
  EXPECT_EQ(got, want);
}

TEST(SseTest, FinishFlushesUnterminatedEvent) {
  SseParser p;
  std::vector<std::string> got;
  p.Feed("data: [DONE]", got);
  EXPECT_TRUE(got.empty());
  p.Finish(got);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "[DONE]");
}

TEST(SseTest, ParseCompletionAndChatChunks) {
  auto c = ParseOpenAiChunk(R"({"choices":[{"index":0,"text":"hi","finish_reason":null}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->text, "hi");
  EXPECT_TRUE(c->has_content);
  EXPECT_FALSE(c->finish_reason);

  c = ParseOpenAiChunk(R"({"choices":[{"delta":{"role":"assistant"}}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(c->has_content);

  c = ParseOpenAiChunk(R"({"choices":[{"delta":{"content":"x"},"finish_reason":"length"}]})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->text, "x");
  EXPECT_EQ(c->finish_reason.value_or(""), "length");

  c = ParseOpenAiChunk(R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":12}})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->completion_tokens.value_or(-1), 12);
  EXPECT_EQ(c->prompt_tokens.value_or(-1), 7);

  c = ParseOpenAiChunk(R"({"error":{"message":"boom","type":"server_error"}})");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->error.value_or(""), "boom");

  c = ParseOpenAiChunk("[DONE]");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->done);

  EXPECT_FALSE(ParseOpenAiChunk("{not json").ok());
}

TEST(StatsTest, PercentilesMatchHandComputed) {
  // Sorted: 1 2 3 4 5 6 7 8 9 10; rank = p/100 * 9.
  std::vector<double> v = {7, 3, 10, 1, 5, 9, 2, 8, 4, 6};
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 5.5);   // rank 4.5
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 9.1);   // rank 8.1
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 9.91);  // rank 8.91
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 10);
  EXPECT_DOUBLE_EQ(Percentile({42}, 99), 42);
  EXPECT_DOUBLE_EQ(Percentile({}, 50), 0);
  Distribution d = Summarize(v);
  EXPECT_EQ(d.count, 10);
  EXPECT_DOUBLE_EQ(d.mean, 5.5);
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 10);
}

TEST(StatsTest, ReportCountsThroughputTpotAndSlo) {
  std::vector<RequestResult> rs(5);
  // r0: ok, ttft 0.5, e2e 1.5, 11 tokens -> tpot 0.1; starts at 0.
  rs[0] = {.index = 0,
           .sent = true,
           .ok = true,
           .start_s = 0,
           .ttft_s = 0.5,
           .e2e_s = 1.5,
           .prompt_tokens = 100,
           .output_tokens = 11};
  // r1: ok, ttft 3 (misses a 2 s TTFT SLO), e2e 4, 5 tokens -> tpot 0.25; ends at 1 + 4 = 5.
  rs[1] = {.index = 1,
           .sent = true,
           .ok = true,
           .start_s = 1,
           .ttft_s = 3,
           .e2e_s = 4,
           .prompt_tokens = 200,
           .output_tokens = 5};
  // r2: ok, one token: no TPOT, meets the TTFT bound.
  rs[2] = {.index = 2,
           .sent = true,
           .ok = true,
           .start_s = 2,
           .ttft_s = 1,
           .e2e_s = 1,
           .prompt_tokens = 50,
           .output_tokens = 1};
  rs[3] = {.index = 3,
           .sent = true,
           .ok = false,
           .error_kind = "http_500",
           .error_message = "HTTP 500: x",
           .start_s = 2,
           .e2e_s = 0.1};
  rs[4] = {.index = 4, .sent = false};
  Report r = BuildReport(rs, Slo{.ttft_s = 2, .tpot_s = 0.2});
  EXPECT_EQ(r.planned, 5);
  EXPECT_EQ(r.sent, 4);
  EXPECT_EQ(r.completed, 3);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.not_sent, 1);
  EXPECT_EQ(r.errors.at("http_500"), 1);
  EXPECT_DOUBLE_EQ(r.duration_s, 5);
  EXPECT_DOUBLE_EQ(r.request_throughput, 3.0 / 5);
  EXPECT_DOUBLE_EQ(r.output_token_throughput, 17.0 / 5);
  EXPECT_DOUBLE_EQ(r.input_token_throughput, 350.0 / 5);
  EXPECT_EQ(r.tpot.count, 2);
  EXPECT_DOUBLE_EQ(r.tpot.mean, 0.175);
  EXPECT_DOUBLE_EQ(r.ttft.p50, 1);
  EXPECT_DOUBLE_EQ(r.e2e.max, 4);
  // r0 and r2 meet both bounds; r1 misses; the failure counts as a miss.
  EXPECT_EQ(r.slo_met, 2);
  EXPECT_DOUBLE_EQ(r.slo_attainment, 0.5);
  nlohmann::json j = ReportToJson(r);
  EXPECT_EQ(j["requests"]["completed"], 3);
  EXPECT_EQ(j["errors"]["http_500"]["count"], 1);
  EXPECT_DOUBLE_EQ(j["slo"]["attainment"].get<double>(), 0.5);
  EXPECT_NE(FormatReport(r).find("http_500"), std::string::npos);
}

TEST(UrlTest, Parse) {
  auto e = ParseUrl("http://127.0.0.1:8000");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "127.0.0.1");
  EXPECT_EQ(e->port, "8000");
  EXPECT_EQ(e->base_path, "");
  e = ParseUrl("http://example.com/api/v1/");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "example.com");
  EXPECT_EQ(e->port, "80");
  EXPECT_EQ(e->base_path, "/api");
  e = ParseUrl("[::1]:9000");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, "9000");
  EXPECT_FALSE(ParseUrl("https://x").ok());
  EXPECT_FALSE(ParseUrl("http://host:abc").ok());
  EXPECT_FALSE(ParseUrl("http://").ok());
}

TEST(RequestBodyTest, CompletionAndChat) {
  RunOptions o;
  o.model = "m";
  PlannedRequest r{
      .index = 0, .arrival_s = 0, .prompt = "abc", .prompt_tokens = 3, .max_tokens = 9};
  auto j = nlohmann::json::parse(RequestBody(o, r));
  EXPECT_EQ(j["prompt"], "abc");
  EXPECT_EQ(j["max_tokens"], 9);
  EXPECT_EQ(j["stream"], true);
  EXPECT_EQ(j["ignore_eos"], true);
  EXPECT_EQ(j["stream_options"]["include_usage"], true);
  o.chat = true;
  o.ignore_eos = false;
  j = nlohmann::json::parse(RequestBody(o, r));
  EXPECT_FALSE(j.contains("prompt"));
  EXPECT_FALSE(j.contains("ignore_eos"));
  EXPECT_EQ(j["messages"][0]["role"], "user");
  EXPECT_EQ(j["messages"][0]["content"], "abc");
}

TEST(WorkloadTest, ScalesLengthsAndKeepsPrefixSharing) {
  sim::Trace t;
  t.block_tokens = 512;
  const uint64_t a = FreshSeed(), b = a + 1, c = a + 2;
  t.requests.push_back(
      {.arrival_s = 0, .input_tokens = 1024, .output_tokens = 100, .block_hashes = {a, b}});
  t.requests.push_back(
      {.arrival_s = 1.5, .input_tokens = 1536, .output_tokens = 10, .block_hashes = {a, b, c}});
  t.requests.push_back({.arrival_s = 3, .input_tokens = 100, .output_tokens = 1});
  WorkloadOptions o;
  o.length_scale = 0.25;
  o.max_output_tokens = 20;
  o.max_duration_s = 2;
  auto w = BuildWorkload(t, o);
  ASSERT_EQ(w.size(), 2u);  // the third arrives after the duration
  EXPECT_EQ(w[0].prompt_tokens, 256);
  EXPECT_EQ(w[0].prompt.size(), 256u);
  EXPECT_EQ(w[1].prompt.size(), 384u);
  EXPECT_EQ(w[1].prompt.substr(0, 256), w[0].prompt);  // two shared 128-token blocks
  EXPECT_EQ(w[0].max_tokens, 20);                      // 25 capped
  EXPECT_EQ(w[1].max_tokens, 3);                       // 2.5 rounds to 3
  EXPECT_DOUBLE_EQ(w[1].arrival_s, 1.5);
}

}  // namespace
}  // namespace prfaas::bench
