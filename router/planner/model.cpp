#include "router/planner/model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include <fmt/format.h>

namespace prfaas::router {
namespace {

double Phi(double x) {
  return 0.5 * std::erfc(-x / std::sqrt(2.0));
}

}  // namespace

// ---- LengthDistribution -------------------------------------------------------------------------

Result<LengthDistribution> LengthDistribution::TruncatedLogNormal(double mu, double sigma,
                                                                  double lo, double hi) {
  if (!(sigma > 0) || !(lo > 0) || !(hi > lo) || !std::isfinite(mu)) {
    return InvalidArgument(
        fmt::format("log-normal needs sigma > 0 and 0 < lo < hi (got mu={} sigma={} lo={} hi={})",
                    mu, sigma, lo, hi));
  }
  LengthDistribution d;
  d.lognormal_ = true;
  d.mu_ = mu;
  d.sigma_ = sigma;
  d.lo_ = lo;
  d.hi_ = hi;
  if (Phi((std::log(hi) - mu) / sigma) - Phi((std::log(lo) - mu) / sigma) <= 0) {
    return InvalidArgument("log-normal has no mass inside [lo, hi]");
  }
  return d;
}

Result<LengthDistribution> LengthDistribution::Empirical(std::vector<double> lengths) {
  if (lengths.empty()) return InvalidArgument("empirical length distribution needs samples");
  for (double l : lengths) {
    if (!(l >= 0) || !std::isfinite(l)) return InvalidArgument("lengths must be finite and >= 0");
  }
  LengthDistribution d;
  d.lognormal_ = false;
  std::sort(lengths.begin(), lengths.end());
  d.prefix_.resize(lengths.size() + 1, 0.0);
  for (size_t i = 0; i < lengths.size(); ++i) d.prefix_[i + 1] = d.prefix_[i] + lengths[i];
  d.lo_ = lengths.front();
  d.hi_ = lengths.back();
  d.sorted_ = std::move(lengths);
  return d;
}

LengthDistribution::Split LengthDistribution::SplitAt(double t) const {
  Split s;
  if (lognormal_) {
    // Closed form: P(a < L <= b) and E[L; a < L <= b] of a log-normal, renormalised to [lo, hi].
    const auto cdf = [&](double x) { return Phi((std::log(x) - mu_) / sigma_); };
    const auto partial_mean = [&](double a, double b) {
      return std::exp(mu_ + sigma_ * sigma_ / 2) *
             (Phi((std::log(b) - mu_ - sigma_ * sigma_) / sigma_) -
              Phi((std::log(a) - mu_ - sigma_ * sigma_) / sigma_));
    };
    const double tc = std::clamp(t, lo_, hi_);
    const double z = cdf(hi_) - cdf(lo_);
    const double mass_long = (cdf(hi_) - cdf(tc)) / z;
    s.p = mass_long;
    if (mass_long > 0) s.l_long = partial_mean(tc, hi_) / z / mass_long;
    if (mass_long < 1) s.l_short = partial_mean(lo_, tc) / z / (1 - mass_long);
    return s;
  }
  const size_t n = sorted_.size();
  const size_t k = static_cast<size_t>(std::upper_bound(sorted_.begin(), sorted_.end(), t) -
                                       sorted_.begin());  // k samples <= t
  s.p = static_cast<double>(n - k) / static_cast<double>(n);
  if (k > 0) s.l_short = prefix_[k] / static_cast<double>(k);
  if (k < n) s.l_long = (prefix_[n] - prefix_[k]) / static_cast<double>(n - k);
  return s;
}

double LengthDistribution::Mean() const {
  const Split s = SplitAt(lo_ - 1);
  return lognormal_ ? s.l_long : prefix_.back() / static_cast<double>(sorted_.size());
}

// ---- Profile ------------------------------------------------------------------------------------

Result<Profile> Profile::FromPoints(std::vector<std::pair<double, double>> points) {
  if (points.empty()) return InvalidArgument("profile needs at least one point");
  for (size_t i = 0; i < points.size(); ++i) {
    if (!std::isfinite(points[i].first) || !std::isfinite(points[i].second) ||
        points[i].second < 0) {
      return InvalidArgument("profile values must be finite and >= 0");
    }
    if (i > 0 && points[i].first <= points[i - 1].first) {
      return InvalidArgument("profile lengths must be strictly increasing");
    }
  }
  Profile p;
  p.points_ = std::move(points);
  return p;
}

Result<Profile> Profile::Parse(const std::string& text) {
  std::vector<std::pair<double, double>> pts;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':');
    if (colon == std::string::npos) {
      return InvalidArgument(fmt::format("profile point '{}' is not length:value", item));
    }
    try {
      size_t used = 0;
      const std::string ls = item.substr(0, colon), vs = item.substr(colon + 1);
      const double l = std::stod(ls, &used);
      if (used != ls.size()) throw std::invalid_argument(ls);
      const double v = std::stod(vs, &used);
      if (used != vs.size()) throw std::invalid_argument(vs);
      pts.emplace_back(l, v);
    } catch (const std::exception&) {
      return InvalidArgument(fmt::format("profile point '{}': expected numbers", item));
    }
  }
  return FromPoints(std::move(pts));
}

