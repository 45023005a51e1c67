// engine_cpu_bench: prefill tokens/s (1K/8K/32K), decode tokens/s (batch 1/8/32) for the tiny and
// small presets, and GEMM GFLOP/s of the engine's projection kernels against OpenBLAS sgemm peak.
//
//   engine_cpu_bench [--models tiny,small] [--prefill 1024,8192,32768] [--batches 1,8,32]
//                    [--decode-steps 16] [--decode-context 256] [--max-prefill-small 8192]
// The default run stays under ~2 minutes on 2 cores; pass --max-prefill-small 32768 for the full
// grid.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <cblas.h>

#include "engine/engine.h"
#include "kernels/cpu/ops.h"

namespace {

using Clock = std::chrono::steady_clock;
using prfaas::engine::Engine;
using prfaas::engine::EngineOptions;
using prfaas::engine::SequenceId;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(std::stoll(s.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  return out;
}

std::vector<std::string> ParseNames(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(s.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

std::vector<float> Rand(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Best-of-3 GFLOP/s of y = x W^T with m x k times n x k.
template <typename F>
double GemmGflops(int64_t m, int64_t n, int64_t k, F&& fn) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = Clock::now();
    fn();
    const double s = Seconds(t0, Clock::now());
    best = std::max(best, 2.0 * m * n * k / s / 1e9);
  }
  return best;
}

void GemmSection() {
  std::mt19937 rng(1);
  std::printf("== GEMM (float32, y = x W^T)\n");
  std::printf("%-34s %8s %8s %8s %10s %8s\n", "kernel", "m", "n", "k", "GFLOP/s", "of peak");
  const int64_t pm = 1024, pn = 1024, pk = 1024;
  auto a = Rand(pm * pk, rng), b = Rand(pn * pk, rng), c(std::vector<float>(pm * pn));
  const double peak = GemmGflops(pm, pn, pk, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, pm, pn, pk, 1.0f, a.data(), pk, b.data(),
                pk, 0.0f, c.data(), pn);
  });
  std::printf("%-34s %8ld %8ld %8ld %10.1f %7.0f%%\n", "openblas sgemm (peak reference)", (long)pm,
              (long)pn, (long)pk, peak, 100.0);
  struct Shape {
    const char* what;
    int64_t m, n, k;
  };
  const Shape shapes[] = {{"small prefill gate_up (512 rows)", 512, 2816, 512},
                          {"small decode gate_up (batch 1)", 1, 2816, 512},
                          {"small decode gate_up (batch 8)", 8, 2816, 512},
                          {"small decode gate_up (batch 32)", 32, 2816, 512}};
  for (const auto& s : shapes) {
    auto x = Rand(s.m * s.k, rng), w = Rand(s.n * s.k, rng), y = std::vector<float>(s.m * s.n);
    const double blas = GemmGflops(s.m, s.n, s.k, [&] {
      prfaas::kernels::cpu::Linear(x.data(), s.m, s.k, w.data(), s.n, y.data());
    });
    const double inv = GemmGflops(s.m, s.n, s.k, [&] {
      prfaas::kernels::cpu::LinearRowInvariant(x.data(), s.m, s.k, w.data(), s.n, y.data());
    });
    std::printf("%-34s %8ld %8ld %8ld %10.1f %7.0f%%   Linear (OpenBLAS)\n", s.what, (long)s.m,
                (long)s.n, (long)s.k, blas, 100.0 * blas / peak);
    std::printf("%-34s %8ld %8ld %8ld %10.1f %7.0f%%   LinearRowInvariant\n", "", (long)s.m,
                (long)s.n, (long)s.k, inv, 100.0 * inv / peak);
  }
}

void ModelSection(const std::string& name, const std::vector<int64_t>& prefill_lens,
                  int64_t max_prefill, const std::vector<int64_t>& batches, int64_t steps,
                  int64_t context) {
  auto cfg = prfaas::engine::PresetModelConfig(name);
  if (!cfg.ok()) {
    std::printf("skip %s: %s\n", name.c_str(), cfg.status().ToString().c_str());
    return;
  }
  auto weights = std::make_shared<prfaas::engine::ModelWeights>(
      prfaas::engine::SyntheticWeights(*cfg, 7).value());
  std::printf("== model %s (%ld params, layout %s)\n", name.c_str(), (long)cfg->ParameterCount(),
              cfg->LayoutString().c_str());
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg->vocab_size) - 1);
  for (int64_t len : prefill_lens) {
    if (len > max_prefill) {
      std::printf("prefill %-6ld skipped (--max-prefill-%s)\n", (long)len, name.c_str());
      continue;
    }
    EngineOptions opt;
    opt.num_kv_blocks = len / opt.kv_block_size + 2;
    opt.num_state_slots = 2;
    auto e = Engine::Create(*cfg, weights, opt).value();
    std::vector<int32_t> prompt(len);
    for (auto& t : prompt) t = tok(rng);
    SequenceId s = e->AddSequence().value();
    std::vector<float> logits;
    const auto t0 = Clock::now();
    auto st = e->Prefill({&s, 1}, {&prompt, 1}, &logits);
    const double sec = Seconds(t0, Clock::now());
    bool finite = st.ok();
    for (float x : logits) finite = finite && std::isfinite(x);
    std::printf("prefill %-6ld tokens: %8.2f s  %10.1f tokens/s  logits finite: %s\n", (long)len,
                sec, len / sec, finite ? "yes" : "NO");
  }
  for (int64_t b : batches) {
    EngineOptions opt;
    opt.num_kv_blocks = b * ((context + steps) / opt.kv_block_size + 2);
    opt.num_state_slots = b + 1;
    auto e = Engine::Create(*cfg, weights, opt).value();
    std::vector<SequenceId> ids;
    std::vector<float> logits;
    for (int64_t i = 0; i < b; ++i) {
      ids.push_back(e->AddSequence().value());
      // Different lengths per sequence: context .. context + i.
      std::vector<int32_t> prompt(context + i);
      for (auto& t : prompt) t = tok(rng);
      (void)e->Prefill({&ids.back(), 1}, {&prompt, 1}, &logits);
    }
    std::vector<int32_t> toks(b);
    for (auto& t : toks) t = tok(rng);
    const auto t0 = Clock::now();
    for (int64_t s = 0; s < steps; ++s) {
      (void)e->Decode(ids, toks, &logits);
      for (int64_t i = 0; i < b; ++i)
        toks[i] = prfaas::kernels::cpu::SampleToken(
            {&logits[i * cfg->vocab_size], (size_t)cfg->vocab_size}, {}, 0);
    }
    const double sec = Seconds(t0, Clock::now());
    std::printf("decode batch %-3ld ctx ~%ld: %6.2f ms/step  %10.1f tokens/s\n", (long)b,
                (long)context, 1e3 * sec / steps, b * steps / sec);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows line by line when redirected
  std::string models = "tiny,small", prefill = "1024,8192,32768", batches = "1,8,32";
  int64_t steps = 16, context = 256, max_small = 8192;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--models")
      models = v;
    else if (k == "--prefill")
      prefill = v;
    else if (k == "--batches")
      batches = v;
    else if (k == "--decode-steps")
      steps = std::stoll(v);
    else if (k == "--decode-context")
      context = std::stoll(v);
    else if (k == "--max-prefill-small")
      max_small = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  GemmSection();
  for (const auto& m : ParseNames(models))
    ModelSection(m, ParseList(prefill), m == "small" ? max_small : INT64_MAX, ParseList(batches),
                 steps, context);
  return 0;
}
