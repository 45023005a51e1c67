// WorkerDirectory: specs, registration, heartbeats, failure cooldown, cache events, charging;
// prfaasctl table rendering.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/block_hash.h"
#include "prfaas/v1/router.pb.h"
#include "router/ctl/ctl.h"
#include "router/registry/directory.h"

namespace prfaas::router {
namespace {

using std::chrono::milliseconds;

TEST(WorkerSpec, ParsesAndRejects) {
  auto w = ParseWorkerSpec("id=a/w0,cluster=a,kind=prfaas,role=prefill,grpc=h:1");
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->id, "a/w0");
  EXPECT_EQ(w->cluster_kind, ClusterKind::kPrfaas);
  EXPECT_EQ(w->role, WorkerRole::kPrefill);
  EXPECT_EQ(w->grpc_endpoint, "h:1");
  EXPECT_TRUE(w->is_static);
  EXPECT_FALSE(ParseWorkerSpec("id=a,cluster=b").ok());
  EXPECT_FALSE(ParseWorkerSpec("id=a,cluster=b,grpc=h:1,role=chef").ok());
  EXPECT_FALSE(ParseWorkerSpec("id=a,cluster=b,grpc=h:1,colour=red").ok());
  EXPECT_FALSE(ParseWorkerSpec("id=a,cluster=b,grpc").ok());

  auto l = ParseLinkSpec("x:y:12.5");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->src, "x");
  EXPECT_EQ(l->dst, "y");
  EXPECT_DOUBLE_EQ(l->gbps, 12.5);
  EXPECT_FALSE(ParseLinkSpec("x:y").ok());
  EXPECT_FALSE(ParseLinkSpec("x:y:fast").ok());
  EXPECT_FALSE(ParseLinkSpec(":y:1").ok());
}

class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WorkerDirectory::Options o;
    o.block_size = 4;
    o.hybrid = false;
    o.heartbeat_timeout = milliseconds(100);
    o.failure_cooldown = milliseconds(50);
    o.policy = "least-loaded";
    dir_ = WorkerDirectory::Create(o).value();
  }
  WorkerIndex Add(const std::string& id, WorkerRole role, bool is_static = false) {
    WorkerInfo info;
    info.id = id;
    info.cluster = "pd";
    info.role = role;
    info.grpc_endpoint = "127.0.0.1:1";
    info.is_static = is_static;
    return *dir_->Register(info, t0_);
  }
  bool Healthy(WorkerIndex w) {
    bool h = false;
    dir_->Inspect(
        [&](const ClusterState& s, const CacheIndex&, Policy&) { h = s.workers[w].healthy; });
    return h;
  }
  std::unique_ptr<WorkerDirectory> dir_;
  TimePoint t0_{std::chrono::seconds(1000)};
};

TEST_F(DirectoryTest, UnknownPolicyIsRejected) {
  WorkerDirectory::Options o;
  o.policy = "telepathy";
  EXPECT_FALSE(WorkerDirectory::Create(o).ok());
}

TEST_F(DirectoryTest, HeartbeatExpiryAndRecovery) {
  WorkerIndex w = Add("w", WorkerRole::kBoth);
  WorkerIndex s = Add("s", WorkerRole::kBoth, /*is_static=*/true);
  dir_->Refresh(t0_ + milliseconds(50));
  EXPECT_TRUE(Healthy(w));
  dir_->Refresh(t0_ + milliseconds(150));
  EXPECT_FALSE(Healthy(w));
  EXPECT_TRUE(Healthy(s));  // static workers have no heartbeat
  v1::LoadReport load;
  load.set_queue_depth(3);
  ASSERT_TRUE(dir_->ApplyLoad("w", load, t0_ + milliseconds(160)).ok());
  EXPECT_TRUE(Healthy(w));
  EXPECT_FALSE(dir_->ApplyLoad("ghost", load, t0_).ok());
}

