// Synthetic weights, the safetensors loader and the writer. See weights.h.
#include "engine/weights.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"

namespace prfaas::engine {
namespace {

// xorshift-style generator; weights only need to be reproducible, not high quality.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  float Uniform(float lo, float hi) {
    return lo + (hi - lo) * static_cast<float>(static_cast<double>(Next() >> 40) * 0x1.0p-24);
  }

 private:
  uint64_t s_;
};

// Uniform with the given standard deviation.
std::vector<float> RandomVec(Rng& rng, int64_t n, float stddev, float mean = 0.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  const float a = stddev * std::sqrt(3.0f);
  for (auto& x : v) x = mean + rng.Uniform(-a, a);
  return v;
}

std::string LayerPrefix(size_t i) {
  return "model.layers." + std::to_string(i) + ".";
}

void AppendRows(std::vector<float>* dst, const std::vector<float>& src) {
  dst->insert(dst->end(), src.begin(), src.end());
}

// Row permutation between Qwen3-Next's per-key-head interleaved GDN projections and the canonical
// plain order. For canonical row c, InterleavedRow(c) gives the row in [qkvz ; ba] (ba rows are
// numbered after all qkvz rows).
struct GdnRowMap {
  int64_t hk, dk, dv, r, key_dim, value_dim, hv;
  int64_t group() const { return 2 * dk + 2 * r * dv; }
  int64_t InterleavedRow(int64_t c) const {
    const int64_t qkvz_rows = hk * group();
    if (c < key_dim) return (c / dk) * group() + c % dk;  // q
    c -= key_dim;
    if (c < key_dim) return (c / dk) * group() + dk + c % dk;  // k
    c -= key_dim;
    if (c < value_dim) return (c / (r * dv)) * group() + 2 * dk + c % (r * dv);  // v
    c -= value_dim;
    if (c < value_dim) return (c / (r * dv)) * group() + 2 * dk + r * dv + c % (r * dv);  // z
    c -= value_dim;
    if (c < hv) return qkvz_rows + (c / r) * 2 * r + c % r;  // b
    c -= hv;
    return qkvz_rows + (c / r) * 2 * r + r + c % r;  // a
  }
};

GdnRowMap MakeRowMap(const ModelConfig& c) {
  return GdnRowMap{c.linear_num_key_heads,  c.linear_key_head_dim,
                   c.linear_value_head_dim, c.linear_num_value_heads / c.linear_num_key_heads,
                   c.linear_key_dim(),      c.linear_value_dim(),
                   c.linear_num_value_heads};
}

// Tensor lookup over one or more shards.
class TensorSource {
 public:
  Status AddFile(const std::string& path) {
    PRFAAS_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(path));
    for (const auto& [name, info] : f->tensors()) owner_[name] = f.get();
    files_.push_back(std::move(f));
    return Status::Ok();
  }
  bool Has(const std::string& name) const { return owner_.count(name) > 0; }
  Result<std::vector<float>> Get(const std::string& name, const std::vector<int64_t>& shape) const {
    auto it = owner_.find(name);
    if (it == owner_.end()) return NotFound("checkpoint is missing tensor '" + name + "'");
    return it->second->ReadFloat32(name, shape);
  }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> owner_;
};

}  // namespace

