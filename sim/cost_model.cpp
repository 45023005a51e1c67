#include "sim/cost_model.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace prfaas::sim {

Result<HardwareSpec> HardwarePreset(const std::string& name) {
  std::string n;
  for (char c : name) n += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // Dense bf16 peaks and HBM bandwidth from the vendors' data sheets.
  HardwareSpec h;
  h.name = n;
  if (n == "H200") {
    h.bf16_tflops = 989;
    h.hbm_tbps = 4.8;
    h.hbm_gib = 141;
  } else if (n == "H100") {
    h.bf16_tflops = 989;
    h.hbm_tbps = 3.35;
    h.hbm_gib = 80;
  } else if (n == "H800") {
    h.bf16_tflops = 989;
    h.hbm_tbps = 3.35;
    h.hbm_gib = 80;
  } else if (n == "H20") {
    h.bf16_tflops = 148;
    h.hbm_tbps = 4.0;
    h.hbm_gib = 96;
  } else if (n == "A100") {
    h.bf16_tflops = 312;
    h.hbm_tbps = 2.0;
    h.hbm_gib = 80;
  } else if (n == "B200") {
    h.bf16_tflops = 2250;
    h.hbm_tbps = 8.0;
    h.hbm_gib = 180;
  } else if (n == "L40S") {
    h.bf16_tflops = 362;
    h.hbm_tbps = 0.864;
    h.hbm_gib = 48;
  } else {
    return InvalidArgument("unknown hardware '" + name +
                           "' (known: H200, H100, H800, H20, A100, B200, L40S)");
  }
  return h;
}

AnalyticCostModel::AnalyticCostModel(ModelSpec model, HardwareSpec hw, int gpus)
    : m_(std::move(model)), hw_(std::move(hw)), gpus_(std::max(gpus, 1)) {}

double AnalyticCostModel::PrefillSeconds(std::span<const PrefillItem> batch) const {
  if (batch.empty()) return 0;
  double flops = 0, tokens = 0;
  for (const auto& it : batch) {
    tokens += static_cast<double>(it.new_tokens);
    double n = static_cast<double>(it.new_tokens);
    double c = static_cast<double>(it.cached_tokens);
    flops += 2.0 * m_.active_params * n + m_.linear_flops_per_token * n;
    // Causal attention: each new token attends to the cached prefix and to earlier new tokens;
    // QK^T and PV are 2 FLOPs per multiply-add each.
    flops += 4.0 * m_.num_full_attn_layers * m_.attn_heads * m_.attn_head_dim * (n * c + n * n / 2);
  }
  double compute = flops / (hw_.bf16_tflops * 1e12 * hw_.prefill_mfu * gpus_);
  // A pass streams the weights it touches once (MoE: more experts as tokens grow).
  double weights = std::min(m_.total_params, m_.active_params * tokens) *
                   m_.weight_bytes_per_param / (hw_.hbm_tbps * 1e12 * hw_.decode_mbu * gpus_);
  return std::max(compute, weights) + hw_.step_overhead_s;
}

double AnalyticCostModel::DecodeStepSeconds(int batch, int64_t context_tokens) const {
  if (batch <= 0) return 0;
  double b = batch;
  // MoE touches more experts as the batch grows, up to all weights.
  double weight_bytes = std::min(m_.total_params, m_.active_params * b) * m_.weight_bytes_per_param;
  double kv_bytes = m_.kv_bytes_per_token * static_cast<double>(context_tokens);
  double state_bytes = 2.0 * m_.state_bytes_per_seq * b;  // read + write
  double mem =
      (weight_bytes + kv_bytes + state_bytes) / (hw_.hbm_tbps * 1e12 * hw_.decode_mbu * gpus_);
  double flops = b * (2.0 * m_.active_params + m_.linear_flops_per_token) +
                 4.0 * m_.num_full_attn_layers * m_.attn_heads * m_.attn_head_dim *
                     static_cast<double>(context_tokens);
  double compute = flops / (hw_.bf16_tflops * 1e12 * hw_.decode_mfu * gpus_);
  return std::max(mem, compute) + hw_.step_overhead_s;
}

std::string AnalyticCostModel::Describe() const {
  return "analytic(" + m_.name + " on " + std::to_string(gpus_) + "x" + hw_.name + ")";
}

