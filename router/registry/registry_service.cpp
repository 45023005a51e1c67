#include "router/registry/registry_service.h"

#include <algorithm>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace prfaas::router {

grpc::Status ToGrpc(const Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), status.message());
}

Status FromGrpc(const grpc::Status& status, std::string_view what) {
  if (status.ok()) return Status::Ok();
  return Status(static_cast<StatusCode>(status.error_code()),
                fmt::format("{}: {}", what, status.error_message()));
}

grpc::Status RegistryService::Register(grpc::ServerContext*, const v1::RegisterRequest* request,
                                       v1::RegisterReply* reply) {
  WorkerInfo info;
  info.id = request->worker_id();
  info.cluster = request->cluster();
  info.cluster_kind =
      request->cluster_kind() == v1::CLUSTER_KIND_PRFAAS ? ClusterKind::kPrfaas : ClusterKind::kPd;
  switch (request->role()) {
    case v1::WORKER_ROLE_PREFILL: info.role = WorkerRole::kPrefill; break;
    case v1::WORKER_ROLE_DECODE: info.role = WorkerRole::kDecode; break;
    default: info.role = WorkerRole::kBoth; break;
  }
  info.grpc_endpoint = request->grpc_endpoint();
  info.transport_endpoint = request->transport_endpoint();
  if (request->block_size() != 0 && request->block_size() != directory_.block_size()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        fmt::format("worker block size {} != router block size {}",
                                    request->block_size(), directory_.block_size()));
  }
  auto w = directory_.Register(info, Now());
  if (!w.ok()) return ToGrpc(w.status());
  if (!info.transport_endpoint.empty()) {
    std::lock_guard lock(mu_);
    cluster_by_transport_[info.transport_endpoint] = info.cluster;
  }
  reply->set_heartbeat_interval_seconds(
      std::chrono::duration<double>(directory_.heartbeat_interval()).count());
  return grpc::Status::OK;
}

grpc::Status RegistryService::Publish(grpc::ServerContext*,
                                      grpc::ServerReader<v1::WorkerEvent>* reader,
                                      v1::PublishAck*) {
  v1::WorkerEvent event;
  while (reader->Read(&event)) {
    Status s;
    if (event.has_load()) {
      NormaliseLinkTelemetry(event.worker_id(), *event.mutable_load());
      s = directory_.ApplyLoad(event.worker_id(), event.load(), Now());
    } else if (event.has_cache()) {
      s = directory_.ApplyCache(event.worker_id(), event.cache());
    }
    // An unknown worker must register first; telling it ends the stream so it re-registers.
    if (!s.ok()) return ToGrpc(s);
  }
  return grpc::Status::OK;
}

void RegistryService::NormaliseLinkTelemetry(const std::string& worker_id, v1::LoadReport& load) {
  if (load.links_size() == 0) return;
  std::lock_guard lock(mu_);
  for (auto& link : *load.mutable_links()) {
    int64_t& held_retransmits = retransmits_held_[worker_id + "|" + link.peer_endpoint()];
    if (link.peer_cluster().empty()) {
      auto it = cluster_by_transport_.find(link.peer_endpoint());
      if (it != cluster_by_transport_.end()) link.set_peer_cluster(it->second);
    }
    if (link.bytes_in_flight() + link.queued_bytes() == 0) {
      // Idle sender: the goodput EWMA (busy intervals only) and TCP_INFO's RTT (updated by ACKs)
      // still hold the values of the last transfer. Reported as they are they would keep the
      // controller raising t forever after one slow transfer; an idle link carries no pressure.
      // Retransmits are held at the last busy report: the directory turns their increase into a
      // rate with the reported goodput, so they must arrive together with a busy goodput.
      link.set_goodput_bytes_per_second(0);
      link.set_rtt_seconds(0);
      link.set_retransmits_total(held_retransmits);
      continue;
    }
    held_retransmits = link.retransmits_total();
    if (link.rtt_seconds() > 0) {
      link.set_rtt_seconds(std::max(link.rtt_seconds(), kMinLinkRttSeconds));
    }
  }
}

}  // namespace prfaas::router
