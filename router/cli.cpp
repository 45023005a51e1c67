#include "router/cli.h"

#include <csignal>
#include <iostream>

#include <CLI/CLI.hpp>

#include "common/config.h"
#include "common/log.h"
#include "router/server/router_app.h"

namespace prfaas::router {

namespace {

struct Flags {
  RouterConfig cfg;
  std::string config_path;
  int heartbeat_interval_ms = 1000, heartbeat_timeout_ms = 5000, cooldown_ms = 5000;
  int ticket_ms = 5000, prefill_ms = 120000, idle_ms = 30000;
  int max_body = 4 << 20, max_prompt = 131072, max_batch = 0;
  int base_threshold = 19400;
  double planner_interval_s = 0;
  std::string log_level = "info";
  bool log_json = false;
};

void Bind(config::Schema& s, Flags& f) {
  RouterConfig& c = f.cfg;
  s.Add("http.address", &c.http.bind_address, "HTTP listen address").NonEmpty();
  s.Add("http.port", &c.http.port, "HTTP (OpenAI API) port").Range(0, 65535);
  s.Add("http.threads", &c.http.threads, "HTTP I/O threads").Range(1, 256);
  s.Add("grpc.address", &c.grpc_bind_address, "gRPC listen address").NonEmpty();
  s.Add("admin.port", &c.admin_port, "RouterAdmin gRPC port (-1 off)").Range(-1, 65535);
  s.Add("registry.port", &c.registry_port, "Registry gRPC port (-1 off)").Range(-1, 65535);
  s.Add("api.token", &c.http.api_token, "bearer token required on /v1/* (empty: none)");
  s.Add("admin.token", &c.admin_token, "bearer token required by the admin API");
  s.Add("model", &c.http.model_name, "served model name").NonEmpty();
  s.Add("tokenizer", &c.tokenizer, "byte | path to tokenizer.json").NonEmpty();
  std::vector<std::string> policies;
  for (auto n : PolicyNames()) policies.emplace_back(n);
  s.Add("policy", &c.directory.policy, "routing policy").OneOf(policies);
  s.Add("threshold.base", &f.base_threshold, "base offload threshold t0 (tokens)").Range(0, 1e9);
  s.Add("limits.max_body_bytes", &f.max_body, "max request body").Range(1024, 1 << 30);
  s.Add("limits.max_prompt_tokens", &f.max_prompt, "max prompt tokens").Range(1, 1 << 30);
  s.Add("limits.max_tokens", &c.http.limits.max_tokens, "max max_tokens").Range(1, 1 << 30);
  s.Add("limits.default_max_tokens", &c.http.limits.default_max_tokens,
        "max_tokens when the request has none")
      .Range(1, 1 << 30);
  s.Add("limits.max_concurrent_requests", &c.http.max_concurrent_requests,
        "generations in flight before 429")
      .Range(1, 1 << 20);
  s.Add("workers", &c.static_workers, "static workers (id=..,cluster=..,kind=..,role=..,grpc=..)");
  s.Add("links", &c.links, "link capacities src:dst:gbps");
  s.Add("cache.block_size", &c.directory.block_size, "tokens per cache block").Range(1, 1 << 20);
  s.Add("cache.hybrid", &c.directory.hybrid, "hybrid model: hits need state checkpoints");
  s.Add("decode.max_batch", &f.max_batch, "decode batch cap per worker (0 unknown)")
      .Range(0, 1 << 20);
  s.Add("heartbeat.interval_ms", &f.heartbeat_interval_ms, "worker report period").Range(10, 3.6e6);
  s.Add("heartbeat.timeout_ms", &f.heartbeat_timeout_ms, "missed-heartbeat expiry")
      .Range(10, 3.6e6);
  s.Add("failure.cooldown_ms", &f.cooldown_ms, "down time after a failure").Range(0, 3.6e6);
  s.Add("timeouts.ticket_ms", &f.ticket_ms, "Decode open -> ticket").Range(1, 3.6e6);
  s.Add("timeouts.prefill_ms", &f.prefill_ms, "Prefill RPC deadline").Range(1, 3.6e6);
  s.Add("timeouts.token_idle_ms", &f.idle_ms, "max gap between decode events").Range(1, 3.6e6);
  s.Add("retries.prefill", &c.orchestrator.max_prefill_retries, "prefill re-routes before local")
      .Range(0, 16);
  s.Add("retries.decode", &c.orchestrator.max_decode_retries, "decode failures survived")
      .Range(0, 16);
  Rebalancer::Options& pl = c.planner;
  s.Add("planner.interval_seconds", &f.planner_interval_s,
        "long-timescale rebalancer period (0: off)")
      .Range(0, 86400);
  s.Add("planner.apply", &pl.apply, "apply the planner's t and role flips (else recommend only)");
  s.Add("planner.prfaas_profile", &pl.prfaas_profile, "PrfaaS prefill seconds, len:s,...");
  s.Add("planner.pd_profile", &pl.pd_profile, "PD prefill seconds, len:s,...");
  s.Add("planner.kv_profile_mib", &pl.kv_profile_mib, "KV+state MiB per request, len:MiB,...");
  s.Add("planner.output_tokens", &pl.output_tokens, "mean output tokens L_out").Range(1, 1e7);
  s.Add("planner.decode_step_ms", &pl.decode_step_ms, "decode step T_decode").Range(1e-3, 1e6);
  s.Add("planner.max_batch", &pl.max_batch, "decode batch cap BS_max").Range(1, 1e6);
  s.Add("planner.min_gain", &pl.min_gain, "relative gain needed to flip roles").Range(0, 10);
  s.Add("planner.min_samples", &pl.min_samples, "routed requests needed per run").Range(1, 1e7);
  s.Add("log.level", &f.log_level, "log level")
      .OneOf({"trace", "debug", "info", "warn", "error", "critical", "off"});
  s.Add("log.json", &f.log_json, "JSON log lines");
}

void Finalise(Flags& f) {
  using ms = std::chrono::milliseconds;
  RouterConfig& c = f.cfg;
  c.http.max_body_bytes = static_cast<size_t>(f.max_body);
  c.http.limits.max_prompt_tokens = f.max_prompt;
  c.directory.max_batch = static_cast<uint32_t>(f.max_batch);
  c.directory.heartbeat_interval = ms(f.heartbeat_interval_ms);
  c.directory.heartbeat_timeout = ms(f.heartbeat_timeout_ms);
  c.directory.failure_cooldown = ms(f.cooldown_ms);
  c.directory.policy_config.threshold.base_threshold = static_cast<uint32_t>(f.base_threshold);
  c.planner.interval = ms(static_cast<int64_t>(f.planner_interval_s * 1000));
  c.orchestrator.ticket_timeout = ms(f.ticket_ms);
  c.orchestrator.prefill_timeout = ms(f.prefill_ms);
  c.orchestrator.token_idle_timeout = ms(f.idle_ms);
}

std::atomic<bool> g_stop{false};
extern "C" void OnSignal(int) {
  g_stop.store(true);
}

}  // namespace

void RegisterRouterCommand(CLI::App& app) {
  auto* sub = app.add_subcommand("router", "run the OpenAI-compatible router");
  auto flags = std::make_shared<Flags>();
  auto schema = std::make_shared<config::Schema>();
  Bind(*schema, *flags);
  schema->AddFlags(*sub);
  sub->add_option("--config", flags->config_path, "YAML config file");
  sub->callback([flags, schema] {
    if (Status s = schema->Finish(flags->config_path); !s.ok()) {
      std::cerr << "prfaas router: " << s.message() << "\n";
      throw CLI::RuntimeError(1);
    }
    Finalise(*flags);
    if (Status s = log::InitLogging({flags->log_level, flags->log_json, "router", nullptr});
        !s.ok()) {
      std::cerr << "prfaas router: " << s.message() << "\n";
      throw CLI::RuntimeError(1);
    }
    RouterApp app(flags->cfg);
    if (Status s = app.Start(); !s.ok()) {
      std::cerr << "prfaas router: " << s.message() << "\n";
      throw CLI::RuntimeError(1);
    }
    std::signal(SIGINT, OnSignal);
    std::signal(SIGTERM, OnSignal);
    while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    app.Stop();
  });
}

}  // namespace prfaas::router
