// Stand-alone `prfaas bench` driver for development (the `prfaas` binary wires the same
// subcommand through RegisterBenchCommand): `prfaas_bench_tool bench --url ... --trace ...`.
#include <CLI/CLI.hpp>

#include "bench/loadgen/cli.h"

int main(int argc, char** argv) {
  CLI::App app{"prfaas load generator"};
  app.require_subcommand(1);
  prfaas::bench::RegisterBenchCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
