// RegistryService: the router's gRPC Registry (common/proto/prfaas/v1/router.proto).
//
// Register adds or refreshes a worker in the WorkerDirectory and tells it how often to report.
// Publish is a client stream of WorkerEvents: load reports (which double as heartbeats) and cache
// events (stored/evicted attention blocks and state checkpoints), applied in arrival order. A
// worker that stops publishing is marked down by the directory's heartbeat expiry.
//
// Link telemetry in load reports is normalised before the directory sees it (the threshold
// controller's link signals come from it):
//   * `peer_cluster` left empty (a worker knows the ticket's transport endpoint, not the decode
//     worker's cluster) is filled in from the transport endpoints announced at registration, so
//     the directory can aggregate per PrfaaS -> PD link; unknown endpoints stay unattributed;
//   * an idle sender (nothing in flight or queued) reports goodput and RTT 0: both keep the
//     last transfer's values in the transport, and stale values must not hold t up; its
//     retransmit total is held at the last busy report (the directory rates retransmits by
//     the reported goodput);
//   * RTTs are floored at kMinLinkRttSeconds, the base a short cross-datacenter path has: on a
//     LAN or veth path the base RTT is tens of microseconds and one bundle's own queueing would
//     read as a 50x RTT inflation.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "prfaas/v1/router.grpc.pb.h"
#include "router/registry/directory.h"

namespace prfaas::router {

inline constexpr double kMinLinkRttSeconds = 0.010;

class RegistryService final : public v1::Registry::Service {
 public:
  explicit RegistryService(WorkerDirectory& directory) : directory_(directory) {}

  grpc::Status Register(grpc::ServerContext* context, const v1::RegisterRequest* request,
                        v1::RegisterReply* reply) override;
  grpc::Status Publish(grpc::ServerContext* context, grpc::ServerReader<v1::WorkerEvent>* reader,
                       v1::PublishAck* reply) override;

 private:
  void NormaliseLinkTelemetry(const std::string& worker_id, v1::LoadReport& load);

  WorkerDirectory& directory_;
  std::mutex mu_;
  std::unordered_map<std::string, std::string> cluster_by_transport_;  // endpoint -> cluster
  std::unordered_map<std::string, int64_t> retransmits_held_;  // "worker|peer" -> last busy total
};

// Maps a prfaas Status onto a gRPC status with the same code and message.
grpc::Status ToGrpc(const Status& status);
// And back; the message names the peer operation as `what`.
Status FromGrpc(const grpc::Status& status, std::string_view what);

}  // namespace prfaas::router
