// Topology parsing of `prfaas up`: defaults, overrides and errors that name the key and line.
#include <gtest/gtest.h>

#include "apps/up/up.h"

namespace prfaas::up {
namespace {

TEST(UpTopologyTest, DefaultIsPrfaasPlusPd) {
  Topology t = DefaultTopology();
  ASSERT_EQ(t.clusters.size(), 2u);
  EXPECT_EQ(t.clusters[0].kind, "prfaas");
  ASSERT_EQ(t.clusters[0].workers.size(), 1u);
  EXPECT_EQ(t.clusters[0].workers[0].role, "prefill");
  EXPECT_EQ(t.clusters[1].kind, "pd");
  ASSERT_EQ(t.clusters[1].workers.size(), 2u);
  EXPECT_EQ(t.clusters[1].workers[1].role, "decode");
  EXPECT_EQ(t.port, 8000);
  EXPECT_EQ(t.model, "models/kjv-tiny");
}

TEST(UpTopologyTest, ParsesEveryKey) {
  auto t = ParseTopology(R"(
model: tiny
port: 9000
policy: round-robin
threshold_tokens: 1024
links: ["a:b:25"]
router_args: ["--log.level", "debug"]
clusters:
  - name: a
    kind: prfaas
    workers: [prefill, prefill]
  - name: b
    kind: pd
    workers:
      - both
      - role: decode
        args: ["--kv-blocks", "64"]
)",
                         "t.yaml");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->model, "tiny");
  EXPECT_EQ(t->port, 9000);
  EXPECT_EQ(t->policy, "round-robin");
  EXPECT_EQ(t->threshold_tokens, 1024);
  EXPECT_EQ(t->links, std::vector<std::string>{"a:b:25"});
  ASSERT_EQ(t->clusters.size(), 2u);
  EXPECT_EQ(t->clusters[0].workers.size(), 2u);
  EXPECT_EQ(t->clusters[1].workers[0].role, "both");
  EXPECT_EQ(t->clusters[1].workers[1].extra_args, (std::vector<std::string>{"--kv-blocks", "64"}));
}

TEST(UpTopologyTest, ErrorsNameKeyAndLine) {
  auto bad_key = ParseTopology("model: tiny\nprot: 1\n", "t.yaml");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("t.yaml:2"), std::string::npos) << bad_key.status();
  EXPECT_NE(bad_key.status().message().find("'prot'"), std::string::npos);

  auto bad_role = ParseTopology("clusters:\n  - name: a\n    kind: pd\n    workers: [cook]\n", "t");
  ASSERT_FALSE(bad_role.ok());
  EXPECT_NE(bad_role.status().message().find("'cook'"), std::string::npos) << bad_role.status();

  auto bad_kind = ParseTopology("clusters:\n  - name: a\n    kind: cloud\n", "t");
  ASSERT_FALSE(bad_kind.ok());
  EXPECT_NE(bad_kind.status().message().find("'cloud'"), std::string::npos);

  auto bad_type = ParseTopology("port: eighty\n", "t");
  EXPECT_FALSE(bad_type.ok());
  auto not_yaml = ParseTopology("clusters: [\n", "t");
  EXPECT_FALSE(not_yaml.ok());
}

}  // namespace
}  // namespace prfaas::up
