// `prfaas model ...` subcommands (the owner wires RegisterModelCommands into the prfaas binary).
//
//   prfaas model info --model <preset|dir-with-config.json> [-o table|json]
// prints the layer layout, parameter count, KV bytes per token (bf16 and fp32) and GDN state
// bytes per sequence.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "common/status.h"
#include "engine/config.h"

namespace prfaas::engine {

void RegisterModelCommands(CLI::App& app);

// The text `model info` prints, for tests and other front ends. format: "table" or "json".
Result<std::string> FormatModelInfo(const ModelConfig& config, const std::string& format);

}  // namespace prfaas::engine
