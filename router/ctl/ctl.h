// prfaasctl: the operator CLI for a running router's RouterAdmin gRPC API.
//
//   prfaasctl [--router host:port] [--token T] [-o table|json] [--timeout s] <command> [args...]
//   commands: status | workers | clusters | links | drain W | undrain W | set-role W ROLE |
//             threshold get|set N|auto | policy get|set NAME | explain "<prompt>" | cache stats
//
// The router address defaults to $PRFAAS_ROUTER or 127.0.0.1:8001, the token to
// $PRFAAS_ADMIN_TOKEN. Output is a table (or key/value list) by default, the router's JSON with
// `-o json`. Exit codes: 0 ok, 1 the router rejected the command (bad arguments, unknown worker,
// bad token), 2 usage error, 3 router unreachable.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace prfaas::router {

// Runs prfaasctl with `args` (without the program name), writing to out/err.
int RunCtl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

// Renders an admin reply as text: arrays of objects become aligned tables, objects key/value
// lines (nested objects indented).
std::string RenderAdminReply(const nlohmann::json& reply);

}  // namespace prfaas::router
