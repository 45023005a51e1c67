#include <cmath>

#include <gtest/gtest.h>

#include "sim/trace.h"

namespace prfaas::sim {
namespace {

TEST(MooncakeLoader, ParsesRowsAndConvertsMilliseconds) {
  auto t = ParseMooncake(
      "{\"timestamp\": 3000, \"input_length\": 1000, \"output_length\": 5, \"hash_ids\": [0, 7]}\n"
      "\n"
      "{\"timestamp\": 0, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [0, 1]}\n",
      "m.jsonl", 512);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_EQ(t->block_tokens, 512);
  // Sorted by arrival.
  EXPECT_DOUBLE_EQ(t->requests[0].arrival_s, 0.0);
  EXPECT_EQ(t->requests[0].input_tokens, 600);
  EXPECT_DOUBLE_EQ(t->requests[1].arrival_s, 3.0);
  EXPECT_EQ(t->requests[1].block_hashes, (std::vector<uint64_t>{0, 7}));
}

TEST(MooncakeLoader, MalformedRowsNameLineAndField) {
  auto bad_type = ParseMooncake(
      "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1}\n"
      "{\"timestamp\": 1, \"input_length\": \"ten\", \"output_length\": 1}\n",
      "m.jsonl", 512);
  ASSERT_FALSE(bad_type.ok());
  EXPECT_EQ(bad_type.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_type.status().message().find("m.jsonl:2"), std::string::npos) << bad_type.status();
  EXPECT_NE(bad_type.status().message().find("input_length"), std::string::npos);

  auto missing = ParseMooncake("{\"timestamp\": 0, \"input_length\": 10}\n", "x", 512);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("x:1: field 'output_length': missing"),
            std::string::npos)
      << missing.status();

  auto not_json = ParseMooncake("\n\n{oops\n", "y", 512);
  ASSERT_FALSE(not_json.ok());
  EXPECT_NE(not_json.status().message().find("y:3"), std::string::npos) << not_json.status();

  auto bad_hash = ParseMooncake(
      "{\"timestamp\": 0, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1, \"a\"]}\n",
      "z", 512);
  ASSERT_FALSE(bad_hash.ok());
  EXPECT_NE(bad_hash.status().message().find("hash_ids"), std::string::npos);

  auto negative =
      ParseMooncake("{\"timestamp\": -5, \"input_length\": 10, \"output_length\": 1}\n", "w", 512);
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("timestamp"), std::string::npos);
}

TEST(AzureLoader, ParsesSevenFractionalDigits) {
  auto s = ParseDateTimeSeconds("2023-11-16 18:17:03.9799600");
  ASSERT_TRUE(s.ok());
  auto base = ParseDateTimeSeconds("2023-11-16 18:17:03");
  ASSERT_TRUE(base.ok());
  EXPECT_NEAR(*s - *base, 0.97996, 1e-6);
  // 1970-01-02 is one day after the epoch.
  EXPECT_DOUBLE_EQ(*ParseDateTimeSeconds("1970-01-02 00:00:00"), 86400.0);
  EXPECT_FALSE(ParseDateTimeSeconds("2023-13-16 18:17:03").ok());
  EXPECT_FALSE(ParseDateTimeSeconds("2023-11-16 18:17:03.").ok());

  auto t = ParseAzure(
      "TIMESTAMP,ContextTokens,GeneratedTokens\n"
      "2023-11-16 18:17:04.0319600,3180,8\n"
      "2023-11-16 18:17:03.9799600,4808,10\n",
      "a.csv");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_DOUBLE_EQ(t->requests[0].arrival_s, 0.0);  // rebased to the earliest
  EXPECT_EQ(t->requests[0].input_tokens, 4808);
  EXPECT_NEAR(t->requests[1].arrival_s, 0.052, 1e-9);
}

TEST(AzureLoader, MalformedRows) {
  auto bad = ParseAzure("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04.03,12x,8\n",
                        "a.csv");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("a.csv:2: field 'ContextTokens'"), std::string::npos)
      << bad.status();
  auto bad_ts =
      ParseAzure("TIMESTAMP,ContextTokens,GeneratedTokens\n\n2023/11/16 18:17,1,8\n", "a.csv");
  ASSERT_FALSE(bad_ts.ok());
  EXPECT_NE(bad_ts.status().message().find("a.csv:3: field 'TIMESTAMP'"), std::string::npos)
      << bad_ts.status();
  auto cols =
      ParseAzure("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04,1\n", "a.csv");
  ASSERT_FALSE(cols.ok());
  EXPECT_NE(cols.status().message().find("a.csv:2"), std::string::npos);
  EXPECT_FALSE(ParseAzure("time,in,out\n", "a.csv").ok());
}

