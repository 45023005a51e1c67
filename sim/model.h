// What the simulator needs to know about a model: bytes of KV per prompt token, bytes of
// fixed-size recurrent state per sequence, and the FLOP/byte counts the analytic cost model uses.
//
// Sizes come from the model dimensions (HF config.json or a named preset), so a hybrid model and a
// dense one differ exactly as in the paper's Φ_kv table: only full-attention layers grow KV with
// length; linear-attention layers add a constant state per sequence.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::sim {

struct ModelSpec {
  std::string name;
  int num_layers = 0;
  int num_full_attn_layers = 0;       // layers whose KV grows with length
  int attn_heads = 0;                 // query heads of a full-attention layer
  int attn_head_dim = 0;              // qk head dim used for attention FLOPs
  double kv_bytes_per_token = 0;      // all full-attention layers, as stored/transferred
  double state_bytes_per_seq = 0;     // recurrent + conv state of all linear layers
  double linear_flops_per_token = 0;  // recurrent-layer FLOPs per token beyond the projections
  double total_params = 0;            // weights held in memory
  double active_params = 0;           // weights touched per token (MoE: shared + top-k experts)
  double weight_bytes_per_param = 2;  // bf16

  // Bytes the prefill of `tokens` new tokens hands to decode (KV of those tokens + the state).
  double TransferBytes(int64_t tokens) const {
    return kv_bytes_per_token * static_cast<double>(tokens) + state_bytes_per_seq;
  }
};

// Presets: "qwen3-next-80b", "qwen3.5-397b", "kimi-linear-48b", "paper-1t" (the paper's internal
// 1T Kimi-Linear-style model, sizes fitted to its Table 5), "qwen3-32b" (dense reference).
Result<ModelSpec> ModelPreset(const std::string& name);
std::vector<std::string> ModelPresetNames();

// Reads a HF config.json (Qwen3-Next / Qwen3.5 hybrid, Kimi Linear, or dense Llama/Qwen style).
Result<ModelSpec> ModelFromConfigJson(const std::string& path);
Result<ModelSpec> ModelFromConfigText(const std::string& text, const std::string& name);

}  // namespace prfaas::sim
