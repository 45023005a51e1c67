// Router request overhead under load: C concurrent HTTP clients send non-streaming completions
// through a real RouterApp to in-process gRPC test workers that answer instantly (no model), so
// the measured latency is the router's own cost (HTTP parse, tokenize, hash, policy, decode
// stream + prefill RPCs, detokenize, response) plus loopback gRPC.
//
//   router_overhead_bench [--clients 16] [--requests 4000] [--prompt-bytes 2000] [--max-tokens 8]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "router/server/router_app.h"
#include "tests/integration/router/http_client.h"
#include "tests/integration/router/test_worker.h"

int main(int argc, char** argv) {
  using namespace prfaas;
  int clients = 16, requests = 4000, prompt_bytes = 2000, max_tokens = 8;
  CLI::App app{"router overhead benchmark"};
  app.add_option("--clients", clients);
  app.add_option("--requests", requests);
  app.add_option("--prompt-bytes", prompt_bytes);
  app.add_option("--max-tokens", max_tokens);
  CLI11_PARSE(app, argc, argv);
  (void)log::InitLogging({"warn", false, "bench", nullptr});

  testing::TestWorker p0, p1, d0, d1;
  router::RouterConfig cfg;
  cfg.http.bind_address = "127.0.0.1";
  cfg.http.port = 0;
  cfg.http.threads = 4;
  cfg.grpc_bind_address = "127.0.0.1";
  cfg.admin_port = -1;
  cfg.registry_port = -1;
  cfg.directory.policy = "prfaas";
  auto spec = [](const std::string& id, const std::string& role, const testing::TestWorker& w) {
    return fmt::format("id={},cluster=pd-a,kind=pd,role={},grpc={}", id, role, w.endpoint());
  };
  cfg.static_workers = {spec("p0", "prefill", p0), spec("p1", "prefill", p1),
                        spec("d0", "decode", d0), spec("d1", "decode", d1)};
  metrics::Registry registry;
  router::RouterApp router(cfg, &registry);
  if (auto s = router.Start(); !s.ok()) {
    fmt::print(stderr, "{}\n", s.ToString());
    return 1;
  }
  const std::string body = nlohmann::json{
      {"prompt", std::string(static_cast<size_t>(prompt_bytes), 'x')},
      {"max_tokens",
       max_tokens}}.dump();
  std::atomic<int> next{0}, errors{0};
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (next.fetch_add(1) < requests) {
        const auto a = std::chrono::steady_clock::now();
        auto r = testing::HttpCall(router.http_port(), "POST", "/v1/completions", body);
        const auto b = std::chrono::steady_clock::now();
        if (r.status != 200) errors++;
        lat[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::micro>(b - a).count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  auto pct = [&](double q) {
    return all[std::min(all.size() - 1, static_cast<size_t>(q * all.size()))];
  };
  fmt::print("clients {} requests {} prompt {} B max_tokens {} errors {}\n", clients, all.size(),
             prompt_bytes, max_tokens, errors.load());
  fmt::print("throughput {:.0f} req/s; latency us p50 {:.0f} p90 {:.0f} p99 {:.0f} max {:.0f}\n",
             static_cast<double>(all.size()) / wall, pct(0.5), pct(0.9), pct(0.99), all.back());
  router.Stop();
  return errors.load() == 0 ? 0 : 1;
}
