// WorkerDirectory: the live router's single source of truth about workers, clusters, links, the
// global cache index and the routing policy.
//
// It owns a ClusterState (router/state) and the CacheIndex, keeps them current from worker
// registration, load reports (which double as heartbeats), cache events and configured links,
// and serialises every policy call under one mutex, so the policy (router/policy) always sees a
// consistent snapshot. It also books the router's own in-flight work on the snapshot between
// heartbeats (Route() charges, Release*() discharges) so a burst does not pile onto one worker.
//
// Workers come from registration (Registry gRPC service) or from a static list in the config.
// A registered worker that misses heartbeats for `heartbeat_timeout` is marked unhealthy; a worker
// that failed a request is marked unhealthy for `failure_cooldown` (or until its next heartbeat).
// Thread-safe.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "router/policy/policy.h"
#include "router/state/cache_index.h"
#include "router/state/cluster_state.h"

namespace grpc {
class Channel;
}
namespace prfaas::v1 {
class LoadReport;
class CacheEvent;
}  // namespace prfaas::v1

namespace prfaas::router {

// A worker as it announces itself (registration or a static config entry).
struct WorkerInfo {
  std::string id;
  std::string cluster;
  ClusterKind cluster_kind = ClusterKind::kPd;
  WorkerRole role = WorkerRole::kBoth;
  std::string grpc_endpoint;       // host:port of its DecodeService/PrefillService/WorkerAdmin
  std::string transport_endpoint;  // informational
  bool is_static = false;          // from config: no heartbeat expiry
};

// "id=pd-a/w0,cluster=pd-a,kind=pd,role=both,grpc=127.0.0.1:5001". kind: pd | prfaas,
// role: prefill | decode | both. Errors name the bad field.
Result<WorkerInfo> ParseWorkerSpec(std::string_view spec);

// "src:dst:gbps", e.g. "prfaas-a:pd-a:100": the nominal capacity of the link src -> dst.
struct LinkSpec {
  std::string src, dst;
  double gbps = 0;
};
Result<LinkSpec> ParseLinkSpec(std::string_view spec);

Result<WorkerRole> ParseWorkerRole(std::string_view name);
Result<ClusterKind> ParseClusterKind(std::string_view name);

using SteadyClock = std::chrono::steady_clock;
// Time as the policy wants it: steady clock since its epoch.
TimePoint Now();

class WorkerDirectory {
 public:
  struct Options {
    int block_size = 64;  // tokens per cache block (block hashes)
    bool hybrid = true;   // cache index: require state checkpoints
    std::chrono::milliseconds heartbeat_interval{1000};
    std::chrono::milliseconds heartbeat_timeout{5000};
    std::chrono::milliseconds failure_cooldown{5000};
    uint32_t max_batch = 0;  // decode batch cap assumed for every worker (0 = unknown)
    std::string policy = "prfaas";
    PolicyConfig policy_config;
    // Where the cache-index counters go (prfaas_router_cache_*_total, docs/metrics.md); null =
    // not exported (tests, tools).
    metrics::Registry* registry = nullptr;
  };

  // InvalidArgument when the policy name is unknown.
  static Result<std::unique_ptr<WorkerDirectory>> Create(Options options);

  // Adds or refreshes a worker (same id: endpoint/role/cluster updated, cache entries kept unless
  // its endpoint changed, i.e. it restarted). Returns its index.
  Result<WorkerIndex> Register(const WorkerInfo& info, TimePoint now);
  void AddLink(const LinkSpec& link);

  // Heartbeat + load. NotFound for an unknown worker (it must register first).
  Status ApplyLoad(std::string_view worker_id, const v1::LoadReport& load, TimePoint now);
  Status ApplyCache(std::string_view worker_id, const v1::CacheEvent& event);

  // Marks workers whose heartbeat is overdue unhealthy and brings back workers whose failure
  // cooldown ended. Called before routing and periodically.
  void Refresh(TimePoint now);

  // A request failed on this worker: unhealthy for failure_cooldown (or until a heartbeat).
  void MarkFailed(WorkerIndex w, TimePoint now, std::string_view why);

  Status SetDraining(std::string_view worker_id, bool draining);
  Status SetRole(std::string_view worker_id, WorkerRole role);

