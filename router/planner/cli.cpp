#include "router/planner/cli.h"

#include <cmath>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace prfaas::router {
namespace {

struct PlanFlags {
  double mu = 9.90, sigma = 1.0, min_len = 128, max_len = 131072;
  std::string lengths_file;
  double output_tokens = 1024;
  std::string prfaas_profile = "1024:0.44,8192:0.72,32768:1.84,131072:7.40";
  std::string pd_profile = "1024:0.60,8192:1.55,32768:5.00,131072:22.7";
  std::string kv_profile_mib = "1024:190.8,8192:308.9,32768:701.3,131072:2316.3";
  double decode_step_ms = 25, max_batch = 20;
  int n_prfaas = 4, n_pd = 8, n_homogeneous = 12;
  double bandwidth_gbps = 100, t_step = 100;
  std::string output = "table";
};

Result<PlannerInputs> BuildInputs(const PlanFlags& f) {
  PlannerInputs in = PaperCaseStudy();
  if (!f.lengths_file.empty()) {
    std::ifstream file(f.lengths_file);
    if (!file) return InvalidArgument(fmt::format("cannot open lengths file '{}'", f.lengths_file));
    std::vector<double> lengths;
    std::string line;
    int line_no = 0;
    while (std::getline(file, line)) {
      ++line_no;
      if (line.empty() || line[0] == '#') continue;
      try {
        lengths.push_back(std::stod(line));
      } catch (const std::exception&) {
        return InvalidArgument(fmt::format("{}:{}: expected a number", f.lengths_file, line_no));
      }
    }
    PRFAAS_ASSIGN_OR_RETURN(in.lengths, LengthDistribution::Empirical(std::move(lengths)));
  } else {
    PRFAAS_ASSIGN_OR_RETURN(
        in.lengths, LengthDistribution::TruncatedLogNormal(f.mu, f.sigma, f.min_len, f.max_len));
  }
  auto prfaas = Profile::Parse(f.prfaas_profile);
  if (!prfaas.ok()) return prfaas.status().WithContext("--prfaas-profile");
  auto pd = Profile::Parse(f.pd_profile);
  if (!pd.ok()) return pd.status().WithContext("--pd-profile");
  auto kv = Profile::Parse(f.kv_profile_mib);
  if (!kv.ok()) return kv.status().WithContext("--kv-profile-mib");
  in.prfaas_prefill_s = *prfaas;
  in.pd_prefill_s = *pd;
  in.kv_bytes = kv->Scaled(1024.0 * 1024.0);
  in.output_tokens = f.output_tokens;
  in.decode_step_s = f.decode_step_ms / 1000.0;
  in.max_batch = f.max_batch;
  in.n_prfaas = f.n_prfaas;
  in.n_pd = f.n_pd;
  in.n_homogeneous = f.n_homogeneous;
  in.egress_bps = f.bandwidth_gbps * 1e9;
  in.t_step = f.t_step;
  return in;
}

nlohmann::json PointJson(const OperatingPoint& op) {
  return nlohmann::json{
      {"threshold_tokens", op.threshold},
      {"n_prfaas", op.n_prfaas},
      {"n_p", op.n_p},
      {"n_d", op.n_d},
      {"offload_fraction", op.p},
      {"l_long_tokens", op.l_long},
      {"l_short_tokens", op.l_short},
      {"theta_prfaas_rps", op.theta_prfaas},
      {"theta_prfaas_compute_rps", op.theta_prfaas_compute},
      {"theta_prfaas_bandwidth_rps", op.theta_prfaas_bandwidth},
      {"theta_pd_p_rps", op.theta_pd_p},
      {"theta_pd_d_rps", op.theta_pd_d},
      {"lambda_max_rps", op.lambda_max},
      {"egress_bps", op.egress_bps},
      {"phi_kv_bps", op.phi_kv_bps},
      {"bottleneck", op.bottleneck},
  };
}

std::string Num(double v, const char* spec = "{:.2f}") {
  return v == 0 ? std::string("-") : fmt::format(fmt::runtime(spec), v);
}

}  // namespace

