#include "worker/cli.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <thread>

#include "common/config.h"
#include "common/log.h"
#include "common/signals.h"
#include "worker/worker.h"

namespace prfaas::worker {

namespace {

struct Cli {
  WorkerConfig cfg;
  config::Schema schema;
  std::string config_file;
  std::string log_level = "info";
  bool log_json = false;
};

void Bind(Cli& c) {
  auto& s = c.schema;
  auto& w = c.cfg;
  s.Add("role", &w.role, "prefill | decode | both").OneOf({"prefill", "decode", "both"});
  s.Add("cluster", &w.cluster, "cluster this worker belongs to").NonEmpty();
  s.Add("cluster-kind", &w.cluster_kind, "prfaas | pd").OneOf({"prfaas", "pd"});
  s.Add("model", &w.model, "model preset (tiny, small, ...) or directory with config.json")
      .NonEmpty();
  s.Add("seed", &w.seed, "seed of synthetic weights (models without safetensors)");
  s.Add("worker-id", &w.worker_id, "worker id (default: <cluster>-<role>-<grpc port>)");
  s.Add("host", &w.host, "bind address of every listener");
  s.Add("advertise-host", &w.advertise_host, "address other processes use to reach this worker");
  s.Add("grpc-port", &w.grpc_port, "gRPC port (0 = any free port)").Range(0, 65535);
  s.Add("http-port", &w.http_port, "HTTP port for /metrics and /health").Range(0, 65535);
  s.Add("transport-port", &w.transport_port, "KV transport port").Range(0, 65535);
  s.Add("transport", &w.transport,
        "KV transport backend this worker receives on: tcp | ucx (prefill connects with the "
        "backend named in each ticket)")
      .OneOf({"tcp", "ucx"});
  s.Add("router", &w.router, "router registry address host:port (empty: static worker list)");
  s.Add("kv-blocks", &w.kv_blocks, "KV cache blocks").Range(1, 1e9);
  s.Add("state-slots", &w.state_slots, "recurrent-state slots").Range(1, 1e7);
  s.Add("block-size", &w.block_size, "tokens per KV block").Range(1, 1e6);
  s.Add("prefill-chunk", &w.prefill_chunk, "tokens per prefill forward pass").Range(1, 1e7);
  s.Add("prefix-cache-blocks", &w.prefix_cache_blocks,
        "KV blocks reserved for the prefix cache (0 disables it)")
      .Range(0, 1e9);
  s.Add("prefix-cache-checkpoints", &w.prefix_cache_checkpoints,
        "state checkpoints the prefix cache may hold")
      .Range(1, 1e6);
  s.Add("checkpoint-interval", &w.checkpoint_interval,
        "tokens between state checkpoints (a multiple of --block-size)")
      .Range(1, 1e7)
      .Check([&w] {
        return w.checkpoint_interval % w.block_size == 0
                   ? std::string()
                   : "is not a multiple of block-size " + std::to_string(w.block_size);
      });
  s.Add("prefix-cache-generated", &w.prefix_cache_generated,
        "decode: also cache blocks holding generated tokens (multi-turn reuse; not bit-identical "
        "to a cold prefill)");
  s.Add("prefill-tokens-per-step", &w.prefill_tokens_per_step,
        "prefill tokens scheduled between two decode steps")
      .Range(1, 1e7);
  s.Add("max-decode-batch", &w.max_decode_batch, "sequences per decode step").Range(1, 1e5);
  s.Add("transport-connections", &w.transport_connections,
        "parallel connections (TCP) / endpoints (UCX) per decode peer")
      .Range(1, 64);
  s.Add("transport-buffer-pool-mib", &w.transport_buffer_pool_mib,
        "receive buffers (MiB) kept for reuse between KV bundles; size it to the bundle bytes a "
        "decode worker holds at once, or bundles pay for fresh zeroed pages")
      .Range(0, 1 << 20);
  s.Add("drain-deadline-seconds", &w.drain_deadline_seconds,
        "how long drain / shutdown waits for in-flight requests")
      .Range(0, 86400);
  s.Add("transfer-timeout-seconds", &w.transfer_timeout_seconds,
        "decode: max wait for the KV bundle and first token")
      .Range(0.1, 86400);
  s.Add("ready-file", &w.ready_file, "write the bound ports here as JSON once ready");
  s.Add("log-level", &c.log_level, "trace | debug | info | warn | error")
      .OneOf({"trace", "debug", "info", "warn", "error", "critical", "off"});
  s.Add("log-json", &c.log_json, "JSON log lines");
}

}  // namespace

void RegisterWorkerCommand(CLI::App& app) {
  auto cli = std::make_shared<Cli>();
  Bind(*cli);
  auto* sub = app.add_subcommand("worker", "Run a prefill and/or decode worker");
  sub->add_option("--config", cli->config_file, "YAML file with any of the flags below as keys");
  cli->schema.AddFlags(*sub);
  sub->callback([cli] {
    Status st = cli->schema.Finish(cli->config_file);
    if (!st.ok()) {
      std::cerr << "prfaas worker: " << st.message() << "\n";
      throw CLI::RuntimeError(2);
    }
    st = log::InitLogging({.level = cli->log_level, .json = cli->log_json, .component = "worker"});
    if (!st.ok()) {
      std::cerr << "prfaas worker: " << st.message() << "\n";
      throw CLI::RuntimeError(2);
    }
    ShutdownSignals::Install();
    auto worker = Worker::Start(cli->cfg);
    if (!worker.ok()) {
      std::cerr << "prfaas worker: " << worker.status().ToString() << "\n";
      throw CLI::RuntimeError(1);
    }
    std::thread signals([&] {
      int sig = ShutdownSignals::Wait();
      if (sig != 0) spdlog::info("signal {}: draining and shutting down", sig);
      (*worker)->Shutdown();
    });
    (*worker)->Wait();
    ShutdownSignals::Wake();  // no-op for the signal thread if a signal already woke it
    signals.join();
    worker->reset();
  });
}

}  // namespace prfaas::worker
