// Cost models: how long a worker (one model instance on `gpus` GPUs) takes for a prefill batch
// and for one decode step. Two implementations sit behind one interface:
//
//  * AnalyticCostModel: FLOPs and bytes per step from the ModelSpec on a HardwareSpec, divided by
//    peak rates times efficiency factors (roofline: max of compute and memory time) + overhead.
//  * ProfileCostModel: piecewise-linear interpolation over latencies measured by the real engine
//    (`prfaas bench profile`), JSON format "prfaas-profile/1" documented in docs/simulator.md.
//
// Contract: times are seconds, > 0 for a non-empty batch, and monotone non-decreasing in tokens
// and context so queues behave sensibly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "sim/model.h"

namespace prfaas::sim {

struct HardwareSpec {
  std::string name;
  double bf16_tflops = 0;  // dense bf16 peak per GPU
  double hbm_tbps = 0;     // HBM bandwidth per GPU, TB/s
  double hbm_gib = 0;      // memory per GPU
  // Efficiency factors: achieved fraction of peak in prefill (MFU) and decode (bandwidth).
  double prefill_mfu = 0.45;
  double decode_mbu = 0.6;
  double decode_mfu = 0.3;
  double step_overhead_s = 0.002;  // per step launch/scheduling overhead
};

// Known names: H200, H100, H20, H800, A100, B200, L40S (case-insensitive).
Result<HardwareSpec> HardwarePreset(const std::string& name);

struct PrefillItem {
  int64_t cached_tokens = 0;  // prefix already in cache (attended to, not recomputed)
  int64_t new_tokens = 0;     // tokens computed in this prefill
};

class CostModel {
 public:
  virtual ~CostModel() = default;
  virtual double PrefillSeconds(std::span<const PrefillItem> batch) const = 0;
  // One decode step for `batch` sequences whose contexts total `context_tokens`.
  virtual double DecodeStepSeconds(int batch, int64_t context_tokens) const = 0;
  virtual std::string Describe() const = 0;
};

class AnalyticCostModel : public CostModel {
 public:
  AnalyticCostModel(ModelSpec model, HardwareSpec hw, int gpus);
  double PrefillSeconds(std::span<const PrefillItem> batch) const override;
  double DecodeStepSeconds(int batch, int64_t context_tokens) const override;
  std::string Describe() const override;

 private:
  ModelSpec m_;
  HardwareSpec hw_;
  int gpus_;
};

// Profile JSON ("prfaas-profile/1"):
//   { "format": "prfaas-profile/1", "model": "...", "hardware": "H200", "gpus": 8,
//     "prefill": [ {"tokens": 1024, "seconds": 0.44}, ... ],              // uncached, batch of 1
//     "decode":  [ {"batch": 1, "context_tokens": 4096, "seconds": 0.02}, ... ] }  // per seq ctx
// Prefill of a batch = T(0) + Σ_i [T(c_i + n_i) − T(c_i)], T interpolated (linear, extrapolated
// from the end segments, T(0) from the first segment), i.e. the fixed per-pass cost is paid once
// and a cached prefix only saves the compute it covers. Decode interpolates bilinearly in batch
// and per-sequence context (clamped at the measured range).
class ProfileCostModel : public CostModel {
 public:
  static Result<std::unique_ptr<ProfileCostModel>> FromJsonText(const std::string& text,
                                                                const std::string& name);
  static Result<std::unique_ptr<ProfileCostModel>> FromFile(const std::string& path);
  // Multiplies every time by `factor` (for what-if scaling of a measured profile).
  void Scale(double factor) { scale_ = factor; }

  double PrefillSeconds(std::span<const PrefillItem> batch) const override;
  double DecodeStepSeconds(int batch, int64_t context_tokens) const override;
  std::string Describe() const override;

 private:
  double PrefillT(double tokens) const;
  std::string name_;
  std::vector<std::pair<double, double>> prefill_;  // (tokens, seconds), sorted
  struct DecodeRow {
    int batch;
    std::vector<std::pair<double, double>> ctx;  // (per-seq context, seconds)
  };
  std::vector<DecodeRow> decode_;  // sorted by batch
  double scale_ = 1.0;
};

// Piecewise-linear interpolation over sorted (x, y) points, extrapolating from the end segments.
double Interpolate(const std::vector<std::pair<double, double>>& pts, double x, bool clamp);

}  // namespace prfaas::sim
