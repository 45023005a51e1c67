// `prfaas up`: starts a local two-cluster topology as separate processes and supervises it.
//
// Default topology: a PrfaaS cluster with one prefill worker, a PD cluster with one prefill and
// one decode worker, and the router serving the OpenAI API on 127.0.0.1:8000, all with the
// embedded model. The topology file (YAML) can change every part of it (see
// docs/operations.md#local-topology). Startup checks run before anything starts: the model must
// load, configured ports must be free, the file must be well formed. Ctrl-C (or SIGTERM) drains
// and stops every child; if a child dies, the rest are stopped and the exit code is 1.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace CLI {
class App;
}

namespace prfaas::up {

struct WorkerSpec {
  std::string role;  // prefill | decode | both
  std::vector<std::string> extra_args;
};

struct ClusterSpec {
  std::string name;
  std::string kind;  // prfaas | pd
  std::vector<WorkerSpec> workers;
};

struct Topology {
  std::string model = "models/kjv-tiny";
  std::string tokenizer = "byte";
  std::string host = "127.0.0.1";
  int port = 8000;           // OpenAI API + router /metrics
  int admin_port = 8001;     // prfaasctl
  int registry_port = 8002;  // worker registration
  std::string policy = "prfaas";
  int threshold_tokens = 256;  // offload threshold t; small so the demo offloads long prompts
  std::vector<std::string> router_args;
  std::vector<ClusterSpec> clusters;
  std::vector<std::string> links;  // "src:dst:gbps"
};

// The built-in default topology.
Topology DefaultTopology();
// Parses a topology YAML (keys as in Topology; errors name the key and file:line).
Result<Topology> ParseTopology(const std::string& yaml, const std::string& source);

void RegisterUpCommand(CLI::App& app);

}  // namespace prfaas::up
