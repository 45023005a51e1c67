// `prfaas plan`: solves the analytical model (router/planner/model.h) from command-line flags.
//
// Defaults reproduce the paper's case study; flags override the workload, profiles, decode
// constants, instance counts and bandwidth. Prints a table, or JSON with `-o json`.
#pragma once

#include <string>

#include "router/planner/model.h"

namespace CLI {
class App;
}

namespace prfaas::router {

// Adds the `plan` subcommand to `app`; its callback prints to stdout and exits non-zero (by
// throwing CLI::RuntimeError(1)) on invalid inputs after printing the error to stderr.
void RegisterPlanCommand(CLI::App& app);

// The text `prfaas plan` prints: an aligned table, or a JSON document when `json`.
std::string FormatPlan(const PlanResult& result, bool json);

}  // namespace prfaas::router
