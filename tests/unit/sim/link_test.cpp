#include <random>

#include <gtest/gtest.h>

#include "sim/link.h"

namespace prfaas::sim {
namespace {

TEST(Link, EqualFlowsShareEqually) {
  Link l("l", 8e9, 0.01, 0, 1.0);  // 1 GB/s
  uint32_t a = l.AddFlow(1e9, Link::kInf, 1);
  uint32_t b = l.AddFlow(1e9, Link::kInf, 2);
  EXPECT_DOUBLE_EQ(l.flow_rate_bps(a), 4e9);
  EXPECT_DOUBLE_EQ(l.flow_rate_bps(b), 4e9);
  EXPECT_DOUBLE_EQ(l.NextCompletion(), 2.0);
  l.Advance(2.0);
  auto done = l.TakeCompleted();
  EXPECT_EQ(done.size(), 2u);
  EXPECT_EQ(l.active_flows(), 0u);
  EXPECT_NEAR(l.bytes_carried(), 2e9, 1);
}

TEST(Link, MaxMinGivesLeftoverOfCappedFlowToOthers) {
  Link l("l", 10e9, 0, 0, 1.0);
  uint32_t capped = l.AddFlow(1e12, 1e9, 1);
  uint32_t x = l.AddFlow(1e12, Link::kInf, 2);
  uint32_t y = l.AddFlow(1e12, Link::kInf, 3);
  EXPECT_DOUBLE_EQ(l.flow_rate_bps(capped), 1e9);
  EXPECT_DOUBLE_EQ(l.flow_rate_bps(x), 4.5e9);
  EXPECT_DOUBLE_EQ(l.flow_rate_bps(y), 4.5e9);
  // Lifting the cap (prefill finished) makes all three equal.
  l.SetFlowCap(capped, Link::kInf);
  EXPECT_NEAR(l.flow_rate_bps(capped), 10e9 / 3, 1);
  // Per-flow cap from the link config binds too.
  Link p("p", 10e9, 0, 2e9, 1.0);
  uint32_t f = p.AddFlow(1e9, Link::kInf, 1);
  EXPECT_DOUBLE_EQ(p.flow_rate_bps(f), 2e9);
}

TEST(Link, RandomisedMaxMinInvariants) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.1, 10);
  for (int trial = 0; trial < 100; ++trial) {
    double cap = u(rng) * 1e9;
    Link l("l", cap, 0, 0, 1.0);
    std::vector<uint32_t> ids;
    std::vector<double> caps;
    int n = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) {
      double c = (rng() % 3 == 0) ? Link::kInf : u(rng) * 1e9;
      caps.push_back(c);
      ids.push_back(l.AddFlow(1e9, c, static_cast<uint64_t>(i)));
    }
    double sum = 0, max_rate = 0;
    for (int i = 0; i < n; ++i) {
      double r = l.flow_rate_bps(ids[static_cast<size_t>(i)]);
      ASSERT_LE(r, caps[static_cast<size_t>(i)] * (1 + 1e-12));
      sum += r;
      max_rate = std::max(max_rate, r);
    }
    ASSERT_LE(sum, cap * (1 + 1e-9));
    // Work conserving: either the link is full or every flow is at its cap.
    bool all_capped = true;
    for (int i = 0; i < n; ++i) {
      if (l.flow_rate_bps(ids[static_cast<size_t>(i)]) < caps[static_cast<size_t>(i)] * (1 - 1e-9))
        all_capped = false;
    }
    ASSERT_TRUE(all_capped || sum >= cap * (1 - 1e-9));
    // Max-min: a flow below its cap gets the largest rate of all.
    for (int i = 0; i < n; ++i) {
      double r = l.flow_rate_bps(ids[static_cast<size_t>(i)]);
      if (r < caps[static_cast<size_t>(i)] * (1 - 1e-9)) {
        ASSERT_NEAR(r, max_rate, max_rate * 1e-9);
      }
    }
  }
}

TEST(Link, CapacityScheduleAndBuckets) {
  Link l("l", 8e9, 0, 0, 1.0);
  l.AddFlow(3e9, Link::kInf, 7);  // 3 GB at 1 GB/s
  l.Advance(1.0);
  l.SetCapacity(16e9);  // now 2 GB/s: 2 GB left -> 1 s more
  EXPECT_DOUBLE_EQ(l.NextCompletion(), 2.0);
  l.SetCapacity(0);  // link down: nothing completes
  EXPECT_EQ(l.NextCompletion(), Link::kInf);
  l.Advance(5.0);
  l.SetCapacity(8e9);
  EXPECT_DOUBLE_EQ(l.NextCompletion(), 7.0);
  l.Advance(7.0);
  EXPECT_EQ(l.TakeCompleted(), std::vector<uint64_t>{7});
  ASSERT_GE(l.bucket_bytes().size(), 7u);
  EXPECT_NEAR(l.bucket_bytes()[0], 1e9, 1);
  EXPECT_NEAR(l.bucket_bytes()[3], 0, 1);
  EXPECT_NEAR(l.bucket_bytes()[6], 1e9, 1);
}

}  // namespace
}  // namespace prfaas::sim
