// `prfaas router`: runs the router process (router/server/router_app.h) from a YAML config file
// (--config) and/or flags. Every config key is also a flag, e.g. --http.port 8000.
//
// Keys (defaults in brackets):
//   http.address [0.0.0.0], http.port [8000], http.threads [4]
//   grpc.address [0.0.0.0], admin.port [8001] (-1 off), registry.port [8002] (-1 off)
//   api.token [""] (bearer token for /v1/*), admin.token [""] (prfaasctl)
//   model [prfaas] (served model name), tokenizer [byte] (byte | path to tokenizer.json)
//   policy [prfaas] (prfaas, round-robin, least-loaded, cache-aware, kv-cost, naive-hetero,
//     homogeneous-pd), threshold.base [19400] (t0 tokens)
//   limits.max_body_bytes [4194304], limits.max_prompt_tokens [131072], limits.max_tokens [32768],
//   limits.default_max_tokens [256], limits.max_concurrent_requests [1024]
//   workers [] static workers "id=..,cluster=..,kind=pd|prfaas,role=prefill|decode|both,grpc=h:p"
//   links [] "src:dst:gbps" nominal link capacities
//   cache.block_size [64], cache.hybrid [true], decode.max_batch [0]
//   heartbeat.interval_ms [1000], heartbeat.timeout_ms [5000], failure.cooldown_ms [5000]
//   timeouts.ticket_ms [5000], timeouts.prefill_ms [120000], timeouts.token_idle_ms [30000]
//   retries.prefill [1], retries.decode [2]
//   log.level [info], log.json [false]
#pragma once

namespace CLI {
class App;
}

namespace prfaas::router {

// Adds the `router` subcommand; it runs until SIGINT/SIGTERM. Failures print a message and
// throw CLI::RuntimeError(1).
void RegisterRouterCommand(CLI::App& app);

}  // namespace prfaas::router