Result<ModelWeights> SyntheticWeights(const ModelConfig& c, uint64_t seed) {
  PRFAAS_RETURN_IF_ERROR(c.Validate());
  Rng rng(seed);
  const int64_t h = c.hidden_size;
  const float in_std = 1.0f / std::sqrt(static_cast<float>(h));
  const float depth = 1.0f / std::sqrt(2.0f * static_cast<float>(c.num_layers));
  ModelWeights w;
  w.embed = RandomVec(rng, c.vocab_size * h, 1.0f);
  w.final_norm = RandomVec(rng, h, 0.05f);
  if (!c.tie_word_embeddings) w.lm_head = RandomVec(rng, c.vocab_size * h, in_std);
  for (auto kind : c.layer_types) {
    LayerWeights l;
    l.kind = kind;
    l.input_norm = RandomVec(rng, h, 0.05f);
    l.post_norm = RandomVec(rng, h, 0.05f);
    if (kind == LayerKind::kFullAttention) {
      const int64_t d = c.head_dim;
      const int64_t rows = c.num_attention_heads * 2 * d + 2 * c.num_kv_heads * d;
      l.attn.qkv_proj = RandomVec(rng, rows * h, in_std);
      const int64_t od = c.num_attention_heads * d;
      l.attn.o_proj = RandomVec(rng, h * od, depth / std::sqrt(static_cast<float>(od)));
      l.attn.q_norm = RandomVec(rng, d, 0.05f);
      l.attn.k_norm = RandomVec(rng, d, 0.05f);
    } else {
      const int64_t rows = c.conv_dim() + c.linear_value_dim() + 2 * c.linear_num_value_heads;
      l.gdn.in_proj = RandomVec(rng, rows * h, in_std);
      const int64_t k = c.linear_conv_kernel_dim;
      l.gdn.conv1d = RandomVec(rng, c.conv_dim() * k, 1.0f / std::sqrt(static_cast<float>(k)));
      l.gdn.a_log.resize(c.linear_num_value_heads);
      for (auto& x : l.gdn.a_log) x = std::log(rng.Uniform(1.0f, 16.0f));
      l.gdn.dt_bias = RandomVec(rng, c.linear_num_value_heads, 0.3f);
      l.gdn.norm = RandomVec(rng, c.linear_value_head_dim, 0.05f, 1.0f);
      const int64_t vd = c.linear_value_dim();
      l.gdn.out_proj = RandomVec(rng, h * vd, depth / std::sqrt(static_cast<float>(vd)));
    }
    l.gate_up = RandomVec(rng, 2 * c.intermediate_size * h, in_std);
    l.down = RandomVec(rng, h * c.intermediate_size,
                       depth / std::sqrt(static_cast<float>(c.intermediate_size)));
    w.layers.push_back(std::move(l));
  }
  return w;
}

