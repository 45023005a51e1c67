// Link: a simulated network link carrying KV transfers as fluid flows that share its capacity
// max-min fairly (water-filling), with an optional per-flow rate cap (one flow cannot exceed
// what its TCP streams achieve) and a per-flow production cap (layer-wise pipelining: a flow
// cannot run ahead of the prefill producing its bytes).
//
// The owner drives time: Advance(now) moves bytes at the current rates, then the owner adds or
// removes flows, changes caps or capacity, and asks NextCompletion() for the next event. Rates are
// recomputed after every change. Bytes carried are binned into fixed-width time buckets for
// utilisation plots. Propagation delay (rtt/2) is the owner's business.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace prfaas::sim {

class Link {
 public:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  Link(std::string name, double capacity_bps, double rtt_s, double per_flow_cap_bps,
       double bucket_s);

  // Moves every flow forward to `now` (>= the last call) at the current rates.
  void Advance(double now);
  // Adds a flow of `bytes` with a production cap (bits/s, kInf = none). Returns its id.
  uint32_t AddFlow(double bytes, double cap_bps, uint64_t tag);
  void SetFlowCap(uint32_t id, double cap_bps);
  void SetCapacity(double bps);
  // Flows whose bytes are all delivered (as of the last Advance); removes them. Returns tags.
  std::vector<uint64_t> TakeCompleted();
  // Absolute time the next flow completes at current rates (kInf if none can).
  double NextCompletion() const;

  const std::string& name() const { return name_; }
  double capacity_bps() const { return capacity_; }
  double rtt_s() const { return rtt_; }
  size_t active_flows() const { return active_; }
  double backlog_bytes() const;  // bytes not yet delivered
  double rate_bps() const { return total_rate_; }
  double bytes_carried() const { return carried_; }
  double flow_rate_bps(uint32_t id) const { return flows_[id].rate; }
  // Bytes carried per bucket since t = 0.
  const std::vector<double>& bucket_bytes() const { return buckets_; }
  double bucket_s() const { return bucket_s_; }
  uint64_t version() const { return version_; }  // bumps whenever rates change

 private:
  struct Flow {
    double remaining = 0;
    double cap = kInf;
    double rate = 0;
    uint64_t tag = 0;
    bool active = false;
  };
  void Recompute();
  void Bin(double t0, double t1, double rate_bps);

  std::string name_;
  double capacity_, rtt_, per_flow_cap_, bucket_s_;
  double now_ = 0;
  double total_rate_ = 0;
  double carried_ = 0;
  size_t active_ = 0;
  uint64_t version_ = 0;
  std::vector<Flow> flows_;
  std::vector<uint32_t> free_ids_;
  std::vector<uint32_t> order_;  // scratch for water-filling
  std::vector<double> buckets_;
};

}  // namespace prfaas::sim
