#include "router/planner/model.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "router/planner/cli.h"

namespace prfaas::router {
namespace {

void ExpectWithin(double actual, double expected, double rel, const char* what) {
  EXPECT_NEAR(actual, expected, expected * rel) << what;
}

// Paper Table 6: t = 19.4K, N_p/N_d = 3/5, Λ_max = 3.24; homogeneous 2.11; naive 2.45.
TEST(PlannerTest, ReproducesThePaperCaseStudyWithinThreePercent) {
  auto r = Plan(PaperCaseStudy());
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectWithin(r->prfaas.threshold, 19400, 0.03, "t");
  EXPECT_EQ(r->prfaas.n_prfaas, 4);
  EXPECT_EQ(r->prfaas.n_p, 3);
  EXPECT_EQ(r->prfaas.n_d, 5);
  ExpectWithin(r->prfaas.lambda_max, 3.24, 0.03, "lambda");
  ExpectWithin(r->prfaas.theta_prfaas, 1.61, 0.03, "theta_prfaas");
  ExpectWithin(r->prfaas.theta_pd_p, 1.64, 0.03, "theta_pd_p");
  ExpectWithin(r->prfaas.theta_pd_d, 3.91, 0.03, "theta_pd_d");
  ExpectWithin(r->prfaas.p, 0.496, 0.03, "p");
  ExpectWithin(r->prfaas.egress_bps, 13e9, 0.10, "egress");
  EXPECT_EQ(r->prfaas.bottleneck, "prfaas-compute");

  ExpectWithin(r->homogeneous.lambda_max, 2.11, 0.03, "homogeneous");
  EXPECT_EQ(r->homogeneous.n_p, 9);
  EXPECT_EQ(r->homogeneous.n_d, 3);
  ExpectWithin(r->naive.lambda_max, 2.45, 0.03, "naive");
  EXPECT_EQ(r->naive.n_d, 8);
  EXPECT_DOUBLE_EQ(r->naive.p, 1.0);
}

TEST(PlannerTest, OptimumBalancesBothPrefillPaths) {
  auto r = Plan(PaperCaseStudy());
  ASSERT_TRUE(r.ok());
  const OperatingPoint& o = r->prfaas;
  ExpectWithin(o.theta_prfaas / o.p, o.theta_pd_p / (1 - o.p), 0.02, "Eq. 7");
  EXPECT_LT(o.lambda_max, o.theta_pd_d);  // decode has slack at N_p/N_d = 3/5
}

TEST(PlannerTest, ScarceBandwidthRaisesTheThreshold) {
  PlannerInputs in = PaperCaseStudy();
  auto wide = Plan(in);
  in.egress_bps = 5e9;
  auto narrow = Plan(in);
  ASSERT_TRUE(wide.ok() && narrow.ok());
  EXPECT_GT(narrow->prfaas.threshold, wide->prfaas.threshold);
  EXPECT_LT(narrow->prfaas.lambda_max, wide->prfaas.lambda_max);
  EXPECT_LE(narrow->prfaas.egress_bps, 5e9 * 1.0001);
}

TEST(PlannerTest, LogNormalSplitMatchesClosedForm) {
  auto d = LengthDistribution::TruncatedLogNormal(9.90, 1.0, 128, 131072);
  ASSERT_TRUE(d.ok());
  const auto s = d->SplitAt(19400);
  EXPECT_NEAR(s.p, 0.4957, 0.0005);
  EXPECT_NEAR(s.l_long, 45046, 50);
  EXPECT_NEAR(s.l_short, 10224, 20);
  EXPECT_NEAR(d->Mean(), 27486, 30);
  EXPECT_FALSE(LengthDistribution::TruncatedLogNormal(9.9, 0, 128, 1000).ok());
  EXPECT_FALSE(LengthDistribution::TruncatedLogNormal(9.9, 1, 1000, 128).ok());
}

TEST(PlannerTest, EmpiricalSplit) {
  auto d = LengthDistribution::Empirical({100, 400, 200, 300});
  ASSERT_TRUE(d.ok());
  const auto s = d->SplitAt(250);
  EXPECT_DOUBLE_EQ(s.p, 0.5);
  EXPECT_DOUBLE_EQ(s.l_long, 350);
  EXPECT_DOUBLE_EQ(s.l_short, 150);
  EXPECT_DOUBLE_EQ(d->Mean(), 250);
  EXPECT_FALSE(LengthDistribution::Empirical({}).ok());
}

TEST(PlannerTest, ProfileInterpolatesAndValidates) {
  auto p = Profile::Parse("1000:1,3000:5");
  ASSERT_TRUE(p.ok());
  EXPECT_DOUBLE_EQ(p->At(2000), 3);
  EXPECT_DOUBLE_EQ(p->At(5000), 9);  // linear extrapolation
  EXPECT_DOUBLE_EQ(p->At(0), 0);     // clamped at 0
  EXPECT_FALSE(Profile::Parse("1000:1,500:2").ok());
  EXPECT_FALSE(Profile::Parse("1000-1").ok());
  EXPECT_FALSE(Profile::Parse("1000:x").ok());
}

TEST(PlannerTest, RejectsBadCounts) {
  PlannerInputs in = PaperCaseStudy();
  in.n_pd = 1;
  EXPECT_EQ(Plan(in).status().code(), StatusCode::kInvalidArgument);
}

TEST(PlannerTest, AdvisesRoleFlipsOnlyWhenWorthIt) {
  const PlannerInputs in = PaperCaseStudy();
  auto keep = AdviseRoles(in, 3, 19600);
  ASSERT_TRUE(keep.ok());
  EXPECT_FALSE(keep->flip);
  EXPECT_EQ(keep->target_n_p, 3);

  auto flip = AdviseRoles(in, 1, 19600);  // prefill-starved: 1 P / 7 D
  ASSERT_TRUE(flip.ok());
  EXPECT_TRUE(flip->flip);
  EXPECT_EQ(flip->target_n_p, 3);
  EXPECT_GT(flip->target_lambda, flip->current_lambda * 1.05);
  EXPECT_NE(flip->summary.find("convert 2 decode -> prefill"), std::string::npos) << flip->summary;

  EXPECT_FALSE(AdviseRoles(in, 8, 19600).ok());
}

TEST(PlanCommandTest, PrintsJsonAndTable) {
  {
    CLI::App app;
    RegisterPlanCommand(app);
    testing::internal::CaptureStdout();
    app.parse("plan -o json", false);
    const auto j = nlohmann::json::parse(testing::internal::GetCapturedStdout());
    ExpectWithin(j["prfaas"]["lambda_max_rps"].get<double>(), 3.24, 0.03, "json lambda");
    EXPECT_EQ(j["prfaas"]["n_p"].get<int>(), 3);
    ExpectWithin(j["naive"]["lambda_max_rps"].get<double>(), 2.45, 0.03, "json naive");
  }
  {
    CLI::App app;
    RegisterPlanCommand(app);
    testing::internal::CaptureStdout();
    app.parse("plan --n-pd 10 --bandwidth-gbps 50", false);
    const std::string out = testing::internal::GetCapturedStdout();
    EXPECT_NE(out.find("Λ_max (req/s)"), std::string::npos) << out;
    EXPECT_NE(out.find("threshold t (tokens)"), std::string::npos);
  }
  {
    CLI::App app;
    RegisterPlanCommand(app);
    testing::internal::CaptureStderr();
    EXPECT_THROW(app.parse("plan --pd-profile 1:2:3", false), CLI::RuntimeError);
    EXPECT_NE(testing::internal::GetCapturedStderr().find("--pd-profile"), std::string::npos);
  }
}

}  // namespace
}  // namespace prfaas::router
