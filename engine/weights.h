// ModelWeights: float32 weights of a hybrid model in the engine's canonical (fused) layout, built
// from a seed (synthetic) or loaded from HF safetensors.
//
// Canonical layout (all [out, in] row-major like nn.Linear):
//   attention qkv_proj = rows of q_proj (per head [q(D) | gate(D)]), then k_proj, then v_proj.
//   GDN in_proj = rows of in_proj_qkv (plain q|k|v order), then in_proj_z, in_proj_b, in_proj_a.
//     Qwen3-Next's interleaved in_proj_qkvz / in_proj_ba are de-interleaved into this on load.
//   mlp gate_up = rows of gate_proj then up_proj.
// Norm weights are stored as in the checkpoint (zero-centred ones hold w, the kernel adds 1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/config.h"

namespace prfaas::engine {

struct AttentionWeights {
  std::vector<float> qkv_proj;  // [Hq*2*D + 2*Hkv*D, hidden]
  std::vector<float> o_proj;    // [hidden, Hq*D]
  std::vector<float> q_norm;    // [D]
  std::vector<float> k_norm;    // [D]
};

struct GdnWeights {
  std::vector<float> in_proj;   // [conv_dim + value_dim + 2*H_v, hidden]
  std::vector<float> conv1d;    // [conv_dim, K]
  std::vector<float> a_log;     // [H_v]
  std::vector<float> dt_bias;   // [H_v]
  std::vector<float> norm;      // [d_v]  (plain weight)
  std::vector<float> out_proj;  // [hidden, value_dim]
};

struct LayerWeights {
  LayerKind kind = LayerKind::kLinearAttention;
  std::vector<float> input_norm;  // [hidden]
  std::vector<float> post_norm;   // [hidden]
  AttentionWeights attn;          // full-attention layers only
  GdnWeights gdn;                 // linear-attention layers only
  std::vector<float> gate_up;     // [2*intermediate, hidden]
  std::vector<float> down;        // [hidden, intermediate]
};

struct ModelWeights {
  std::vector<float> embed;       // [vocab, hidden]
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to embed
  std::vector<LayerWeights> layers;

  const std::vector<float>& output_matrix() const { return lm_head.empty() ? embed : lm_head; }
};

// Deterministic random weights for `config`, scaled so activations stay O(1) through deep stacks
// (output projections shrink with 1/sqrt(2*layers); decays g stay in a sane range).
Result<ModelWeights> SyntheticWeights(const ModelConfig& config, uint64_t seed);

// Loads <dir>/model.safetensors or the shards named by <dir>/model.safetensors.index.json.
// Accepts both interleaved (Qwen3-Next) and split (Qwen3.5) GDN projection names; MTP weights and
// unknown extra tensors are ignored.
Result<ModelWeights> LoadWeights(const ModelConfig& config, const std::string& dir);

enum class GdnNaming { kSplit, kInterleaved };
// Writes `weights` as an HF-named safetensors file (dtype "F32" or "BF16"), in either GDN naming.
// Used by tests and tools to produce checkpoints the loader must read back.
Status SaveWeights(const ModelConfig& config, const ModelWeights& weights, const std::string& path,
                   const std::string& dtype, GdnNaming naming);

}  // namespace prfaas::engine
