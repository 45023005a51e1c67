#include "router/policy/policy.h"

#include <gtest/gtest.h>

#include <random>

#include <nlohmann/json.hpp>

#include "router/policy/placement.h"
#include "router/state/cache_index.h"

namespace prfaas::router {
namespace {

using std::chrono::milliseconds;
constexpr uint32_t kBlock = 64;

// Hand-built topology: cluster 0 "prfaas-x" (workers 0, 1: prefill), cluster 1 "pd-a"
// (workers 2, 3: prefill; 4, 5: decode, batch cap 20), link 0 -> 1 at 100 Gbps.
struct Fixture {
  CacheIndex cache;
  ClusterState state;
  std::vector<uint64_t> hashes;

  Fixture() {
    state.clusters = {{"prfaas-x", ClusterKind::kPrfaas}, {"pd-a", ClusterKind::kPd}};
    auto worker = [](std::string id, ClusterIndex c, WorkerRole role) {
      WorkerView w;
      w.id = std::move(id);
      w.cluster = c;
      w.role = role;
      w.max_batch = 20;
      w.free_kv_bytes = 64ULL << 30;
      w.kv_capacity_bytes = 64ULL << 30;
      return w;
    };
    state.workers = {worker("prfaas-x/p0", 0, WorkerRole::kPrefill),
                     worker("prfaas-x/p1", 0, WorkerRole::kPrefill),
                     worker("pd-a/p0", 1, WorkerRole::kPrefill),
                     worker("pd-a/p1", 1, WorkerRole::kPrefill),
                     worker("pd-a/d0", 1, WorkerRole::kDecode),
                     worker("pd-a/d1", 1, WorkerRole::kDecode)};
    LinkView link;
    link.src = 0;
    link.dst = 1;
    link.nominal_bps = 100e9;
    state.links = {link};
    state.model.block_tokens = kBlock;
    state.model.kv_bytes_per_token = 1024;
    state.cache = &cache;
  }

  // A request of `tokens` tokens with its own hash chain.
  RequestInfo Request(uint32_t tokens, uint64_t chain_id = 1) {
    hashes.clear();
    for (uint32_t i = 0; i < tokens / kBlock; ++i) hashes.push_back(chain_id * 1000003ULL + i);
    RequestInfo r;
    r.request_id = chain_id;
    r.prompt_tokens = tokens;
    r.expected_output_tokens = 128;
    r.block_hashes = hashes;
    return r;
  }

  // Caches the first `tokens` of the current chain on `w`, with a state checkpoint every
  // `ckpt_tokens` (0 = none).
  void Cache(WorkerIndex w, uint32_t tokens, uint32_t ckpt_tokens) {
    const size_t n = tokens / kBlock;
    cache.AddBlocks(w, std::span(hashes).first(n));
    if (ckpt_tokens == 0) return;
    for (size_t i = ckpt_tokens / kBlock; i <= n; i += ckpt_tokens / kBlock) {
      cache.AddCheckpoints(w, std::span(hashes).subspan(i - 1, 1));
    }
  }
};

std::unique_ptr<Policy> Make(std::string_view name, uint32_t threshold = 1000,
                             PlacementMode mode = PlacementMode::kScarce) {
  PolicyConfig config;
  config.threshold.base_threshold = threshold;
  config.threshold.min_threshold = 1;
  config.threshold.placement = mode;
  auto p = MakePolicy(name, config);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(p).value();
}

TEST(PrfaasPolicyTest, OffloadsIffUncachedLengthExceedsThreshold) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  Decision d = policy->Route(f.Request(2000), f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas);
  EXPECT_EQ(d.reason, Reason::kLongUncached);
  EXPECT_EQ(f.state.workers[d.prefill_worker].cluster, 0u);
  EXPECT_EQ(d.threshold, 1000u);
  EXPECT_EQ(d.uncached_tokens, 2000u);

  d = policy->Route(f.Request(1000, 2), f.state, milliseconds(1));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.reason, Reason::kShortUncached);
  EXPECT_EQ(d.prefill_cluster, 1u);
  EXPECT_EQ(d.decode_cluster, 1u);
}

