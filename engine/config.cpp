// ModelConfig parsing, presets and byte accounting. See config.h.
#include "engine/config.h"

#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

namespace prfaas::engine {
namespace {

using nlohmann::json;

std::vector<LayerKind> IntervalLayout(int64_t layers, int64_t interval) {
  std::vector<LayerKind> out;
  for (int64_t i = 0; i < layers; ++i)
    out.push_back((i + 1) % interval == 0 ? LayerKind::kFullAttention
                                          : LayerKind::kLinearAttention);
  return out;
}

ModelConfig MakePreset(std::string name, int64_t hidden, int64_t layers, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, int64_t lin_k_heads, int64_t lin_v_heads,
                       int64_t lin_dim, int64_t inter, int64_t vocab, double theta) {
  ModelConfig c;
  c.name = std::move(name);
  c.hidden_size = hidden;
  c.num_layers = layers;
  c.layer_types = IntervalLayout(layers, 4);
  c.num_attention_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.partial_rotary_factor = 0.25;
  c.rope_theta = theta;
  c.linear_num_key_heads = lin_k_heads;
  c.linear_num_value_heads = lin_v_heads;
  c.linear_key_head_dim = lin_dim;
  c.linear_value_head_dim = lin_dim;
  c.linear_conv_kernel_dim = 4;
  c.intermediate_size = inter;
  c.vocab_size = vocab;
  c.rms_norm_eps = 1e-6;
  c.max_position_embeddings = 262144;
  return c;
}

template <typename T>
Status ReadKey(const json& j, const char* key, T* out, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required)
      return InvalidArgument(std::string("config.json: missing required key '") + key + "'");
    return Status::Ok();
  }
  try {
    *out = it->get<T>();
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("config.json: key '") + key +
                           "' has the wrong type: " + e.what());
  }
  return Status::Ok();
}

}  // namespace

int64_t ModelConfig::rotary_dim() const {
  int64_t r = static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor);
  return r - (r % 2);
}

int64_t ModelConfig::num_full_attention_layers() const {
  int64_t n = 0;
  for (auto k : layer_types) n += k == LayerKind::kFullAttention;
  return n;
}

int64_t ModelConfig::num_linear_attention_layers() const {
  return static_cast<int64_t>(layer_types.size()) - num_full_attention_layers();
}

int64_t ModelConfig::KvBytesPerToken(int64_t bytes_per_elem) const {
  return num_full_attention_layers() * 2 * num_kv_heads * head_dim * bytes_per_elem;
}

int64_t ModelConfig::ConvStateBytes(int64_t conv_bytes) const {
  return num_linear_attention_layers() * (linear_conv_kernel_dim - 1) * conv_dim() * conv_bytes;
}

int64_t ModelConfig::SsmStateBytes(int64_t ssm_bytes) const {
  return num_linear_attention_layers() * linear_num_value_heads * linear_key_head_dim *
         linear_value_head_dim * ssm_bytes;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t h = hidden_size;
  int64_t n = vocab_size * h * (tie_word_embeddings ? 1 : 2) + h;
  for (auto kind : layer_types) {
    n += 2 * h + 3 * h * intermediate_size;
    if (kind == LayerKind::kFullAttention) {
      n += num_attention_heads * 2 * head_dim * h + 2 * num_kv_heads * head_dim * h +
           h * num_attention_heads * head_dim + 2 * head_dim;
    } else {
      n += (conv_dim() + linear_value_dim() + 2 * linear_num_value_heads) * h +
           conv_dim() * linear_conv_kernel_dim + 2 * linear_num_value_heads +
           linear_value_head_dim + h * linear_value_dim();
    }
  }
  return n;
}

std::string ModelConfig::LayoutString() const {
  auto name = [](LayerKind k) { return k == LayerKind::kFullAttention ? "full" : "linear"; };
  // Find the shortest repeating period.
  const size_t n = layer_types.size();
  for (size_t p = 1; p <= n; ++p) {
    if (n % p != 0) continue;
    bool ok = true;
    for (size_t i = p; i < n && ok; ++i) ok = layer_types[i] == layer_types[i % p];
    if (!ok) continue;
    std::ostringstream os;
    os << n / p << " x [";
    for (size_t i = 0; i < p; ++i) os << (i ? " " : "") << name(layer_types[i]);
    os << "]";
    return os.str();
  }
  return "";
}

