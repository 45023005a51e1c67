// Rebalancer: the live long-timescale controller. Recommendations from routed traffic, the
// minimum-sample gate, and applied role flips through a real WorkerAdmin gRPC server.
#include "router/service/rebalancer.h"

#include <mutex>
#include <random>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "prfaas/v1/worker.grpc.pb.h"

namespace prfaas::router {
namespace {

// A worker's admin endpoint that records the roles it was asked to take.
class FakeAdmin final : public v1::WorkerAdmin::Service {
 public:
  grpc::Status SetRole(grpc::ServerContext*, const v1::SetRoleRequest* req,
                       v1::SetRoleReply*) override {
    std::lock_guard lock(mu);
    roles.push_back(req->role());
    return grpc::Status::OK;
  }
  std::mutex mu;
  std::vector<v1::WorkerRole> roles;
};

class RebalancerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&admin_);
    server_ = b.BuildAndStart();
    ASSERT_TRUE(server_ && port_ > 0);
    WorkerDirectory::Options o;
    o.policy = "prfaas";
    o.policy_config.threshold.base_threshold = 100000;  // start with nothing offloaded
    dir_ = WorkerDirectory::Create(o).value();
    const std::string grpc = "127.0.0.1:" + std::to_string(port_);
    for (std::string spec :
         {"id=x/p0,cluster=x,kind=prfaas,role=prefill", "id=pd/p0,cluster=pd,kind=pd,role=prefill",
          "id=pd/d0,cluster=pd,kind=pd,role=decode", "id=pd/d1,cluster=pd,kind=pd,role=decode",
          "id=pd/d2,cluster=pd,kind=pd,role=decode"}) {
      ASSERT_TRUE(dir_->Register(ParseWorkerSpec(spec + ",grpc=" + grpc).value(), Now()).ok());
    }
    dir_->AddLink(ParseLinkSpec("x:pd:100").value());
  }
  void TearDown() override { server_->Shutdown(); }

  // PD prefill is the bottleneck: prefill takes 1 ms per token on PD hardware, half that on the
  // PrfaaS cluster, and three decode workers have room to spare.
  Rebalancer::Options Opts(bool apply) {
    Rebalancer::Options o;
    o.interval = std::chrono::milliseconds(0);
    o.apply = apply;
    o.prfaas_profile = "1:0.0005,10000:5";
    o.pd_profile = "1:0.001,10000:10";
    o.kv_profile_mib = "1:0.01,10000:100";
    o.output_tokens = 64;
    o.decode_step_ms = 20;
    o.max_batch = 64;
    o.min_samples = 100;
    return o;
  }
  // Routes n requests of uncached lengths uniform in [500, 3000] (released at once).
  void Route(int n) {
    std::mt19937 rng(std::random_device{}());
    std::uniform_int_distribution<uint32_t> len(500, 3000);
    for (int i = 0; i < n; ++i) {
      RequestInfo req;
      req.prompt_tokens = len(rng);
      Decision d = dir_->Route(req, {}, Now(), true);
      ASSERT_TRUE(d.ok()) << d.explanation;
      if (d.prefill_worker != kNoWorker && d.path != PrefillPath::kColocated) {
        dir_->ReleasePrefill(d.prefill_worker, d.uncached_tokens);
      }
      dir_->ReleaseDecode(d.decode_worker);
    }
  }
  int PrefillWorkers() {
    int n = 0;
    dir_->Inspect([&](const ClusterState& s, const CacheIndex&, Policy&) {
      for (const auto& w : s.workers)
        n += s.clusters[w.cluster].name == "pd" && w.role == WorkerRole::kPrefill;
    });
    return n;
  }

  FakeAdmin admin_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<WorkerDirectory> dir_;
  metrics::Registry reg_;
};

TEST_F(RebalancerTest, RejectsBadProfiles) {
  auto o = Opts(false);
  o.interval = std::chrono::seconds(10);
  o.pd_profile = "fast";
  auto r = Rebalancer::Create(o, *dir_, reg_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("planner.pd_profile"), std::string::npos) << r.status();
  o = Opts(false);
  o.interval = std::chrono::seconds(10);
  o.kv_profile_mib = "";
  EXPECT_FALSE(Rebalancer::Create(o, *dir_, reg_).ok());
}

TEST_F(RebalancerTest, WaitsForSamplesThenRecommendsWithoutApplying) {
  auto o = Opts(false);
  o.interval = std::chrono::seconds(3600);  // parsed like a live config; run by hand
  auto rb = Rebalancer::Create(o, *dir_, reg_).value();
  Route(40);
  auto none = rb->RunOnce();
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());  // 40 < min_samples: keeps them for the next run
  Route(80);
  auto out = rb->RunOnce();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  const RoleAdvice& a = (*out)[0].advice;
  EXPECT_EQ((*out)[0].cluster, "pd");
  EXPECT_EQ(a.current_n_p, 1);
  EXPECT_GT(a.target_n_p, 1) << a.summary;  // PD prefill was the bottleneck
  EXPECT_TRUE(a.flip);
  EXPECT_LT(a.target_threshold, 3000) << "some requests should be offloaded: " << a.summary;
  EXPECT_EQ((*out)[0].flips, 0);  // recommend only
  EXPECT_EQ(PrefillWorkers(), 1);
  EXPECT_TRUE(admin_.roles.empty());
  const std::string text = reg_.Render();
  EXPECT_NE(text.find("prfaas_router_planner_prefill_workers{target_cluster=\"pd\"} " +
                      std::to_string(a.target_n_p) + "\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("prfaas_router_planner_threshold_tokens "), std::string::npos);
}

TEST_F(RebalancerTest, AppliesRoleFlipsThroughWorkerAdmin) {
  auto rb = Rebalancer::Create(Opts(true), *dir_, reg_).value();
  Route(150);
  auto out = rb->RunOnce();
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 1u);
  const int target = (*out)[0].advice.target_n_p;
  ASSERT_GT(target, 1);
  EXPECT_EQ((*out)[0].flips, target - 1);
  EXPECT_EQ(PrefillWorkers(), target);
  {
    std::lock_guard lock(admin_.mu);
    ASSERT_EQ(admin_.roles.size(), static_cast<size_t>(target - 1));
    for (auto r : admin_.roles) EXPECT_EQ(r, v1::WORKER_ROLE_PREFILL);
  }
  EXPECT_NE(
      reg_.Render().find("prfaas_router_role_flips_total{target_cluster=\"pd\",role=\"prefill\"} " +
                         std::to_string(target - 1) + "\n"),
      std::string::npos);
  // The threshold controller took the planner's t as its base.
  dir_->Inspect([&](const ClusterState&, const CacheIndex&, Policy& p) {
    ASSERT_NE(p.threshold_controller(), nullptr);
    EXPECT_LT(p.threshold_controller()->threshold(), 100000u);
  });
}

}  // namespace
}  // namespace prfaas::router
