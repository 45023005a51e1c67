// Routing-decision latency: Policy::Route() over a ClusterState of 256 workers whose global cache
// index holds ~1M attention blocks (plus state checkpoints). Prints p50/p90/p99/max per policy.
//
//   router_policy_bench [--blocks N] [--requests N] [--block-tokens B] [--seed S]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "router/policy/policy.h"
#include "router/state/cache_index.h"

using namespace prfaas::router;

namespace {

struct Args {
  size_t blocks = 1'000'000;
  int requests = 20000;
  uint32_t block_tokens = 64;
  uint64_t seed = 42;
};

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--blocks")) a.blocks = std::strtoull(argv[i + 1], nullptr, 10);
    if (!std::strcmp(argv[i], "--requests")) a.requests = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--block-tokens")) a.block_tokens = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seed")) a.seed = std::strtoull(argv[i + 1], nullptr, 10);
  }
  return a;
}

double Percentile(std::vector<double>& v, double q) {
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = ParseArgs(argc, argv);
  std::mt19937_64 rng(args.seed);

  // 256 workers: PrfaaS cluster with 64 prefill workers, PD cluster with 96 prefill + 96 decode.
  ClusterState state;
  state.clusters = {{"prfaas", ClusterKind::kPrfaas}, {"pd", ClusterKind::kPd}};
  for (int i = 0; i < 256; ++i) {
    WorkerView w;
    char id[16];
    std::snprintf(id, sizeof id, "w%d",
                  i);  // not "w" + to_string: GCC 12 -Wrestrict false positive
    w.id = id;
    w.cluster = i < 64 ? 0 : 1;
    w.role = i < 160 ? WorkerRole::kPrefill : WorkerRole::kDecode;
    w.max_batch = 64;
    w.free_kv_bytes = w.kv_capacity_bytes = 80ULL << 30;
    state.workers.push_back(w);
  }
  LinkView link;
  link.src = 0;
  link.dst = 1;
  link.nominal_bps = 100e9;
  link.utilisation = 0.3;
  state.links = {link};
  state.model.block_tokens = args.block_tokens;
  state.model.kv_bytes_per_token = 17.2e3;

  // Prefix families: chains of 512 blocks (32K tokens at B=64), each cached on 1-3 prefill
  // workers with a state checkpoint every 16 blocks, until `blocks` distinct hashes are indexed.
  constexpr int kChain = 512;
  CacheIndex index(CacheIndex::Options{.hybrid = true, .expected_blocks = args.blocks});
  std::vector<std::vector<uint64_t>> families;
  const auto t_fill = std::chrono::steady_clock::now();
  while (index.stats().attention_keys < args.blocks) {
    std::vector<uint64_t> chain(kChain);
    for (auto& h : chain) h = rng();
    const int copies = 1 + static_cast<int>(rng() % 3);
    for (int c = 0; c < copies; ++c) {
      const WorkerIndex w = static_cast<WorkerIndex>(rng() % 160);
      const int held = kChain / 2 + static_cast<int>(rng() % (kChain / 2 + 1));
      index.AddBlocks(w, std::span(chain).first(static_cast<size_t>(held)));
      for (int b = 15; b < held; b += 16) index.AddCheckpoints(w, std::span(chain).subspan(b, 1));
    }
    families.push_back(std::move(chain));
  }
  const double fill_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_fill).count();
  const CacheIndexStats st = index.stats();
  state.cache = &index;
  std::printf("index: %zu attention keys, %zu entries, %zu checkpoint keys (filled in %.1f s)\n",
              st.attention_keys, st.attention_entries, st.checkpoint_keys, fill_s);

  // Requests: prompt length ~ log-normal(9.90, 1.0) on [128, 131072] (the paper's workload);
  // half of them start with a prefix of a cached family, the rest are fresh.
  std::lognormal_distribution<double> len_dist(9.90, 1.0);
  struct Req {
    uint32_t tokens;
    std::vector<uint64_t> hashes;
  };
  std::vector<Req> reqs(static_cast<size_t>(args.requests));
  for (Req& r : reqs) {
    double l;
    do l = len_dist(rng);
    while (l < 128 || l > 131072);
    r.tokens = static_cast<uint32_t>(l);
    const size_t n = r.tokens / args.block_tokens;
    if (rng() % 2 == 0) {
      const auto& fam = families[rng() % families.size()];
      const size_t shared = std::min<size_t>(n, rng() % (kChain + 1));
      r.hashes.assign(fam.begin(), fam.begin() + static_cast<long>(shared));
    }
    while (r.hashes.size() < n) r.hashes.push_back(rng());
  }

  std::printf("%-16s %10s %10s %10s %10s %10s\n", "policy", "p50_us", "p90_us", "p99_us", "max_us",
              "offload%");
  std::vector<WorkerHit> hits;
  {
    std::vector<double> us;
    for (const Req& r : reqs) {
      const auto t0 = std::chrono::steady_clock::now();
      index.Match(r.hashes, &hits);
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    std::printf("%-16s %10.2f %10.2f %10.2f %10.2f %10s\n", "index.Match", Percentile(us, 0.5),
                Percentile(us, 0.9), Percentile(us, 0.99), *std::max_element(us.begin(), us.end()),
                "-");
  }
  for (std::string_view name : PolicyNames()) {
    auto policy = MakePolicy(name).value();
    std::vector<double> us;
    int offloaded = 0;
    int64_t now_ns = 0;
    for (const Req& r : reqs) {
      RequestInfo info;
      info.prompt_tokens = r.tokens;
      info.expected_output_tokens = 1024;
      info.block_hashes = r.hashes;
      // Vary load so guards and tie-breaks do real work.
      WorkerView& w = state.workers[rng() % 256];
      w.queue_depth = static_cast<uint32_t>(rng() % 4);
      w.prefill_backlog_tokens = rng() % 200000;
      w.running = static_cast<uint32_t>(rng() % 64);
      now_ns += 5'000'000;  // 200 req/s
      const auto t0 = std::chrono::steady_clock::now();
      const Decision d = policy->Route(info, state, std::chrono::nanoseconds(now_ns));
      us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      offloaded += d.path == PrefillPath::kRemotePrfaas;
    }
    std::printf("%-16s %10.2f %10.2f %10.2f %10.2f %10.1f\n", std::string(name).c_str(),
                Percentile(us, 0.5), Percentile(us, 0.9), Percentile(us, 0.99),
                *std::max_element(us.begin(), us.end()), 100.0 * offloaded / args.requests);
  }
  return 0;
}
