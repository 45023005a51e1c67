// The PrfaaS analytical throughput model (paper §3.4, Eqs. 1–8) and its grid-search solver.
//
// Inputs: the distribution of uncached prompt lengths, the prefill latency / KV size profiles of
// the PrfaaS and PD hardware, decode constants and instance counts. Output: the operating point
// (threshold t, N_p/N_d split) that maximises Λ_max, plus the two paper baselines (homogeneous PD
// and naive heterogeneous). Every request on a path is represented by the mean uncached length of
// that path (the paper's simplification), so the model is exact for the paper's case study and an
// approximation elsewhere. Pure computation, no I/O.
//
//   Φ_kv(l)   = S_kv(l) / T_prefill(l)
//   Θ_prfaas  = min(N_prfaas / T_prfaas(l_long), B_out / S_kv(l_long))
//   Θ_pd-p    = N_p / T_pd(l_short)
//   Θ_pd-d    = N_d · BS_max / (T_decode · L_out)
//   Λ_max     = min(Θ_prfaas / p, Θ_pd-p / (1 − p), Θ_pd-d)
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace prfaas::router {

// Uncached prompt lengths (tokens). Two forms: a log-normal truncated to [lo, hi] (closed-form
// moments) or an empirical sample (e.g. uncached lengths measured by the live router).
class LengthDistribution {
 public:
  static Result<LengthDistribution> TruncatedLogNormal(double mu, double sigma, double lo,
                                                       double hi);
  static Result<LengthDistribution> Empirical(std::vector<double> lengths);

  // Split at threshold t: p = P(L > t), l_long = E[L | L > t], l_short = E[L | L <= t]
  // (l_long / l_short are 0 when their side is empty).
  struct Split {
    double p = 0;
    double l_long = 0;
    double l_short = 0;
  };
  Split SplitAt(double t) const;
  double Mean() const;
  double lo() const { return lo_; }
  double hi() const { return hi_; }

 private:
  LengthDistribution() = default;
  bool lognormal_ = true;
  double mu_ = 0, sigma_ = 1, lo_ = 0, hi_ = 0;
  std::vector<double> sorted_;  // empirical: ascending
  std::vector<double> prefix_;  // empirical: prefix sums of sorted_
};

// A measured curve y(l) over sequence length, piecewise-linear between points and linearly
// extrapolated beyond the ends. Points must have strictly increasing lengths.
class Profile {
 public:
  static Result<Profile> FromPoints(std::vector<std::pair<double, double>> points);
  // Parses "1024:0.44,8192:0.72,..." (length:value pairs).
  static Result<Profile> Parse(const std::string& text);
  double At(double length) const;
  const std::vector<std::pair<double, double>>& points() const { return points_; }
  Profile Scaled(double factor) const;  // y * factor

 private:
  std::vector<std::pair<double, double>> points_;
};

struct PlannerInputs {
  LengthDistribution lengths;
  Profile prfaas_prefill_s;      // T_prfaas(l): seconds per prefill on a PrfaaS instance
  Profile pd_prefill_s;          // T_pd(l): seconds per prefill on a PD instance
  Profile kv_bytes;              // S_kv(l): KV + state bytes produced by a prefill of length l
  double output_tokens = 1024;   // L_out
  double decode_step_s = 0.025;  // T_decode (SLO-governed)
  double max_batch = 20;         // BS_max per decode instance
  int n_prfaas = 4;              // PrfaaS instances
  int n_pd = 8;                  // PD instances (N_p + N_d)
  double egress_bps = 100e9;     // B_out, bits per second
  double t_step = 100;           // grid step for t (tokens)
  int n_homogeneous = 12;        // instances of the homogeneous baseline (PD hardware)
};

// The paper's case study (§4): 4×(8×H200) PrfaaS + 8×(8×H20) PD, 100 Gbps, log-normal(9.90, 1.0)
// on [128, 131072], output 1024. Constants and their derivation: docs/routing.md.
PlannerInputs PaperCaseStudy();

struct OperatingPoint {
  double threshold = 0;  // t (tokens); +inf-like (hi) when nothing is offloaded
  int n_prfaas = 0, n_p = 0, n_d = 0;
  double p = 0, l_long = 0, l_short = 0;
  double theta_prfaas = 0;  // req/s (0 when the path is unused)
  double theta_prfaas_compute = 0, theta_prfaas_bandwidth = 0;
  double theta_pd_p = 0, theta_pd_d = 0;
  double lambda_max = 0;   // req/s
  double egress_bps = 0;   // Λ_max · p · S_kv(l_long) · 8
  double phi_kv_bps = 0;   // per-instance Φ_kv(l_long) on the PrfaaS path
  std::string bottleneck;  // "prfaas-compute" | "prfaas-bandwidth" | "pd-prefill" | "pd-decode"
};

struct PlanResult {
  OperatingPoint prfaas;       // best (t, N_p/N_d)
  OperatingPoint homogeneous;  // n_homogeneous PD instances, best N_p/N_d, no offload
  OperatingPoint naive;        // all prefill on PrfaaS, all n_pd instances decode
};

// Validates inputs and solves. Errors: InvalidArgument for empty profiles or counts < 1.
Result<PlanResult> Plan(const PlannerInputs& in);

// Long-timescale rebalancer step (paper §3.4.3): for the current uncached-length distribution
// and profiles, compares the current (t, N_p) with the best one and recommends converting PD
// instances between prefill and decode only when that raises Λ_max by at least `min_gain`
// (relative), so measurement noise does not flip roles back and forth. Applying the flips (drain,
// set-role) is the live router's job.
struct RoleAdvice {
  int current_n_p = 0, target_n_p = 0;  // target == current: keep roles
  double current_threshold = 0, target_threshold = 0;
  double current_lambda = 0, target_lambda = 0;
  bool flip = false;
  std::string summary;  // "convert 1 decode -> prefill: 3.05 -> 3.20 req/s"
};
Result<RoleAdvice> AdviseRoles(const PlannerInputs& in, int current_n_p, double current_threshold,
                               double min_gain = 0.05);

// Λ_max for one fixed (t, N_p) — the inner step of the grid search, exposed for tests and for
// the live rebalancer.
OperatingPoint Evaluate(const PlannerInputs& in, double threshold, int n_p);

}  // namespace prfaas::router