TEST_F(DirectoryTest, FailureCooldownExcludesWorker) {
  WorkerIndex a = Add("a", WorkerRole::kBoth, true);
  WorkerIndex b = Add("b", WorkerRole::kBoth, true);
  RequestInfo req;
  req.prompt_tokens = 10;
  dir_->MarkFailed(a, t0_, "test");
  Decision d = dir_->Route(req, {}, t0_ + milliseconds(10), false);
  ASSERT_TRUE(d.ok()) << d.explanation;
  EXPECT_EQ(d.prefill_worker, b);
  EXPECT_EQ(d.decode_worker, b);
  dir_->Refresh(t0_ + milliseconds(60));
  EXPECT_TRUE(Healthy(a));
  // Exclusion applies to one call only.
  Decision e = dir_->Route(req, {b}, t0_ + milliseconds(60), false);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e.prefill_worker, a);
  EXPECT_TRUE(Healthy(b));
}

TEST_F(DirectoryTest, ChargingSpreadsBurstsUntilReleased) {
  WorkerIndex a = Add("a", WorkerRole::kPrefill, true);
  WorkerIndex b = Add("b", WorkerRole::kPrefill, true);
  Add("d", WorkerRole::kDecode, true);
  RequestInfo req;
  req.prompt_tokens = 100;
  Decision d1 = dir_->Route(req, {}, t0_, true);
  Decision d2 = dir_->Route(req, {}, t0_, true);
  ASSERT_TRUE(d1.ok() && d2.ok());
  EXPECT_NE(d1.prefill_worker, d2.prefill_worker);
  dir_->ReleasePrefill(a, 100);
  dir_->ReleasePrefill(b, 100);
  dir_->Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
    EXPECT_EQ(s.workers[a].queue_depth, 0u);
    EXPECT_EQ(s.workers[b].prefill_backlog_tokens, 0u);
  });
}

TEST_F(DirectoryTest, CacheEventsReachTheIndex) {
  WorkerIndex w = Add("w", WorkerRole::kBoth);
  std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6, 7, 8};
  auto hashes = ChainedBlockHashes(tokens, 4);
  v1::CacheEvent ev;
  ev.set_kind(v1::CacheEvent::KIND_ATTN_STORED);
  for (auto h : hashes) ev.add_block_hashes(h);
  ASSERT_TRUE(dir_->ApplyCache("w", ev).ok());
  dir_->Inspect([&](const ClusterState&, const CacheIndex& cache, Policy&) {
    auto hits = cache.Match(hashes);
    ASSERT_EQ(hits.size(), 1u);
    EXPECT_EQ(hits[0].worker, w);
    EXPECT_EQ(hits[0].attention_blocks, 2u);
  });
  ev.set_kind(v1::CacheEvent::KIND_CLEARED);
  ASSERT_TRUE(dir_->ApplyCache("w", ev).ok());
  dir_->Inspect([&](const ClusterState&, const CacheIndex& cache, Policy&) {
    EXPECT_TRUE(cache.Match(hashes).empty());
  });
}

