// ClusterState: the snapshot of clusters, workers and links that a routing policy reads.
//
// These are plain data structures shared by the live router (filled from worker registration,
// heartbeats and link telemetry) and by the simulator (filled from its simulated clusters). A
// policy never mutates a ClusterState and never performs I/O; whoever owns the snapshot keeps it
// current. Workers are addressed by dense index (WorkerIndex = position in `workers`), which is
// also the key the CacheIndex uses, so the owner must keep indices stable while the index holds
// entries for them (retire a worker with CacheIndex::RemoveWorker before reusing its slot).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace prfaas::router {

class CacheIndex;

using WorkerIndex = uint32_t;
using ClusterIndex = uint32_t;
inline constexpr WorkerIndex kNoWorker = UINT32_MAX;
inline constexpr ClusterIndex kNoCluster = UINT32_MAX;

// prfaas: compute-dense remote prefill-only cluster; pd: local prefill/decode cluster that can
// serve any request end to end.
enum class ClusterKind : uint8_t { kPrfaas, kPd };

// Which services a worker hosts right now (the long-timescale planner may flip pd roles).
enum class WorkerRole : uint8_t { kPrefill, kDecode, kBoth };

std::string_view ClusterKindName(ClusterKind kind);  // "prfaas" | "pd"
std::string_view WorkerRoleName(WorkerRole role);    // "prefill" | "decode" | "both"

struct ClusterView {
  std::string name;
  ClusterKind kind = ClusterKind::kPd;
};

struct WorkerView {
  std::string id;            // stable human-readable name ("pd-a/prefill-3")
  ClusterIndex cluster = 0;  // index into ClusterState::clusters
  WorkerRole role = WorkerRole::kBoth;
  bool healthy = true;
  bool draining = false;  // finishes in-flight work, takes nothing new

  // Prefill side.
  uint32_t queue_depth = 0;             // prefill requests queued or running
  uint64_t prefill_backlog_tokens = 0;  // uncached tokens queued or running (prefill load)

  // Decode side.
  uint32_t running = 0;            // sequences in the continuous batch
  uint32_t waiting = 0;            // sequences admitted but not yet batched (reserved, installing)
  uint32_t max_batch = 0;          // batch cap (BS_max); 0 = unknown (no cap applied)
  uint64_t free_kv_bytes = 0;      // free attention-KV capacity
  uint64_t kv_capacity_bytes = 0;  // total attention-KV capacity; 0 = unknown
  uint32_t free_state_slots = 0;   // free recurrent-state slots
  bool state_slots_known = false;  // false: free_state_slots is not reported, do not gate on it

  bool CanPrefill() const { return healthy && !draining && role != WorkerRole::kDecode; }
  bool CanDecode() const { return healthy && !draining && role != WorkerRole::kPrefill; }
  // Decode batch occupancy in [0, inf): (running + waiting) / max_batch, or the raw count when
  // max_batch is unknown.
  double DecodeLoad() const;
};

// One direction of an inter-cluster link (src sends KV to dst). Nominal capacity comes from
// config; the live fields come from transport telemetry and may lag by one telemetry period.
struct LinkView {
  ClusterIndex src = 0;
  ClusterIndex dst = 0;
  bool up = true;              // false: link (or its far side) is known to be down
  double nominal_bps = 0;      // configured capacity, bits per second
  double goodput_bps = 0;      // measured application goodput (EWMA), bits per second
  double utilisation = 0;      // goodput / usable capacity in [0, 1+]
  double rtt_s = 0;            // smoothed RTT
  double base_rtt_s = 0;       // uncongested RTT (min observed); 0 = unknown
  double retransmit_rate = 0;  // retransmitted / sent segments over the last period
  uint64_t backlog_bytes = 0;  // bytes queued for this link and not yet sent

  // Seconds needed to drain the backlog at the current goodput (nominal when goodput is 0).
  double BacklogSeconds() const;
};

// Model-dependent sizes the policies use for capacity checks and transfer estimates.
struct ModelShape {
  uint32_t block_tokens = 64;     // tokens per cache block (same B as the block hashes)
  double kv_bytes_per_token = 0;  // attention KV bytes per token across all layers; 0 = unknown
  double state_bytes = 0;         // recurrent + conv state bytes per sequence
};

struct ClusterState {
  std::vector<ClusterView> clusters;
  std::vector<WorkerView> workers;  // WorkerIndex = position
  std::vector<LinkView> links;
  ModelShape model;
  const CacheIndex* cache = nullptr;  // null: no prefix information (every request fully uncached)

  // The link src -> dst, or nullptr when none is configured.
  const LinkView* FindLink(ClusterIndex src, ClusterIndex dst) const;
  const ClusterView& cluster_of(WorkerIndex w) const { return clusters[workers[w].cluster]; }
};

}  // namespace prfaas::router
