// E2E: a PrfaaS cluster and a PD cluster (+ router) in two network namespaces joined by a
// tbf-shaped veth pair — the cross-datacenter link — running the real `prfaas` processes with the
// embedded model. Each test builds the topology afresh (tests/e2e/cluster/topology.h) and asserts
// one operational scenario: selective offload, a bandwidth drop, a link cut, kill -9 of the PrfaaS
// prefill worker and of a decode worker, and a real Prometheus scraping everything.
// Needs root and `ip netns` (skipped otherwise); docs/operations.md "End-to-end tests".
#include <gtest/gtest.h>

#include <signal.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>

#include "tests/e2e/cluster/topology.h"

namespace prfaas::testing::e2e {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kLong = 900;  // tokens; > t0 = 600 (and the controller's 512 floor)
constexpr int kShort = 64;  // tokens; < t0

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One finished client request.
struct Outcome {
  int status = 0;
  std::string error;  // transport-level (deadline, connect)
  std::string body;
  double seconds = 0;
  double started = 0;  // seconds since the load started
  bool long_prompt = false;
};

// Closed-loop clients in the PD namespace: each sends one request after the other until stop().
class Load {
 public:
  Load(Topology& topo, int clients, std::function<bool(int)> is_long, int max_tokens,
       std::chrono::milliseconds deadline)
      : t0_(Clock::now()) {
    for (int c = 0; c < clients; ++c) {
      threads_.push_back(NetnsThread(topo.ns_pd(), [this, c, is_long, max_tokens, deadline] {
        for (int i = 0; !stop_.load(); ++i) {
          const bool lng = is_long(c + i);
          const json req = {{"model", "kjv-tiny"},
                            {"prompt", UniquePrompt(lng ? kLong : kShort)},
                            {"max_tokens", max_tokens},
                            {"temperature", 0.0},
                            {"ignore_eos", true}};
          Outcome o;
          o.started = Since(t0_);
          o.long_prompt = lng;
          HttpExchange h = Http("127.0.0.1", Topology::kHttpPort, "POST", "/v1/completions",
                                req.dump(), deadline);
          o.status = h.status;
          o.error = h.error;
          o.body = h.body;
          o.seconds = h.seconds;
          std::lock_guard lock(mu_);
          done_.push_back(std::move(o));
        }
      }));
    }
  }
  ~Load() { Stop(); }
  std::vector<Outcome> Stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
    std::lock_guard lock(mu_);
    return done_;
  }
  double elapsed() const { return Since(t0_); }
  size_t finished() {
    std::lock_guard lock(mu_);
    return done_.size();
  }

 private:
  Clock::time_point t0_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Outcome> done_;
  std::vector<std::thread> threads_;
};

// The error message of an OpenAI-shaped error body ("" if none).
std::string ErrorMessage(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.contains("error")) return "";
  return j["error"].value("message", "");
}

// Text and finish reason of an SSE completion stream; `done` tells whether it ended with [DONE].
struct Stream {
  std::string text, finish;
  int chunks = 0;
  bool done = false;
  std::string error;
};
Stream ParseSse(const std::string& body) {
  Stream s;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("data: ", 0) != 0) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      break;
    }
    auto j = json::parse(data, nullptr, false);
    if (j.is_discarded()) continue;
    if (j.contains("error")) s.error = j["error"].value("message", "?");
    if (!j.contains("choices") || j["choices"].empty()) continue;
    const json& c = j["choices"][0];
    s.text += c.value("text", "");
    ++s.chunks;
    if (c.contains("finish_reason") && c["finish_reason"].is_string())
      s.finish = c["finish_reason"];
  }
  return s;
}