  // Routes one request with the current policy; workers in `exclude` are treated as unhealthy for
  // this call only. When `charge` is set, the decision is booked on the snapshot (prefill queue
  // and backlog, decode waiting) until the matching Release*().
  Decision Route(const RequestInfo& request, const std::vector<WorkerIndex>& exclude, TimePoint now,
                 bool charge);
  // Decode worker only (local prefill on it): for fallbacks after prefill failures and for
  // resuming after a decode failure. The decision's path is kColocated and prefill_worker the
  // decode worker; charged like Route(). Not ok() when no decode worker has capacity.
  Decision RouteDecodeOnly(const RequestInfo& request, const std::vector<WorkerIndex>& exclude,
                           TimePoint now);
  void ReleasePrefill(WorkerIndex w, uint32_t uncached_tokens);
  // Uncached prompt lengths of the requests routed (charged) since the last call, oldest first;
  // at most the last 100,000 are kept. Input of the long-timescale rebalancer.
  std::vector<double> TakeUncachedLengths();
  void ReleaseDecode(WorkerIndex w);

  // gRPC channel to a worker (created once, shared).
  std::shared_ptr<grpc::Channel> Channel(WorkerIndex w);
  std::string WorkerId(WorkerIndex w);
  Result<WorkerIndex> Find(std::string_view worker_id);
  std::string GrpcEndpoint(WorkerIndex w);

  // Policy controls (admin API).
  Status SetPolicy(std::string_view name);
  std::string policy_name();

  // Runs `f` with the state, cache index and policy under the lock (admin views, explain).
  void Inspect(const std::function<void(const ClusterState&, const CacheIndex&, Policy&)>& f);
  // Describes a decision with worker and cluster names (under the lock).
  std::string Describe(const Decision& d);

  int block_size() const { return options_.block_size; }
  std::chrono::milliseconds heartbeat_interval() const { return options_.heartbeat_interval; }

 private:
  struct Extra {
    WorkerInfo info;
    TimePoint last_heartbeat{0};
    TimePoint down_until{0};
    bool down_for_failure = false;
    bool heartbeat_expired = false;
    uint32_t reported_queue = 0;
    uint32_t inflight_prefill = 0;
    uint64_t inflight_prefill_tokens = 0;
    uint32_t reported_waiting = 0;
    uint32_t inflight_decode = 0;
    std::shared_ptr<grpc::Channel> channel;
    // Link telemetry per peer cluster (this worker as sender).
    struct Tel {
      double goodput_Bps = 0, rtt_s = 0;
      int64_t backlog_bytes = 0;
      int64_t retransmits_total = -1;
      double retx_rate = 0;
      TimePoint at{0};
    };
    std::unordered_map<std::string, Tel> links;
  };

  explicit WorkerDirectory(Options options, std::unique_ptr<Policy> policy);
  // Finds or adds a cluster; `kind` (when given) sets its kind. Under mu_.
  ClusterIndex ClusterFor(const std::string& name, std::optional<ClusterKind> kind);
  WorkerIndex FindLocked(std::string_view id) const;
  void UpdateHealthLocked(WorkerIndex w, TimePoint now);
  void RecomputeLinksLocked();
  void SyncLoadLocked(WorkerIndex w);
  // Books the index lookup of a routed request: per cluster, the prompt tokens looked up and the
  // best worker's attention and usable (checkpoint-limited) hits.
  void CountLookupLocked(const RequestInfo& request);

  Options options_;
  std::mutex mu_;
  ClusterState state_;
  CacheIndex cache_;
  std::unique_ptr<Policy> policy_;
  std::string policy_name_;
  std::vector<Extra> extra_;  // parallel to state_.workers
  std::unordered_map<std::string, WorkerIndex> by_id_;
  metrics::Family<metrics::Counter>* lookup_tokens_ = nullptr;
  metrics::Family<metrics::Counter>* hit_tokens_ = nullptr;
  metrics::Family<metrics::Counter>* cache_events_ = nullptr;
  std::vector<WorkerHit> hits_scratch_;
  std::vector<double> uncached_lengths_;
};

}  // namespace prfaas::router