TEST(BailianLoader, SecondsSessionsAndBlocks) {
  auto t = ParseBailian(
      "{\"chat_id\": 5, \"parent_chat_id\": -1, \"timestamp\": 10.5, \"input_length\": 40, "
      "\"output_length\": 3, \"type\": \"text\", \"turn\": 1, \"hash_ids\": [1, 2, 3]}\n"
      "{\"chat_id\": 9, \"parent_chat_id\": 5, \"timestamp\": 12.0, \"input_length\": 60, "
      "\"output_length\": 4, \"type\": \"text\", \"turn\": 2, \"hash_ids\": [1, 2, 3, 4]}\n",
      "b.jsonl", 16);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->block_tokens, 16);
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_DOUBLE_EQ(t->requests[1].arrival_s, 1.5);
  EXPECT_EQ(t->requests[0].session_id, 5);
  EXPECT_EQ(t->requests[1].session_id, 5);  // grouped under the parent
  EXPECT_EQ(t->requests[1].turn, 2);
  auto bad = ParseBailian(
      "{\"timestamp\": 1.0, \"input_length\": 4, \"output_length\": 1, \"turn\": \"x\"}\n", "b",
      16);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("b:1: field 'turn'"), std::string::npos) << bad.status();
}

TEST(BurstGptLoader, DropsFailuresUnlessKept) {
  const std::string csv =
      "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
      "5,ChatGPT,472,18,490,Conversation log\n"
      "7,GPT-4,1000,0,1000,Conversation log\n"
      "9,ChatGPT,30,40,70,API log\n";
  auto t = ParseBurstGpt(csv, "g.csv", false);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_DOUBLE_EQ(t->requests[1].arrival_s, 4.0);
  auto kept = ParseBurstGpt(csv, "g.csv", true);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->requests.size(), 3u);
  auto bad = ParseBurstGpt(
      "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\nx,a,1,2,3,b\n",
      "g.csv", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("g.csv:2: field 'Timestamp'"), std::string::npos)
      << bad.status();
}

TEST(Synthetic, PaperLogNormalStaysInBoundsWithExpectedMean) {
  SyntheticOptions o;
  o.num_requests = 20000;
  o.rate_rps = 4;
  o.seed = 42;
  auto t = GenerateSynthetic(o);
  ASSERT_TRUE(t.ok());
  double sum = 0;
  for (const auto& r : t->requests) {
    ASSERT_GE(r.input_tokens, 128);
    ASSERT_LE(r.input_tokens, 131072);
    ASSERT_EQ(r.output_tokens, 1024);
    sum += static_cast<double>(r.input_tokens);
  }
  // The digest's closed form: mean ≈ 27.5K for mu = 9.90, sigma = 1.0 on [128, 131072].
  EXPECT_NEAR(sum / 20000, 27500, 900);
  double rate = 19999 / t->requests.back().arrival_s;
  EXPECT_NEAR(rate, 4.0, 0.2);
}

TEST(Synthetic, GammaArrivalsHaveRequestedBurstiness) {
  SyntheticOptions o;
  o.num_requests = 20000;
  o.arrival = "gamma";
  o.cv = 3;
  o.rate_rps = 10;
  auto t = GenerateSynthetic(o);
  ASSERT_TRUE(t.ok());
  std::vector<double> gaps;
  for (size_t i = 1; i < t->requests.size(); ++i)
    gaps.push_back(t->requests[i].arrival_s - t->requests[i - 1].arrival_s);
  double m = 0, v = 0;
  for (double g : gaps) m += g;
  m /= static_cast<double>(gaps.size());
  for (double g : gaps) v += (g - m) * (g - m);
  double cv = std::sqrt(v / static_cast<double>(gaps.size())) / m;
  EXPECT_NEAR(m, 0.1, 0.01);
  EXPECT_NEAR(cv, 3.0, 0.4);
  o.arrival = "weibull";
  EXPECT_FALSE(GenerateSynthetic(o).ok());
}

