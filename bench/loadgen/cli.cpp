#include "bench/loadgen/cli.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench/loadgen/client.h"
#include "bench/loadgen/profile.h"
#include "bench/loadgen/stats.h"
#include "bench/loadgen/workload.h"
#include "sim/trace.h"

namespace prfaas::bench {
namespace {

struct BenchFlags {
  std::string url = "http://127.0.0.1:8000";
  std::string trace, format = "mooncake";
  std::string synthetic;  // "" or "lognormal"
  sim::SyntheticOptions syn;
  int32_t block_tokens = 0;
  double rate = 0, time_scale = 1.0, scale = 1.0, duration = 0;
  int64_t max_requests = 0;
  WorkloadOptions wl;
  RunOptions run;
  bool no_ignore_eos = false, no_progress = false;
  double slo_ttft = 0, slo_tpot = 0;
  std::string output_json, requests_jsonl;
};

Status WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) return Unavailable("cannot write '" + path + "'");
  out << text;
  out.close();
  if (!out) return Unavailable("error writing '" + path + "'");
  return Status::Ok();
}

Result<sim::Trace> LoadWorkloadTrace(const BenchFlags& f) {
  if (f.synthetic.empty() == f.trace.empty()) {
    return InvalidArgument("give exactly one of --trace FILE or --synthetic lognormal");
  }
  sim::Trace trace;
  if (!f.synthetic.empty()) {
    if (f.synthetic != "lognormal") {
      return InvalidArgument("--synthetic: unknown workload '" + f.synthetic +
                             "' (supported: lognormal; arrivals via --arrival poisson|gamma)");
    }
    sim::SyntheticOptions so = f.syn;
    so.rate_rps = f.rate > 0 ? f.rate : 1.0;
    so.num_requests = f.max_requests > 0 ? f.max_requests
                      : f.duration > 0   ? static_cast<int64_t>(so.rate_rps * f.duration) + 1
                                         : 100;
    if (f.block_tokens > 0) so.block_tokens = f.block_tokens;
    PRFAAS_ASSIGN_OR_RETURN(trace, sim::GenerateSynthetic(so));
  } else {
    PRFAAS_ASSIGN_OR_RETURN(sim::TraceFormat fmt, sim::ParseTraceFormat(f.format));
    sim::LoadOptions lo;
    lo.block_tokens = f.block_tokens;
    PRFAAS_ASSIGN_OR_RETURN(trace, sim::LoadTrace(fmt, f.trace, lo));
    // Replays start at the first request, wherever the trace's clock begins.
    if (!trace.requests.empty()) {
      const double t0 = trace.requests.front().arrival_s;
      for (auto& r : trace.requests) r.arrival_s -= t0;
    }
    sim::TransformOptions to;
    to.time_scale = f.time_scale;
    to.target_rate_rps = f.rate;
    to.max_requests = f.max_requests;
    PRFAAS_RETURN_IF_ERROR(sim::TransformTrace(trace, to));
  }
  return trace;
}

