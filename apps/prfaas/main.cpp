// prfaas: serve hybrid-attention LLMs with cross-cluster prefill/decode disaggregation.
//
// Subcommands come from their modules; each registers itself on the CLI11 app and reports
// failure by throwing CLI::RuntimeError(exit_code) after printing a clear message.
#include <CLI/CLI.hpp>

#include "apps/up/up.h"
#include "bench/loadgen/cli.h"
#include "engine/cli.h"
#include "router/cli.h"
#include "router/planner/cli.h"
#include "sim/cli.h"
#include "worker/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"prfaas: prefill-as-a-service serving for hybrid-attention LLMs"};
  app.set_version_flag("--version", PRFAAS_VERSION);
  app.require_subcommand(1);
  prfaas::engine::RegisterModelCommands(app);
  prfaas::worker::RegisterWorkerCommand(app);
  prfaas::up::RegisterUpCommand(app);
  prfaas::router::RegisterRouterCommand(app);
  prfaas::router::RegisterPlanCommand(app);
  prfaas::sim::RegisterSimCommand(app);
  prfaas::bench::RegisterBenchCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
