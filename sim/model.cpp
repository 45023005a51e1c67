#include "sim/model.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace prfaas::sim {
namespace {

using json = nlohmann::json;

// Linear attention (GDN/KDA): fp32 state H_v·d_k·d_v per layer plus a bf16 conv window of
// (K-1) steps over q|k|v channels.
double LinearStateBytes(int h_k, int h_v, int d_k, int d_v, int conv_k) {
  double ssm = static_cast<double>(h_v) * d_k * d_v * 4.0;
  double conv = static_cast<double>(2 * h_k * d_k + h_v * d_v) * (conv_k - 1) * 2.0;
  return ssm + conv;
}

// Per-token FLOPs of a delta-rule layer beyond its projections: state update and readout are
// a few d_k×d_v products per value head.
double LinearFlopsPerToken(int h_v, int d_k, int d_v) {
  return 6.0 * h_v * static_cast<double>(d_k) * d_v;
}

template <typename T>
T Get(const json& j, const char* key, T fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<T>();
}

}  // namespace

std::vector<std::string> ModelPresetNames() {
  return {"qwen3-next-80b", "qwen3.5-397b", "kimi-linear-48b",
          "paper-1t",       "qwen3-235b",   "qwen3-32b"};
}

Result<ModelSpec> ModelPreset(const std::string& name) {
  ModelSpec m;
  m.name = name;
  if (name == "qwen3-next-80b") {
    m.num_layers = 48;
    m.num_full_attn_layers = 12;
    m.attn_heads = 16;
    m.attn_head_dim = 256;
    m.kv_bytes_per_token = 12.0 * 2 * 2 * 256 * 2;  // 24 KiB
    m.state_bytes_per_seq = 36 * LinearStateBytes(16, 32, 128, 128, 4);
    m.linear_flops_per_token = 36 * LinearFlopsPerToken(32, 128, 128);
    m.total_params = 80e9;
    m.active_params = 3e9;
  } else if (name == "qwen3.5-397b") {
    m.num_layers = 60;
    m.num_full_attn_layers = 15;
    m.attn_heads = 32;
    m.attn_head_dim = 256;
    m.kv_bytes_per_token = 15.0 * 2 * 2 * 256 * 2;
    m.state_bytes_per_seq = 45 * LinearStateBytes(16, 64, 128, 128, 4);
    m.linear_flops_per_token = 45 * LinearFlopsPerToken(64, 128, 128);
    m.total_params = 397e9;
    m.active_params = 17e9;
  } else if (name == "kimi-linear-48b") {
    m.num_layers = 27;
    m.num_full_attn_layers = 7;
    m.attn_heads = 32;
    m.attn_head_dim = 192;
    m.kv_bytes_per_token = 7.0 * (512 + 64) * 2;  // MLA latent
    m.state_bytes_per_seq = 20 * LinearStateBytes(32, 32, 128, 128, 4);
    m.linear_flops_per_token = 20 * LinearFlopsPerToken(32, 128, 128);
    m.total_params = 48e9;
    m.active_params = 3e9;
  } else if (name == "paper-1t") {
    // The paper's internal 1T model (Kimi Linear architecture, KDA:MLA 3:1). Its dimensions are
    // not public; KV/token and state are fitted to Table 5 (190.8 MiB @1K ... 2316.3 MiB @128K),
    // the rest are plausible for a 1T MoE with ~32B active.
    m.num_layers = 60;
    m.num_full_attn_layers = 15;
    m.attn_heads = 64;
    m.attn_head_dim = 192;
    m.kv_bytes_per_token = 17000;
    m.state_bytes_per_seq = 172.0 * 1024 * 1024;
    m.linear_flops_per_token = 45 * LinearFlopsPerToken(64, 128, 128);
    m.total_params = 1.0e12;
    m.active_params = 32e9;
  } else if (name == "qwen3-235b") {
    // Dense-attention MoE reference (paper Table 3's Qwen3-235B): 94 GQA layers, 4 KV heads.
    m.num_layers = 94;
    m.num_full_attn_layers = 94;
    m.attn_heads = 64;
    m.attn_head_dim = 128;
    m.kv_bytes_per_token = 94.0 * 2 * 4 * 128 * 2;
    m.state_bytes_per_seq = 0;
    m.total_params = 235e9;
    m.active_params = 22e9;
  } else if (name == "qwen3-32b") {
    m.num_layers = 64;
    m.num_full_attn_layers = 64;
    m.attn_heads = 64;
    m.attn_head_dim = 128;
    m.kv_bytes_per_token = 64.0 * 2 * 8 * 128 * 2;  // 256 KiB
    m.state_bytes_per_seq = 0;
    m.total_params = 32e9;
    m.active_params = 32e9;
  } else {
    std::string names;
    for (const auto& n : ModelPresetNames()) names += (names.empty() ? "" : ", ") + n;
    return InvalidArgument("unknown model preset '" + name + "' (known: " + names + ")");
  }
  return m;
}