Result<ModelWeights> LoadWeights(const ModelConfig& c, const std::string& dir) {
  PRFAAS_RETURN_IF_ERROR(c.Validate());
  TensorSource src;
  const std::string index = dir + "/model.safetensors.index.json";
  if (std::filesystem::exists(index)) {
    std::ifstream in(index);
    std::stringstream ss;
    ss << in.rdbuf();
    auto j = nlohmann::json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object())
      return DataLoss(index + ": not a valid safetensors index (needs a weight_map object)");
    std::set<std::string> shards;
    for (auto& [name, file] : j["weight_map"].items()) {
      if (!file.is_string())
        return DataLoss(index + ": weight_map entry for '" + name + "' is not a string");
      shards.insert(file.get<std::string>());
    }
    for (const auto& s : shards) PRFAAS_RETURN_IF_ERROR(src.AddFile(dir + "/" + s));
  } else {
    PRFAAS_RETURN_IF_ERROR(src.AddFile(dir + "/model.safetensors"));
  }
  const int64_t h = c.hidden_size;
  ModelWeights w;
  PRFAAS_ASSIGN_OR_RETURN(w.embed, src.Get("model.embed_tokens.weight", {c.vocab_size, h}));
  PRFAAS_ASSIGN_OR_RETURN(w.final_norm, src.Get("model.norm.weight", {h}));
  if (!c.tie_word_embeddings) {
    PRFAAS_ASSIGN_OR_RETURN(w.lm_head, src.Get("lm_head.weight", {c.vocab_size, h}));
  }
  for (size_t i = 0; i < c.layer_types.size(); ++i) {
    const std::string p = LayerPrefix(i);
    LayerWeights l;
    l.kind = c.layer_types[i];
    PRFAAS_ASSIGN_OR_RETURN(l.input_norm, src.Get(p + "input_layernorm.weight", {h}));
    PRFAAS_ASSIGN_OR_RETURN(l.post_norm, src.Get(p + "post_attention_layernorm.weight", {h}));
    if (l.kind == LayerKind::kFullAttention) {
      const int64_t d = c.head_dim, hq = c.num_attention_heads, hkv = c.num_kv_heads;
      PRFAAS_ASSIGN_OR_RETURN(auto q, src.Get(p + "self_attn.q_proj.weight", {hq * 2 * d, h}));
      PRFAAS_ASSIGN_OR_RETURN(auto k, src.Get(p + "self_attn.k_proj.weight", {hkv * d, h}));
      PRFAAS_ASSIGN_OR_RETURN(auto v, src.Get(p + "self_attn.v_proj.weight", {hkv * d, h}));
      l.attn.qkv_proj = std::move(q);
      AppendRows(&l.attn.qkv_proj, k);
      AppendRows(&l.attn.qkv_proj, v);
      PRFAAS_ASSIGN_OR_RETURN(l.attn.o_proj, src.Get(p + "self_attn.o_proj.weight", {h, hq * d}));
      PRFAAS_ASSIGN_OR_RETURN(l.attn.q_norm, src.Get(p + "self_attn.q_norm.weight", {d}));
      PRFAAS_ASSIGN_OR_RETURN(l.attn.k_norm, src.Get(p + "self_attn.k_norm.weight", {d}));
    } else {
      const int64_t hv = c.linear_num_value_heads, vd = c.linear_value_dim();
      const std::string g = p + "linear_attn.";
      if (src.Has(g + "in_proj_qkvz.weight")) {
        PRFAAS_ASSIGN_OR_RETURN(auto qkvz,
                                src.Get(g + "in_proj_qkvz.weight", {c.conv_dim() + vd, h}));
        PRFAAS_ASSIGN_OR_RETURN(auto ba, src.Get(g + "in_proj_ba.weight", {2 * hv, h}));
        const GdnRowMap map = MakeRowMap(c);
        const int64_t rows = c.conv_dim() + vd + 2 * hv;
        const int64_t qkvz_rows = c.conv_dim() + vd;
        l.gdn.in_proj.resize(rows * h);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t s = map.InterleavedRow(r);
          const float* from = s < qkvz_rows ? &qkvz[s * h] : &ba[(s - qkvz_rows) * h];
          std::copy(from, from + h, &l.gdn.in_proj[r * h]);
        }
      } else {
        PRFAAS_ASSIGN_OR_RETURN(l.gdn.in_proj,
                                src.Get(g + "in_proj_qkv.weight", {c.conv_dim(), h}));
        PRFAAS_ASSIGN_OR_RETURN(auto z, src.Get(g + "in_proj_z.weight", {vd, h}));
        PRFAAS_ASSIGN_OR_RETURN(auto b, src.Get(g + "in_proj_b.weight", {hv, h}));
        PRFAAS_ASSIGN_OR_RETURN(auto a, src.Get(g + "in_proj_a.weight", {hv, h}));
        AppendRows(&l.gdn.in_proj, z);
        AppendRows(&l.gdn.in_proj, b);
        AppendRows(&l.gdn.in_proj, a);
      }
      PRFAAS_ASSIGN_OR_RETURN(
          l.gdn.conv1d, src.Get(g + "conv1d.weight", {c.conv_dim(), 1, c.linear_conv_kernel_dim}));
      PRFAAS_ASSIGN_OR_RETURN(l.gdn.a_log, src.Get(g + "A_log", {hv}));
      PRFAAS_ASSIGN_OR_RETURN(l.gdn.dt_bias, src.Get(g + "dt_bias", {hv}));
      PRFAAS_ASSIGN_OR_RETURN(l.gdn.norm, src.Get(g + "norm.weight", {c.linear_value_head_dim}));
      PRFAAS_ASSIGN_OR_RETURN(l.gdn.out_proj, src.Get(g + "out_proj.weight", {h, vd}));
    }
    PRFAAS_ASSIGN_OR_RETURN(auto gate,
                            src.Get(p + "mlp.gate_proj.weight", {c.intermediate_size, h}));
    PRFAAS_ASSIGN_OR_RETURN(auto up, src.Get(p + "mlp.up_proj.weight", {c.intermediate_size, h}));
    l.gate_up = std::move(gate);
    AppendRows(&l.gate_up, up);
    PRFAAS_ASSIGN_OR_RETURN(l.down, src.Get(p + "mlp.down_proj.weight", {h, c.intermediate_size}));
    w.layers.push_back(std::move(l));
  }
  return w;
}

