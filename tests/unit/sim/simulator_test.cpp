#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "router/policy/policy.h"
#include "sim/report.h"
#include "sim/runner.h"
#include "sim/simulator.h"
#include "sim/topology.h"

namespace prfaas::sim {
namespace {

const char* kHomogeneous = R"(
name: homo
model: {preset: qwen3-next-80b}
clusters:
  - {name: pd, kind: pd, hardware: H100, workers: 2, gpus_per_worker: 2, prefill_workers: 1,
     decode_workers: 1, max_decode_batch: 4, prefill_cache_blocks: 1000}
policy: {name: homogeneous-pd, controller_period_s: 0}
)";

const char* kPrfaas = R"(
name: prfaas
model: {preset: qwen3-next-80b}
clusters:
  - {name: remote, kind: prfaas, hardware: H200, workers: 2, gpus_per_worker: 2, prefill_cache_blocks: 1000}
  - {name: pd, kind: pd, hardware: H20, workers: 3, gpus_per_worker: 2, prefill_workers: 1,
     decode_workers: 2, max_decode_batch: 8, prefill_cache_blocks: 1000}
links:
  - {from: remote, to: pd, gbps: 10, rtt_ms: 10}
policy: {name: prfaas, threshold: 4096, controller_period_s: 0.5}
)";

Topology Topo(const char* yaml) {
  auto t = ParseTopology(yaml, "test.yaml", "");
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

Trace OneRequest(int64_t input, int64_t output, double at = 1.0) {
  Trace t;
  t.block_tokens = 64;
  TraceRequest r;
  r.arrival_s = at;
  r.input_tokens = input;
  r.output_tokens = output;
  t.requests.push_back(r);
  return t;
}

TEST(Simulator, SingleLocalRequestTimeline) {
  Topology topo = Topo(kHomogeneous);
  Trace tr = OneRequest(8000, 11);
  auto res = RunSimulation(topo, tr, {});
  ASSERT_TRUE(res.ok()) << res.status();
  ASSERT_EQ(res->records.size(), 1u);
  const RequestRecord& r = res->records[0];
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.path, static_cast<uint8_t>(router::PrefillPath::kLocalPd));
  auto cost = MakeCostModel(topo, topo.clusters[0]);
  ASSERT_TRUE(cost.ok());
  PrefillItem it{0, 8000};
  double prefill = (*cost)->PrefillSeconds({&it, 1});
  EXPECT_DOUBLE_EQ(r.prefill_start_s, 1.0);
  EXPECT_NEAR(r.prefill_end_s - r.prefill_start_s, prefill, 1e-9);
  EXPECT_NEAR(r.ttft(), prefill, 1e-9);
  // KV + state over the intra-cluster link (800 Gbps) after the prefill, then rtt/2 (10 µs).
  double bytes = topo.model.TransferBytes(8000);
  EXPECT_DOUBLE_EQ(r.transfer_bytes, bytes);
  EXPECT_GE(r.transfer_end_s, r.prefill_end_s);
  EXPECT_NEAR(r.transfer_end_s, r.prefill_end_s + 10e-6, 1e-4);
  EXPECT_DOUBLE_EQ(r.decode_start_s, r.transfer_end_s);
  // 10 decode steps at batch 1 with context growing from 8001 (midpoint of the segment).
  double tau = (*cost)->DecodeStepSeconds(1, 8001 + 5);
  EXPECT_NEAR(r.finish_s - r.decode_start_s, 10 * tau, 1e-9);
  EXPECT_NEAR(r.tpot(), (r.finish_s - r.first_token_s) / 10, 1e-12);
}

