// Standalone `plan` runner: the same subcommand the `prfaas` binary exposes as `prfaas plan`.
#include <CLI/CLI.hpp>

#include "router/planner/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"prfaas analytical planner (standalone)"};
  prfaas::router::RegisterPlanCommand(app);
  app.require_subcommand(1);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
