// Prometheus metrics of the KV transport (prefix prfaas_transport_), registered in the registry
// named by CommonOptions::registry (DefaultRegistry() when null). Internal to transport/.
#pragma once

#include <string>

#include "common/metrics.h"

namespace prfaas::transport::internal {

metrics::Registry& RegistryOr(metrics::Registry* r);

// Per-peer link metrics of a Sender, labelled {peer, peer_cluster}.
struct PeerMetrics {
  PeerMetrics(metrics::Registry& r, const std::string& peer, const std::string& peer_cluster);
  metrics::Gauge& goodput;        // prfaas_transport_link_goodput_bytes_per_second
  metrics::Gauge& in_flight;      // prfaas_transport_link_in_flight_bytes
  metrics::Gauge& queued;         // prfaas_transport_link_queued_bytes
  metrics::Gauge& rtt;            // prfaas_transport_link_rtt_seconds
  metrics::Gauge& connections;    // prfaas_transport_link_connections
  metrics::Counter& retransmits;  // prfaas_transport_link_retransmits_total
  metrics::Counter& sent;         // prfaas_transport_sent_bytes_total
  metrics::Counter& committed;    // prfaas_transport_bundles_total{role="send",result="committed"}
  metrics::Counter& aborted;      // prfaas_transport_bundles_total{role="send",result="aborted"}
  metrics::Histogram& commit_latency;  // prfaas_transport_bundle_duration_seconds
};

// Metrics of a Receiver.
struct ReceiverMetrics {
  ReceiverMetrics(metrics::Registry& r, const std::string& endpoint);
  metrics::Counter& received;    // prfaas_transport_received_bytes_total
  metrics::Gauge& buffered;      // prfaas_transport_receiver_buffered_bytes
  metrics::Gauge& open_tickets;  // prfaas_transport_receiver_open_tickets
  metrics::Counter& committed;   // prfaas_transport_bundles_total{role="recv",result="committed"}
  metrics::Counter& aborted;     // prfaas_transport_bundles_total{role="recv",result="aborted"}
  metrics::Registry& registry;
  // prfaas_transport_aborts_total{role="recv",reason}
  metrics::Counter& Abort(const char* reason);
};

}  // namespace prfaas::transport::internal