TEST(Synthetic, SessionsShareSystemPromptAndGrowPrefixes) {
  SyntheticOptions o;
  o.num_requests = 200;
  o.sessions = 5;
  o.system_prompt_tokens = 1024;
  o.block_tokens = 512;
  o.mu = 6;
  o.sigma = 0.5;
  o.output_tokens = 100;
  auto t = GenerateSynthetic(o);
  ASSERT_TRUE(t.ok());
  const auto& rs = t->requests;
  // Every request shares the two system-prompt blocks.
  for (const auto& r : rs) {
    ASSERT_GE(r.block_hashes.size(), 2u);
    EXPECT_EQ(r.block_hashes[0], rs[0].block_hashes[0]);
    EXPECT_EQ(r.block_hashes[1], rs[0].block_hashes[1]);
  }
  // A later turn of a session starts with all full blocks of its previous prompt.
  bool checked = false;
  for (size_t i = 0; i < rs.size() && !checked; ++i) {
    for (size_t j = i + 1; j < rs.size(); ++j) {
      if (rs[j].session_id != rs[i].session_id) continue;
      if (rs[j].turn != rs[i].turn + 1) break;
      size_t full = static_cast<size_t>(rs[i].input_tokens / 512);
      for (size_t b = 0; b < full; ++b) ASSERT_EQ(rs[j].block_hashes[b], rs[i].block_hashes[b]);
      checked = true;
      break;
    }
  }
  EXPECT_TRUE(checked);
}

TEST(Transform, WindowJitterRateAndLimit) {
  Trace t;
  for (int i = 0; i < 100; ++i) {
    TraceRequest r;
    r.arrival_s = std::floor(i / 10) * 3.0;  // 10 requests per 3 s bucket
    r.input_tokens = 10;
    t.requests.push_back(r);
  }
  Trace w = t;
  TransformOptions o;
  o.window_start_s = 6;
  o.window_end_s = 12;
  ASSERT_TRUE(TransformTrace(w, o).ok());
  ASSERT_EQ(w.requests.size(), 20u);
  EXPECT_DOUBLE_EQ(w.requests.front().arrival_s, 0.0);

  Trace j = t;
  TransformOptions jo;
  jo.jitter_bucket_s = 3;
  ASSERT_TRUE(TransformTrace(j, jo).ok());
  int distinct = 0;
  for (size_t i = 0; i < j.requests.size(); ++i) {
    double orig = std::floor(j.requests[i].arrival_s / 3) * 3;
    EXPECT_GE(j.requests[i].arrival_s, orig);
    if (i > 0 && j.requests[i].arrival_s != j.requests[i - 1].arrival_s) ++distinct;
    if (i > 0) {
      EXPECT_GE(j.requests[i].arrival_s, j.requests[i - 1].arrival_s);
    }
  }
  EXPECT_GT(distinct, 90);

  Trace r = t;
  TransformOptions ro;
  ro.target_rate_rps = 10;
  ro.max_requests = 50;
  ASSERT_TRUE(TransformTrace(r, ro).ok());
  ASSERT_EQ(r.requests.size(), 50u);
  // 100 requests over 27 s rescaled to 10 req/s span 9.9 s.
  EXPECT_NEAR(r.requests.back().arrival_s, 4 * 3.0 * (99.0 / 27.0 / 10.0), 1e-9);
}

}  // namespace
}  // namespace prfaas::sim

namespace prfaas::sim {
namespace {

// The shared data folder sits next to the repository; skip where it is absent (e.g. bare CI).
std::string SharedTrace(const std::string& rel) {
  return std::string(PRFAAS_SOURCE_DIR) + "/../shared/data/traces/" + rel;
}

TEST(RealTraces, MooncakeConversationMatchesPublishedStatistics) {
  auto t = LoadTrace(TraceFormat::kMooncake, SharedTrace("mooncake/conversation_trace.jsonl"));
  if (!t.ok() && t.status().code() == StatusCode::kNotFound) GTEST_SKIP() << t.status();
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 12031u);
  double in = 0;
  for (const auto& r : t->requests) {
    in += static_cast<double>(r.input_tokens);
    ASSERT_EQ(static_cast<int64_t>(r.block_hashes.size()), (r.input_tokens + 511) / 512);
  }
  EXPECT_NEAR(in / 12031, 12035, 1);
  EXPECT_NEAR(t->requests.back().arrival_s, 3537, 1);
}

TEST(RealTraces, AzureCodeTrace) {
  auto t =
      LoadTrace(TraceFormat::kAzure, SharedTrace("azure-llm-2023/AzureLLMInferenceTrace_code.csv"));
  if (!t.ok() && t.status().code() == StatusCode::kNotFound) GTEST_SKIP() << t.status();
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->requests.size(), 8819u);
  EXPECT_NEAR(t->requests.back().arrival_s, 3436, 2);
}

}  // namespace
}  // namespace prfaas::sim
