// AdminService: the router's RouterAdmin gRPC API behind `prfaasctl` (router.proto).
//
// One RPC, Call(command, args) -> JSON. Commands:
//   status                      policy, threshold, worker/cluster counts, cache index size
//   workers | clusters | links  tables of the live directory (links: nominal + telemetry)
//   drain <worker> | undrain <worker>   stop/resume routing to a worker (and forward
//                               WorkerAdmin.Drain/Undrain to it, best effort)
//   set-role <worker> prefill|decode|both   WorkerAdmin.SetRole on the worker, then the router
//   threshold get | threshold set <tokens> | threshold auto
//   policy get | policy set <name>
//   explain "<prompt>"          the decision the router would take now, and why (not charged)
//   cache stats                 global cache index sizes
// With an admin token configured every call needs metadata "authorization: Bearer <token>"
// (UNAUTHENTICATED otherwise). Bad commands/arguments are INVALID_ARGUMENT, unknown workers
// NOT_FOUND.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "prfaas/v1/router.grpc.pb.h"
#include "router/registry/directory.h"
#include "router/tokenizer/tokenizer.h"

namespace prfaas::router {

class AdminService final : public v1::RouterAdmin::Service {
 public:
  AdminService(WorkerDirectory& directory, const Tokenizer& tokenizer, std::string admin_token);

  grpc::Status Call(grpc::ServerContext* context, const v1::AdminRequest* request,
                    v1::AdminReply* reply) override;

  // The command without transport concerns (auth), for tests and embedding.
  Result<nlohmann::json> Execute(const std::string& command, const std::vector<std::string>& args);

 private:
  nlohmann::json WorkersJson();
  Result<nlohmann::json> Explain(const std::string& prompt);
  Result<nlohmann::json> ForwardDrain(const std::string& worker, bool drain);
  Result<nlohmann::json> SetRole(const std::string& worker, const std::string& role);

  WorkerDirectory& directory_;
  const Tokenizer& tokenizer_;
  std::string admin_token_;
};

}  // namespace prfaas::router
