// ModelConfig: the shape of a hybrid Gated DeltaNet + gated GQA model (Qwen3-Next / Qwen3.5
// family, dense SwiGLU MLP), parsed from an HF config.json or taken from a named preset.
//
// Parsing rejects what the engine cannot run (MoE, unknown layer types, non-SiLU activations, no
// output gate, inconsistent head counts) with an INVALID_ARGUMENT / UNIMPLEMENTED status that names
// the offending key. Byte accounting helpers give the sizes the serving layers plan with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace prfaas::engine {

enum class LayerKind { kLinearAttention, kFullAttention };

struct ModelConfig {
  std::string name;  // preset name or config path, for display
  std::string model_type = "qwen3_next";
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  std::vector<LayerKind> layer_types;
  // Gated GQA ("full_attention") layers.
  int64_t num_attention_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double partial_rotary_factor = 0.25;
  double rope_theta = 10000.0;
  // Gated DeltaNet ("linear_attention") layers.
  int64_t linear_num_key_heads = 0;
  int64_t linear_num_value_heads = 0;
  int64_t linear_key_head_dim = 0;
  int64_t linear_value_head_dim = 0;
  int64_t linear_conv_kernel_dim = 4;
  // Shared.
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  bool tie_word_embeddings = false;
  int64_t max_position_embeddings = 0;
  int32_t bos_token_id = -1;
  int32_t eos_token_id = -1;

  // Derived sizes.
  int64_t rotary_dim() const;
  int64_t linear_key_dim() const { return linear_num_key_heads * linear_key_head_dim; }
  int64_t linear_value_dim() const { return linear_num_value_heads * linear_value_head_dim; }
  int64_t conv_dim() const { return 2 * linear_key_dim() + linear_value_dim(); }
  int64_t num_full_attention_layers() const;
  int64_t num_linear_attention_layers() const;

  // Attention K+V bytes per token over all full-attention layers at `bytes_per_elem` per value
  // (2 = bf16, 4 = fp32).
  int64_t KvBytesPerToken(int64_t bytes_per_elem) const;
  // Per-sequence GDN state over all linear layers: conv state [K-1, conv_dim] at conv_bytes per
  // value plus recurrent state [H_v, d_k, d_v] at ssm_bytes per value.
  int64_t ConvStateBytes(int64_t conv_bytes) const;
  int64_t SsmStateBytes(int64_t ssm_bytes) const;
  int64_t StateBytesPerSequence(int64_t conv_bytes, int64_t ssm_bytes) const {
    return ConvStateBytes(conv_bytes) + SsmStateBytes(ssm_bytes);
  }
  int64_t ParameterCount() const;
  // Compact layout string, e.g. "12 x [linear linear linear full]".
  std::string LayoutString() const;

  // Checks internal consistency (head divisibility, sizes > 0, layer list length).
  Status Validate() const;
};

// Parses an HF config.json text (Qwen3-Next keys; a nested "text_config" is honoured).
Result<ModelConfig> ParseModelConfig(std::string_view json_text);
// Reads <dir>/config.json.
Result<ModelConfig> LoadModelConfig(const std::string& dir);
// Named presets: "tiny", "small", "qwen3-next-80b", "qwen3.5-9b".
Result<ModelConfig> PresetModelConfig(std::string_view name);
std::vector<std::string> PresetNames();
// A preset name, or a directory holding config.json.
Result<ModelConfig> ResolveModelConfig(const std::string& preset_or_dir);

}  // namespace prfaas::engine
