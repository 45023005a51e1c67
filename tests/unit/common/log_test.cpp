#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

namespace prfaas::log {
namespace {

std::vector<std::string> Lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string l; std::getline(is, l);) out.push_back(l);
  return out;
}

TEST(LogTest, RequestScopesNest) {
  EXPECT_EQ(CurrentRequestId(), "-");
  {
    RequestScope scope("req-42");
    EXPECT_EQ(CurrentRequestId(), "req-42");
    {
      RequestScope inner("req-43");
      EXPECT_EQ(CurrentRequestId(), "req-43");
    }
    EXPECT_EQ(CurrentRequestId(), "req-42");
  }
  EXPECT_EQ(CurrentRequestId(), "-");
}

TEST(LogTest, TextLinesCarryComponentLevelAndRequestId) {
  std::ostringstream os;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(os);
  ASSERT_TRUE(
      InitLogging({.level = "info", .json = false, .component = "router", .sink = sink}).ok());
  spdlog::debug("hidden");
  spdlog::info("no request");
  {
    RequestScope scope("abc123");
    spdlog::warn("routed {} tokens", 512);
  }
  spdlog::default_logger()->flush();
  auto lines = Lines(os.str());
  ASSERT_EQ(lines.size(), 2u) << os.str();
  EXPECT_NE(lines[0].find("[router] req=- no request"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("warn"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("req=abc123 routed 512 tokens"), std::string::npos) << lines[1];
}

TEST(LogTest, JsonLinesParseEvenWithQuotesInMessages) {
  std::ostringstream os;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(os);
  ASSERT_TRUE(
      InitLogging({.level = "debug", .json = true, .component = "worker", .sink = sink}).ok());
  {
    RequestScope scope("r-7");
    spdlog::debug("prompt \"hi\\there\"\n\tnext\x01");
  }
  spdlog::default_logger()->flush();
  auto lines = Lines(os.str());
  ASSERT_EQ(lines.size(), 1u) << os.str();
  auto j = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(j["request_id"], "r-7");
  EXPECT_EQ(j["component"], "worker");
  EXPECT_EQ(j["level"], "debug");
  EXPECT_EQ(j["msg"], "prompt \"hi\\there\"\n\tnext\x01");
}

TEST(LogTest, BadLevelIsRejected) {
  Status s = InitLogging({.level = "verbose"});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("'verbose'"), std::string::npos);
  EXPECT_TRUE(InitLogging({.level = "off"}).ok());
}

}  // namespace
}  // namespace prfaas::log
