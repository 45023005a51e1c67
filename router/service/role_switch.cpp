#include "router/service/role_switch.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include "prfaas/v1/worker.grpc.pb.h"
#include "router/registry/registry_service.h"

namespace prfaas::router {

Status SwitchWorkerRole(WorkerDirectory& directory, std::string_view worker, WorkerRole role,
                        std::chrono::seconds drain_deadline) {
  PRFAAS_ASSIGN_OR_RETURN(WorkerIndex w, directory.Find(worker));
  auto stub = v1::WorkerAdmin::NewStub(directory.Channel(w));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + drain_deadline + std::chrono::seconds(30));
  v1::SetRoleRequest req;
  req.set_role(role == WorkerRole::kPrefill  ? v1::WORKER_ROLE_PREFILL
               : role == WorkerRole::kDecode ? v1::WORKER_ROLE_DECODE
                                             : v1::WORKER_ROLE_BOTH);
  req.set_drain_deadline_seconds(static_cast<double>(drain_deadline.count()));
  v1::SetRoleReply rep;
  if (grpc::Status s = stub->SetRole(&ctx, req, &rep); !s.ok()) {
    return FromGrpc(s, fmt::format("worker {} SetRole", worker));
  }
  return directory.SetRole(worker, role);
}

}  // namespace prfaas::router