double Interpolate(const std::vector<std::pair<double, double>>& pts, double x, bool clamp) {
  if (pts.empty()) return 0;
  if (pts.size() == 1) return pts[0].second;
  if (clamp) {
    if (x <= pts.front().first) return pts.front().second;
    if (x >= pts.back().first) return pts.back().second;
  }
  size_t i = 1;
  while (i + 1 < pts.size() && pts[i].first < x) ++i;
  const auto& a = pts[i - 1];
  const auto& b = pts[i];
  if (b.first == a.first) return b.second;
  return a.second + (b.second - a.second) * (x - a.first) / (b.first - a.first);
}

Result<std::unique_ptr<ProfileCostModel>> ProfileCostModel::FromJsonText(const std::string& text,
                                                                         const std::string& name) {
  using json = nlohmann::json;
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument(name + ": not a JSON object");
  if (j.value("format", "") != "prfaas-profile/1") {
    return InvalidArgument(name + ": field 'format' must be \"prfaas-profile/1\"");
  }
  auto p = std::unique_ptr<ProfileCostModel>(new ProfileCostModel());
  p->name_ = name;
  try {
    if (!j.contains("prefill") || !j["prefill"].is_array() || j["prefill"].empty()) {
      return InvalidArgument(name + ": field 'prefill' must be a non-empty array");
    }
    for (size_t i = 0; i < j["prefill"].size(); ++i) {
      const auto& e = j["prefill"][i];
      double tok = e.at("tokens").get<double>(), s = e.at("seconds").get<double>();
      if (tok <= 0 || s <= 0) {
        return InvalidArgument(name + ": prefill[" + std::to_string(i) +
                               "]: tokens and seconds must be > 0");
      }
      p->prefill_.emplace_back(tok, s);
    }
    std::sort(p->prefill_.begin(), p->prefill_.end());
    if (!j.contains("decode") || !j["decode"].is_array() || j["decode"].empty()) {
      return InvalidArgument(name + ": field 'decode' must be a non-empty array");
    }
    for (size_t i = 0; i < j["decode"].size(); ++i) {
      const auto& e = j["decode"][i];
      int b = e.at("batch").get<int>();
      double ctx = e.value("context_tokens", 0.0), s = e.at("seconds").get<double>();
      if (b <= 0 || s <= 0) {
        return InvalidArgument(name + ": decode[" + std::to_string(i) +
                               "]: batch and seconds must be > 0");
      }
      auto it = std::find_if(p->decode_.begin(), p->decode_.end(),
                             [&](const DecodeRow& r) { return r.batch == b; });
      if (it == p->decode_.end()) {
        p->decode_.push_back({b, {}});
        it = std::prev(p->decode_.end());
      }
      it->ctx.emplace_back(ctx, s);
    }
    for (auto& r : p->decode_) std::sort(r.ctx.begin(), r.ctx.end());
    std::sort(p->decode_.begin(), p->decode_.end(),
              [](const DecodeRow& a, const DecodeRow& b) { return a.batch < b.batch; });
  } catch (const std::exception& e) {
    return InvalidArgument(name + ": " + e.what());
  }
  return p;
}

Result<std::unique_ptr<ProfileCostModel>> ProfileCostModel::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open profile '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return FromJsonText(ss.str(), path);
}

double ProfileCostModel::PrefillT(double tokens) const {
  if (tokens <= 0) {
    // T(0): the per-pass fixed cost, extrapolated from the first segment but never negative.
    return std::max(0.0, Interpolate(prefill_, 0, false));
  }
  return std::max(Interpolate(prefill_, tokens, false), PrefillT(0));
}

double ProfileCostModel::PrefillSeconds(std::span<const PrefillItem> batch) const {
  if (batch.empty()) return 0;
  double t = PrefillT(0);
  for (const auto& it : batch) {
    double c = static_cast<double>(it.cached_tokens);
    t += PrefillT(c + static_cast<double>(it.new_tokens)) - PrefillT(c);
  }
  // A pass always costs at least a measured minimum, so tiny batches are not free.
  return std::max(t, prefill_.front().second * 0.05) * scale_;
}

double ProfileCostModel::DecodeStepSeconds(int batch, int64_t context_tokens) const {
  if (batch <= 0) return 0;
  double per_seq = static_cast<double>(context_tokens) / batch;
  std::vector<std::pair<double, double>> by_batch;
  by_batch.reserve(decode_.size());
  for (const auto& r : decode_) by_batch.emplace_back(r.batch, Interpolate(r.ctx, per_seq, true));
  return std::max(1e-6, Interpolate(by_batch, batch, false)) * scale_;
}

std::string ProfileCostModel::Describe() const {
  return "profile(" + name_ + ")";
}

}  // namespace prfaas::sim
