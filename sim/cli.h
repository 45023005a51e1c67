// `prfaas sim`: replays a trace or a synthetic workload through simulated clusters using the
// router's policy code, and writes per-request JSONL, summary JSON and SVG plots. Usage and the
// topology/profile formats: docs/simulator.md.
#pragma once

namespace CLI {
class App;
}

namespace prfaas::sim {

// Adds the `sim` subcommand to `app`. Its callback prints a summary table to stdout; on invalid
// input it prints the error to stderr and throws CLI::RuntimeError(1).
void RegisterSimCommand(CLI::App& app);

}  // namespace prfaas::sim