Status RunBench(BenchFlags f) {
  PRFAAS_ASSIGN_OR_RETURN(sim::Trace trace, LoadWorkloadTrace(f));
  WorkloadOptions wl = f.wl;
  wl.length_scale = f.scale;
  wl.max_duration_s = f.duration;
  std::vector<PlannedRequest> reqs = BuildWorkload(trace, wl);
  if (reqs.empty()) return InvalidArgument("the workload has no requests");
  RunOptions ro = f.run;
  PRFAAS_ASSIGN_OR_RETURN(ro.endpoint, ParseUrl(f.url));
  ro.ignore_eos = !f.no_ignore_eos;
  ro.progress = !f.no_progress && isatty(STDERR_FILENO);
  ro.handle_signals = true;
  std::fprintf(stderr, "prfaas bench: %zu requests from %s over %.1f s against %s (%s)\n",
               reqs.size(), trace.source.c_str(), reqs.back().arrival_s, f.url.c_str(),
               ro.chat ? "chat" : "completions");
  LoadRunner runner(ro);
  PRFAAS_ASSIGN_OR_RETURN(std::vector<RequestResult> results, runner.Run(reqs));
  if (runner.stopped()) std::fprintf(stderr, "interrupted: reporting what finished\n");
  Report report = BuildReport(results, Slo{f.slo_ttft, f.slo_tpot});
  std::cout << FormatReport(report) << std::flush;
  if (!f.output_json.empty()) {
    nlohmann::json j = ReportToJson(report);
    j["config"] = {{"url", f.url},
                   {"workload", trace.source},
                   {"rate_rps", f.rate},
                   {"time_scale", f.time_scale},
                   {"length_scale", f.scale},
                   {"concurrency", ro.concurrency},
                   {"model", ro.model},
                   {"chat", ro.chat},
                   {"timeout_s", ro.timeout_s},
                   {"interrupted", runner.stopped()}};
    PRFAAS_RETURN_IF_ERROR(WriteFile(f.output_json, j.dump(2) + "\n"));
  }
  if (!f.requests_jsonl.empty()) {
    std::string text;
    for (const RequestResult& r : results) {
      text += nlohmann::json{{"index", r.index},
                             {"sent", r.sent},
                             {"ok", r.ok},
                             {"error", r.error_kind},
                             {"scheduled_s", r.scheduled_s},
                             {"start_s", r.start_s},
                             {"ttft_s", r.ttft_s},
                             {"e2e_s", r.e2e_s},
                             {"prompt_tokens", r.prompt_tokens},
                             {"output_tokens", r.output_tokens}}
                  .dump() +
              "\n";
    }
    PRFAAS_RETURN_IF_ERROR(WriteFile(f.requests_jsonl, text));
  }
  return Status::Ok();
}

Status RunProfileCommand(const ProfileOptions& o, const std::string& output) {
  PRFAAS_ASSIGN_OR_RETURN(nlohmann::json j, RunProfile(o));
  const std::string text = j.dump(2) + "\n";
  if (output.empty() || output == "-") {
    std::cout << text << std::flush;
    return Status::Ok();
  }
  PRFAAS_RETURN_IF_ERROR(WriteFile(output, text));
  std::fprintf(stderr, "wrote %s\n", output.c_str());
  return Status::Ok();
}

}  // namespace

