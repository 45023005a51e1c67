// What the simulator needs to know about a model: bytes of KV per prompt token, bytes of
// fixed-size recurrent state per sequence, and the FLOP/byte counts the analytic cost model uses.
//
// Shapes come from the engine's model config (engine/config.h: the one config.json parser of the
// project), so a model the engine serves is sized exactly as the engine sizes it. Architectures the
// engine cannot run yet (MoE parameter counts, MLA latent KV, Kimi's KDA) are presets that start
// from an engine ModelConfig for the parts it describes and set the rest explicitly. Only
// full-attention layers grow KV with length; linear-attention layers add a constant state per
// sequence, so hybrid and dense models differ exactly as in the paper's Φ_kv table.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace prfaas::engine {
struct ModelConfig;
}

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

// Element sizes for the byte accounting. GPU serving stores KV and conv state in bf16 and the
// recurrent state in fp32 (the default); the CPU engine keeps everything in fp32 (all 4).
struct ModelDtypes {
  int kv_bytes = 2;
  int conv_bytes = 2;
  int ssm_bytes = 4;
  int weight_bytes = 2;
};

// Sizes of a model the engine describes: KV and state from the engine's own byte helpers, a dense
// parameter count (total = active).
ModelSpec ModelFromEngineConfig(const engine::ModelConfig& config, const ModelDtypes& dtypes = {});

// Presets: the engine's presets ("tiny", "small", "qwen3.5-9b", ...) plus simulator-only ones
// for architectures the engine does not run: "qwen3-next-80b" (MoE parameter counts),
// "qwen3.5-397b", "kimi-linear-48b" (KDA + MLA), "paper-1t" (the paper's internal 1T
// Kimi-Linear-style model, sizes fitted to its Table 5), "qwen3-235b", "qwen3-32b" (dense).
Result<ModelSpec> ModelPreset(const std::string& name, const ModelDtypes& dtypes = {});
std::vector<std::string> ModelPresetNames();

// A HF config.json file, or a model directory holding one, read by the engine's parser
// (engine::ParseModelConfig; its errors name the offending key).
Result<ModelSpec> ModelFromConfigJson(const std::string& path, const ModelDtypes& dtypes = {});

}  // namespace prfaas::sim