std::string FormatPlan(const PlanResult& r, bool json) {
  if (json) {
    nlohmann::json j{{"prfaas", PointJson(r.prfaas)},
                     {"homogeneous", PointJson(r.homogeneous)},
                     {"naive", PointJson(r.naive)},
                     {"speedup_vs_homogeneous", r.prfaas.lambda_max / r.homogeneous.lambda_max},
                     {"speedup_vs_naive", r.prfaas.lambda_max / r.naive.lambda_max}};
    return j.dump(2) + "\n";
  }
  const OperatingPoint* cols[] = {&r.prfaas, &r.homogeneous, &r.naive};
  std::string out = fmt::format("{:<24} {:>15} {:>15} {:>15}\n", "", "PrfaaS-PD", "Homogeneous PD",
                                "Naive hetero");
  auto row = [&](const std::string& label, auto cell) {
    out += fmt::format("{:<24}", label);
    for (const OperatingPoint* col : cols) out += fmt::format(" {:>15}", cell(*col));
    out += "\n";
  };
  auto count = [](int n) { return n > 0 ? fmt::format("{}", n) : std::string("-"); };
  row("threshold t (tokens)", [&](const OperatingPoint& o) {
    if (o.p <= 0) return std::string("-");
    return fmt::format("{:.0f}", o.threshold);
  });
  row("N_prfaas / N_p / N_d", [&](const OperatingPoint& o) {
    return fmt::format("{}/{}/{}", count(o.n_prfaas), count(o.n_p), count(o.n_d));
  });
  row("offloaded fraction p", [](const OperatingPoint& o) { return fmt::format("{:.3f}", o.p); });
  row("l_long / l_short (tok)", [](const OperatingPoint& o) {
    return fmt::format("{}/{}", o.l_long > 0 ? fmt::format("{:.0f}", o.l_long) : "-",
                       o.l_short > 0 ? fmt::format("{:.0f}", o.l_short) : "-");
  });
  row("Θ_prfaas (req/s)", [](const OperatingPoint& o) { return Num(o.theta_prfaas); });
  row("Θ_pd-p (req/s)", [](const OperatingPoint& o) { return Num(o.theta_pd_p); });
  row("Θ_pd-d (req/s)", [](const OperatingPoint& o) { return Num(o.theta_pd_d); });
  row("Λ_max (req/s)", [](const OperatingPoint& o) { return Num(o.lambda_max); });
  row("vs homogeneous", [&](const OperatingPoint& o) {
    return fmt::format("{:.2f}x", o.lambda_max / r.homogeneous.lambda_max);
  });
  row("PrfaaS egress (Gbps)",
      [](const OperatingPoint& o) { return Num(o.egress_bps / 1e9, "{:.1f}"); });
  row("Φ_kv at l_long (Gbps)", [](const OperatingPoint& o) { return Num(o.phi_kv_bps / 1e9); });
  row("bottleneck", [](const OperatingPoint& o) { return o.bottleneck; });
  return out;
}

void RegisterPlanCommand(CLI::App& app) {
  auto flags = std::make_shared<PlanFlags>();
  CLI::App* sub = app.add_subcommand(
      "plan",
      "Solve the PrfaaS analytical model: best offload threshold t and N_p/N_d split "
      "(defaults: the paper's case study)");
  sub->add_option("--mu", flags->mu, "log-normal mu of uncached prompt length")
      ->capture_default_str();
  sub->add_option("--sigma", flags->sigma, "log-normal sigma")->capture_default_str();
  sub->add_option("--min-len", flags->min_len, "truncation lower bound (tokens)")
      ->capture_default_str();
  sub->add_option("--max-len", flags->max_len, "truncation upper bound (tokens)")
      ->capture_default_str();
  sub->add_option("--lengths-file", flags->lengths_file,
                  "empirical uncached lengths, one per line (overrides the log-normal)");
  sub->add_option("--output-tokens", flags->output_tokens, "mean output length L_out")
      ->capture_default_str();
  sub->add_option("--prfaas-profile", flags->prfaas_profile,
                  "PrfaaS instance prefill seconds by length, 'len:s,...'")
      ->capture_default_str();
  sub->add_option("--pd-profile", flags->pd_profile,
                  "PD instance prefill seconds by length, 'len:s,...'")
      ->capture_default_str();
  sub->add_option("--kv-profile-mib", flags->kv_profile_mib,
                  "KV+state MiB produced by a prefill of each length, 'len:MiB,...'")
      ->capture_default_str();
  sub->add_option("--decode-step-ms", flags->decode_step_ms, "T_decode per step (ms)")
      ->capture_default_str();
  sub->add_option("--max-batch", flags->max_batch, "BS_max per decode instance")
      ->capture_default_str();
  sub->add_option("--n-prfaas", flags->n_prfaas, "PrfaaS instances")->capture_default_str();
  sub->add_option("--n-pd", flags->n_pd, "PD instances (N_p + N_d)")->capture_default_str();
  sub->add_option("--n-homogeneous", flags->n_homogeneous,
                  "instances of the homogeneous-PD baseline")
      ->capture_default_str();
  sub->add_option("--bandwidth-gbps", flags->bandwidth_gbps, "PrfaaS egress B_out (Gbit/s)")
      ->capture_default_str();
  sub->add_option("--t-step", flags->t_step, "threshold grid step (tokens)")->capture_default_str();
  sub->add_option("-o,--output", flags->output, "table | json")
      ->check(CLI::IsMember({"table", "json"}))
      ->capture_default_str();
  sub->callback([flags] {
    auto in = BuildInputs(*flags);
    if (!in.ok()) {
      std::cerr << "prfaas plan: " << in.status().message() << "\n";
      throw CLI::RuntimeError(1);
    }
    auto result = Plan(*in);
    if (!result.ok()) {
      std::cerr << "prfaas plan: " << result.status().message() << "\n";
      throw CLI::RuntimeError(1);
    }
    std::cout << FormatPlan(*result, flags->output == "json");
  });
}

}  // namespace prfaas::router