Status ModelConfig::Validate() const {
  auto positive = [](int64_t v, const char* key) -> Status {
    if (v <= 0) return InvalidArgument(std::string("model config: '") + key + "' must be > 0");
    return Status::Ok();
  };
  PRFAAS_RETURN_IF_ERROR(positive(hidden_size, "hidden_size"));
  PRFAAS_RETURN_IF_ERROR(positive(num_layers, "num_hidden_layers"));
  PRFAAS_RETURN_IF_ERROR(positive(vocab_size, "vocab_size"));
  PRFAAS_RETURN_IF_ERROR(positive(intermediate_size, "intermediate_size"));
  if (static_cast<int64_t>(layer_types.size()) != num_layers)
    return InvalidArgument("model config: layer_types has " + std::to_string(layer_types.size()) +
                           " entries but num_hidden_layers is " + std::to_string(num_layers));
  if (num_full_attention_layers() > 0) {
    PRFAAS_RETURN_IF_ERROR(positive(num_attention_heads, "num_attention_heads"));
    PRFAAS_RETURN_IF_ERROR(positive(num_kv_heads, "num_key_value_heads"));
    PRFAAS_RETURN_IF_ERROR(positive(head_dim, "head_dim"));
    if (num_attention_heads % num_kv_heads != 0)
      return InvalidArgument(
          "model config: num_attention_heads must be a multiple of num_key_value_heads");
    if (rotary_dim() > 1024 || rotary_dim() > head_dim)
      return InvalidArgument(
          "model config: rotary dim (head_dim * partial_rotary_factor) must be <= min(head_dim, "
          "1024)");
  }
  if (num_linear_attention_layers() > 0) {
    PRFAAS_RETURN_IF_ERROR(positive(linear_num_key_heads, "linear_num_key_heads"));
    PRFAAS_RETURN_IF_ERROR(positive(linear_num_value_heads, "linear_num_value_heads"));
    PRFAAS_RETURN_IF_ERROR(positive(linear_key_head_dim, "linear_key_head_dim"));
    PRFAAS_RETURN_IF_ERROR(positive(linear_value_head_dim, "linear_value_head_dim"));
    PRFAAS_RETURN_IF_ERROR(positive(linear_conv_kernel_dim, "linear_conv_kernel_dim"));
    if (linear_num_value_heads % linear_num_key_heads != 0)
      return InvalidArgument(
          "model config: linear_num_value_heads must be a multiple of linear_num_key_heads");
  }
  return Status::Ok();
}

