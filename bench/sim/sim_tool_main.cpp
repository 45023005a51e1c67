// Stand-alone `prfaas sim` for development and the benchmarks in bench/results/sim.md:
// `prfaas_sim_tool sim ...` behaves like `prfaas sim ...`.
#include <CLI/CLI.hpp>

#include "sim/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"prfaas simulator (stand-alone driver)"};
  app.require_subcommand(1);
  prfaas::sim::RegisterSimCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