Result<ModelSpec> ModelFromConfigText(const std::string& text, const std::string& name) {
  json root = json::parse(text, nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return InvalidArgument(name + ": not a JSON object");
  }
  const json& c = root.contains("text_config") ? root["text_config"] : root;
  try {
    ModelSpec m;
    m.name = Get<std::string>(c, "model_type", name);
    int layers = Get<int>(c, "num_hidden_layers", 0);
    int hidden = Get<int>(c, "hidden_size", 0);
    if (layers <= 0 || hidden <= 0) {
      return InvalidArgument(name + ": needs num_hidden_layers and hidden_size");
    }
    m.num_layers = layers;
    int heads = Get<int>(c, "num_attention_heads", 0);
    int kv_heads = Get<int>(c, "num_key_value_heads", heads);
    int head_dim = Get<int>(c, "head_dim", heads > 0 ? hidden / heads : 0);
    m.attn_heads = heads;
    m.attn_head_dim = head_dim;

    // Which layers are full attention.
    int full = layers;
    if (c.contains("layer_types") && c["layer_types"].is_array()) {
      full = 0;
      for (const auto& t : c["layer_types"]) full += t.get<std::string>() == "full_attention";
    } else if (c.contains("full_attention_interval")) {
      int every = Get<int>(c, "full_attention_interval", 1);
      full = layers / std::max(every, 1);
    } else if (c.contains("linear_attn_config") &&
               c["linear_attn_config"].contains("full_attn_layers")) {
      full = static_cast<int>(c["linear_attn_config"]["full_attn_layers"].size());
    }
    int linear = layers - full;
    m.num_full_attn_layers = full;

    bool mla = c.contains("kv_lora_rank") && !c["kv_lora_rank"].is_null();
    if (mla) {
      int rank = Get<int>(c, "kv_lora_rank", 512);
      int rope = Get<int>(c, "qk_rope_head_dim", 64);
      m.kv_bytes_per_token = static_cast<double>(full) * (rank + rope) * 2;
      m.attn_head_dim = Get<int>(c, "qk_nope_head_dim", 128) + rope;
    } else {
      m.kv_bytes_per_token = static_cast<double>(full) * 2 * kv_heads * head_dim * 2;
    }

    if (linear > 0) {
      int h_k, h_v, d_k, d_v, conv;
      if (c.contains("linear_attn_config")) {  // Kimi Linear (KDA)
        const json& la = c["linear_attn_config"];
        h_k = h_v = Get<int>(la, "num_heads", 32);
        d_k = d_v = Get<int>(la, "head_dim", 128);
        conv = Get<int>(la, "short_conv_kernel_size", 4);
      } else {  // Qwen3-Next / Qwen3.5 (GDN)
        h_k = Get<int>(c, "linear_num_key_heads", 16);
        h_v = Get<int>(c, "linear_num_value_heads", 32);
        d_k = Get<int>(c, "linear_key_head_dim", 128);
        d_v = Get<int>(c, "linear_value_head_dim", 128);
        conv = Get<int>(c, "linear_conv_kernel_dim", 4);
      }
      m.state_bytes_per_seq = linear * LinearStateBytes(h_k, h_v, d_k, d_v, conv);
      m.linear_flops_per_token = linear * LinearFlopsPerToken(h_v, d_k, d_v);
    }

    // Parameter estimate: attention projections ~4·hidden² per layer, MLP or MoE experts, embeds.
    double vocab = Get<double>(c, "vocab_size", 32000);
    double attn = 4.0 * hidden * hidden * layers;
    int experts = Get<int>(c, "num_experts", Get<int>(c, "n_routed_experts", 0));
    double mlp_total, mlp_active;
    if (experts > 0) {
      double moe_inter = Get<double>(c, "moe_intermediate_size", 1024);
      int topk = Get<int>(c, "num_experts_per_tok", Get<int>(c, "num_experts_per_token", 8));
      double shared = Get<double>(c, "shared_expert_intermediate_size",
                                  moe_inter * Get<int>(c, "num_shared_experts", 0));
      double per_expert = 3.0 * hidden * moe_inter;
      mlp_total = layers * (experts * per_expert + 3.0 * hidden * shared);
      mlp_active = layers * (topk * per_expert + 3.0 * hidden * shared);
    } else {
      double inter = Get<double>(c, "intermediate_size", 4.0 * hidden);
      mlp_total = mlp_active = 3.0 * hidden * inter * layers;
    }
    double embed = 2.0 * vocab * hidden;
    m.total_params = attn + mlp_total + embed;
    m.active_params = attn + mlp_active + embed;
    return m;
  } catch (const std::exception& e) {
    return InvalidArgument(name + ": bad config field: " + e.what());
  }
}

Result<ModelSpec> ModelFromConfigJson(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot open model config '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ModelFromConfigText(ss.str(), path);
}

}  // namespace prfaas::sim
