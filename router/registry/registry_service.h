// RegistryService: the router's gRPC Registry (common/proto/prfaas/v1/router.proto).
//
// Register adds or refreshes a worker in the WorkerDirectory and tells it how often to report.
// Publish is a client stream of WorkerEvents: load reports (which double as heartbeats) and cache
// events (stored/evicted attention blocks and state checkpoints), applied in arrival order. A
// worker that stops publishing is marked down by the directory's heartbeat expiry.
#pragma once

#include "prfaas/v1/router.grpc.pb.h"
#include "router/registry/directory.h"

namespace prfaas::router {

class RegistryService final : public v1::Registry::Service {
 public:
  explicit RegistryService(WorkerDirectory& directory) : directory_(directory) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterReply* reply) override;
  grpc::Status Publish(grpc::ServerContext* context, grpc::ServerReader<v1::WorkerEvent>* reader,
                       v1::PublishAck* reply) override;

 private:
  WorkerDirectory& directory_;
};

// Maps a prfaas Status onto a gRPC status with the same code and message.
grpc::Status ToGrpc(const Status& status);
// And back; the message names the peer operation as `what`.
Status FromGrpc(const grpc::Status& status, std::string_view what);

}  // namespace prfaas::router
