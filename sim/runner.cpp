#include "sim/runner.h"

#include <chrono>
#include <filesystem>
#include <map>

#include <fmt/format.h>

namespace prfaas::sim {

Result<Trace> BuildWorkload(const WorkloadSpec& w, double rate_rps) {
  Trace t;
  if (w.synthetic) {
    SyntheticOptions o = w.syn;
    if (rate_rps > 0) o.rate_rps = rate_rps;
    PRFAAS_ASSIGN_OR_RETURN(t, GenerateSynthetic(o));
  } else {
    PRFAAS_ASSIGN_OR_RETURN(t, LoadTrace(w.format, w.path, w.load));
  }
  TransformOptions x = w.transform;
  if (rate_rps > 0 && !w.synthetic) x.target_rate_rps = rate_rps;
  PRFAAS_RETURN_IF_ERROR(TransformTrace(t, x));
  if (t.requests.empty()) return InvalidArgument("workload is empty after transforms");
  return t;
}

Result<std::vector<Variant>> ExpandVariants(const std::vector<Topology>& topologies,
                                            const SweepSpec& sweep) {
  std::vector<Variant> out;
  for (const auto& base : topologies) {
    std::vector<std::string> policies = sweep.policies;
    if (policies.empty()) policies.push_back(base.policy.name);
    std::vector<double> ts = sweep.thresholds;
    if (ts.empty()) ts.push_back(-1);
    std::vector<std::pair<int, int>> splits = sweep.splits;
    if (splits.empty()) splits.emplace_back(-1, -1);
    for (const auto& p : policies) {
      for (double t : ts) {
        for (auto [np, nd] : splits) {
          Variant v{base.name, base};
          v.topo.policy.name = p;
          if (sweep.policies.size() > 0) v.label += "." + p;
          if (t >= 0) {
            v.topo.policy.threshold = t;
            if (sweep.pin_threshold) v.topo.policy.adaptive = false;
            v.label += fmt::format(".t{:g}", t);
          }
          if (np >= 0) {
            for (auto& c : v.topo.clusters) {
              if (c.kind != ClusterKind::kPd) continue;
              if (np + nd != c.workers) {
                return InvalidArgument(
                    fmt::format("split {}:{} does not match cluster '{}' with {} workers", np, nd,
                                c.name, c.workers));
              }
              c.prefill_workers = np;
              c.decode_workers = nd;
            }
            v.label += fmt::format(".p{}d{}", np, nd);
          }
          v.topo.name = v.label;
          out.push_back(std::move(v));
        }
      }
    }
  }
  return out;
}

namespace {

struct Trial {
  bool stable = false;
  Summary summary;
  SimResult result;
};

Result<Trial> RunAt(const Variant& v, const WorkloadSpec& w, double rate, const SimOptions& so) {
  PRFAAS_ASSIGN_OR_RETURN(Trace trace, BuildWorkload(w, rate));
  PRFAAS_ASSIGN_OR_RETURN(SimResult r, RunSimulation(v.topo, trace, so));
  Trial t;
  t.summary = Summarise(r, v.topo.slo);
  t.result = std::move(r);
  return t;
}

bool Stable(const Summary& s, const RateSearch& rs) {
  return s.dropped == 0 && s.completed == s.requests && s.wait.p90 <= rs.max_wait_s;
}

}  // namespace

Result<std::vector<VariantOutcome>> RunExperiment(const std::vector<Variant>& variants,
                                                  const WorkloadSpec& workload,
                                                  const ExperimentOptions& opts) {
  std::vector<VariantOutcome> out;
  for (const auto& v : variants) {
    auto start = std::chrono::steady_clock::now();
    VariantOutcome o;
    o.variant = v;
    if (opts.search.enabled) {
      double lo = opts.search.lo_rps, hi = opts.search.hi_rps;
      PRFAAS_ASSIGN_OR_RETURN(Trial top, RunAt(v, workload, hi, opts.sim));
      if (Stable(top.summary, opts.search)) {
        lo = hi;
      } else {
        for (int k = 0; k < opts.search.iterations; ++k) {
          double mid = std::sqrt(lo * hi);  // geometric: rates span orders of magnitude
          PRFAAS_ASSIGN_OR_RETURN(Trial t, RunAt(v, workload, mid, opts.sim));
          (Stable(t.summary, opts.search) ? lo : hi) = mid;
        }
      }
      o.max_rate_rps = lo;
      PRFAAS_ASSIGN_OR_RETURN(Trial at, RunAt(v, workload, lo, opts.sim));
      o.summary = std::move(at.summary);
      o.result = std::move(at.result);
    } else {
      PRFAAS_ASSIGN_OR_RETURN(Trial t, RunAt(v, workload, 0, opts.sim));
      o.summary = std::move(t.summary);
      o.result = std::move(t.result);
    }
    o.summary.name = v.label;
    o.result.name = v.label;
    o.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    out.push_back(std::move(o));
  }
  return out;
}

Status WriteExperiment(const std::vector<VariantOutcome>& outcomes, const ExperimentOptions& opts,
                       const SweepSpec& sweep) {
  if (opts.out_dir.empty()) return Status::Ok();
  std::error_code ec;
  std::filesystem::create_directories(opts.out_dir, ec);
  if (ec) return Unavailable("cannot create '" + opts.out_dir + "': " + ec.message());
  auto path = [&](const std::string& f) {
    return (std::filesystem::path(opts.out_dir) / f).string();
  };

  nlohmann::json all = nlohmann::json::array();
  std::vector<std::pair<std::string, std::vector<double>>> ttfts;
  std::vector<Series> tput, links;
  for (const auto& o : outcomes) {
    nlohmann::json j = SummaryToJson(o.summary);
    if (o.max_rate_rps > 0) j["max_sustainable_rps"] = o.max_rate_rps;
    j["threshold_config"] = o.variant.topo.policy.threshold;
    j["wall_s"] = o.wall_s;
    all.push_back(j);
    PRFAAS_RETURN_IF_ERROR(WriteText(path(o.variant.label + ".summary.json"), j.dump(2) + "\n"));
    if (opts.write_requests) {
      PRFAAS_RETURN_IF_ERROR(
          WriteRequestsJsonl(o.result, path(o.variant.label + ".requests.jsonl")));
    }
    ttfts.emplace_back(o.variant.label, TtftValues(o.result));
    tput.push_back(Series{o.variant.label, ThroughputSeries(o.result)});
    for (const auto& l : o.result.links) {
      if (l.bytes <= 0) continue;
      Series s{o.variant.label + " " + l.name, {}};
      for (size_t b = 0; b < l.bucket_bytes.size(); ++b) {
        double cap = b < l.bucket_capacity_bps.size() ? l.bucket_capacity_bps[b] : l.nominal_bps;
        double util = cap > 0 ? l.bucket_bytes[b] * 8 / o.result.bucket_s / cap : 0;
        s.points.emplace_back((static_cast<double>(b) + 0.5) * o.result.bucket_s, util);
      }
      links.push_back(std::move(s));
    }
  }
  PRFAAS_RETURN_IF_ERROR(WriteText(path("summary.json"), all.dump(2) + "\n"));
  PRFAAS_RETURN_IF_ERROR(WriteText(path("ttft_cdf.svg"), CdfSvg("TTFT CDF", "TTFT (s)", ttfts)));
  PRFAAS_RETURN_IF_ERROR(
      WriteText(path("throughput_over_time.svg"),
                LineChartSvg("Completed requests per second", "time (s)", "req/s", tput)));
  PRFAAS_RETURN_IF_ERROR(
      WriteText(path("link_utilisation.svg"),
                LineChartSvg("Link utilisation", "time (s)", "utilisation", links)));
  if (sweep.thresholds.size() > 1) {
    // Throughput vs t, one line per (topology, policy, split) family.
    std::map<std::string, Series> fam;
    std::vector<std::string> order;
    for (const auto& o : outcomes) {
      std::string key = o.variant.label;
      auto pos = key.find(".t");
      std::string rest =
          pos == std::string::npos
              ? ""
              : key.substr(key.find('.', pos + 2) == std::string::npos ? key.size()
                                                                       : key.find('.', pos + 2));
      std::string family = (pos == std::string::npos ? key : key.substr(0, pos)) + rest;
      if (!fam.count(family)) order.push_back(family);
      fam[family].label = family;
      double y = o.max_rate_rps > 0 ? o.max_rate_rps : o.summary.throughput_rps;
      fam[family].points.emplace_back(o.variant.topo.policy.threshold, y);
    }
    std::vector<Series> s;
    for (const auto& k : order) s.push_back(fam[k]);
    bool searched = !outcomes.empty() && outcomes.front().max_rate_rps > 0;
    PRFAAS_RETURN_IF_ERROR(WriteText(
        path("throughput_vs_threshold.svg"),
        LineChartSvg(searched ? "Max sustainable rate vs threshold t" : "Throughput vs threshold t",
                     "threshold t (tokens)", "req/s", s)));
  }
  return Status::Ok();
}

}  // namespace prfaas::sim
