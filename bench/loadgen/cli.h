// `prfaas bench` (replay a trace or synthetic workload against an OpenAI-compatible endpoint and
// report latency / throughput / SLO attainment) and `prfaas bench profile` (measure a worker's
// prefill and decode-step latencies into the simulator's profile format). Usage: docs/bench.md.
#pragma once

namespace CLI {
class App;
}

namespace prfaas::bench {

// Adds the `bench` subcommand (with `profile` beneath it) to `app`. The callbacks print the
// report to stdout (progress and logs go to stderr); on invalid input or an unreachable endpoint
// they print the error to stderr and throw CLI::RuntimeError(1).
void RegisterBenchCommand(CLI::App& app);

}  // namespace prfaas::bench
