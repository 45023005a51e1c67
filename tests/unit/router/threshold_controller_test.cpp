#include "router/policy/threshold_controller.h"

#include <gtest/gtest.h>

#include "router/policy/placement.h"

namespace prfaas::router {
namespace {

using std::chrono::milliseconds;

ThresholdControllerConfig Config() {
  ThresholdControllerConfig c;
  c.base_threshold = 10000;
  c.tick = milliseconds(100);
  return c;
}

LinkSignals Calm() {
  LinkSignals s;
  s.utilisation = 0.2;
  return s;
}

TEST(ThresholdControllerTest, RaisesOncePerTickUnderPressureAndCaps) {
  ThresholdControllerConfig cfg = Config();
  cfg.max_threshold = 20000;
  ThresholdController c(cfg);
  LinkSignals hot = Calm();
  hot.utilisation = 0.9;
  EXPECT_TRUE(c.Update(hot, milliseconds(0)));
  EXPECT_EQ(c.threshold(), 12500u);
  EXPECT_FALSE(c.Update(hot, milliseconds(50)));  // within the tick: no change
  EXPECT_EQ(c.threshold(), 12500u);
  EXPECT_TRUE(c.Update(hot, milliseconds(100)));
  EXPECT_EQ(c.threshold(), 15625u);
  for (int i = 2; i < 10; ++i) c.Update(hot, milliseconds(100 * i));
  EXPECT_EQ(c.threshold(), 20000u);  // clamped at max_threshold
  EXPECT_EQ(c.placement(), PlacementMode::kScarce);
}

TEST(ThresholdControllerTest, EachPressureSignalRaises) {
  LinkSignals signals[5];
  for (auto& s : signals) s = Calm();
  signals[0].backlog_seconds = 0.8;
  signals[1].retransmit_rate = 0.05;
  signals[2].rtt_ratio = 3.0;
  signals[3].prfaas_queue_per_worker = 6;
  signals[4].utilisation = 0.86;
  const char* names[] = {"backlog", "retransmits", "rtt", "prfaas queue", "utilisation"};
  for (int i = 0; i < 5; ++i) {
    ThresholdController c(Config());
    c.Update(signals[i], milliseconds(0));
    EXPECT_EQ(c.threshold(), 12500u) << names[i];
    EXPECT_NE(c.last_reason().find(names[i]), std::string::npos) << c.last_reason();
  }
}

TEST(ThresholdControllerTest, RelaxesBackToBaseWhenTheLinkRecovers) {
  ThresholdController c(Config());
  LinkSignals hot = Calm();
  hot.utilisation = 0.95;
  c.Update(hot, milliseconds(0));
  c.Update(hot, milliseconds(100));
  ASSERT_GT(c.threshold(), 10000u);

  LinkSignals mid = Calm();
  mid.utilisation = 0.7;  // between watermarks: hold
  c.Update(mid, milliseconds(200));
  EXPECT_EQ(c.threshold(), 15625u);
  EXPECT_NE(c.last_reason().find("hold"), std::string::npos);

  uint32_t prev = c.threshold();
  for (int i = 3; i < 40; ++i) {
    c.Update(Calm(), milliseconds(100 * i));
    EXPECT_LE(c.threshold(), prev);
    prev = c.threshold();
  }
  EXPECT_EQ(c.threshold(), 10000u);  // never below base while relaxing
  EXPECT_DOUBLE_EQ(c.multiplier(), 1.0);
}

TEST(ThresholdControllerTest, LowersWhenPdPrefillIsTheBottleneck) {
  ThresholdController c(Config());
  LinkSignals s = Calm();
  s.pd_queue_per_worker = 10;
  c.Update(s, milliseconds(0));
  EXPECT_EQ(c.threshold(), 9000u);
  for (int i = 1; i < 30; ++i) c.Update(s, milliseconds(100 * i));
  EXPECT_EQ(c.threshold(), 5000u);  // min_multiplier 0.5
  // Once PD recovers, t climbs back to base.
  for (int i = 30; i < 60; ++i) c.Update(Calm(), milliseconds(100 * i));
  EXPECT_EQ(c.threshold(), 10000u);
}

TEST(ThresholdControllerTest, LinkDownDisablesOffloadUntilItReturns) {
  ThresholdController c(Config());
  LinkSignals down = Calm();
  down.link_up = false;
  c.Update(down, milliseconds(0));
  EXPECT_EQ(c.threshold(), kNoOffload);
  c.Update(Calm(), milliseconds(100));
  EXPECT_EQ(c.threshold(), 10000u);
}

TEST(ThresholdControllerTest, PlacementModeFollowsUtilisation) {
  ThresholdController c(Config());
  c.Update(Calm(), milliseconds(0));
  EXPECT_EQ(c.placement(), PlacementMode::kAbundant);
  LinkSignals busy = Calm();
  busy.utilisation = 0.55;
  c.Update(busy, milliseconds(100));
  EXPECT_EQ(c.placement(), PlacementMode::kScarce);

  ThresholdControllerConfig forced = Config();
  forced.placement = PlacementMode::kScarce;
  ThresholdController f(forced);
  f.Update(Calm(), milliseconds(0));
  EXPECT_EQ(f.placement(), PlacementMode::kScarce);
}

TEST(ThresholdControllerTest, ManualPinsThresholdAndAutoResumes) {
  ThresholdController c(Config());
  c.SetManual(777);
  LinkSignals hot = Calm();
  hot.utilisation = 0.99;
  c.Update(hot, milliseconds(0));
  EXPECT_EQ(c.threshold(), 777u);
  EXPECT_TRUE(c.manual());
  c.SetAuto();
  EXPECT_EQ(c.threshold(), 10000u);
  c.SetBaseThreshold(20000);
  EXPECT_EQ(c.threshold(), 20000u);
}

TEST(SignalsFromTest, AggregatesWorstLinkAndQueues) {
  ClusterState s;
  s.clusters = {{"x", ClusterKind::kPrfaas}, {"a", ClusterKind::kPd}, {"b", ClusterKind::kPd}};
  LinkView l1;
  l1.src = 0;
  l1.dst = 1;
  l1.nominal_bps = 10e9;
  l1.goodput_bps = 3e9;  // utilisation derived from goodput when not reported
  l1.rtt_s = 0.004;
  l1.base_rtt_s = 0.001;
  LinkView l2 = l1;
  l2.dst = 2;
  l2.goodput_bps = 8e9;
  l2.backlog_bytes = 1'000'000'000;  // 8 Gbit at 8 Gbit/s
  l2.retransmit_rate = 0.01;
  s.links = {l1, l2};
  WorkerView p;
  p.cluster = 0;
  p.role = WorkerRole::kPrefill;
  p.queue_depth = 4;
  WorkerView q = p;
  q.cluster = 1;
  q.queue_depth = 2;
  s.workers = {p, p, q};
  const LinkSignals sig = SignalsFrom(s);
  EXPECT_TRUE(sig.link_up);
  EXPECT_DOUBLE_EQ(sig.utilisation, 0.8);
  EXPECT_DOUBLE_EQ(sig.backlog_seconds, 1.0);
  EXPECT_DOUBLE_EQ(sig.retransmit_rate, 0.01);
  EXPECT_DOUBLE_EQ(sig.rtt_ratio, 4.0);
  EXPECT_DOUBLE_EQ(sig.prfaas_queue_per_worker, 4.0);
  EXPECT_DOUBLE_EQ(sig.pd_queue_per_worker, 2.0);

  s.links[0].up = s.links[1].up = false;
  EXPECT_FALSE(SignalsFrom(s).link_up);
}

}  // namespace
}  // namespace prfaas::router