TEST(Simulator, RemoteRequestPaysRttAndSharesTheLink) {
  Topology topo = Topo(kPrfaas);
  Trace tr = OneRequest(32000, 5);
  auto res = RunSimulation(topo, tr, {});
  ASSERT_TRUE(res.ok()) << res.status();
  const RequestRecord& r = res->records[0];
  ASSERT_TRUE(r.done());
  EXPECT_EQ(r.path, static_cast<uint8_t>(router::PrefillPath::kRemotePrfaas));
  EXPECT_NEAR(r.prefill_enqueue_s, 1.005, 1e-9);
  EXPECT_NEAR(r.first_token_s, r.prefill_end_s + 0.005, 1e-9);
  // The transfer overlaps prefill but cannot finish before the last byte is produced, nor before
  // the link could carry all bytes at 10 Gbps.
  double wire = r.transfer_bytes * 8 / 10e9;
  EXPECT_GE(r.transfer_end_s, r.prefill_end_s + 0.005 - 1e-9);
  EXPECT_GE(r.transfer_end_s, r.prefill_start_s + wire + 0.005 - 1e-9);
  ASSERT_FALSE(res->links.empty());
  EXPECT_NEAR(res->links[0].bytes, r.transfer_bytes, 1.0);

  // A short request stays local.
  Trace s = OneRequest(1000, 5);
  auto res2 = RunSimulation(topo, s, {});
  ASSERT_TRUE(res2.ok());
  EXPECT_EQ(res2->records[0].path, static_cast<uint8_t>(router::PrefillPath::kLocalPd));
}

TEST(Simulator, EventOrderingAndCapacityInvariants) {
  Topology topo = Topo(kPrfaas);
  SyntheticOptions so;
  so.num_requests = 400;
  so.rate_rps = 3;
  so.mu = 8.5;
  so.output_tokens = 64;
  so.seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << so.seed);
  so.sessions = 20;
  so.system_prompt_tokens = 512;
  so.block_tokens = 64;
  auto tr = GenerateSynthetic(so);
  ASSERT_TRUE(tr.ok());
  auto res = RunSimulation(topo, *tr, {});
  ASSERT_TRUE(res.ok()) << res.status();
  std::map<int32_t, std::vector<std::pair<double, int>>> decode_edges;
  std::map<int32_t, std::vector<std::pair<double, double>>> prefill_order;  // enqueue, start
  for (const auto& r : res->records) {
    ASSERT_TRUE(r.done()) << r.id;
    ASSERT_LE(r.arrival_s, r.prefill_enqueue_s);
    ASSERT_LE(r.prefill_enqueue_s, r.prefill_start_s);
    ASSERT_LT(r.prefill_start_s, r.prefill_end_s);
    ASSERT_LE(r.prefill_end_s, r.first_token_s);
    ASSERT_LE(r.prefill_end_s, r.decode_start_s);
    ASSERT_LE(r.transfer_end_s, r.decode_start_s);
    ASSERT_LT(r.decode_start_s, r.finish_s);
    ASSERT_LT(r.cached_tokens, r.input_tokens);
    decode_edges[r.decode_worker].emplace_back(r.decode_start_s, +1);
    decode_edges[r.decode_worker].emplace_back(r.finish_s, -1);
    prefill_order[r.prefill_worker].emplace_back(r.prefill_enqueue_s, r.prefill_start_s);
  }
  // Continuous batching never exceeds max_decode_batch (8).
  for (auto& [w, edges] : decode_edges) {
    std::sort(edges.begin(), edges.end(), [](auto a, auto b) {
      return a.first != b.first ? a.first < b.first : a.second < b.second;
    });
    int cur = 0;
    for (auto [t, d] : edges) {
      cur += d;
      ASSERT_LE(cur, 8) << "worker " << w << " at " << t;
    }
  }
  // Prefill queues are FIFO: a later enqueue never starts earlier.
  for (auto& [w, v] : prefill_order) {
    std::sort(v.begin(), v.end());
    for (size_t i = 1; i < v.size(); ++i) ASSERT_LE(v[i - 1].second, v[i].second) << "worker " << w;
  }
  // Sessions share prefixes, so some prompt tokens are reused.
  EXPECT_GT(res->prefill_hit_tokens, 0);
  EXPECT_FALSE(res->threshold_series.empty());
}

