#include "sim/cli.h"

#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "sim/runner.h"

namespace prfaas::sim {
namespace {

struct SimFlags {
  std::vector<std::string> topologies;
  std::string trace, format = "mooncake";
  bool synthetic = false;
  WorkloadSpec w;
  double rate = 0;
  std::vector<std::string> policies;
  std::string thresholds, splits;
  bool pin = false;
  ExperimentOptions x;
  bool no_requests = false;
  bool json = false;
  double rebalance_period = -1;  // >= 0: override every topology's policy.rebalance.period_s
};

Result<std::vector<double>> ParseList(const std::string& s) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    // a:b:c = range from a to b step c
    auto c1 = item.find(':');
    try {
      if (c1 != std::string::npos) {
        auto c2 = item.find(':', c1 + 1);
        if (c2 == std::string::npos)
          return InvalidArgument("range '" + item + "' must be start:end:step");
        double a = std::stod(item.substr(0, c1)), b = std::stod(item.substr(c1 + 1, c2 - c1 - 1)),
               st = std::stod(item.substr(c2 + 1));
        if (st <= 0) return InvalidArgument("range step must be > 0 in '" + item + "'");
        for (double x = a; x <= b + st * 1e-9; x += st) v.push_back(x);
      } else {
        v.push_back(std::stod(item));
      }
    } catch (const std::exception&) {
      return InvalidArgument("not a number list: '" + s + "'");
    }
  }
  return v;
}

Result<std::vector<std::pair<int, int>>> ParseSplits(const std::string& s) {
  std::vector<std::pair<int, int>> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto c = item.find(':');
    if (c == std::string::npos) return InvalidArgument("split '" + item + "' must be Np:Nd");
    try {
      v.emplace_back(std::stoi(item.substr(0, c)), std::stoi(item.substr(c + 1)));
    } catch (const std::exception&) {
      return InvalidArgument("split '" + item + "' must be Np:Nd");
    }
  }
  return v;
}

Status Run(SimFlags& f) {
  if (f.topologies.empty()) return InvalidArgument("at least one --topology is required");
  if (f.synthetic == !f.trace.empty())
    return InvalidArgument("give exactly one of --trace or --synthetic");
  f.w.synthetic = f.synthetic;
  if (!f.synthetic) {
    PRFAAS_ASSIGN_OR_RETURN(f.w.format, ParseTraceFormat(f.format));
    f.w.path = f.trace;
  }
  if (f.rate > 0) {
    if (f.synthetic)
      f.w.syn.rate_rps = f.rate;
    else
      f.w.transform.target_rate_rps = f.rate;
  }
  std::vector<Topology> topos;
  for (const auto& p : f.topologies) {
    PRFAAS_ASSIGN_OR_RETURN(Topology t, LoadTopology(p));
    if (f.rebalance_period >= 0) t.policy.rebalance_period_s = f.rebalance_period;
    topos.push_back(std::move(t));
  }
  SweepSpec sweep;
  sweep.policies = f.policies;
  sweep.pin_threshold = f.pin;
  if (!f.thresholds.empty()) {
    PRFAAS_ASSIGN_OR_RETURN(sweep.thresholds, ParseList(f.thresholds));
  }
  if (!f.splits.empty()) {
    PRFAAS_ASSIGN_OR_RETURN(sweep.splits, ParseSplits(f.splits));
  }
  PRFAAS_ASSIGN_OR_RETURN(auto variants, ExpandVariants(topos, sweep));
  f.x.write_requests = !f.no_requests;
  PRFAAS_ASSIGN_OR_RETURN(auto outcomes, RunExperiment(variants, f.w, f.x));
  PRFAAS_RETURN_IF_ERROR(WriteExperiment(outcomes, f.x, sweep));

  if (f.json) {
    nlohmann::json all = nlohmann::json::array();
    for (const auto& o : outcomes) {
      auto j = SummaryToJson(o.summary);
      if (o.max_rate_rps > 0) j["max_sustainable_rps"] = o.max_rate_rps;
      all.push_back(j);
    }
    std::cout << all.dump(2) << "\n";
    return Status::Ok();
  }
  std::cout << fmt::format(
      "{:<34} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>7}\n", "variant",
      "max_rps", "tput_rps", "ttft_avg", "ttft_p90", "ttft_p99", "tpot_p90", "wait_p90", "offload",
      "cache", "egress", "wall_s");
  for (const auto& o : outcomes) {
    const Summary& s = o.summary;
    double egress = 0;
    for (const auto& l : s.links) {
      if (l.name.find("-intra") == std::string::npos) egress += l.mean_gbps;
    }
    std::cout << fmt::format(
        "{:<34} {:>9} {:>9.3f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.4f} {:>8.2f} {:>7.3f} {:>7.3f} "
        "{:>8.2f} {:>7.2f}\n",
        o.variant.label, o.max_rate_rps > 0 ? fmt::format("{:.3f}", o.max_rate_rps) : "-",
        s.throughput_rps, s.ttft.mean, s.ttft.p90, s.ttft.p99, s.tpot.p90, s.wait.p90,
        s.offload_ratio, s.prefill_cache_hit, egress, o.wall_s);
  }
  for (const auto& o : outcomes) {
    const Summary& s = o.summary;
    if (s.role_flips.empty()) continue;
    int to_prefill = 0;
    for (const auto& fl : s.role_flips) to_prefill += fl.to_prefill;
    std::cout << fmt::format("{}: {} role flips ({} to prefill, {} to decode); last advice: {}\n",
                             o.variant.label, s.role_flips.size(), to_prefill,
                             s.role_flips.size() - static_cast<size_t>(to_prefill),
                             s.rebalances.empty() ? "-" : s.rebalances.back().summary);
  }
  if (!f.x.out_dir.empty()) std::cout << "reports written to " << f.x.out_dir << "\n";
  return Status::Ok();
}

}  // namespace