class ClusterE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = Unavailable();
    if (!why.empty()) GTEST_SKIP() << why;
    topo_ = std::make_unique<Topology>(Options());
    const std::string err = topo_->Start();
    ASSERT_TRUE(err.empty()) << err;
  }
  void TearDown() override {
    if (topo_ && HasFailure()) std::cout << "process logs:\n" << topo_->Logs(25) << std::flush;
    topo_.reset();
  }
  virtual TopologyOptions Options() { return {}; }

  json Explain(const std::string& prompt) {
    std::string err;
    auto j = topo_->Ctl({"explain", prompt}, &err);
    EXPECT_TRUE(j.has_value()) << "prfaasctl explain failed: " << err;
    return j.value_or(json::object());
  }
  double RouterMetric(const std::string& name, const std::vector<std::string>& labels) {
    return SumMetric(topo_->RouterMetrics(), name, labels);
  }

  std::unique_ptr<Topology> topo_;
};

// Long uncached prompts go to the PrfaaS cluster, short ones stay in the PD cluster; the router's
// decision counters, `prfaasctl explain`, the workers' request counters and the transport byte
// counters all agree.
TEST_F(ClusterE2E, SelectiveOffloadLongRemoteShortLocal) {
  constexpr int kEach = 3;
  const std::string r0 = topo_->RouterMetrics();
  const std::string prfaas0 = topo_->WorkerMetrics("prfaas-prefill-0");
  const std::string pdp0 = topo_->WorkerMetrics("pd-prefill-0");
  for (int i = 0; i < kEach; ++i) {
    for (bool lng : {true, false}) {
      const std::string prompt = UniquePrompt(lng ? kLong : kShort);
      const json ex = Explain(prompt);
      EXPECT_EQ(ex.value("path", ""), lng ? "prfaas" : "local-pd") << ex.dump();
      EXPECT_EQ(ex.value("reason", ""), lng ? "long_uncached" : "short_uncached") << ex.dump();
      EXPECT_EQ(ex.value("threshold_tokens", json()), json(600)) << ex.dump();
      EXPECT_EQ(ex.value("uncached_tokens", 0), lng ? kLong : kShort) << ex.dump();
      EXPECT_EQ(ex.value("prefill_worker", json()),
                json(lng ? "prfaas-prefill-0" : "pd-prefill-0"));
      const HttpExchange h = topo_->Completion(prompt, 4, 60s);
      ASSERT_EQ(h.status, 200) << h.error << " " << h.body;
      const json body = json::parse(h.body);
      EXPECT_EQ(body["usage"]["completion_tokens"], 4);
      EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    }
  }
  const std::string r1 = topo_->RouterMetrics();
  auto delta = [&](const std::string& a, const std::string& b, const std::string& name,
                   const std::vector<std::string>& labels) {
    return SumMetric(b, name, labels) - SumMetric(a, name, labels);
  };
  const std::string decisions = "prfaas_router_routing_decisions_total";
  EXPECT_EQ(delta(r0, r1, decisions,
                  {"policy=\"prfaas\"", "path=\"prfaas\"", "reason=\"above_threshold\""}),
            kEach);
  EXPECT_EQ(
      delta(r0, r1, decisions, {"policy=\"prfaas\"", "path=\"pd\"", "reason=\"below_threshold\""}),
      kEach);
  EXPECT_EQ(delta(r0, r1, decisions, {}), 2 * kEach) << "no other decisions were taken";
  EXPECT_EQ(delta(r0, r1, "prfaas_router_requests_total", {"path=\"prfaas\"", "status=\"ok\""}),
            kEach);
  EXPECT_EQ(delta(r0, r1, "prfaas_router_requests_total", {"path=\"pd\"", "status=\"ok\""}), kEach);
  EXPECT_EQ(delta(r0, r1, "prfaas_router_prefill_tokens_total", {"path=\"prfaas\""}),
            kEach * kLong);
  EXPECT_EQ(delta(r0, r1, "prfaas_router_prefill_tokens_total", {"path=\"pd\""}), kEach * kShort);

  // The workers saw the same split.
  const std::string prfaas1 = topo_->WorkerMetrics("prfaas-prefill-0");
  const std::string pdp1 = topo_->WorkerMetrics("pd-prefill-0");
  const std::string ok_prefill = "prfaas_worker_requests_total";
  EXPECT_EQ(delta(prfaas0, prfaas1, ok_prefill, {"service=\"prefill\"", "status=\"ok\""}), kEach);
  EXPECT_EQ(delta(pdp0, pdp1, ok_prefill, {"service=\"prefill\"", "status=\"ok\""}), kEach);
  EXPECT_EQ(delta(prfaas0, prfaas1, "prfaas_worker_prefill_tokens_total", {}), kEach * kLong);
  // KV crossed the shaped link: at least the attention KV of the offloaded prompts.
  const double sent = delta(prfaas0, prfaas1, "prfaas_transport_sent_bytes_total", {});
  EXPECT_GT(sent, 0.0);
  double received = 0;
  for (const char* d : {"pd-decode-0", "pd-decode-1"}) {
    received += SumMetric(topo_->WorkerMetrics(d), "prfaas_transport_received_bytes_total");
  }
  EXPECT_GE(received, sent) << "decode workers received less than the PrfaaS worker sent";
}