Result<ModelConfig> ParseModelConfig(std::string_view json_text) {
  json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded() || !root.is_object())
    return InvalidArgument("config.json: not a valid JSON object");
  const json& j =
      root.contains("text_config") && root["text_config"].is_object() ? root["text_config"] : root;
  ModelConfig c;
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "model_type", &c.model_type, false));
  static const char* kKnownTypes[] = {"qwen3_next", "qwen3_5", "qwen3_5_text"};
  bool known = false;
  for (const char* t : kKnownTypes) known |= c.model_type == t;
  if (!known)
    return Unimplemented("config.json: model_type '" + c.model_type +
                         "' is not supported (supported: qwen3_next, qwen3_5, qwen3_5_text)");
  int64_t experts = 0;
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "num_experts", &experts, false));
  if (experts > 0)
    return Unimplemented("config.json: MoE (num_experts=" + std::to_string(experts) +
                         ") is not supported yet; the engine runs a dense SwiGLU MLP only");
  std::string act = "silu";
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "hidden_act", &act, false));
  if (act != "silu")
    return Unimplemented("config.json: hidden_act '" + act + "' is not supported (silu only)");
  bool gate = true;
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "attn_output_gate", &gate, false));
  if (!gate) return Unimplemented("config.json: attn_output_gate=false is not supported");

  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "hidden_size", &c.hidden_size, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "num_hidden_layers", &c.num_layers, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "num_attention_heads", &c.num_attention_heads, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "num_key_value_heads", &c.num_kv_heads, true));
  c.head_dim = c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0;
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "head_dim", &c.head_dim, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "vocab_size", &c.vocab_size, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "intermediate_size", &c.intermediate_size, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "linear_num_key_heads", &c.linear_num_key_heads, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "linear_num_value_heads", &c.linear_num_value_heads, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "linear_key_head_dim", &c.linear_key_head_dim, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "linear_value_head_dim", &c.linear_value_head_dim, true));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "linear_conv_kernel_dim", &c.linear_conv_kernel_dim, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "rms_norm_eps", &c.rms_norm_eps, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "tie_word_embeddings", &c.tie_word_embeddings, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "max_position_embeddings", &c.max_position_embeddings, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "bos_token_id", &c.bos_token_id, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "eos_token_id", &c.eos_token_id, false));
  // RoPE parameters: top level (Qwen3-Next) or "rope_parameters" (newer Qwen3.5 configs).
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    PRFAAS_RETURN_IF_ERROR(ReadKey(j["rope_parameters"], "rope_theta", &c.rope_theta, false));
    PRFAAS_RETURN_IF_ERROR(
        ReadKey(j["rope_parameters"], "partial_rotary_factor", &c.partial_rotary_factor, false));
  }
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "rope_theta", &c.rope_theta, false));
  PRFAAS_RETURN_IF_ERROR(ReadKey(j, "partial_rotary_factor", &c.partial_rotary_factor, false));

  if (j.contains("layer_types") && !j["layer_types"].is_null()) {
    std::vector<std::string> types;
    PRFAAS_RETURN_IF_ERROR(ReadKey(j, "layer_types", &types, true));
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i] == "linear_attention") {
        c.layer_types.push_back(LayerKind::kLinearAttention);
      } else if (types[i] == "full_attention") {
        c.layer_types.push_back(LayerKind::kFullAttention);
      } else {
        return Unimplemented("config.json: layer_types[" + std::to_string(i) + "] = '" + types[i] +
                             "' is not supported (linear_attention or full_attention)");
      }
    }
  } else {
    int64_t interval = 0;
    PRFAAS_RETURN_IF_ERROR(ReadKey(j, "full_attention_interval", &interval, false));
    if (interval <= 0)
      return InvalidArgument(
          "config.json: needs 'layer_types' or a positive 'full_attention_interval'");
    c.layer_types = IntervalLayout(c.num_layers, interval);
  }
  PRFAAS_RETURN_IF_ERROR(c.Validate());
  return c;
}

Result<ModelConfig> LoadModelConfig(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream in(path);
  if (!in) return NotFound("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto cfg = ParseModelConfig(ss.str());
  if (!cfg.ok()) return cfg.status().WithContext(path);
  cfg->name = dir;
  return cfg;
}

std::vector<std::string> PresetNames() {
  return {"tiny", "small", "qwen3-next-80b", "qwen3.5-9b"};
}

Result<ModelConfig> PresetModelConfig(std::string_view name) {
  if (name == "tiny") return MakePreset("tiny", 64, 4, 4, 2, 16, 2, 4, 16, 128, 260, 10000.0);
  if (name == "small") return MakePreset("small", 512, 8, 8, 2, 64, 4, 8, 64, 1408, 4096, 1e6);
  if (name == "qwen3-next-80b")
    return MakePreset("qwen3-next-80b", 2048, 48, 16, 2, 256, 16, 32, 128, 5120, 151936, 1e7);
  if (name == "qwen3.5-9b")
    return MakePreset("qwen3.5-9b", 4096, 32, 16, 4, 256, 16, 32, 128, 12288, 248320, 1e7);
  std::string all;
  for (const auto& n : PresetNames()) all += (all.empty() ? "" : ", ") + n;
  return NotFound("unknown model preset '" + std::string(name) + "' (presets: " + all + ")");
}

Result<ModelConfig> ResolveModelConfig(const std::string& preset_or_dir) {
  auto preset = PresetModelConfig(preset_or_dir);
  if (preset.ok()) return preset;
  return LoadModelConfig(preset_or_dir);
}

}  // namespace prfaas::engine