TEST(Simulator, PrefixCacheHitShortensRepeatedPrefill) {
  Topology topo = Topo(kHomogeneous);
  Trace t;
  t.block_tokens = 64;
  for (int k = 0; k < 2; ++k) {
    TraceRequest r;
    r.arrival_s = 1.0 + 100.0 * k;
    r.input_tokens = 64000;
    r.output_tokens = 2;
    for (uint64_t b = 0; b < 1000; ++b) r.block_hashes.push_back(1000 + b);
    t.requests.push_back(r);
  }
  auto res = RunSimulation(topo, t, {});
  ASSERT_TRUE(res.ok());
  const auto& a = res->records[0];
  const auto& b = res->records[1];
  EXPECT_EQ(a.cached_tokens, 0);
  EXPECT_EQ(b.cached_tokens, 63999);  // all but the last token, which must be recomputed
  EXPECT_LT(b.prefill_end_s - b.prefill_start_s, 0.5 * (a.prefill_end_s - a.prefill_start_s));
  Summary s = Summarise(*res, topo.slo);
  EXPECT_NEAR(s.prefill_cache_hit, 63999.0 / 128000.0, 1e-12);
}

TEST(Simulator, BandwidthScheduleSlowsTransfers) {
  std::string yaml = kPrfaas;
  Topology fast = Topo(yaml.c_str());
  Topology slow = fast;
  slow.links[0].schedule.push_back({0.5, 0.5});  // 0.5 Gbps from t = 0.5 s
  Trace tr = OneRequest(60000, 3);
  auto a = RunSimulation(fast, tr, {});
  auto b = RunSimulation(slow, tr, {});
  ASSERT_TRUE(a.ok() && b.ok());
  double xa = a->records[0].transfer_end_s - a->records[0].prefill_end_s;
  double xb = b->records[0].transfer_end_s - b->records[0].prefill_end_s;
  EXPECT_GT(xb, xa + 1.0);
  EXPECT_NEAR(b->records[0].transfer_end_s - b->records[0].prefill_start_s,
              b->records[0].transfer_bytes * 8 / 0.5e9, 1.0);
}

std::string ReadAll(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Simulator, SameSeedSameBytes) {
  Topology topo = Topo(kPrfaas);
  auto dir =
      std::filesystem::temp_directory_path() / ("prfaas_sim_det_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto run = [&](uint64_t seed, const std::string& name) {
    SyntheticOptions so;
    so.num_requests = 300;
    so.rate_rps = 4;
    so.mu = 8.5;
    so.output_tokens = 32;
    so.seed = seed;
    so.sessions = 10;
    so.block_tokens = 64;
    auto tr = GenerateSynthetic(so);
    EXPECT_TRUE(tr.ok());
    auto res = RunSimulation(topo, *tr, {});
    EXPECT_TRUE(res.ok());
    std::string path = (dir / name).string();
    EXPECT_TRUE(WriteRequestsJsonl(*res, path).ok());
    std::string s = ReadAll(path);
    s += SummaryToJson(Summarise(*res, topo.slo)).dump();
    return s;
  };
  uint64_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::string a = run(seed, "a.jsonl"), b = run(seed, "b.jsonl"), c = run(seed + 1, "c.jsonl");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::filesystem::remove_all(dir);
}

// A decode-heavy phase (short prompts, long answers) then a prefill-heavy one (long prompts,
// short answers), Poisson at 1 req/s each, from a fixed seed.
Trace LoadShift(double shift_s, double end_s, uint64_t seed) {
  Trace t;
  t.block_tokens = 64;
  std::mt19937_64 rng(seed);
  std::exponential_distribution<double> gap(1.0);
  std::uniform_int_distribution<int64_t> jitter(0, 999);
  for (double at = gap(rng); at < end_s; at += gap(rng)) {
    TraceRequest r;
    r.arrival_s = at;
    bool decode_heavy = at < shift_s;
    r.input_tokens = (decode_heavy ? 2000 : 40000) + jitter(rng);
    r.output_tokens = decode_heavy ? 1500 : 16;
    t.requests.push_back(r);
  }
  return t;
}

const char* kRebalance = R"(
name: rebalance
model: {preset: qwen3-next-80b}
clusters:
  - {name: remote, kind: prfaas, hardware: H200, workers: 1, gpus_per_worker: 8}
  - {name: pd, kind: pd, hardware: H20, workers: 4, gpus_per_worker: 8, prefill_workers: 2,
     decode_workers: 2, max_decode_batch: 64}
links:
  - {from: remote, to: pd, gbps: 100, rtt_ms: 10}
policy:
  name: prfaas
  threshold: 16384
  controller_period_s: 1
  rebalance: {period_s: 60, min_samples: 30}
)";