TEST(PrfaasPolicyTest, CachedPrefixKeepsLongPromptLocal) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  RequestInfo r = f.Request(5000);
  f.Cache(3, 4096, 1024);  // pd-a/p1 holds 4096 tokens, checkpoints every 1024
  Decision d = policy->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.prefill_worker, 3u);
  EXPECT_EQ(d.cached_tokens, 4096u);
  EXPECT_EQ(d.uncached_tokens, 904u);
  EXPECT_EQ(d.decision_uncached_tokens, 904u);
}

TEST(PrfaasPolicyTest, StateCheckpointLimitsTheHybridHit) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  RequestInfo r = f.Request(5000);
  f.Cache(3, 4096, 0);
  f.cache.AddCheckpoints(3, std::span(f.hashes).subspan(1024 / kBlock - 1, 1));  // only at 1024
  Decision d = policy->Route(r, f.state, milliseconds(0));
  // Attention says 4096 cached, but the recurrent state only exists at 1024: 3976 > t.
  EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas);
  EXPECT_EQ(d.decision_uncached_tokens, 3976u);
  ASSERT_EQ(d.cache_by_cluster.size(), 2u);
  EXPECT_EQ(d.cache_by_cluster[1].attention_tokens, 4096u);
  EXPECT_EQ(d.cache_by_cluster[1].effective_tokens, 1024u);
  EXPECT_NE(d.explanation.find("state checkpoint limits reuse"), std::string::npos);
}

TEST(PrfaasPolicyTest, LoadGuardOverridesCacheAffinity) {
  Fixture f;
  auto policy = Make("prfaas", 100000);  // keep everything local
  RequestInfo r = f.Request(5000);
  f.Cache(2, 4096, 1024);
  f.state.workers[2].prefill_backlog_tokens = 1000;  // modest: the hit still wins
  Decision d = policy->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.prefill_worker, 2u);
  EXPECT_EQ(d.reason, Reason::kShortUncached);

  f.state.workers[2].prefill_backlog_tokens = 200000;  // far above pd-a/p1 (0)
  d = policy->Route(r, f.state, milliseconds(1));
  EXPECT_EQ(d.prefill_worker, 3u);
  EXPECT_EQ(d.cached_tokens, 0u);
}

TEST(PrfaasPolicyTest, DecodeByFreeCapacityAndBatchLoad) {
  Fixture f;
  auto policy = Make("prfaas");
  f.state.workers[4].running = 10;
  f.state.workers[5].running = 2;
  EXPECT_EQ(policy->Route(f.Request(100), f.state, milliseconds(0)).decode_worker, 5u);

  f.state.workers[5].running = 20;  // full batch
  EXPECT_EQ(policy->Route(f.Request(100), f.state, milliseconds(1)).decode_worker, 4u);

  f.state.workers[5].running = 0;
  f.state.workers[5].state_slots_known = true;
  f.state.workers[5].free_state_slots = 0;  // no recurrent-state slot
  EXPECT_EQ(policy->Route(f.Request(100), f.state, milliseconds(2)).decode_worker, 4u);

  f.state.workers[4].free_kv_bytes = 1000;  // not enough KV for 100+128 tokens of 1 KiB
  const Decision d = policy->Route(f.Request(100), f.state, milliseconds(3));
  EXPECT_FALSE(d.ok());
  EXPECT_EQ(d.reason, Reason::kNoDecodeWorker);
}

TEST(PrfaasPolicyTest, HomeClusterRestrictsDecode) {
  Fixture f;
  f.state.clusters.push_back({"pd-b", ClusterKind::kPd});
  WorkerView w = f.state.workers[4];
  w.id = "pd-b/d0";
  w.cluster = 2;
  f.state.workers.push_back(w);
  f.state.workers[4].running = f.state.workers[5].running = 5;
  auto policy = Make("prfaas");
  RequestInfo r = f.Request(100);
  EXPECT_EQ(policy->Route(r, f.state, milliseconds(0)).decode_worker, 6u);
  r.home_cluster = 1;
  EXPECT_EQ(policy->Route(r, f.state, milliseconds(1)).decode_cluster, 1u);
}

