// RouterApp: the whole `prfaas router` process wired together — tokenizer, worker directory
// (static workers, links, policy), orchestrator, OpenAI HTTP front door, and two gRPC servers
// (Registry for workers, RouterAdmin for prfaasctl) — plus the housekeeping loop (heartbeat
// expiry, threshold ticks, directory gauges). Start() binds everything or returns the first
// error; ports of 0 pick free ones (tests), read back with the accessors.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/metrics.h"
#include "common/status.h"
#include "router/registry/directory.h"
#include "router/server/front_door.h"
#include "router/service/orchestrator.h"
#include "router/service/rebalancer.h"

namespace prfaas::router {

struct RouterConfig {
  FrontDoorOptions http;
  std::string grpc_bind_address = "0.0.0.0";
  int admin_port = 8001;     // RouterAdmin gRPC; -1 disables
  int registry_port = 8002;  // Registry gRPC; -1 disables
  std::string admin_token;
  std::string tokenizer = "byte";  // "byte" or a tokenizer.json path
  WorkerDirectory::Options directory;
  Orchestrator::Options orchestrator;
  Rebalancer::Options planner;  // long-timescale rebalancer; off while planner.interval is 0
  std::vector<std::string> static_workers;  // ParseWorkerSpec format
  std::vector<std::string> links;           // ParseLinkSpec format
};

class RouterApp {
 public:
  explicit RouterApp(RouterConfig config, metrics::Registry* registry = nullptr);
  ~RouterApp();  // Stop()s
  RouterApp(const RouterApp&) = delete;
  RouterApp& operator=(const RouterApp&) = delete;

  Status Start();
  void Stop();

  int http_port() const;
  int admin_port() const { return admin_port_; }
  int registry_port() const { return registry_port_; }
  WorkerDirectory& directory() { return *directory_; }
  metrics::Registry& metrics() { return *registry_; }

 private:
  class Impl;
  RouterConfig config_;
  metrics::Registry* registry_;
  std::unique_ptr<WorkerDirectory> directory_;
  std::unique_ptr<Impl> impl_;
  int admin_port_ = 0, registry_port_ = 0;
};

}  // namespace prfaas::router