TEST(Simulator, LongTimescaleControllerFlipsRolesWithTheLoad) {
  Topology topo = Topo(kRebalance);
  ASSERT_DOUBLE_EQ(topo.policy.rebalance_period_s, 60);
  const double shift = 600, end = 1500;
  Trace tr = LoadShift(shift, end, 7);
  auto res = RunSimulation(topo, tr, {});
  ASSERT_TRUE(res.ok()) << res.status();
  for (const auto& r : res->records) ASSERT_TRUE(r.done()) << r.id;
  ASSERT_FALSE(res->rebalances.empty());
  ASSERT_FALSE(res->role_flips.empty());

  // Before the shift the planner moves PD workers to decode, after it back to prefill; every flip
  // completes after it was advised, and the advice is the planner's (router::AdviseRoles).
  int n_p = 2, min_np_before = 2, max_np_after = 0;
  for (const RoleFlip& f : res->role_flips) {
    EXPECT_GE(f.done_s, f.advised_s);
    const auto& role_before = res->worker_names[static_cast<size_t>(f.worker)];
    EXPECT_EQ(role_before.rfind("pd/", 0), 0u) << role_before;  // only PD workers flip
    n_p += f.to_prefill ? 1 : -1;
    ASSERT_GE(n_p, 1);
    ASSERT_LE(n_p, 3);
    if (f.advised_s < shift) {
      EXPECT_FALSE(f.to_prefill) << "decode-heavy phase flipped a worker to prefill at "
                                 << f.advised_s;
      min_np_before = std::min(min_np_before, n_p);
    } else {
      max_np_after = std::max(max_np_after, n_p);
    }
  }
  EXPECT_EQ(min_np_before, 1);
  EXPECT_EQ(max_np_after, 3);
  bool any_flip_advice = false;
  for (const auto& a : res->rebalances) {
    EXPECT_EQ(a.flip, a.target_n_p != a.current_n_p);
    if (a.flip) {
      any_flip_advice = true;
      EXPECT_GE(a.target_lambda, a.current_lambda * 1.05) << a.summary;
    }
  }
  EXPECT_TRUE(any_flip_advice);
  // A worker receives work only in its current role and never while it drains: replay each
  // worker's role timeline (initial role from its name, toggled at each completed flip).
  auto role_at = [&](int32_t w, double t, bool* draining) {
    bool prefill = res->worker_names[static_cast<size_t>(w)].find("/prefill-") != std::string::npos;
    *draining = false;
    for (const RoleFlip& f : res->role_flips) {
      if (f.worker != w) continue;
      if (t >= f.advised_s && t < f.done_s) *draining = true;
      if (t >= f.done_s) prefill = f.to_prefill;
    }
    return prefill;
  };
  size_t checked = 0;
  for (const auto& r : res->records) {
    bool draining = false;
    if (res->worker_names[static_cast<size_t>(r.prefill_worker)].rfind("pd/", 0) == 0) {
      EXPECT_TRUE(role_at(r.prefill_worker, r.routed_s, &draining)) << r.id;
      EXPECT_FALSE(draining) << r.id;
      ++checked;
    }
    EXPECT_FALSE(role_at(r.decode_worker, r.routed_s, &draining)) << r.id;
    EXPECT_FALSE(draining) << r.id;
  }
  EXPECT_GT(checked, 0u);

  // Off: the same run keeps its roles.
  Topology off = topo;
  off.policy.rebalance_period_s = 0;
  auto res_off = RunSimulation(off, tr, {});
  ASSERT_TRUE(res_off.ok());
  EXPECT_TRUE(res_off->role_flips.empty());
  EXPECT_TRUE(res_off->rebalances.empty());
}

TEST(Simulator, LongTimescaleControllerIsDeterministic) {
  Topology topo = Topo(kRebalance);
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  auto run = [&](uint64_t s) {
    Trace tr = LoadShift(600, 1200, s);
    auto res = RunSimulation(topo, tr, {});
    EXPECT_TRUE(res.ok());
    std::ostringstream os;
    for (const auto& f : res->role_flips)
      os << f.advised_s << ' ' << f.done_s << ' ' << f.worker << ' ' << f.to_prefill << '\n';
    for (const auto& r : res->records)
      os << r.prefill_worker << ' ' << r.decode_worker << ' ' << r.finish_s << '\n';
    os << SummaryToJson(Summarise(*res, topo.slo)).dump();
    return std::make_pair(os.str(), res->role_flips.size());
  };
  auto [a, flips] = run(seed);
  auto [b, flips_b] = run(seed);
  EXPECT_GT(flips, 0u);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, run(seed + 1).first);
}

