// Engine throughput on the CUDA backend (fp32 and bf16) against the CPU engine in the same run:
// prefill tokens/s of one long prompt and decode tokens/s of batches of sequences, per preset.
//
// usage: prfaas_bench_engine [--presets tiny,small] [--prompt 2048] [--steps 64] [--out DIR | DIR]
// Variants: CPU fp32, CUDA fp32, CUDA bf16 (backend's own mixer kernels), CUDA bf16 with the
// kernels/cuda library kernels (kernels=library).
// Prints `RESULT kernel=engine ...` lines (and writes them to DIR/engine.txt with --out).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace {

using namespace prfaas::engine;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

struct Result {
  double prefill_tok_s = 0;
  std::vector<std::pair<int, double>> decode_tok_s;  // batch -> tokens/s
};

std::vector<int32_t> Prompt(std::mt19937& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> p(n);
  for (auto& t : p) t = d(rng);
  return p;
}

bool Run(const ModelConfig& cfg, std::shared_ptr<const ModelWeights> w, const std::string& device,
         const std::string& dtype, bool library, int64_t prompt_len, int steps, Result* out) {
  EngineOptions o;
  o.kv_block_size = 64;
  o.num_kv_blocks = 1024;
  o.num_state_slots = 40;
  o.prefill_chunk = 512;
  o.device = device;
  o.dtype = dtype;
  o.cuda_library_kernels = library;
  auto made = Engine::Create(cfg, w, o);
  if (!made.ok()) {
    std::printf("# %s/%s: %s\n", device.c_str(), dtype.c_str(), made.status().ToString().c_str());
    return false;
  }
  auto& eng = **made;
  std::mt19937 rng(7);
  std::vector<float> logits;
  // Prefill: warm-up (plans, allocations), then best of 3.
  double best = 1e30;
  for (int rep = 0; rep < 4; ++rep) {
    const auto p = Prompt(rng, rep == 0 ? 512 : prompt_len, cfg.vocab_size);
    SequenceId s = eng.AddSequence().value();
    const auto t0 = Clock::now();
    if (!eng.Prefill({&s, 1}, {&p, 1}, &logits).ok()) return false;
    const auto t1 = Clock::now();
    if (rep > 0) best = std::min(best, Seconds(t0, t1));
    (void)eng.Release(s);
  }
  out->prefill_tok_s = prompt_len / best;
  // Decode: batches of sequences with 128-token contexts, `steps` greedy steps each.
  for (int batch : {1, 8, 32}) {
    std::vector<SequenceId> seqs;
    std::vector<int32_t> toks;
    for (int i = 0; i < batch; ++i) {
      const auto p = Prompt(rng, 128, cfg.vocab_size);
      SequenceId s = eng.AddSequence().value();
      if (!eng.Prefill({&s, 1}, {&p, 1}, &logits).ok()) return false;
      seqs.push_back(s);
      toks.push_back(prfaas::kernels::cpu::SampleToken(logits, {}, 0));
    }
    auto step = [&] {
      if (!eng.Decode(seqs, toks, &logits).ok()) return false;
      for (int i = 0; i < batch; ++i)
        toks[i] = prfaas::kernels::cpu::SampleToken(
            {logits.data() + i * cfg.vocab_size, static_cast<size_t>(cfg.vocab_size)}, {}, 0);
      return true;
    };
    if (!step()) return false;  // warm-up
    const auto t0 = Clock::now();
    for (int i = 0; i < steps; ++i)
      if (!step()) return false;
    const auto t1 = Clock::now();
    out->decode_tok_s.push_back({batch, batch * steps / Seconds(t0, t1)});
    for (auto s : seqs) (void)eng.Release(s);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string presets = "tiny,small", out_dir;
  int64_t prompt_len = 2048;
  int steps = 64;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--presets") && has_value) {
      presets = argv[++i];
    } else if (!std::strcmp(argv[i], "--prompt") && has_value) {
      prompt_len = std::atoll(argv[++i]);
    } else if (!std::strcmp(argv[i], "--steps") && has_value) {
      steps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--out") && has_value) {
      out_dir = argv[++i];
    } else if (argv[i][0] != '-') {
      out_dir = argv[i];  // bench/gpu/run.sh passes the raw output dir positionally
    }
  }
  // The library-kernel variant runs last for every preset, so a fault there cannot lose the
  // other numbers.
  struct Variant {
    const char* device;
    const char* dtype;
    bool library;
  };
  const Variant variants[] = {{"cpu", "fp32", false},
                              {"cuda", "fp32", false},
                              {"cuda", "bf16", false},
                              {"cuda", "bf16", true}};
  std::vector<std::string> names;
  std::stringstream ps(presets);
  for (std::string preset; std::getline(ps, preset, ',');) names.push_back(preset);
  std::map<std::string, Result> cpu;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& preset : names) {
      auto cfg = PresetModelConfig(preset);
      if (!cfg.ok()) {
        std::fprintf(stderr, "%s\n", cfg.status().ToString().c_str());
        return 1;
      }
      auto w = std::make_shared<ModelWeights>(SyntheticWeights(*cfg, 1).value());
      for (const Variant& v : variants) {
        if (v.library != (pass == 1)) continue;
        Result r;
        if (!Run(*cfg, w, v.device, v.dtype, v.library, prompt_len, steps, &r)) continue;
        if (!std::strcmp(v.device, "cpu")) cpu[preset] = r;
        const bool have_cpu = cpu.count(preset) > 0;
        const Result& base = have_cpu ? cpu[preset] : r;
        std::ostringstream lines;
        char buf[512];
        std::snprintf(buf, sizeof(buf),
                      "RESULT kernel=engine preset=%s device=%s dtype=%s kernels=%s "
                      "phase=prefill tokens=%lld tok_s=%.1f vs_cpu=%.2f\n",
                      preset.c_str(), v.device, v.dtype, v.library ? "library" : "own",
                      static_cast<long long>(prompt_len), r.prefill_tok_s,
                      have_cpu ? r.prefill_tok_s / base.prefill_tok_s : 0.0);
        lines << buf;
        for (size_t i = 0; i < r.decode_tok_s.size(); ++i) {
          const auto [batch, tps] = r.decode_tok_s[i];
          std::snprintf(buf, sizeof(buf),
                        "RESULT kernel=engine preset=%s device=%s dtype=%s kernels=%s "
                        "phase=decode batch=%d context=128 steps=%d tok_s=%.1f vs_cpu=%.2f\n",
                        preset.c_str(), v.device, v.dtype, v.library ? "library" : "own", batch,
                        steps, tps, have_cpu ? tps / base.decode_tok_s[i].second : 0.0);
          lines << buf;
        }
        std::fputs(lines.str().c_str(), stdout);
        std::fflush(stdout);
        if (!out_dir.empty()) std::ofstream(out_dir + "/engine.txt", std::ios::app) << lines.str();
      }
    }
  }
  return 0;
}