// The link's rate drops from 1 Gbit/s to 12 Mbit/s under a steady load of long prompts: within
// kReactS the router raises t to twice the long prompts' length (long prompts arriving then run
// locally), and no request fails.
TEST_F(ClusterE2E, BandwidthDropRaisesThresholdWithoutFailures) {
  constexpr double kReactS = 10;
  Load load(
      *topo_, 3, [](int) { return true; }, 2, 60s);
  // Phase 1: fast link. Long prompts go remote; the router sees the link's telemetry.
  const auto p1 = Clock::now();
  uint32_t max_t_fast = 0;
  while (Since(p1) < 5) {  // probes tick the controller as in phase 2
    const json e = Explain(UniquePrompt(kLong));
    if (e["threshold_tokens"].is_number()) {
      max_t_fast = std::max(max_t_fast, e["threshold_tokens"].get<uint32_t>());
    }
    std::this_thread::sleep_for(150ms);
  }
  const double offloaded_fast =
      RouterMetric("prfaas_router_routing_decisions_total", {"path=\"prfaas\""});
  EXPECT_GT(offloaded_fast, 0);
  std::printf("fast link: %.0f offloaded, max t %u\n", offloaded_fast, max_t_fast);
  EXPECT_LT(max_t_fast, static_cast<uint32_t>(kLong)) << "t rose on a fast link";

  // Phase 2: the link slows down. The controller ticks on routing decisions; the closed-loop
  // clients are stuck behind slow transfers, so `explain` probes (uncharged decisions) keep it
  // ticking the way steady arrivals would.
  ASSERT_TRUE(topo_->SetRate("12mbit"));
  const auto p2 = Clock::now();
  double reacted = -1, goodput_gbps = 0;  // goodput: the router's view of the slowed link
  json ex;
  while (Since(p2) < kReactS + 5) {
    ex = Explain(UniquePrompt(kLong));
    auto links = topo_->Ctl({"links"});
    if (links && !(*links)["links"].empty()) {
      goodput_gbps = std::max(goodput_gbps, (*links)["links"][0].value("goodput_gbps", 0.0));
    }
    // t at twice the long prompts' length: they stay local even after a few relax steps.
    if (ex["threshold_tokens"].is_number() && ex["threshold_tokens"].get<int>() >= 2 * kLong) {
      reacted = Since(p2);
      break;
    }
    std::this_thread::sleep_for(150ms);
  }
  // Link reports arrive once per heartbeat and only busy ones carry goodput; t can react (on
  // retransmits) before the polls above caught one. The slow transfers are still running, so
  // keep looking for a few more report periods.
  for (const auto p3 = Clock::now(); goodput_gbps == 0 && Since(p3) < 5;) {
    auto links = topo_->Ctl({"links"});
    if (links && !(*links)["links"].empty()) {
      goodput_gbps = std::max(goodput_gbps, (*links)["links"][0].value("goodput_gbps", 0.0));
    }
    std::this_thread::sleep_for(150ms);
  }
  auto th = topo_->Ctl({"threshold", "get"});
  std::printf("bandwidth drop: reacted after %.2f s (%s); router's link goodput %.4f Gbit/s\n",
              reacted, th ? th->dump().c_str() : "?", goodput_gbps);
  EXPECT_GT(goodput_gbps, 0) << "the router never saw the link's telemetry";
  ASSERT_GE(reacted, 0) << "t did not reach " << 2 * kLong << " within " << kReactS + 5
                        << " s: " << ex.dump();
  EXPECT_LE(reacted, kReactS);
  RecordProperty("reaction_seconds", std::to_string(reacted));
  EXPECT_EQ(ex.value("path", ""), "local-pd") << ex.dump();

  // Long prompts arriving now run locally.
  const double remote0 = RouterMetric("prfaas_router_routing_decisions_total", {"path=\"prfaas\""});
  const double local0 = RouterMetric("prfaas_router_requests_total", {"path=\"pd\""});
  std::vector<HttpExchange> probes(2);
  {
    std::vector<std::thread> ts;
    for (auto& p : probes) {
      ts.emplace_back([&] { p = topo_->Completion(UniquePrompt(kLong), 2, 60s); });
    }
    for (auto& t : ts) t.join();
  }
  for (const auto& p : probes) EXPECT_EQ(p.status, 200) << p.error << " " << p.body;
  EXPECT_GE(RouterMetric("prfaas_router_requests_total", {"path=\"pd\""}) - local0, 2)
      << "long prompts after the reaction did not run locally";
  const std::vector<Outcome> all = load.Stop();
  // The load's clients may have had one more decision each racing the reaction.
  EXPECT_LE(RouterMetric("prfaas_router_routing_decisions_total", {"path=\"prfaas\""}) - remote0,
            3);
  int ok = 0;
  for (const Outcome& o : all) {
    EXPECT_EQ(o.status, 200) << o.error << " " << o.body;
    ok += o.status == 200;
  }
  std::printf("requests: %d ok of %zu\n", ok, all.size());
}