double Profile::At(double length) const {
  const auto& p = points_;
  if (p.size() == 1) return p[0].second;
  size_t i = 0;
  if (length >= p.back().first) {
    i = p.size() - 2;
  } else if (length > p.front().first) {
    i = static_cast<size_t>(
            std::upper_bound(p.begin(), p.end(), length,
                             [](double l, const auto& pt) { return l < pt.first; }) -
            p.begin()) -
        1;
  }
  const double x0 = p[i].first, x1 = p[i + 1].first;
  const double y0 = p[i].second, y1 = p[i + 1].second;
  return std::max(0.0, y0 + (y1 - y0) * (length - x0) / (x1 - x0));
}

Profile Profile::Scaled(double factor) const {
  Profile p = *this;
  for (auto& pt : p.points_) pt.second *= factor;
  return p;
}

// ---- Case study ---------------------------------------------------------------------------------

PlannerInputs PaperCaseStudy() {
  constexpr double kMiB = 1024.0 * 1024.0;
  PlannerInputs in{
      LengthDistribution::TruncatedLogNormal(9.90, 1.0, 128, 131072).value(),
      // Table 5: 8×H200 prefill latency of the internal 1T Kimi-Linear-architecture model.
      Profile::FromPoints({{1024, 0.44}, {8192, 0.72}, {32768, 1.84}, {131072, 7.40}}).value(),
      // 8×H20: not published; implied by Table 6 (see docs/routing.md, "Planner constants").
      Profile::FromPoints({{1024, 0.60}, {8192, 1.55}, {32768, 5.00}, {131072, 22.7}}).value(),
      // Table 5: KVCache size (MiB = 2^20 bytes; reproduces the Φ_kv column exactly).
      Profile::FromPoints({{1024, 190.8 * kMiB},
                           {8192, 308.9 * kMiB},
                           {32768, 701.3 * kMiB},
                           {131072, 2316.3 * kMiB}})
          .value(),
  };
  in.output_tokens = 1024;
  in.decode_step_s = 0.025;  // 40 tokens/s decode SLO
  in.max_batch = 20;         // implied by Θ_pd-d = 3.91 with 5 decode instances
  in.n_prfaas = 4;
  in.n_pd = 8;
  in.egress_bps = 100e9;
  in.t_step = 100;
  in.n_homogeneous = 12;
  return in;
}

// ---- Solver -------------------------------------------------------------------------------------

namespace {

void SetBottleneck(OperatingPoint* op) {
  struct Bound {
    double value;
    const char* name;
  };
  std::vector<Bound> bounds;
  if (op->p > 0) {
    bounds.push_back({op->theta_prfaas / op->p,
                      op->theta_prfaas_bandwidth < op->theta_prfaas_compute ? "prfaas-bandwidth"
                                                                            : "prfaas-compute"});
  }
  if (op->p < 1) bounds.push_back({op->theta_pd_p / (1 - op->p), "pd-prefill"});
  bounds.push_back({op->theta_pd_d, "pd-decode"});
  const Bound* best = &bounds[0];
  for (const Bound& b : bounds) {
    if (b.value < best->value) best = &b;
  }
  op->bottleneck = best->name;
}

double DecodeThroughput(const PlannerInputs& in, int n_d) {
  return n_d * in.max_batch / (in.decode_step_s * in.output_tokens);
}

}  // namespace

OperatingPoint Evaluate(const PlannerInputs& in, double threshold, int n_p) {
  OperatingPoint op;
  op.threshold = threshold;
  op.n_prfaas = in.n_prfaas;
  op.n_p = n_p;
  op.n_d = in.n_pd - n_p;
  const LengthDistribution::Split s = in.lengths.SplitAt(threshold);
  op.p = s.p;
  op.l_long = s.l_long;
  op.l_short = s.l_short;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  double lambda = kInf;
  if (op.p > 0) {
    const double kv_bits = in.kv_bytes.At(op.l_long) * 8.0;
    const double t_pf = in.prfaas_prefill_s.At(op.l_long);
    op.theta_prfaas_compute = t_pf > 0 ? in.n_prfaas / t_pf : kInf;
    op.theta_prfaas_bandwidth = kv_bits > 0 ? in.egress_bps / kv_bits : kInf;
    op.theta_prfaas = std::min(op.theta_prfaas_compute, op.theta_prfaas_bandwidth);
    op.phi_kv_bps = t_pf > 0 ? kv_bits / t_pf : 0;
    lambda = std::min(lambda, op.theta_prfaas / op.p);
  }
  if (op.p < 1) {
    const double t_pd = in.pd_prefill_s.At(op.l_short);
    op.theta_pd_p = n_p > 0 && t_pd > 0 ? n_p / t_pd : 0;
    lambda = std::min(lambda, op.theta_pd_p / (1 - op.p));
  }
  op.theta_pd_d = DecodeThroughput(in, op.n_d);
  lambda = std::min(lambda, op.theta_pd_d);
  op.lambda_max = lambda;
  op.egress_bps = op.p > 0 ? lambda * op.p * in.kv_bytes.At(op.l_long) * 8.0 : 0;
  SetBottleneck(&op);
  return op;
}

