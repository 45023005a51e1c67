#include "router/ctl/ctl.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "prfaas/v1/router.grpc.pb.h"

namespace prfaas::router {

using nlohmann::json;

namespace {

std::string Cell(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_number_float()) return fmt::format("{:.4g}", v.get<double>());
  return v.dump();
}

void RenderTable(const json& rows, std::string& out) {
  if (rows.empty()) {
    out += "(none)\n";
    return;
  }
  std::vector<std::string> cols;
  for (auto it = rows[0].begin(); it != rows[0].end(); ++it) cols.push_back(it.key());
  std::vector<size_t> width(cols.size());
  std::vector<std::vector<std::string>> cells;
  for (size_t c = 0; c < cols.size(); ++c) width[c] = cols[c].size();
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (size_t c = 0; c < cols.size(); ++c) {
      line.push_back(r.contains(cols[c]) ? Cell(r[cols[c]]) : "-");
      width[c] = std::max(width[c], line.back().size());
    }
    cells.push_back(std::move(line));
  }
  auto emit = [&](const std::vector<std::string>& line, bool upper) {
    std::string s;
    for (size_t c = 0; c < cols.size(); ++c) {
      std::string v = line[c];
      if (upper) std::transform(v.begin(), v.end(), v.begin(), ::toupper);
      s += v;
      if (c + 1 < cols.size()) s += std::string(width[c] - v.size() + 2, ' ');
    }
    out += s + "\n";
  };
  emit(cols, true);
  for (const auto& line : cells) emit(line, false);
}

void RenderObject(const json& obj, int indent, std::string& out) {
  size_t key_width = 0;
  for (auto it = obj.begin(); it != obj.end(); ++it)
    key_width = std::max(key_width, it.key().size());
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const std::string pad(static_cast<size_t>(indent), ' ');
    if (it->is_object()) {
      out += pad + it.key() + ":\n";
      RenderObject(*it, indent + 2, out);
    } else if (it->is_array() && !it->empty() && (*it)[0].is_object()) {
      out += pad + it.key() + ":\n";
      std::string table;
      RenderTable(*it, table);
      std::istringstream lines(table);
      for (std::string line; std::getline(lines, line);) out += pad + "  " + line + "\n";
    } else {
      out += pad + it.key() + ":" + std::string(key_width - it.key().size() + 1, ' ') +
             (it->is_array() ? it->dump() : Cell(*it)) + "\n";
    }
  }
}

}  // namespace

std::string RenderAdminReply(const json& reply) {
  std::string out;
  // A reply that is a single table ({"workers": [...]}) prints as just the table.
  if (reply.is_object() && reply.size() == 1 && reply.begin()->is_array()) {
    RenderTable(*reply.begin(), out);
  } else if (reply.is_object()) {
    RenderObject(reply, 0, out);
  } else {
    out = reply.dump(2) + "\n";
  }
  return out;
}

int RunCtl(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  CLI::App app{"prfaasctl: operate a prfaas router"};
  const char* env_router = std::getenv("PRFAAS_ROUTER");
  const char* env_token = std::getenv("PRFAAS_ADMIN_TOKEN");
  std::string router = env_router ? env_router : "127.0.0.1:8001";
  std::string token = env_token ? env_token : "";
  std::string output = "table";
  double timeout_s = 10;
  std::vector<std::string> command;
  app.add_option("--router", router, "router admin gRPC address host:port");
  app.add_option("--token", token, "admin bearer token (default $PRFAAS_ADMIN_TOKEN)");
  app.add_option("-o,--output", output, "table | json")->check(CLI::IsMember({"table", "json"}));
  app.add_option("--timeout", timeout_s, "seconds to wait for the router")
      ->check(CLI::PositiveNumber);
  app.add_option("command", command, "command and its arguments")->required();
  app.prefix_command(false);
  app.allow_extras(false);
  std::vector<std::string> argv_rev(args.rbegin(), args.rend());
  try {
    app.parse(argv_rev);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    err << "prfaasctl: " << e.what() << "\n"
        << "run 'prfaasctl --help' for usage\n";
    return 2;
  }
  static const std::vector<std::string> kCommands = {"status", "workers", "clusters", "links",
                                                     "drain",  "undrain", "set-role", "threshold",
                                                     "policy", "explain", "cache"};
  if (std::find(kCommands.begin(), kCommands.end(), command[0]) == kCommands.end()) {
    err << "prfaasctl: unknown command '" << command[0] << "' (one of:";
    for (const auto& c : kCommands) err << " " << c;
    err << ")\n";
    return 2;
  }

  auto channel = grpc::CreateChannel(router, grpc::InsecureChannelCredentials());
  auto stub = v1::RouterAdmin::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::AdminRequest req;
  req.set_command(command[0]);
  for (size_t i = 1; i < command.size(); ++i) req.add_args(command[i]);
  v1::AdminReply rep;
  grpc::Status s = stub->Call(&ctx, req, &rep);
  if (!s.ok()) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      err << "prfaasctl: cannot reach the router admin API at " << router << ": "
          << s.error_message() << "\n";
      return 3;
    }
    err << "prfaasctl: " << command[0] << ": " << s.error_message() << "\n";
    return 1;
  }
  json j = json::parse(rep.json(), nullptr, false);
  if (j.is_discarded()) {
    err << "prfaasctl: the router sent a reply that is not JSON\n";
    return 1;
  }
  out << (output == "json" ? j.dump(2) + "\n" : RenderAdminReply(j));
  return 0;
}

}  // namespace prfaas::router
