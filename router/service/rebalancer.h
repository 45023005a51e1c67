// Rebalancer: the live router's long-timescale controller (paper §3.4.3; docs/routing.md).
//
// Every `interval` it takes the uncached prompt lengths routed since its last run (at least
// `min_samples` of them, otherwise it waits for more), counts the healthy workers of each cluster,
// reads the PrfaaS -> PD link capacity from the directory, and asks the planner (AdviseRoles,
// router/planner, the same code `prfaas plan` and the simulator run) for the best threshold t and
// prefill/decode split of every PD cluster. The recommendation is always exported
// (prfaas_router_planner_*). With `apply`, the recommended t becomes the threshold controller's
// base t0, and when the planner asks for a different split, PD workers are converted one role at
// a time: drained and switched in place (SwitchWorkerRole), counted in
// prfaas_router_role_flips_total. The planner's hysteresis (min_gain) keeps noise from flipping
// roles back and forth.
//
// Profiles (prefill seconds by length on each cluster's hardware) are configuration, in the
// "len:value,..." format of `prfaas plan`, as is the KV + state size per request. Runs on its own
// thread: a role switch can block for its drain deadline without holding up routing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "router/planner/model.h"
#include "router/registry/directory.h"

namespace prfaas::router {

class Rebalancer {
 public:
  struct Options {
    std::chrono::milliseconds interval{0};  // 0: off
    bool apply = false;                     // false: recommend only (metrics, logs)
    std::string prfaas_profile;             // T_prfaas(l), "len:seconds,..."
    std::string pd_profile;                 // T_pd(l)
    std::string kv_profile_mib;             // S_kv(l), "len:MiB,..." (KV + state per request)
    double output_tokens = 256;             // L_out
    double decode_step_ms = 25;             // T_decode
    double max_batch = 20;                  // BS_max per decode worker
    double min_gain = 0.05;                 // relative Λ_max gain needed to flip roles
    int min_samples = 32;                   // lengths needed before a run
    std::chrono::seconds drain_deadline{30};
  };

  // What one run concluded for one PD cluster.
  struct Outcome {
    std::string cluster;
    RoleAdvice advice;
    int flips = 0;  // roles changed by this run (apply only)
  };

  // InvalidArgument for unparsable profiles or non-positive constants.
  static Result<std::unique_ptr<Rebalancer>> Create(Options options, WorkerDirectory& directory,
                                                    metrics::Registry& registry);
  ~Rebalancer();  // Stop()s

  // Starts the periodic thread (no-op when interval is 0).
  void Start();
  void Stop();

  // One run now, on the caller's thread (the periodic thread calls this). Empty when there were
  // too few samples or no PrfaaS + PD pair to plan for.
  Result<std::vector<Outcome>> RunOnce();

 private:
  Rebalancer(Options options, WorkerDirectory& directory, metrics::Registry& registry,
             Profile prfaas, Profile pd, Profile kv);

  Options options_;
  WorkerDirectory& directory_;
  Profile prfaas_profile_, pd_profile_;
  Profile kv_profile_;
  std::vector<double> pending_;  // lengths gathered while below min_samples
  metrics::Family<metrics::Gauge>& threshold_gauge_;
  metrics::Family<metrics::Gauge>& prefill_workers_gauge_;
  metrics::Family<metrics::Counter>& flips_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace prfaas::router