TEST(PrfaasPolicyTest, FallsBackLocallyWhenRemoteUnavailable) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  f.state.workers[0].healthy = false;
  f.state.workers[1].draining = true;
  Decision d = policy->Route(f.Request(5000), f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.reason, Reason::kRemoteUnavailable);
  EXPECT_NE(d.explanation.find("local fallback"), std::string::npos);
}

TEST(PrfaasPolicyTest, LinkDownDisablesOffload) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  f.state.links[0].up = false;
  Decision d = policy->Route(f.Request(5000), f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.reason, Reason::kLinkDown);
  EXPECT_EQ(d.threshold, kNoOffload);

  f.state.links[0].up = true;  // recovers on the next tick
  d = policy->Route(f.Request(5000), f.state, milliseconds(1000));
  EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas);
}

TEST(PrfaasPolicyTest, UsesPrfaasWhenNoLocalPrefillWorker) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  f.state.workers[2].draining = true;
  f.state.workers[3].healthy = false;
  const Decision d = policy->Route(f.Request(500), f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas);
  EXPECT_EQ(d.reason, Reason::kLocalUnavailable);
}

TEST(PrfaasPolicyTest, ColocatedWhenOnlyABothWorkerIsLeft) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  f.state.workers[2].healthy = f.state.workers[3].healthy = false;
  f.state.workers[0].healthy = f.state.workers[1].healthy = false;
  f.state.workers[5].healthy = false;
  f.state.workers[4].role = WorkerRole::kBoth;
  const Decision d = policy->Route(f.Request(500), f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kColocated);
  EXPECT_EQ(d.prefill_worker, 4u);
  EXPECT_EQ(d.decode_worker, 4u);

  f.state.workers[4].role = WorkerRole::kDecode;
  const Decision none = policy->Route(f.Request(500), f.state, milliseconds(1));
  EXPECT_EQ(none.reason, Reason::kNoPrefillWorker);
  EXPECT_FALSE(none.ok());
}

TEST(PrfaasPolicyTest, ScarceJudgesEachClusterAbundantUsesGlobalBestPrefix) {
  Fixture f;
  RequestInfo r = f.Request(10000);
  f.Cache(0, 8192, 1024);  // only the PrfaaS side holds the prefix

  auto scarce = Make("prfaas", 5000, PlacementMode::kScarce);
  Decision d = scarce->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.placement, PlacementMode::kScarce);
  EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas);  // local uncached 10000 > 5000
  EXPECT_EQ(d.prefill_worker, 0u);                // cache-affine inside PrfaaS
  EXPECT_EQ(d.uncached_tokens, 1808u);
  EXPECT_EQ(d.cache_source_worker, kNoWorker);

  auto abundant = Make("prfaas", 5000, PlacementMode::kAbundant);
  d = abundant->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.placement, PlacementMode::kAbundant);
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);  // global uncached 1808 <= 5000
  EXPECT_EQ(d.cache_source_worker, 0u);      // pull the prefix across clusters
  EXPECT_EQ(d.cache_transfer_tokens, 8192u);
  EXPECT_EQ(d.uncached_tokens, 1808u);
}

