// Every metric the dashboards and rules use is really exported, and everything exported is
// documented: starts the local topology (`prfaas up`, real processes, the embedded model), drives
// short and long requests through it so every path and the rebalancer run, scrapes the router and
// every worker, and runs deploy/validate/check_metrics.py on the scrapes. A second run on a scrape
// with an undocumented metric added proves the check can fail.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <regex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/router/http_client.h"
#include "tests/support/process.h"

namespace prfaas::testing {
namespace {

using namespace std::chrono_literals;

// `n` distinct free loopback ports. All sockets stay bound until every port is known: closing
// each one before binding the next lets the kernel hand out the same port twice.
std::vector<int> FreePorts(int n) {
  std::vector<int> fds, ports;
  for (int i = 0; i < n; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) break;
    fds.push_back(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      break;
    }
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) close(fd);
  if (static_cast<int>(ports.size()) != n) ports.assign(static_cast<size_t>(n), 0);
  return ports;
}

// Runs a command, returns {exit code, combined output}.
std::pair<int, std::string> RunShell(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, "popen failed"};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

class MetricsScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "needs Debian's /usr/bin/python3";
    dir_ = MakeTempDir("prfaas-metrics-scrape");
    const std::vector<int> ports = FreePorts(3);
    port_ = ports[0];
    const int admin = ports[1], registry = ports[2];
    ASSERT_TRUE(port_ && admin && registry);
    // The default two-cluster topology with a 1-second rebalancer that applies its advice.
    std::ofstream(dir_ + "/topology.yaml")
        << "port: " << port_ << "\nadmin_port: " << admin << "\nregistry_port: " << registry << R"(
threshold_tokens: 64
links: ["prfaas:pd:10"]
router_args: ["--planner.interval_seconds", "1", "--planner.min_samples", "1",
              "--planner.apply", "true",
              "--planner.prfaas_profile", "1:0.001,4096:0.4",
              "--planner.pd_profile", "1:0.002,4096:0.8",
              "--planner.kv_profile_mib", "1:0.1,4096:30"]
clusters:
  - name: prfaas
    kind: prfaas
    workers: [prefill]
  - name: pd
    kind: pd
    workers: [prefill, decode]
)";
    up_ = std::make_unique<ChildProcess>(
        PrfaasBinary(),
        std::vector<std::string>{"up", "--config", dir_ + "/topology.yaml", "--model",
                                 std::string(PRFAAS_SOURCE_DIR) + "/models/kjv-tiny", "--log-dir",
                                 dir_},
        dir_ + "/up.log");
    const auto deadline = std::chrono::steady_clock::now() + 180s;
    while (up_->Log().find("prfaas is up") == std::string::npos) {
      ASSERT_TRUE(up_->Running()) << "prfaas up exited: " << up_->LogTail(40);
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << up_->LogTail(40);
      std::this_thread::sleep_for(200ms);
    }
  }
  void TearDown() override {
    if (up_ && up_->Running()) {
      up_->Signal(SIGINT);
      auto st = up_->Wait(60s);
      EXPECT_TRUE(st.has_value()) << "prfaas up did not stop on SIGINT";
    }
  }

  // http://127.0.0.1:<port>/metrics of the router and every worker, from the ready banner.
  std::vector<int> MetricsPorts() {
    std::vector<int> ports{port_};
    const std::string log = up_->Log();
    static const std::regex re(R"(metrics http://127\.0\.0\.1:(\d+)/metrics)");
    for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it) {
      ports.push_back(std::stoi((*it)[1]));
    }
    return ports;
  }

  std::string dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> up_;
};

TEST_F(MetricsScrapeTest, DocsRulesAndDashboardsMatchWhatIsExported) {
  // Short prompts stay local, long ones are offloaded (t = 64 tokens); repeats hit the caches.
  const std::string long_prompt(600, 'a');
  for (int i = 0; i < 6; ++i) {
    const std::string prompt = i % 2 ? "In the beginning" : long_prompt + std::to_string(i % 3);
    auto r = HttpCall(port_, "POST", "/v1/completions",
                      R"({"model":"kjv-tiny","prompt":")" + prompt + R"(","max_tokens":4})");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  std::this_thread::sleep_for(2500ms);  // heartbeats carry cache events; the rebalancer runs

  const std::vector<int> ports = MetricsPorts();
  ASSERT_EQ(ports.size(), 4u) << "router + 3 workers expected:\n" << up_->Log();
  std::string files;
  for (int p : ports) {
    HttpResult r = HttpGet("127.0.0.1", p, "/metrics");
    ASSERT_EQ(r.status, 200) << "port " << p;
    const std::string path = dir_ + "/scrape-" + std::to_string(p) + ".prom";
    std::ofstream(path) << r.body;
    files += " " + path;
  }
  const std::string src = PRFAAS_SOURCE_DIR;
  const std::string check = "cd " + src +
                            " && /usr/bin/python3 deploy/validate/check_metrics.py --doc "
                            "docs/metrics.md --rules deploy/prometheus/rules/*.yaml --dashboards "
                            "deploy/grafana/dashboards/*.json --scrape";
  auto [code, out] = RunShell(check + files);
  EXPECT_EQ(code, 0) << out;

  // The same check must fail on a metric nobody documented.
  const std::string bogus = dir_ + "/bogus.prom";
  std::ofstream(bogus) << "# TYPE prfaas_router_bogus_total counter\nprfaas_router_bogus_total 1\n";
  auto [bad_code, bad_out] = RunShell(check + files + " " + bogus);
  EXPECT_EQ(bad_code, 1) << bad_out;
  EXPECT_NE(bad_out.find("prfaas_router_bogus_total"), std::string::npos) << bad_out;
}

}  // namespace
}  // namespace prfaas::testing
