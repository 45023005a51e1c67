#include "common/metrics.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

namespace prfaas::metrics {
namespace {

TEST(MetricsTest, CounterGaugeRender) {
  Registry r;
  auto& req = r.Counter("prfaas_test_requests_total", "Requests by path.", {"path"});
  req.WithLabels({"local"}).Inc();
  req.WithLabels({"local"}).Inc(2);
  req.WithLabels({"remote"}).Inc(0.5);
  r.Gauge("prfaas_test_threshold_tokens", "Threshold t.").Get().Set(19400);
  std::string out = r.Render();
  EXPECT_NE(out.find("# HELP prfaas_test_requests_total Requests by path.\n"), std::string::npos);
  EXPECT_NE(out.find("# TYPE prfaas_test_requests_total counter\n"), std::string::npos);
  EXPECT_NE(out.find("prfaas_test_requests_total{path=\"local\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("prfaas_test_requests_total{path=\"remote\"} 0.5\n"), std::string::npos);
  EXPECT_NE(out.find("prfaas_test_threshold_tokens 19400\n"), std::string::npos) << out;
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndUpperInclusive) {
  Registry r;
  auto& h = r.Histogram("prfaas_test_latency_seconds", "Latency.", {"path"}, {0.1, 1, 10})
                .WithLabels({"x"});
  for (double v : {0.05, 0.1, 0.5, 1.0, 5.0, 50.0}) h.Observe(v);
  auto s = h.Take();
  ASSERT_EQ(s.cumulative.size(), 4u);
  EXPECT_EQ(s.cumulative[0], 2u);  // 0.05, 0.1 (le is inclusive)
  EXPECT_EQ(s.cumulative[1], 4u);
  EXPECT_EQ(s.cumulative[2], 5u);
  EXPECT_EQ(s.cumulative[3], 6u);
  EXPECT_EQ(s.count, 6u);
  EXPECT_DOUBLE_EQ(s.sum, 56.65);
  std::string out = r.Render();
  EXPECT_NE(out.find("prfaas_test_latency_seconds_bucket{path=\"x\",le=\"0.1\"} 2"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("prfaas_test_latency_seconds_bucket{path=\"x\",le=\"+Inf\"} 6"),
            std::string::npos);
  EXPECT_NE(out.find("prfaas_test_latency_seconds_count{path=\"x\"} 6"), std::string::npos);
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  Registry r;
  r.Counter("prfaas_test_escape_total", "Help with \\ and\nnewline.", {"v"})
      .WithLabels({"a\"b\\c\nd"})
      .Inc();
  std::string out = r.Render();
  EXPECT_NE(out.find(R"(prfaas_test_escape_total{v="a\"b\\c\nd"} 1)"), std::string::npos) << out;
  EXPECT_NE(out.find(R"(# HELP prfaas_test_escape_total Help with \\ and\nnewline.)"),
            std::string::npos);
}

TEST(MetricsTest, ReRegistrationReturnsSameFamily) {
  Registry r;
  auto& a = r.Counter("prfaas_test_same_total", "x", {"l"});
  auto& b = r.Counter("prfaas_test_same_total", "x", {"l"});
  EXPECT_EQ(&a, &b);
  EXPECT_DEATH(r.Gauge("prfaas_test_same_total", "x", {"l"}), "different type");
  EXPECT_DEATH(r.Counter("bad name", "x"), "invalid metric name");
  EXPECT_DEATH(a.WithLabels({"1", "2"}), "expects 1 label values");
}

TEST(MetricsTest, CollectHooksRunBeforeRender) {
  Registry r;
  auto& g = r.Gauge("prfaas_test_free_bytes", "Free.").Get();
  int calls = 0;
  r.AddCollectHook([&] { g.Set(++calls * 100); });
  EXPECT_NE(r.Render().find("prfaas_test_free_bytes 100"), std::string::npos);
  EXPECT_NE(r.Render().find("prfaas_test_free_bytes 200"), std::string::npos);
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  Registry r;
  auto& c = r.Counter("prfaas_test_concurrent_total", "x").Get();
  auto& h = r.Histogram("prfaas_test_concurrent_seconds", "x", {}, LatencyBuckets()).Get();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc();
        h.Observe(0.01);
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(c.Value(), 40000);
  EXPECT_EQ(h.Take().count, 40000u);
}

TEST(MetricsTest, NameValidation) {
  EXPECT_TRUE(IsValidMetricName("prfaas_router_requests_total"));
  EXPECT_TRUE(IsValidMetricName("a:b_c"));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("a-b"));
  EXPECT_TRUE(IsValidLabelName("path"));
  EXPECT_FALSE(IsValidLabelName("__reserved"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
}

// The exposition must satisfy Prometheus' own linter.
TEST(MetricsTest, PromtoolAcceptsRenderedRegistry) {
#ifndef PRFAAS_PROMTOOL
  GTEST_SKIP() << "promtool not found at configure time (Debian package prometheus)";
#else
  Registry r;
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<double> u(0, 20);
  auto& req = r.Counter("prfaas_router_requests_total", "Requests handled, by path and status.",
                        {"path", "status"});
  req.WithLabels({"local", "ok"}).Inc(u(rng));
  req.WithLabels({"remote", "error"}).Inc();
  r.Gauge("prfaas_router_threshold_tokens", "Current offload threshold t in tokens.")
      .Get()
      .Set(u(rng));
  auto& ttft =
      r.Histogram("prfaas_router_ttft_seconds", "Time to first token.", {"path"}, LatencyBuckets());
  for (int i = 0; i < 100; ++i) ttft.WithLabels({i % 2 ? "local" : "remote"}).Observe(u(rng));
  std::string path = ::testing::TempDir() + "/prfaas_metrics.prom";
  {
    std::ofstream f(path);
    f << r.Render();
  }
  std::string cmd = std::string(PRFAAS_PROMTOOL) + " check metrics < " + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) output += buf;
  int rc = pclose(p);
  EXPECT_EQ(rc, 0) << "promtool said:\n" << output << "\nexposition:\n" << r.Render();
  std::remove(path.c_str());
#endif
}

TEST(MetricsTest, PromtoolRejectsBrokenExposition) {
#ifndef PRFAAS_PROMTOOL
  GTEST_SKIP() << "promtool not found at configure time";
#else
  // Guards the test above: promtool must actually fail on bad input (a counter without _total).
  std::string path = ::testing::TempDir() + "/prfaas_metrics_bad.prom";
  {
    std::ofstream f(path);
    f << "# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n";
  }
  std::string cmd = std::string(PRFAAS_PROMTOOL) + " check metrics < " + path + " >/dev/null 2>&1";
  EXPECT_NE(std::system(cmd.c_str()), 0);
  std::remove(path.c_str());
#endif
}

}  // namespace
}  // namespace prfaas::metrics