TEST(PrfaasPolicyTest, ExplainTextNamesTheInputsOfTheDecision) {
  Fixture f;
  auto policy = Make("prfaas", 1000);
  const Decision d = policy->Route(f.Request(2000), f.state, milliseconds(0));
  EXPECT_NE(d.explanation.find("prompt 2000 tokens"), std::string::npos) << d.explanation;
  EXPECT_NE(d.explanation.find("uncached 2000 > t=1000: offload"), std::string::npos);
  EXPECT_NE(d.explanation.find("Prefill on prfaas-x/p0"), std::string::npos);
  EXPECT_NE(d.explanation.find("Decode on pd-a/d0"), std::string::npos);
  EXPECT_NE(d.explanation.find("Link prfaas-x->pd-a"), std::string::npos);
  const std::string line = DescribeDecision(d, f.state);
  EXPECT_NE(line.find("path=prfaas reason=long_uncached prefill=prfaas-x/p0@prfaas-x"),
            std::string::npos)
      << line;

  const auto j = nlohmann::json::parse(DecisionJson(d, f.state));
  EXPECT_EQ(j["path"], "prfaas");
  EXPECT_EQ(j["reason"], "long_uncached");
  EXPECT_EQ(j["prefill_worker"], "prfaas-x/p0");
  EXPECT_EQ(j["decode_cluster"], "pd-a");
  EXPECT_EQ(j["threshold_tokens"], 1000);
  EXPECT_EQ(j["uncached_tokens"], 2000);
  EXPECT_TRUE(j["cache_source_worker"].is_null());
  EXPECT_EQ(j["cache_by_cluster"].size(), 2u);
  EXPECT_EQ(j["explanation"], d.explanation);
}

TEST(PrfaasPolicyTest, ControllerRaisesThresholdUnderLinkPressure) {
  Fixture f;
  auto policy = Make("prfaas", 4000);
  f.state.links[0].utilisation = 0.95;
  // 4000 * 1.25 = 5000 after the first tick: a 4500-token prompt now stays local.
  const Decision d = policy->Route(f.Request(4500), f.state, milliseconds(0));
  EXPECT_EQ(d.threshold, 5000u);
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_NE(d.explanation.find("raise: utilisation 0.95"), std::string::npos) << d.explanation;
}

TEST(PolicyFactoryTest, BuildsEveryNamedPolicyAndRejectsUnknown) {
  for (std::string_view name : PolicyNames()) {
    auto p = MakePolicy(name);
    ASSERT_TRUE(p.ok()) << name;
    EXPECT_EQ((*p)->name(), name);
    EXPECT_EQ((*p)->threshold_controller() != nullptr, name == "prfaas");
  }
  auto bad = MakePolicy("fastest");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("round-robin"), std::string::npos);
}

TEST(BaselineTest, RoundRobinCyclesPrefillAndDecode) {
  Fixture f;
  auto policy = Make("round-robin");
  std::vector<WorkerIndex> prefill, decode;
  for (int i = 0; i < 5; ++i) {
    const Decision d = policy->Route(f.Request(100), f.state, milliseconds(i));
    EXPECT_EQ(d.reason, Reason::kRoundRobin);
    prefill.push_back(d.prefill_worker);
    decode.push_back(d.decode_worker);
  }
  EXPECT_EQ(prefill, (std::vector<WorkerIndex>{0, 1, 2, 3, 0}));
  EXPECT_EQ(decode, (std::vector<WorkerIndex>{4, 5, 4, 5, 4}));
}

TEST(BaselineTest, LeastLoadedPicksShortestQueue) {
  Fixture f;
  auto policy = Make("least-loaded");
  for (WorkerIndex w = 0; w < 4; ++w) f.state.workers[w].queue_depth = 5;
  f.state.workers[3].queue_depth = 1;
  f.state.workers[4].running = 7;
  const Decision d = policy->Route(f.Request(100000), f.state, milliseconds(0));
  EXPECT_EQ(d.prefill_worker, 3u);
  EXPECT_EQ(d.decode_worker, 5u);
  EXPECT_EQ(d.reason, Reason::kLeastLoaded);
  EXPECT_EQ(d.threshold, kNoOffload);
}