void RegisterBenchCommand(CLI::App& app) {
  auto f = std::make_shared<BenchFlags>();
  // Defaults sized for the embedded CPU model; the simulator's defaults are the paper's workload.
  f->syn.mu = 6.0;
  f->syn.sigma = 0.6;
  f->syn.min_input = 16;
  f->syn.max_input = 4096;
  f->syn.output_tokens = 64;
  f->syn.block_tokens = 64;

  CLI::App* b = app.add_subcommand(
      "bench", "Replay a trace or synthetic workload against an OpenAI-compatible endpoint");
  b->add_option("--url", f->url, "Endpoint base URL (http://host:port[/prefix])")
      ->capture_default_str();
  b->add_option("--trace", f->trace, "Trace file to replay");
  b->add_option("--format", f->format, "Trace format: mooncake|azure|bailian|burstgpt")
      ->capture_default_str();
  b->add_option("--synthetic", f->synthetic,
                "Synthetic workload instead of a trace: lognormal (log-normal prompt lengths)");
  b->add_option("--arrival", f->syn.arrival, "Synthetic arrivals: poisson|gamma")
      ->capture_default_str();
  b->add_option("--cv", f->syn.cv, "Gamma arrivals: coefficient of variation")
      ->capture_default_str();
  b->add_option("--input-mu", f->syn.mu, "Synthetic: log-normal mu of prompt tokens")
      ->capture_default_str();
  b->add_option("--input-sigma", f->syn.sigma, "Synthetic: log-normal sigma")
      ->capture_default_str();
  b->add_option("--min-input", f->syn.min_input, "Synthetic: min prompt tokens")
      ->capture_default_str();
  b->add_option("--max-input", f->syn.max_input, "Synthetic: max prompt tokens")
      ->capture_default_str();
  b->add_option("--output-tokens", f->syn.output_tokens, "Synthetic: output tokens per request")
      ->capture_default_str();
  b->add_option("--sessions", f->syn.sessions,
                "Synthetic: multi-turn conversations sharing prefixes (0 = independent)");
  b->add_option("--system-prompt-tokens", f->syn.system_prompt_tokens,
                "Synthetic: shared system prompt length");
  b->add_option("--seed", f->syn.seed, "Synthetic: random seed")->capture_default_str();
  b->add_option("--block-tokens", f->block_tokens,
                "Tokens per hash block (0 = the format's default; synthetic default 64)");
  b->add_option("--rate", f->rate,
                "Mean request rate in req/s (trace: rescales arrival times; synthetic: the rate)");
  b->add_option("--time-scale", f->time_scale, "Trace: multiply inter-arrival gaps by this")
      ->capture_default_str();
  b->add_option("--scale", f->scale,
                "Multiply prompt/output lengths and block size (keeps prefix sharing)")
      ->capture_default_str();
  b->add_option("--duration", f->duration, "Send only requests arriving in the first N seconds");
  b->add_option("--max-requests", f->max_requests, "Send at most N requests");
  b->add_option("--max-input-tokens", f->wl.max_input_tokens, "Truncate longer prompts");
  b->add_option("--max-output-tokens", f->wl.max_output_tokens, "Cap max_tokens per request");
  b->add_option("--concurrency", f->run.concurrency, "Max requests in flight")
      ->capture_default_str();
  b->add_option("--timeout", f->run.timeout_s, "Per-request timeout, seconds")
      ->capture_default_str();
  b->add_option("--model", f->run.model, "Model name sent in requests")->capture_default_str();
  b->add_flag("--chat", f->run.chat, "Use /v1/chat/completions (default /v1/completions)");
  b->add_flag("--no-ignore-eos", f->no_ignore_eos,
              "Do not send ignore_eos (outputs may end before max_tokens)");
  b->add_option("--temperature", f->run.temperature, "Sampling temperature")->capture_default_str();
  b->add_option("--slo-ttft", f->slo_ttft, "TTFT SLO in seconds (0 = none)");
  b->add_option("--slo-tpot", f->slo_tpot, "TPOT SLO in seconds (0 = none)");
  b->add_option("--output-json", f->output_json, "Write the report as JSON to FILE");
  b->add_option("--requests-jsonl", f->requests_jsonl, "Write one JSON line per request to FILE");
  b->add_flag("--no-progress", f->no_progress, "No progress bar (it is shown only on a TTY)");

  auto po = std::make_shared<ProfileOptions>();
  auto output = std::make_shared<std::string>();
  CLI::App* p = b->add_subcommand(
      "profile", "Measure a worker's prefill and decode-step latencies (simulator profile JSON)");
  p->add_option("--worker", po->worker, "Worker gRPC address host:port")->required();
  p->add_option("--lengths", po->lengths, "Prompt lengths for prefill")
      ->delimiter(',')
      ->capture_default_str();
  p->add_option("--batches", po->batches, "Batch sizes for decode")
      ->delimiter(',')
      ->capture_default_str();
  p->add_option("--repeats", po->repeats, "Measurements per point (median)")->capture_default_str();
  p->add_option("--decode-context", po->decode_context, "Prompt tokens of decode streams")
      ->capture_default_str();
  p->add_option("--decode-tokens", po->decode_tokens, "Tokens generated per decode stream")
      ->capture_default_str();
  p->add_option("--timeout", po->timeout_s, "Per-RPC timeout, seconds")->capture_default_str();
  p->add_option("--model", po->model, "Model label written into the profile")
      ->capture_default_str();
  p->add_option("--hardware", po->hardware, "Hardware label written into the profile")
      ->capture_default_str();
  p->add_option("--gpus", po->gpus, "GPU count written into the profile")->capture_default_str();
  p->add_option("--seed", po->seed, "Seed of the random prompts")->capture_default_str();
  p->add_option("--output", *output, "Profile JSON file (default: stdout)");
  p->callback([po, output]() {
    Status s = RunProfileCommand(*po, *output);
    if (!s.ok()) {
      std::cerr << "prfaas bench profile: " << s.message() << "\n";
      throw CLI::RuntimeError(1);
    }
  });

  b->callback([f, p]() {
    if (p->parsed()) return;  // `bench profile` ran its own callback
    Status s = RunBench(*f);
    if (!s.ok()) {
      std::cerr << "prfaas bench: " << s.message() << "\n";
      throw CLI::RuntimeError(1);
    }
  });
}

}  // namespace prfaas::bench
