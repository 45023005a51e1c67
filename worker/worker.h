// Worker: one `prfaas worker` process. Hosts the engine (EngineLoop), the prefill and decode
// gRPC services, the WorkerAdmin service, a KV transport receiver, /metrics + /health, and the
// registration + load/cache event stream to the router.
//
// The role (prefill | decode | both) is a runtime setting: all services are always registered and
// each refuses work its role does not allow, so the router's rebalancer can flip a worker's role
// (WorkerAdmin.SetRole: drain, switch, undrain) without restarting the process.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "common/http_server.h"
#include "common/metrics.h"
#include "common/status.h"

namespace prfaas::worker {

struct WorkerConfig {
  std::string worker_id;      // default: cluster-role-grpcport
  std::string role = "both";  // prefill | decode | both
  std::string cluster = "local";
  std::string cluster_kind = "pd";  // prfaas | pd
  std::string model = "tiny";       // preset name or directory with config.json (+ safetensors)
  int64_t seed = 1;                 // synthetic weights when the model has no safetensors
  std::string host = "127.0.0.1";   // bind address of every listener
  std::string advertise_host;       // address others use to reach us (default: host)
  int grpc_port = 0;
  int http_port = 0;
  int transport_port = 0;
  std::string transport = "tcp";  // KV transport backend of the receiver: tcp | ucx
  std::string router;             // router registry address host:port ("" = static list)
  int64_t kv_blocks = 512;
  int64_t state_slots = 64;
  int64_t block_size = 64;
  int64_t prefill_chunk = 512;
  int64_t prefix_cache_blocks = 256;      // KV blocks the prefix cache may hold (0 = off)
  int64_t prefix_cache_checkpoints = 16;  // state checkpoints the prefix cache may hold
  int64_t checkpoint_interval = 256;      // C: tokens between state checkpoints
  bool prefix_cache_generated = false;    // decode: also cache blocks of generated tokens
  int64_t prefill_tokens_per_step = 512;
  int max_decode_batch = 64;
  int transport_connections = 4;
  int64_t transport_buffer_pool_mib = 256;  // receive buffers kept for reuse between bundles
  double drain_deadline_seconds = 30;
  double transfer_timeout_seconds = 60;
  std::string ready_file;  // once ready, the bound ports are written here as JSON
};

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> Start(const WorkerConfig& config);
  ~Worker();

  // Blocks until Shutdown() is called (e.g. from a signal handler thread).
  void Wait();
  // Stops admitting, waits for in-flight requests up to the drain deadline, stops everything.
  void Shutdown();

  int grpc_port() const;
  int http_port() const;
  std::string transport_address() const;

 private:
  class Impl;
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace prfaas::worker