TEST(BaselineTest, CacheAwareFollowsCacheUnlessImbalanced) {
  Fixture f;
  auto policy = Make("cache-aware");
  RequestInfo r = f.Request(4096);
  f.Cache(1, 2048, 512);  // ratio 0.5 > 0.3
  f.state.workers[1].queue_depth = 3;
  Decision d = policy->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.prefill_worker, 1u);
  EXPECT_EQ(d.reason, Reason::kCacheAffinity);

  f.state.workers[1].queue_depth = 100;  // 100 - 0 > 64 and 100 > 1.5 * 0
  d = policy->Route(r, f.state, milliseconds(1));
  EXPECT_EQ(d.reason, Reason::kLoadImbalance);
  EXPECT_EQ(d.prefill_worker, 0u);

  f.state.workers[1].queue_depth = 0;
  RequestInfo other = f.Request(4096, 99);  // nothing cached: ratio 0
  f.state.workers[0].queue_depth = 2;
  d = policy->Route(other, f.state, milliseconds(2));
  EXPECT_EQ(d.reason, Reason::kLeastLoaded);
  EXPECT_EQ(d.prefill_worker, 1u);
}

TEST(BaselineTest, KvCostWeighsBacklogAgainstOverlap) {
  Fixture f;
  auto policy = Make("kv-cost");
  RequestInfo r = f.Request(4096);
  f.Cache(2, 4096, 64);
  for (WorkerIndex w = 0; w < 4; ++w) f.state.workers[w].prefill_backlog_tokens = 1024;
  Decision d = policy->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.prefill_worker, 2u);  // overlap credit
  EXPECT_EQ(d.reason, Reason::kKvCost);

  f.state.workers[2].prefill_backlog_tokens = 64 * 1024;  // backlog outweighs the overlap
  d = policy->Route(r, f.state, milliseconds(1));
  EXPECT_EQ(d.prefill_worker, 0u);

  f.state.workers[4].free_kv_bytes = 1ULL << 30;  // less free KV = more blocks in use
  EXPECT_EQ(policy->Route(r, f.state, milliseconds(2)).decode_worker, 5u);
}

TEST(BaselineTest, NaiveHeteroSendsEveryPrefillRemote) {
  Fixture f;
  auto policy = Make("naive-hetero");
  for (uint32_t len : {100u, 5000u, 100000u}) {
    const Decision d = policy->Route(f.Request(len), f.state, milliseconds(0));
    EXPECT_EQ(d.path, PrefillPath::kRemotePrfaas) << len;
    EXPECT_EQ(d.reason, Reason::kAllRemote);
  }
  f.state.links[0].up = false;
  const Decision d = policy->Route(f.Request(100), f.state, milliseconds(1));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.reason, Reason::kRemoteUnavailable);
}

TEST(BaselineTest, HomogeneousPdNeverOffloads) {
  Fixture f;
  auto policy = Make("homogeneous-pd");
  RequestInfo r = f.Request(100000);
  f.Cache(3, 4096, 1024);
  const Decision d = policy->Route(r, f.state, milliseconds(0));
  EXPECT_EQ(d.path, PrefillPath::kLocalPd);
  EXPECT_EQ(d.prefill_worker, 3u);
  EXPECT_EQ(d.reason, Reason::kHomogeneous);
}

// Two instances fed the same sequence of (request, state, time) must decide identically.
TEST(PolicyDeterminismTest, SameInputsSameDecisions) {
  const uint32_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (std::string_view name : PolicyNames()) {
    std::mt19937 rng(seed);
    Fixture f;
    auto a = Make(name, 3000), b = Make(name, 3000);
    for (int i = 0; i < 200; ++i) {
      for (WorkerView& w : f.state.workers) {
        w.queue_depth = rng() % 6;
        w.prefill_backlog_tokens = rng() % 50000;
        w.running = rng() % 20;
      }
      f.state.links[0].utilisation = (rng() % 100) / 100.0;
      RequestInfo r = f.Request(64 + rng() % 20000, 1 + rng() % 4);
      if (rng() % 3 == 0) f.Cache(rng() % 6, r.prompt_tokens / 2, 256);
      const auto now = milliseconds(i * 50);
      const Decision da = a->Route(r, f.state, now), db = b->Route(r, f.state, now);
      ASSERT_EQ(DescribeDecision(da, f.state), DescribeDecision(db, f.state)) << name << " " << i;
      ASSERT_TRUE(da.ok()) << name;
    }
  }
}

}  // namespace
}  // namespace prfaas::router