Result<PlanResult> Plan(const PlannerInputs& in) {
  if (in.n_prfaas < 1) return InvalidArgument("need at least one PrfaaS instance");
  if (in.n_pd < 2) return InvalidArgument("need at least two PD instances (one P, one D)");
  if (in.n_homogeneous < 2) return InvalidArgument("homogeneous baseline needs >= 2 instances");
  if (!(in.output_tokens > 0) || !(in.decode_step_s > 0) || !(in.max_batch > 0)) {
    return InvalidArgument("output tokens, decode step and max batch must be > 0");
  }
  if (!(in.egress_bps > 0)) return InvalidArgument("egress bandwidth must be > 0");
  if (!(in.t_step > 0)) return InvalidArgument("threshold grid step must be > 0");
  if (in.prfaas_prefill_s.points().empty() || in.pd_prefill_s.points().empty() ||
      in.kv_bytes.points().empty()) {
    return InvalidArgument("prefill and KV profiles must not be empty");
  }

  PlanResult r;
  // PrfaaS-PD: exhaustive 2-D grid over t (lo .. hi, step t_step) and N_p (1 .. n_pd-1). Strict
  // improvement keeps the smallest t among equal optima, i.e. the most offload for the same Λ.
  bool have = false;
  const double lo = in.lengths.lo(), hi = in.lengths.hi();
  for (double t = std::floor(lo / in.t_step) * in.t_step; t <= hi; t += in.t_step) {
    for (int n_p = 1; n_p < in.n_pd; ++n_p) {
      OperatingPoint op = Evaluate(in, t, n_p);
      if (!have || op.lambda_max > r.prfaas.lambda_max + 1e-12) {
        r.prfaas = op;
        have = true;
      }
    }
  }

  // Homogeneous PD: n_homogeneous PD instances, no offload (t above every length).
  PlannerInputs homog = in;
  homog.n_pd = in.n_homogeneous;
  for (int n_p = 1; n_p < homog.n_pd; ++n_p) {
    OperatingPoint op = Evaluate(homog, hi, n_p);
    op.n_prfaas = 0;
    if (n_p == 1 || op.lambda_max > r.homogeneous.lambda_max + 1e-12) r.homogeneous = op;
  }

  // Naive heterogeneous: every prefill on PrfaaS (t below every length), all PD instances decode.
  PlannerInputs naive = in;
  naive.n_pd = in.n_pd;
  r.naive = Evaluate(naive, 0, 0);
  r.naive.threshold = 0;
  return r;
}

Result<RoleAdvice> AdviseRoles(const PlannerInputs& in, int current_n_p, double current_threshold,
                               double min_gain) {
  if (current_n_p < 1 || current_n_p >= in.n_pd) {
    return InvalidArgument(fmt::format("current N_p {} outside [1, {}]", current_n_p, in.n_pd - 1));
  }
  PRFAAS_ASSIGN_OR_RETURN(PlanResult plan, Plan(in));
  const OperatingPoint now = Evaluate(in, current_threshold, current_n_p);
  RoleAdvice a;
  a.current_n_p = current_n_p;
  a.current_threshold = current_threshold;
  a.current_lambda = now.lambda_max;
  a.target_threshold = plan.prfaas.threshold;
  a.target_lambda = plan.prfaas.lambda_max;
  a.target_n_p = current_n_p;
  if (plan.prfaas.n_p != current_n_p && plan.prfaas.lambda_max > now.lambda_max * (1 + min_gain)) {
    a.target_n_p = plan.prfaas.n_p;
    a.flip = true;
  }
  const int delta = a.target_n_p - current_n_p;
  if (delta == 0) {
    a.summary = fmt::format("keep N_p/N_d = {}/{} ({:.2f} req/s; best {:.2f})", current_n_p,
                            in.n_pd - current_n_p, now.lambda_max, plan.prfaas.lambda_max);
  } else {
    a.summary = fmt::format("convert {} {}: {:.2f} -> {:.2f} req/s at t={:.0f}", std::abs(delta),
                            delta > 0 ? "decode -> prefill" : "prefill -> decode", now.lambda_max,
                            plan.prfaas.lambda_max, plan.prfaas.threshold);
  }
  return a;
}

}  // namespace prfaas::router