TEST(Topology, RebalanceNeedsOnePrfaasAndOnePdCluster) {
  std::string yaml = kHomogeneous;
  yaml += "  rebalance: {period_s: 10}\n";
  yaml.replace(yaml.find("policy: {name: homogeneous-pd, controller_period_s: 0}"),
               std::string("policy: {name: homogeneous-pd, controller_period_s: 0}").size(),
               "policy:\n  name: homogeneous-pd\n  controller_period_s: 0");
  Topology topo = Topo(yaml.c_str());
  EXPECT_DOUBLE_EQ(topo.policy.rebalance_period_s, 10);
  auto res = RunSimulation(topo, OneRequest(100, 2), {});
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.status().message().find("one prfaas and one pd cluster"), std::string::npos)
      << res.status();
  auto bad = ParseTopology(R"(
model: {preset: paper-1t}
clusters: [{name: pd, kind: pd, workers: 2}]
policy: {rebalance: {period_s: -1}}
)",
                           "t.yaml", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("rebalance"), std::string::npos);
}

TEST(Topology, RejectsBadFiles) {
  EXPECT_FALSE(ParseTopology("clusters: []", "t", "").ok());
  auto bad_split = ParseTopology(R"(
model: {preset: paper-1t}
clusters: [{name: pd, kind: pd, workers: 4, prefill_workers: 3, decode_workers: 3}]
)",
                                 "t.yaml", "");
  ASSERT_FALSE(bad_split.ok());
  EXPECT_NE(bad_split.status().message().find("prefill_workers + decode_workers"),
            std::string::npos);
  auto bad_link = ParseTopology(R"(
model: {preset: paper-1t}
clusters: [{name: pd, kind: pd, workers: 2}]
links: [{from: pd, to: nowhere}]
)",
                                "t.yaml", "");
  ASSERT_FALSE(bad_link.ok());
  EXPECT_NE(bad_link.status().message().find("unknown cluster"), std::string::npos);
  auto bad_yaml = ParseTopology("model: [", "t.yaml", "");
  ASSERT_FALSE(bad_yaml.ok());
  EXPECT_NE(bad_yaml.status().message().find("YAML"), std::string::npos);
}

TEST(Runner, ExpandsSweepsAndFindsAHigherRateForMoreHardware) {
  Topology small = Topo(kHomogeneous);
  Topology big = small;
  big.name = "big";
  big.clusters[0].workers = 4;
  big.clusters[0].prefill_workers = 2;
  big.clusters[0].decode_workers = 2;
  SweepSpec sweep;
  auto vs = ExpandVariants({small, big}, sweep);
  ASSERT_TRUE(vs.ok());
  ASSERT_EQ(vs->size(), 2u);
  SweepSpec splits;
  splits.splits = {{1, 3}, {3, 1}};
  EXPECT_FALSE(ExpandVariants({small}, splits).ok());  // 2 workers cannot split 1:3
  auto vs2 = ExpandVariants({big}, splits);
  ASSERT_TRUE(vs2.ok());
  EXPECT_EQ((*vs2)[1].topo.clusters[0].prefill_workers, 3);

  WorkloadSpec w;
  w.syn.num_requests = 150;
  w.syn.mu = 8.0;
  w.syn.output_tokens = 16;
  ExperimentOptions x;
  x.search.enabled = true;
  x.search.lo_rps = 0.1;
  x.search.hi_rps = 200;
  x.search.iterations = 8;
  x.search.max_wait_s = 2;
  auto out = RunExperiment(*vs, w, x);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_GT((*out)[0].max_rate_rps, 0.1);
  EXPECT_GT((*out)[1].max_rate_rps, 1.5 * (*out)[0].max_rate_rps);
}

}  // namespace
}  // namespace prfaas::sim