// The link goes down under load: in-flight offloads are re-routed after the prefill timeout, new
// long prompts go local, no request outlives the timeout; when the link is back, offload resumes.
TEST_F(ClusterE2E, LinkCutFallsBackToLocalPrefill) {
  // An offload caught by the cut waits timeouts.prefill_ms (15 s), then prefills locally: 40 s
  // is the bound we promise on a loaded 2-core machine.
  constexpr double kBoundS = 40;
  Load load(
      *topo_, 3, [](int i) { return i % 2 == 0; }, 4, 60s);
  Load local(
      *topo_, 1, [](int) { return false; }, 4, 60s);  // short prompts only
  std::this_thread::sleep_for(2s);
  ASSERT_TRUE(topo_->SetLinkUp(false));
  const auto cut = Clock::now();
  const double cut_at = local.elapsed();
  // The router loses the PrfaaS worker's heartbeats (1.5 s timeout) and stops offloading.
  json ex;
  while (Since(cut) < 6) {
    ex = Explain(UniquePrompt(kLong));
    if (ex.value("path", "") == "local-pd") break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(ex.value("path", ""), "local-pd") << ex.dump();
  EXPECT_EQ(ex.value("reason", ""), "remote_unavailable") << ex.dump();
  std::printf("link cut: long prompts local after %.2f s\n", Since(cut));
  std::this_thread::sleep_for(16s);  // past the prefill timeout of the offloads caught by the cut
  const double up_at = local.elapsed();
  ASSERT_TRUE(topo_->SetLinkUp(true));
  const auto up = Clock::now();
  while (Since(up) < 15) {
    ex = Explain(UniquePrompt(kLong));
    if (ex.value("path", "") == "prfaas") break;
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_EQ(ex.value("path", ""), "prfaas") << "offload did not resume: " << ex.dump();
  std::printf("link restored: offloading again after %.2f s\n", Since(up));
  std::this_thread::sleep_for(1s);
  std::vector<Outcome> all = load.Stop();
  int while_down = 0;
  for (const Outcome& o : local.Stop()) {
    // Started once the router knew (heartbeat timeout 1.5 s) and done before the link came back.
    while_down += o.started > cut_at + 2 && o.started + o.seconds < up_at && o.status == 200;
    all.push_back(o);
  }
  double worst = 0;
  int ok = 0;
  for (const Outcome& o : all) {
    EXPECT_EQ(o.status, 200) << o.error << " " << o.body;
    ok += o.status == 200;
    worst = std::max(worst, o.seconds);
  }
  std::printf(
      "requests: %d ok of %zu (%d started and done while down), slowest %.2f s, "
      "reroutes %.0f\n",
      ok, all.size(), while_down, worst, RouterMetric("prfaas_router_reroutes_total", {}));
  EXPECT_LT(worst, kBoundS) << "a request hung past the bound";
  EXPECT_GE(while_down, 1) << "no new request completed while the link was down";
}

// kill -9 of the PrfaaS prefill worker under load: every request completes (re-routed to local
// prefill) or fails with a clear error; none is lost or hangs.
TEST_F(ClusterE2E, KillPrfaasPrefillWorkerUnderLoad) {
  constexpr double kBoundS = 40;
  Load load(
      *topo_, 3, [](int i) { return i % 3 != 2; }, 4, 60s);
  const auto t0 = Clock::now();
  while (load.finished() < 4 && Since(t0) < 20) std::this_thread::sleep_for(50ms);
  ASSERT_GE(load.finished(), 4u) << "no progress before the kill";
  topo_->worker("prfaas-prefill-0").proc->Signal(SIGKILL);
  const auto kill = Clock::now();
  std::this_thread::sleep_for(6s);
  const json ex = Explain(UniquePrompt(kLong));
  EXPECT_EQ(ex.value("path", ""), "local-pd") << ex.dump();
  const size_t at_kill_plus_6 = load.finished();
  std::this_thread::sleep_for(3s);
  const std::vector<Outcome> all = load.Stop();
  EXPECT_GT(all.size(), at_kill_plus_6) << "requests stopped completing after the kill";
  int ok = 0, failed = 0;
  double worst = 0;
  for (const Outcome& o : all) {
    worst = std::max(worst, o.seconds);
    ASSERT_NE(o.status, 0) << "a request got no reply: " << o.error;
    if (o.status == 200) {
      ++ok;
      const json b = json::parse(o.body);
      EXPECT_EQ(b["usage"]["completion_tokens"], 4);
    } else {
      ++failed;
      EXPECT_GE(o.status, 500) << o.body;
      EXPECT_FALSE(ErrorMessage(o.body).empty()) << "error without a message: " << o.body;
    }
  }
  const double reroutes = RouterMetric("prfaas_router_reroutes_total", {});
  std::printf(
      "kill prfaas prefill (%.1f s ago): %d ok, %d failed with an error, slowest %.2f s, "
      "reroutes %.0f\n",
      Since(kill), ok, failed, worst, reroutes);
  EXPECT_LT(worst, kBoundS);
  EXPECT_GT(ok, 0);
  // Every request the router finished is accounted for in its own counters.
  EXPECT_EQ(RouterMetric("prfaas_router_requests_total", {}), static_cast<double>(all.size()));
}

// kill -9 of a decode worker while streams run on it: the router re-prefills prompt + generated
// tokens on the other decode worker and the same SSE streams continue to the full length, with
// exactly the text an undisturbed run produces (greedy decoding is bit-exact on CPU).
TEST_F(ClusterE2E, KillDecodeWorkerMidStreamResumesOnTheOther) {
  constexpr int kTokens = 600;
  const std::string prompt = UniquePrompt(kShort);
  const HttpExchange ref = topo_->Completion(prompt, kTokens, 60s, /*stream=*/true);
  ASSERT_EQ(ref.status, 200) << ref.error;
  const Stream want = ParseSse(ref.body);
  ASSERT_TRUE(want.done);
  ASSERT_EQ(want.finish, "length");

  constexpr int kStreams = 2;
  std::vector<HttpExchange> got(kStreams);
  std::atomic<int> started{0};
  std::vector<std::thread> clients;
  for (int s = 0; s < kStreams; ++s) {
    clients.push_back(NetnsThread(topo_->ns_pd(), [&, s] {
      const json req = {{"model", "kjv-tiny"}, {"prompt", prompt}, {"max_tokens", kTokens},
                        {"temperature", 0.0},  {"stream", true},   {"ignore_eos", true}};
      bool counted = false;
      got[s] = Http(
          "127.0.0.1", Topology::kHttpPort, "POST", "/v1/completions", req.dump(), 60s,
          [&](const std::string& body) {
            if (!counted && body.find("data: ", body.find("data: ") + 1) != std::string::npos) {
              counted = true;
              ++started;
            }
          });
    }));
  }
  const auto t0 = Clock::now();
  while (started.load() < kStreams && Since(t0) < 20) std::this_thread::sleep_for(2ms);
  // Kill a decode worker that is running streams right now.
  std::string victim;
  for (const char* d : {"pd-decode-0", "pd-decode-1"}) {
    if (SumMetric(topo_->WorkerMetrics(d), "prfaas_worker_running_requests",
                  {"service=\"decode\""}) > 0) {
      victim = d;
      break;
    }
  }
  if (!victim.empty()) topo_->worker(victim).proc->Signal(SIGKILL);
  for (auto& c : clients) c.join();
  ASSERT_FALSE(victim.empty()) << "no decode worker was running a stream (too fast?)";
  for (int s = 0; s < kStreams; ++s) {
    ASSERT_EQ(got[s].status, 200) << got[s].error;
    const Stream st = ParseSse(got[s].body);
    EXPECT_TRUE(st.done) << "stream " << s << " did not end with [DONE]";
    EXPECT_TRUE(st.error.empty()) << st.error;
    EXPECT_EQ(st.finish, "length");
    EXPECT_EQ(st.text.size(), want.text.size()) << "stream " << s;
    EXPECT_EQ(st.text, want.text) << "stream " << s << " differs from the undisturbed run";
  }
  const double resumed = RouterMetric("prfaas_router_reroutes_total", {"reason=\"decode_failed\""});
  std::printf("killed %s: streams resumed, decode_failed reroutes %.0f\n", victim.c_str(), resumed);
  EXPECT_GE(resumed, 1.0);
}

// A real Prometheus (Debian `prometheus`) in the PD namespace scrapes the router and all four
// workers (the PrfaaS worker across the link); its HTTP API returns sane router, worker and
// transport series.
TEST_F(ClusterE2E, PrometheusScrapesEveryProcess) {
  const char* kPrometheus = "/usr/bin/prometheus";
  if (!std::filesystem::exists(kPrometheus)) {
    GTEST_SKIP() << "prometheus is not installed (scripts/setup.sh installs it)";
  }
  for (int i = 0; i < 2; ++i) {
    for (int len : {kLong, kShort}) {
      const HttpExchange h = topo_->Completion(UniquePrompt(len), 4, 60s);
      ASSERT_EQ(h.status, 200) << h.error;
    }
  }
  const std::string dir = topo_->dir();
  {
    std::ofstream cfg(dir + "/prometheus.yml");
    cfg << "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}\n"
        << "scrape_configs:\n  - job_name: prfaas\n    static_configs:\n";
    for (Topology::Proc* p : topo_->processes()) {
      const bool router = p->name == "router";
      const int port = router ? Topology::kHttpPort : p->http_port();
      const std::string cluster = p->name.rfind("prfaas", 0) == 0 ? "prfaas" : "pd";
      const std::string component =
          router ? "router" : (p->name.find("decode") != std::string::npos ? "decode" : "prefill");
      cfg << "      - targets: [\"" << p->addr << ":" << port << "\"]\n"
          << "        labels: {cluster: " << cluster << ", cluster_kind: " << cluster
          << ", component: " << component << ", pod: " << p->name << "}\n";
    }
  }
  ChildProcess prom(
      "/usr/sbin/ip",
      {"netns", "exec", topo_->ns_pd(), kPrometheus, "--config.file=" + dir + "/prometheus.yml",
       "--storage.tsdb.path=" + dir + "/tsdb", "--web.listen-address=127.0.0.1:9090",
       "--log.level=warn"},
      dir + "/prometheus.log");
  auto query = [&](const std::string& q) -> json {
    std::string enc;
    for (unsigned char c : q) {
      char b[4];
      std::snprintf(b, sizeof b, "%%%02X", c);
      enc += std::isalnum(c) ? std::string(1, static_cast<char>(c)) : std::string(b);
    }
    HttpExchange h;
    RunInNetns(topo_->ns_pd(),
               [&] { h = Http("127.0.0.1", 9090, "GET", "/api/v1/query?query=" + enc, "", 5s); });
    auto j = json::parse(h.body, nullptr, false);
    if (h.status != 200 || j.is_discarded() || j.value("status", "") != "success") return json();
    return j["data"]["result"];
  };
  // Value of a single-series result, or NaN.
  auto scalar = [&](const std::string& q) {
    const json r = query(q);
    if (!r.is_array() || r.size() != 1) return std::nan("");
    return std::stod(r[0]["value"][1].get<std::string>());
  };
  // Waits until `pred(value)` holds (a scrape or two may be needed).
  auto eventually = [&](const std::string& q, const std::function<bool(double)>& pred) {
    double v = std::nan("");
    const auto t0 = Clock::now();
    while (Since(t0) < 30) {
      v = scalar(q);
      if (pred(v)) return v;
      if (!prom.Running()) break;
      std::this_thread::sleep_for(250ms);
    }
    ADD_FAILURE() << q << " = " << v << " (prometheus " << prom.Describe() << ")\n"
                  << prom.LogTail(10);
    return v;
  };
  eventually("count(up == 1)", [](double v) { return v == 5; });
  for (const char* c : {"router", "prefill", "decode"}) {
    eventually(std::string("count(up{component=\"") + c + "\"} == 1)",
               [c](double v) { return v == (std::string(c) == "router" ? 1 : 2); });
  }
  // Router: decisions by path, the threshold, the configured link.
  eventually("sum(prfaas_router_routing_decisions_total{path=\"prfaas\"})",
             [](double v) { return v == 2; });
  eventually("sum(prfaas_router_routing_decisions_total{path=\"pd\"})",
             [](double v) { return v == 2; });
  eventually("sum(prfaas_router_requests_total{status=\"ok\"})", [](double v) { return v == 4; });
  eventually("prfaas_router_offload_threshold_tokens", [](double v) { return v == 600; });
  eventually(
      "prfaas_router_link_capacity_bytes_per_second{src_cluster=\"prfaas\",dst_cluster=\"pd\"}",
      [](double v) { return v == Topology::kLinkGbps * 1e9 / 8; });
  eventually("histogram_quantile(0.5, sum by (le) (prfaas_router_ttft_seconds_bucket))",
             [](double v) { return v > 0 && v < 30; });
  // Workers: each cluster's prefill served its share; decode workers report their KV pools.
  eventually(
      "sum(prfaas_worker_requests_total{cluster=\"prfaas\",service=\"prefill\",status=\"ok\"})",
      [](double v) { return v == 2; });
  eventually("sum(prfaas_worker_requests_total{cluster=\"pd\",service=\"prefill\",status=\"ok\"})",
             [](double v) { return v == 2; });
  eventually("count(prfaas_worker_kv_capacity_bytes{component=\"decode\",pool=\"attention\"} > 0)",
             [](double v) { return v == 2; });
  eventually("sum(prfaas_worker_decode_tokens_total)", [](double v) { return v >= 4 * 3; });
  // Transport: the PrfaaS worker sent KV across the link and the decode workers received it.
  const double sent = eventually("sum(prfaas_transport_sent_bytes_total{cluster=\"prfaas\"})",
                                 [](double v) { return v > 2 * kLong * 1000.0; });
  eventually("sum(prfaas_transport_received_bytes_total{component=\"decode\"})",
             [sent](double v) { return v >= sent; });
  eventually(
      "sum(prfaas_transport_bundles_total{cluster=\"prfaas\",role=\"send\",result=\"committed\"})",
      [](double v) { return v == 2; });
  prom.Signal(SIGTERM);
  prom.Wait(5s);
}

}  // namespace
}  // namespace prfaas::testing::e2e