// The cache-index counters of docs/metrics.md: lookups and hits per cluster on routed requests
// (not on explain-style uncharged routes), and stored/evicted block entries.
TEST(DirectoryMetrics, CacheLookupsHitsAndEvents) {
  metrics::Registry reg;
  WorkerDirectory::Options o;
  o.block_size = 4;
  o.hybrid = true;
  o.policy = "least-loaded";
  o.registry = &reg;
  auto dir = WorkerDirectory::Create(o).value();
  for (const char* spec : {"id=a/w,cluster=a,kind=pd,role=both,grpc=127.0.0.1:1",
                           "id=b/w,cluster=b,kind=pd,role=both,grpc=127.0.0.1:2"}) {
    ASSERT_TRUE(dir->Register(ParseWorkerSpec(spec).value(), TimePoint{}).ok());
  }
  std::vector<int32_t> tokens(14);
  for (int i = 0; i < 14; ++i) tokens[i] = 100 + i;
  const auto hashes = ChainedBlockHashes(tokens, 4);  // 3 full blocks
  ASSERT_EQ(hashes.size(), 3u);
  v1::CacheEvent ev;
  ev.set_kind(v1::CacheEvent::KIND_ATTN_STORED);
  for (auto h : hashes) ev.add_block_hashes(h);
  ASSERT_TRUE(dir->ApplyCache("a/w", ev).ok());
  v1::CacheEvent ck;
  ck.set_kind(v1::CacheEvent::KIND_CHECKPOINT_STORED);
  ck.add_block_hashes(hashes[1]);  // state checkpoint after 2 blocks
  ASSERT_TRUE(dir->ApplyCache("a/w", ck).ok());

  RequestInfo req;
  req.prompt_tokens = 14;
  req.block_hashes = hashes;
  dir->Route(req, {}, TimePoint{}, /*charge=*/false);  // explain: not counted
  dir->Route(req, {}, TimePoint{}, /*charge=*/true);
  const std::string text = reg.Render();
  auto has = [&](const std::string& line) {
    EXPECT_NE(text.find(line + "\n"), std::string::npos) << line << "\n" << text;
  };
  has(R"(prfaas_router_cache_lookup_tokens_total{target_cluster="a"} 14)");
  has(R"(prfaas_router_cache_lookup_tokens_total{target_cluster="b"} 14)");
  has(R"(prfaas_router_cache_hit_tokens_total{target_cluster="a",kind="attention"} 12)");
  has(R"(prfaas_router_cache_hit_tokens_total{target_cluster="a",kind="checkpoint"} 8)");
  has(R"(prfaas_router_cache_hit_tokens_total{target_cluster="b",kind="attention"} 0)");
  has(R"(prfaas_router_cache_events_total{target_cluster="a",event="stored"} 4)");

  v1::CacheEvent clear;
  clear.set_kind(v1::CacheEvent::KIND_CLEARED);
  ASSERT_TRUE(dir->ApplyCache("a/w", clear).ok());
  EXPECT_NE(reg.Render().find(
                R"(prfaas_router_cache_events_total{target_cluster="a",event="evicted"} 4)"),
            std::string::npos);
  EXPECT_EQ(dir->TakeUncachedLengths().size(), 1u);  // only the charged route
  EXPECT_TRUE(dir->TakeUncachedLengths().empty());
}

TEST_F(DirectoryTest, DecodeOnlyRouteAndDrain) {
  Add("p", WorkerRole::kPrefill, true);
  WorkerIndex d = Add("d", WorkerRole::kDecode, true);
  RequestInfo req;
  req.prompt_tokens = 5;
  Decision x = dir_->RouteDecodeOnly(req, {}, t0_);
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(x.decode_worker, d);
  EXPECT_EQ(x.path, PrefillPath::kColocated);
  ASSERT_TRUE(dir_->SetDraining("d", true).ok());
  EXPECT_FALSE(dir_->RouteDecodeOnly(req, {}, t0_).ok());
  EXPECT_FALSE(dir_->SetDraining("zz", true).ok());
}

TEST(CtlRender, TablesAndObjects) {
  nlohmann::json rows = {
      {"workers", {{{"id", "a"}, {"queue", 1}}, {{"id", "long-name"}, {"queue", 22}}}}};
  std::string t = RenderAdminReply(rows);
  EXPECT_EQ(t, "ID         QUEUE\na          1\nlong-name  22\n");
  std::string o = RenderAdminReply({{"policy", "prfaas"}, {"threshold", {{"mode", "auto"}}}});
  EXPECT_NE(o.find("policy:"), std::string::npos);
  EXPECT_NE(o.find("  mode: auto"), std::string::npos) << o;
}

}  // namespace
}  // namespace prfaas::router
