#include "common/config.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>

namespace prfaas::config {
namespace {

struct Cfg {
  int port = 8000;
  int64_t budget = 1 << 20;
  double ratio = 0.5;
  bool tls = false;
  std::string policy = "prfaas";
  std::vector<std::string> peers;
};

void Bind(Schema& s, Cfg& c) {
  s.Add("http.port", &c.port, "HTTP port").Range(1, 65535);
  s.Add("transport.budget_bytes", &c.budget, "byte budget").Range(0, 1e12);
  s.Add("ratio", &c.ratio, "a ratio").Range(0, 1);
  s.Add("transport.tls", &c.tls, "use TLS");
  s.Add("policy", &c.policy, "policy").OneOf({"prfaas", "round-robin"});
  s.Add("peers", &c.peers, "peer list");
}

TEST(ConfigTest, DefaultsSurviveEmptyInput) {
  Cfg c;
  Schema s;
  Bind(s, c);
  ASSERT_TRUE(s.LoadYamlString("").ok());
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(c.port, 8000);
  EXPECT_EQ(c.policy, "prfaas");
}

TEST(ConfigTest, NestedYamlFlattensToDottedKeys) {
  Cfg c;
  Schema s;
  Bind(s, c);
  auto st = s.LoadYamlString(R"(
http:
  port: 9100
transport:
  budget_bytes: 4096
  tls: yes
ratio: 0.25
policy: round-robin
peers: [a, b, c]
)");
  ASSERT_TRUE(st.ok()) << st;
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_EQ(c.port, 9100);
  EXPECT_EQ(c.budget, 4096);
  EXPECT_TRUE(c.tls);
  EXPECT_DOUBLE_EQ(c.ratio, 0.25);
  EXPECT_EQ(c.policy, "round-robin");
  EXPECT_EQ(c.peers, (std::vector<std::string>{"a", "b", "c"}));
}

TEST(ConfigTest, UnknownKeyIsNamedWithLine) {
  Cfg c;
  Schema s;
  Bind(s, c);
  auto st = s.LoadYamlString("http:\n  prot: 1\n", "cfg.yaml");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'http.prot'"), std::string::npos) << st;
  EXPECT_NE(st.message().find("cfg.yaml:2"), std::string::npos) << st;
}

TEST(ConfigTest, WrongTypeNamesKeyAndValue) {
  Cfg c;
  Schema s;
  Bind(s, c);
  auto st = s.LoadYamlString("http:\n  port: eighty\n");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'http.port'"), std::string::npos) << st;
  EXPECT_NE(st.message().find("'eighty'"), std::string::npos) << st;
  EXPECT_NE(st.message().find("not an integer"), std::string::npos) << st;
  EXPECT_FALSE(s.LoadYamlString("transport:\n  tls: maybe\n").ok());
  EXPECT_FALSE(s.LoadYamlString("ratio: 1.5x\n").ok());
  EXPECT_FALSE(s.LoadYamlString("http: [1, 2]\n").ok());
  EXPECT_FALSE(s.LoadYamlString("port: {\n").ok());  // malformed YAML
}

TEST(ConfigTest, ValidationNamesKeyAndValue) {
  Cfg c;
  Schema s;
  Bind(s, c);
  ASSERT_TRUE(s.LoadYamlString("http: {port: 70000}\n").ok());
  auto st = s.Validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'http.port'"), std::string::npos) << st;
  EXPECT_NE(st.message().find("'70000'"), std::string::npos) << st;

  Cfg c2;
  Schema s2;
  Bind(s2, c2);
  ASSERT_TRUE(s2.LoadYamlString("policy: random\n").ok());
  st = s2.Validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'random'"), std::string::npos) << st;
  EXPECT_NE(st.message().find("round-robin"), std::string::npos) << st;
}

TEST(ConfigTest, FlagsOverrideFile) {
  char path[] = "/tmp/prfaas_config_testXXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "http:\n  port: 9000\npolicy: round-robin\n";
  }
  Cfg c;
  Schema s;
  Bind(s, c);
  CLI::App app;
  s.AddFlags(app);
  const char* argv[] = {"prog", "--http.port", "9200", "--peers", "x,y"};
  app.parse(5, const_cast<char**>(argv));
  auto st = s.Finish(path);
  std::remove(path);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(c.port, 9200);             // flag wins
  EXPECT_EQ(c.policy, "round-robin");  // file applies
  EXPECT_EQ(c.peers, (std::vector<std::string>{"x", "y"}));
}

TEST(ConfigTest, BadFlagValueNamesTheFlag) {
  Cfg c;
  Schema s;
  Bind(s, c);
  CLI::App app;
  s.AddFlags(app);
  const char* argv[] = {"prog", "--ratio", "lots"};
  app.parse(3, const_cast<char**>(argv));
  auto st = s.Finish("");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--ratio"), std::string::npos) << st;
}

TEST(ConfigTest, MissingFileIsNotFound) {
  Cfg c;
  Schema s;
  Bind(s, c);
  auto st = s.LoadYamlFile("/nonexistent/prfaas.yaml");
  EXPECT_EQ(st.code(), StatusCode::kNotFound);
  EXPECT_NE(st.message().find("/nonexistent/prfaas.yaml"), std::string::npos);
}

TEST(ConfigTest, ToYamlRoundTrips) {
  Cfg c;
  c.port = 1234;
  c.peers = {"p"};
  Schema s;
  Bind(s, c);
  std::string y = s.ToYaml();
  Cfg d;
  Schema s2;
  Bind(s2, d);
  ASSERT_TRUE(s2.LoadYamlString(y).ok()) << y;
  EXPECT_EQ(d.port, 1234);
  EXPECT_EQ(d.peers, c.peers);
}

}  // namespace
}  // namespace prfaas::config