void RegisterSimCommand(CLI::App& app) {
  auto f = std::make_shared<SimFlags>();
  CLI::App* sub =
      app.add_subcommand("sim", "Replay a trace or synthetic workload through simulated clusters");
  sub->add_option("-t,--topology", f->topologies, "Topology YAML (repeat to compare deployments)")
      ->required();
  sub->add_option("--trace", f->trace, "Trace file");
  sub->add_option("--format", f->format, "Trace format: mooncake | azure | bailian | burstgpt");
  sub->add_option("--block-tokens", f->w.load.block_tokens,
                  "Tokens per hash block (default: format's)");
  sub->add_flag("--keep-failed", f->w.load.keep_failed, "BurstGPT: keep failed (0-token) requests");
  sub->add_flag("--synthetic", f->synthetic,
                "Synthetic workload (paper's truncated log-normal by default)");
  sub->add_option("-n,--requests", f->w.syn.num_requests, "Synthetic: number of requests");
  sub->add_option("--arrival", f->w.syn.arrival, "Synthetic arrivals: poisson | gamma");
  sub->add_option("--cv", f->w.syn.cv, "Gamma arrivals: coefficient of variation");
  sub->add_option("--mu", f->w.syn.mu, "Log-normal mu of input length");
  sub->add_option("--sigma", f->w.syn.sigma, "Log-normal sigma of input length");
  sub->add_option("--min-input", f->w.syn.min_input, "Truncation lower bound");
  sub->add_option("--max-input", f->w.syn.max_input, "Truncation upper bound");
  sub->add_option("--output-tokens", f->w.syn.output_tokens, "Synthetic output length");
  sub->add_option("--sessions", f->w.syn.sessions, "Synthetic prefix-sharing sessions (0 = none)");
  sub->add_option("--system-prompt", f->w.syn.system_prompt_tokens, "Shared system prompt tokens");
  sub->add_option("--rate", f->rate,
                  "Arrival rate in req/s (synthetic rate, or trace rescaled to it)");
  sub->add_option("--time-scale", f->w.transform.time_scale, "Multiply trace inter-arrival gaps");
  sub->add_option("--window-start", f->w.transform.window_start_s,
                  "Keep arrivals from this time (s)");
  sub->add_option("--window-end", f->w.transform.window_end_s,
                  "Keep arrivals before this time (s)");
  sub->add_option("--jitter", f->w.transform.jitter_bucket_s,
                  "Spread bucketed timestamps over this width (s)");
  sub->add_option("--max-requests", f->w.transform.max_requests, "Keep the first N requests");
  sub->add_option("--seed", f->w.syn.seed, "Random seed (synthetic and jitter)")
      ->each([f](const std::string&) { f->w.transform.seed = f->w.syn.seed; });
  sub->add_option("--policy", f->policies, "Routing policy (repeat to sweep); default: topology's");
  sub->add_option("--sweep-threshold", f->thresholds,
                  "Thresholds t: list '4096,8192' or range 'a:b:step'");
  sub->add_flag("--pin-threshold", f->pin, "Keep swept t fixed (threshold controller off)");
  sub->add_option("--sweep-split", f->splits, "PD-cluster splits 'Np:Nd,...'");
  sub->add_flag("--find-max-rate", f->x.search.enabled,
                "Search each variant's max sustainable rate");
  sub->add_option("--rate-lo", f->x.search.lo_rps, "Rate search lower bound");
  sub->add_option("--rate-hi", f->x.search.hi_rps, "Rate search upper bound");
  sub->add_option("--search-iters", f->x.search.iterations, "Rate search bisection steps");
  sub->add_option("--max-wait", f->x.search.max_wait_s, "Stability: p90 queueing wait bound (s)");
  sub->add_option("--rebalance-period", f->rebalance_period,
                  "Long-timescale controller period in s for every topology (0 = off); default: "
                  "each topology's policy.rebalance.period_s");
  sub->add_option("--bucket", f->x.sim.bucket_s, "Time-series bucket width (s)");
  sub->add_option("-o,--out", f->x.out_dir, "Output directory for reports");
  sub->add_flag("--no-requests", f->no_requests, "Skip per-request JSONL");
  sub->add_flag("--json", f->json, "Print summaries as JSON");
  sub->callback([f]() {
    Status s = Run(*f);
    if (!s.ok()) {
      std::cerr << "prfaas sim: " << s.ToString() << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace prfaas::sim