Status SaveWeights(const ModelConfig& c, const ModelWeights& w, const std::string& path,
                   const std::string& dtype, GdnNaming naming) {
  if (dtype != "F32" && dtype != "BF16")
    return InvalidArgument("SaveWeights: dtype must be F32 or BF16");
  if (w.layers.size() != c.layer_types.size())
    return InvalidArgument("SaveWeights: weights do not match config");
  std::vector<TensorToWrite> out;
  const int64_t h = c.hidden_size;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const float* data) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    out.push_back(
        {name, dtype, std::move(shape), PackFloats({data, static_cast<size_t>(n)}, dtype)});
  };
  add("model.embed_tokens.weight", {c.vocab_size, h}, w.embed.data());
  add("model.norm.weight", {h}, w.final_norm.data());
  if (!c.tie_word_embeddings) add("lm_head.weight", {c.vocab_size, h}, w.lm_head.data());
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const auto& l = w.layers[i];
    const std::string p = LayerPrefix(i);
    add(p + "input_layernorm.weight", {h}, l.input_norm.data());
    add(p + "post_attention_layernorm.weight", {h}, l.post_norm.data());
    if (l.kind == LayerKind::kFullAttention) {
      const int64_t d = c.head_dim, hq = c.num_attention_heads, hkv = c.num_kv_heads;
      const float* qkv = l.attn.qkv_proj.data();
      add(p + "self_attn.q_proj.weight", {hq * 2 * d, h}, qkv);
      add(p + "self_attn.k_proj.weight", {hkv * d, h}, qkv + hq * 2 * d * h);
      add(p + "self_attn.v_proj.weight", {hkv * d, h}, qkv + (hq * 2 * d + hkv * d) * h);
      add(p + "self_attn.o_proj.weight", {h, hq * d}, l.attn.o_proj.data());
      add(p + "self_attn.q_norm.weight", {d}, l.attn.q_norm.data());
      add(p + "self_attn.k_norm.weight", {d}, l.attn.k_norm.data());
    } else {
      const int64_t hv = c.linear_num_value_heads, vd = c.linear_value_dim(), cd = c.conv_dim();
      const std::string g = p + "linear_attn.";
      const float* in = l.gdn.in_proj.data();
      if (naming == GdnNaming::kInterleaved) {
        const GdnRowMap map = MakeRowMap(c);
        const int64_t rows = cd + vd + 2 * hv, qkvz_rows = cd + vd;
        std::vector<float> qkvz(qkvz_rows * h), ba(2 * hv * h);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t s = map.InterleavedRow(r);
          float* to = s < qkvz_rows ? &qkvz[s * h] : &ba[(s - qkvz_rows) * h];
          std::copy(in + r * h, in + (r + 1) * h, to);
        }
        add(g + "in_proj_qkvz.weight", {qkvz_rows, h}, qkvz.data());
        add(g + "in_proj_ba.weight", {2 * hv, h}, ba.data());
      } else {
        add(g + "in_proj_qkv.weight", {cd, h}, in);
        add(g + "in_proj_z.weight", {vd, h}, in + cd * h);
        add(g + "in_proj_b.weight", {hv, h}, in + (cd + vd) * h);
        add(g + "in_proj_a.weight", {hv, h}, in + (cd + vd + hv) * h);
      }
      add(g + "conv1d.weight", {cd, 1, c.linear_conv_kernel_dim}, l.gdn.conv1d.data());
      add(g + "A_log", {hv}, l.gdn.a_log.data());
      add(g + "dt_bias", {hv}, l.gdn.dt_bias.data());
      add(g + "norm.weight", {c.linear_value_head_dim}, l.gdn.norm.data());
      add(g + "out_proj.weight", {h, vd}, l.gdn.out_proj.data());
    }
    add(p + "mlp.gate_proj.weight", {c.intermediate_size, h}, l.gate_up.data());
    add(p + "mlp.up_proj.weight", {c.intermediate_size, h},
        l.gate_up.data() + c.intermediate_size * h);
    add(p + "mlp.down_proj.weight", {h, c.intermediate_size}, l.down.data());
  }
  return WriteSafetensors(path, out);
}

}  // namespace prfaas::engine
