#include "transport/telemetry.h"

namespace prfaas::transport::internal {

metrics::Registry& RegistryOr(metrics::Registry* r) {
  return r ? *r : metrics::DefaultRegistry();
}

namespace {
metrics::Family<metrics::Counter>& Bundles(metrics::Registry& r) {
  return r.Counter("prfaas_transport_bundles_total", "KV bundles finished, by role and result.",
                   {"role", "result"});
}
}  // namespace

PeerMetrics::PeerMetrics(metrics::Registry& r, const std::string& peer,
                         const std::string& peer_cluster)
    : goodput(r.Gauge("prfaas_transport_link_goodput_bytes_per_second",
                      "EWMA of payload bytes per second over busy intervals.",
                      {"peer", "peer_cluster"})
                  .WithLabels({peer, peer_cluster})),
      in_flight(r.Gauge("prfaas_transport_link_in_flight_bytes",
                        "Bytes handed to the kernel and not yet acknowledged.",
                        {"peer", "peer_cluster"})
                    .WithLabels({peer, peer_cluster})),
      queued(r.Gauge("prfaas_transport_link_queued_bytes",
                     "Bytes appended but not yet fully written to the kernel.",
                     {"peer", "peer_cluster"})
                 .WithLabels({peer, peer_cluster})),
      rtt(r.Gauge("prfaas_transport_link_rtt_seconds", "Smoothed TCP RTT (max over connections).",
                  {"peer", "peer_cluster"})
              .WithLabels({peer, peer_cluster})),
      connections(r.Gauge("prfaas_transport_link_connections", "Live connections to the peer.",
                          {"peer", "peer_cluster"})
                      .WithLabels({peer, peer_cluster})),
      retransmits(r.Counter("prfaas_transport_link_retransmits_total",
                            "TCP segments retransmitted (TCP_INFO).", {"peer", "peer_cluster"})
                      .WithLabels({peer, peer_cluster})),
      sent(r.Counter("prfaas_transport_sent_bytes_total", "Payload bytes written to the peer.",
                     {"peer", "peer_cluster"})
               .WithLabels({peer, peer_cluster})),
      committed(Bundles(r).WithLabels({"send", "committed"})),
      aborted(Bundles(r).WithLabels({"send", "aborted"})),
      commit_latency(r.Histogram("prfaas_transport_bundle_duration_seconds",
                                 "Sender time from Begin to the receiver's commit ACK.",
                                 {"peer", "peer_cluster"}, metrics::LatencyBuckets())
                         .WithLabels({peer, peer_cluster})) {}

ReceiverMetrics::ReceiverMetrics(metrics::Registry& r, const std::string& endpoint)
    : received(r.Counter("prfaas_transport_received_bytes_total", "Payload bytes received.",
                         {"endpoint"})
                   .WithLabels({endpoint})),
      buffered(r.Gauge("prfaas_transport_receiver_buffered_bytes",
                       "Bytes held for tickets not yet committed.", {"endpoint"})
                   .WithLabels({endpoint})),
      open_tickets(r.Gauge("prfaas_transport_receiver_open_tickets", "Tickets issued and open.",
                           {"endpoint"})
                       .WithLabels({endpoint})),
      committed(Bundles(r).WithLabels({"recv", "committed"})),
      aborted(Bundles(r).WithLabels({"recv", "aborted"})),
      registry(r) {}

metrics::Counter& ReceiverMetrics::Abort(const char* reason) {
  return registry
      .Counter("prfaas_transport_aborts_total", "Receiver-side session aborts by reason.",
               {"reason"})
      .WithLabels({reason});
}

}  // namespace prfaas::transport::internal
