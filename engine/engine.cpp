// Engine implementation: layer stack, batching, snapshots, export/import. See engine.h.
#include "engine/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "engine/cuda/backend.h"

namespace prfaas::engine {
namespace cpu = kernels::cpu;

namespace {
float Softplus(float x) {
  return x > 20.0f ? x : std::log1p(std::exp(x));
}
}  // namespace

const char* SegmentKindName(SegmentKind kind) {
  switch (kind) {
    case SegmentKind::kAttnKv: return "attn_kv";
    case SegmentKind::kConvState: return "conv_state";
    case SegmentKind::kSsmState: return "ssm_state";
  }
  return "?";
}

Engine::Engine(const ModelConfig& config, std::shared_ptr<const ModelWeights> weights,
               const EngineOptions& options)
    : config_(config),
      weights_(std::move(weights)),
      options_(options),
      kv_(config, options.num_kv_blocks, options.kv_block_size),
      states_(config, options.num_state_slots) {
  int64_t a = 0, g = 0;
  for (auto kind : config_.layer_types)
    attn_index_.push_back(kind == LayerKind::kFullAttention ? a++ : g++);
}

Engine::~Engine() = default;

Result<std::unique_ptr<Engine>> Engine::Create(const ModelConfig& config,
                                               std::shared_ptr<const ModelWeights> weights,
                                               const EngineOptions& options) {
  PRFAAS_RETURN_IF_ERROR(config.Validate());
  if (!weights || weights->layers.size() != config.layer_types.size())
    return InvalidArgument("Engine: weights do not match the config's layer count");
  for (size_t i = 0; i < config.layer_types.size(); ++i)
    if (weights->layers[i].kind != config.layer_types[i])
      return InvalidArgument("Engine: weights layer " + std::to_string(i) + " has the wrong kind");
  if (options.kv_block_size <= 0 || options.num_kv_blocks <= 0 || options.num_state_slots <= 0 ||
      options.prefill_chunk <= 0 || options.gdn_chunk <= 0)
    return InvalidArgument("Engine: options must be positive");
  if (options.dtype != "fp32" && !(options.dtype == "bf16" && options.device == "cuda"))
    return InvalidArgument("Engine: dtype '" + options.dtype + "' on device '" + options.device +
                           "' (cpu: fp32; cuda: fp32 or bf16)");
  if (options.device == "cpu")
    return std::unique_ptr<Engine>(new Engine(config, std::move(weights), options));
  if (options.device != "cuda")
    return InvalidArgument("Engine: unknown device '" + options.device + "' (cpu, cuda)");
#ifdef PRFAAS_ENGINE_CUDA
  PRFAAS_ASSIGN_OR_RETURN(
      auto backend,
      CreateCudaBackend(config, weights,
                        {options.num_kv_blocks, options.kv_block_size, options.num_state_slots,
                         options.dtype == "bf16", options.cuda_library_kernels}));
  std::unique_ptr<Engine> engine(new Engine(config, std::move(weights), options));
  engine->device_ = std::move(backend);
  return engine;
#else
  return Unimplemented("Engine: this build has no CUDA backend (configure with -DPRFAAS_CUDA=ON)");
#endif
}

uint64_t Engine::ModelFingerprint() const {
  uint64_t h = 1469598103934665603ULL;
  auto mix = [&](int64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= static_cast<uint64_t>(v >> (8 * i)) & 0xff;
      h *= 1099511628211ULL;
    }
  };
  const ModelConfig& c = config_;
  for (int64_t v : {c.hidden_size, c.num_layers, c.num_attention_heads, c.num_kv_heads, c.head_dim,
                    c.linear_num_key_heads, c.linear_num_value_heads, c.linear_key_head_dim,
                    c.linear_value_head_dim, c.linear_conv_kernel_dim, c.vocab_size})
    mix(v);
  for (auto k : c.layer_types) mix(static_cast<int64_t>(k));
  return h;
}

EngineStats Engine::Stats() const {
  EngineStats s;
  s.kv_blocks_total = kv_.num_blocks();
  s.kv_blocks_free = kv_.free_blocks();
  s.kv_bytes_capacity = kv_.capacity_bytes();
  s.kv_bytes_used = kv_.used_bytes();
  s.state_slots_total = states_.num_slots();
  s.state_slots_free = states_.free_slots();
  s.state_bytes_capacity = states_.capacity_bytes();
  s.state_bytes_used = states_.used_bytes();
  s.sequences = static_cast<int64_t>(seqs_.size());
  s.snapshots = static_cast<int64_t>(snapshots_.size());
  return s;
}

Result<Engine::Sequence*> Engine::Find(SequenceId id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return NotFound("unknown sequence " + std::to_string(id));
  return &it->second;
}

Result<const Engine::Sequence*> Engine::Find(SequenceId id) const {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return NotFound("unknown sequence " + std::to_string(id));
  return &it->second;
}

Result<SequenceId> Engine::AddSequence() {
  PRFAAS_ASSIGN_OR_RETURN(int32_t slot, states_.Allocate());
  if (device_) device_->ZeroSlot(slot);
  const SequenceId id = next_id_++;
  seqs_[id].slot = slot;
  return id;
}

Result<SequenceId> Engine::AddSequenceFromPrefix(std::span<const int32_t> blocks,
                                                 int64_t num_tokens, SnapshotId state) {
  auto snap = snapshots_.find(state);
  if (snap == snapshots_.end()) return NotFound("unknown state snapshot " + std::to_string(state));
  if (snap->second != num_tokens)
    return InvalidArgument("snapshot was taken at length " + std::to_string(snap->second) +
                           ", not " + std::to_string(num_tokens));
  PRFAAS_ASSIGN_OR_RETURN(SequenceId id, AddSequenceFromBlocks(blocks, num_tokens));
  states_.CopySlot(state, seqs_[id].slot);
  if (device_) device_->CopySlot(state, seqs_[id].slot);
  return id;
}

Result<SequenceId> Engine::AddSequenceFromBlocks(std::span<const int32_t> blocks,
                                                 int64_t num_tokens) {
  const int64_t bs = kv_.block_size();
  if (num_tokens < 0) return InvalidArgument("negative prefix length");
  if (static_cast<int64_t>(blocks.size()) != (num_tokens + bs - 1) / bs)
    return InvalidArgument("prefix of " + std::to_string(num_tokens) + " tokens needs " +
                           std::to_string((num_tokens + bs - 1) / bs) + " blocks, got " +
                           std::to_string(blocks.size()));
  for (int32_t b : blocks)
    if (b < 0 || b >= kv_.num_blocks() || kv_.RefCount(b) == 0)
      return InvalidArgument("block " + std::to_string(b) + " is not live");
  PRFAAS_ASSIGN_OR_RETURN(int32_t slot, states_.Allocate());
  if (device_) device_->ZeroSlot(slot);
  for (int32_t b : blocks) kv_.Ref(b);
  const SequenceId id = next_id_++;
  Sequence& s = seqs_[id];
  s.slot = slot;
  s.length = num_tokens;
  s.blocks.assign(blocks.begin(), blocks.end());
  return id;
}

Status Engine::Release(SequenceId id) {
  PRFAAS_ASSIGN_OR_RETURN(Sequence * s, Find(id));
  for (int32_t b : s->blocks) kv_.Unref(b);
  states_.Unref(s->slot);
  seqs_.erase(id);
  return Status::Ok();
}

Result<int64_t> Engine::Length(SequenceId id) const {
  PRFAAS_ASSIGN_OR_RETURN(const Sequence* s, Find(id));
  return s->length;
}

Result<std::vector<int32_t>> Engine::BlockTable(SequenceId id) const {
  PRFAAS_ASSIGN_OR_RETURN(const Sequence* s, Find(id));
  return s->blocks;
}

Status Engine::RefBlock(int32_t b) {
  if (b < 0 || b >= kv_.num_blocks() || kv_.RefCount(b) == 0)
    return InvalidArgument("block not live");
  kv_.Ref(b);
  return Status::Ok();
}

Status Engine::UnrefBlock(int32_t b) {
  if (b < 0 || b >= kv_.num_blocks() || kv_.RefCount(b) == 0)
    return InvalidArgument("block not live");
  kv_.Unref(b);
  return Status::Ok();
}

Status Engine::EnsureBlocks(Sequence* s, int64_t new_length) {
  const int64_t bs = kv_.block_size();
  // The block holding position `length` may be shared (prefix cache): copy it before writing.
  if (s->length % bs != 0) {
    const int64_t idx = s->length / bs;
    const int32_t old = s->blocks[idx];
    if (kv_.RefCount(old) > 1) {
      PRFAAS_ASSIGN_OR_RETURN(int32_t fresh, kv_.Allocate());
      kv_.CopyBlock(old, fresh);
      if (device_) device_->CopyBlock(old, fresh);
      kv_.Unref(old);
      s->blocks[idx] = fresh;
    }
  }
  const int64_t need = (new_length + bs - 1) / bs;
  while (static_cast<int64_t>(s->blocks.size()) < need) {
    PRFAAS_ASSIGN_OR_RETURN(int32_t b, kv_.Allocate());
    s->blocks.push_back(b);
  }
  return Status::Ok();
}

Status Engine::Prefill(std::span<const SequenceId> ids,
                       std::span<const std::vector<int32_t>> tokens, std::vector<float>* logits) {
  if (ids.size() != tokens.size())
    return InvalidArgument("Prefill: seqs and tokens differ in size");
  const int64_t vocab = config_.vocab_size;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (tokens[i].empty())
      return InvalidArgument("Prefill: empty prompt for sequence " + std::to_string(ids[i]));
    for (int32_t t : tokens[i])
      if (t < 0 || t >= vocab)
        return InvalidArgument("Prefill: token id " + std::to_string(t) + " out of range");
    PRFAAS_RETURN_IF_ERROR(Find(ids[i]).status());
  }
  logits->assign(ids.size() * vocab, 0.0f);
  // Each sequence runs alone with fixed chunk boundaries, so batch composition cannot matter.
  for (size_t i = 0; i < ids.size(); ++i) {
    PRFAAS_ASSIGN_OR_RETURN(Sequence * s, Find(ids[i]));
    PRFAAS_RETURN_IF_ERROR(EnsureBlocks(s, s->length + static_cast<int64_t>(tokens[i].size())));
    const int64_t total = static_cast<int64_t>(tokens[i].size());
    for (int64_t off = 0; off < total;) {
      // Chunks end on absolute multiples of prefill_chunk so resumed prefixes line up.
      const int64_t pos = s->length;
      const int64_t t =
          std::min(total - off, options_.prefill_chunk - pos % options_.prefill_chunk);
      std::vector<Span> spans{{s, pos, t, 0}};
      Forward(spans, tokens[i].data() + off, /*decode=*/false, logits->data() + i * vocab);
      s->length += t;
      off += t;
    }
  }
  return Status::Ok();
}

Status Engine::Decode(std::span<const SequenceId> ids, std::span<const int32_t> tokens,
                      std::vector<float>* logits) {
  if (ids.size() != tokens.size()) return InvalidArgument("Decode: seqs and tokens differ in size");
  std::set<SequenceId> seen;
  std::vector<Span> spans;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!seen.insert(ids[i]).second) return InvalidArgument("Decode: sequence listed twice");
    if (tokens[i] < 0 || tokens[i] >= config_.vocab_size)
      return InvalidArgument("Decode: token id out of range");
    PRFAAS_ASSIGN_OR_RETURN(Sequence * s, Find(ids[i]));
    PRFAAS_RETURN_IF_ERROR(EnsureBlocks(s, s->length + 1));
    spans.push_back({s, s->length, 1, static_cast<int64_t>(i)});
  }
  logits->assign(ids.size() * config_.vocab_size, 0.0f);
  if (spans.empty()) return Status::Ok();
  Forward(spans, tokens.data(), /*decode=*/true, logits->data());
  for (auto& sp : spans) sp.seq->length += 1;
  return Status::Ok();
}

void Engine::Project(bool decode, const float* x, int64_t m, int64_t k, const std::vector<float>& w,
                     int64_t n, float* y) const {
  if (decode) {
    cpu::LinearRowInvariant(x, m, k, w.data(), n, y);
  } else {
    cpu::Linear(x, m, k, w.data(), n, y);
  }
}

void Engine::Forward(std::vector<Span>& spans, const int32_t* tokens, bool decode, float* logits) {
  if (device_) {
    std::vector<DeviceSpan> ds;
    for (const auto& sp : spans) ds.push_back({sp.pos0, sp.t, sp.seq->blocks, sp.seq->slot});
    device_->Forward(ds, tokens, logits);
    return;
  }
  const ModelConfig& c = config_;
  const ModelWeights& w = *weights_;
  const int64_t h = c.hidden_size;
  int64_t rows = 0;
  for (auto& sp : spans) {
    sp.row0 = rows;
    rows += sp.t;
  }
  std::vector<float> x(rows * h), xn(rows * h), y(rows * h);
  std::vector<float> gu(rows * 2 * c.intermediate_size), act(rows * c.intermediate_size);
  cpu::Embedding(w.embed.data(), c.vocab_size, h, {tokens, static_cast<size_t>(rows)}, x.data());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    cpu::RmsNorm(x.data(), rows, h, lw.input_norm.data(), static_cast<float>(c.rms_norm_eps),
                 xn.data());
    if (lw.kind == LayerKind::kFullAttention) {
      AttentionMixer(static_cast<int64_t>(l), attn_index_[l], spans, decode, xn.data(), y.data());
    } else {
      GdnMixer(static_cast<int64_t>(l), attn_index_[l], spans, decode, xn.data(), y.data());
    }
    for (int64_t i = 0; i < rows * h; ++i) x[i] += y[i];
    cpu::RmsNorm(x.data(), rows, h, lw.post_norm.data(), static_cast<float>(c.rms_norm_eps),
                 xn.data());
    const int64_t inter = c.intermediate_size;
    Project(decode, xn.data(), rows, h, lw.gate_up, 2 * inter, gu.data());
    for (int64_t r = 0; r < rows; ++r)
      cpu::SwiGLU(&gu[r * 2 * inter], &gu[r * 2 * inter + inter], inter, &act[r * inter]);
    Project(decode, act.data(), rows, inter, lw.down, h, y.data());
    for (int64_t i = 0; i < rows * h; ++i) x[i] += y[i];
  }
  // Final norm + LM head on each span's last row only.
  const int64_t n = static_cast<int64_t>(spans.size());
  std::vector<float> last(n * h);
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(&last[i * h], &x[(spans[i].row0 + spans[i].t - 1) * h], sizeof(float) * h);
  cpu::RmsNorm(last.data(), n, h, w.final_norm.data(), static_cast<float>(c.rms_norm_eps),
               last.data());
  // Always row-invariant: prefill and decode logits of a sequence come from the same kernel.
  cpu::LinearRowInvariant(last.data(), n, h, w.output_matrix().data(), c.vocab_size, logits);
}

void Engine::AttentionMixer(int64_t layer, int64_t ai, std::vector<Span>& spans, bool decode,
                            const float* xn, float* out) {
  const ModelConfig& c = config_;
  const AttentionWeights& aw = weights_->layers[layer].attn;
  const int64_t h = c.hidden_size, d = c.head_dim, hq = c.num_attention_heads, hkv = c.num_kv_heads;
  const int64_t width = hq * 2 * d + 2 * hkv * d;
  int64_t rows = 0;
  for (auto& sp : spans) rows += sp.t;
  std::vector<float> qkv(rows * width), attn(rows * hq * d);
  Project(decode, xn, rows, h, aw.qkv_proj, width, qkv.data());
  const float eps = static_cast<float>(c.rms_norm_eps);
  const int64_t bs = kv_.block_size();
  for (auto& sp : spans) {
    std::vector<float> q(sp.t * hq * d), gate(sp.t * hq * d), k(sp.t * hkv * d);
    std::vector<int32_t> pos(sp.t);
    for (int64_t i = 0; i < sp.t; ++i) {
      const float* row = &qkv[(sp.row0 + i) * width];
      for (int64_t hh = 0; hh < hq; ++hh) {
        std::memcpy(&q[(i * hq + hh) * d], row + hh * 2 * d, sizeof(float) * d);
        std::memcpy(&gate[(i * hq + hh) * d], row + hh * 2 * d + d, sizeof(float) * d);
      }
      std::memcpy(&k[i * hkv * d], row + hq * 2 * d, sizeof(float) * hkv * d);
      pos[i] = static_cast<int32_t>(sp.pos0 + i);
    }
    cpu::RmsNorm(q.data(), sp.t * hq, d, aw.q_norm.data(), eps, q.data());
    cpu::RmsNorm(k.data(), sp.t * hkv, d, aw.k_norm.data(), eps, k.data());
    const float theta = static_cast<float>(c.rope_theta);
    cpu::ApplyRope(q.data(), sp.t, hq * d, hq, d, c.rotary_dim(), pos.data(), theta);
    cpu::ApplyRope(k.data(), sp.t, hkv * d, hkv, d, c.rotary_dim(), pos.data(), theta);
    for (int64_t i = 0; i < sp.t; ++i) {
      const int64_t p = sp.pos0 + i;
      const int32_t blk = sp.seq->blocks[p / bs];
      const int64_t off = (p % bs) * hkv * d;
      std::memcpy(kv_.K(ai, blk) + off, &k[i * hkv * d], sizeof(float) * hkv * d);
      std::memcpy(kv_.V(ai, blk) + off, &qkv[(sp.row0 + i) * width + hq * 2 * d + hkv * d],
                  sizeof(float) * hkv * d);
    }
    const int64_t nblocks = (sp.pos0 + sp.t + bs - 1) / bs;
    std::vector<const float*> kb(nblocks), vb(nblocks);
    for (int64_t b = 0; b < nblocks; ++b) {
      kb[b] = kv_.K(ai, sp.seq->blocks[b]);
      vb[b] = kv_.V(ai, sp.seq->blocks[b]);
    }
    cpu::PagedKvView view{kb.data(), vb.data(), nblocks, bs, hkv, d};
    float* o = &attn[sp.row0 * hq * d];
    cpu::PagedCausalAttention(q.data(), sp.t, hq, sp.pos0, view,
                              1.0f / std::sqrt(static_cast<float>(d)), o);
    cpu::SigmoidGateMul(o, gate.data(), sp.t * hq * d, o);
  }
  Project(decode, attn.data(), rows, hq * d, aw.o_proj, h, out);
}

void Engine::GdnMixer(int64_t layer, int64_t gi, std::vector<Span>& spans, bool decode,
                      const float* xn, float* out) {
  const ModelConfig& c = config_;
  const GdnWeights& gw = weights_->layers[layer].gdn;
  const int64_t h = c.hidden_size, cd = c.conv_dim(), kd = c.linear_key_dim(),
                vd = c.linear_value_dim();
  const int64_t hv = c.linear_num_value_heads, dv = c.linear_value_head_dim;
  const int64_t width = cd + vd + 2 * hv;
  int64_t rows = 0;
  for (auto& sp : spans) rows += sp.t;
  std::vector<float> proj(rows * width), o_all(rows * vd);
  Project(decode, xn, rows, h, gw.in_proj, width, proj.data());
  const cpu::GdnShape base{0, c.linear_num_key_heads, hv, c.linear_key_head_dim, dv};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.linear_key_head_dim));
  for (auto& sp : spans) {
    const int64_t t = sp.t;
    std::vector<float> mixed(t * cd), conv_out(t * cd), q(t * kd), k(t * kd), v(t * vd), z(t * vd);
    std::vector<float> g(t * hv), beta(t * hv), o(t * vd);
    for (int64_t i = 0; i < t; ++i) {
      const float* row = &proj[(sp.row0 + i) * width];
      std::memcpy(&mixed[i * cd], row, sizeof(float) * cd);
      std::memcpy(&z[i * vd], row + cd, sizeof(float) * vd);
      for (int64_t j = 0; j < hv; ++j) {
        const float b = row[cd + vd + j];
        const float a = row[cd + vd + hv + j];
        beta[i * hv + j] = 1.0f / (1.0f + std::exp(-b));
        g[i * hv + j] = -std::exp(gw.a_log[j]) * Softplus(a + gw.dt_bias[j]);
      }
    }
    cpu::CausalConv1d(mixed.data(), t, cd, gw.conv1d.data(), c.linear_conv_kernel_dim,
                      states_.Conv(gi, sp.seq->slot), conv_out.data());
    for (int64_t i = 0; i < t; ++i) {
      std::memcpy(&q[i * kd], &conv_out[i * cd], sizeof(float) * kd);
      std::memcpy(&k[i * kd], &conv_out[i * cd + kd], sizeof(float) * kd);
      std::memcpy(&v[i * vd], &conv_out[i * cd + 2 * kd], sizeof(float) * vd);
    }
    cpu::GdnShape shape = base;
    shape.t = t;
    float* state = states_.Ssm(gi, sp.seq->slot);
    if (decode) {
      cpu::GatedDeltaRuleRecurrent(shape, q.data(), k.data(), v.data(), g.data(), beta.data(),
                                   scale, state, o.data());
    } else {
      cpu::GatedDeltaRuleChunked(shape, q.data(), k.data(), v.data(), g.data(), beta.data(), scale,
                                 state, o.data(), options_.gdn_chunk);
    }
    cpu::GatedRmsNorm(o.data(), z.data(), t * hv, dv, gw.norm.data(),
                      static_cast<float>(c.rms_norm_eps), &o_all[sp.row0 * vd]);
  }
  Project(decode, o_all.data(), rows, vd, gw.out_proj, h, out);
}

Result<SnapshotId> Engine::SnapshotState(SequenceId id) {
  PRFAAS_ASSIGN_OR_RETURN(Sequence * s, Find(id));
  PRFAAS_ASSIGN_OR_RETURN(int32_t slot, states_.Allocate());
  states_.CopySlot(s->slot, slot);
  if (device_) device_->CopySlot(s->slot, slot);
  snapshots_[slot] = s->length;
  return slot;
}

Result<int64_t> Engine::SnapshotLength(SnapshotId snap) const {
  auto it = snapshots_.find(snap);
  if (it == snapshots_.end()) return NotFound("unknown state snapshot " + std::to_string(snap));
  return it->second;
}

Status Engine::ReleaseSnapshot(SnapshotId snap) {
  auto it = snapshots_.find(snap);
  if (it == snapshots_.end()) return NotFound("unknown state snapshot " + std::to_string(snap));
  states_.Unref(snap);
  snapshots_.erase(it);
  return Status::Ok();
}

Result<SequenceExport> Engine::Export(SequenceId id, int64_t begin, int64_t end,
                                      bool include_state) const {
  PRFAAS_ASSIGN_OR_RETURN(const Sequence* s, Find(id));
  if (begin < 0 || begin > end || end > s->length)
    return OutOfRange("Export: range [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") outside sequence of length " + std::to_string(s->length));
  if (include_state && end != s->length)
    return FailedPrecondition("Export: the GDN state is only valid at the current length " +
                              std::to_string(s->length));
  const ModelConfig& c = config_;
  const int64_t bs = kv_.block_size(), row = c.num_kv_heads * c.head_dim;
  auto& kv = const_cast<KvBlockPool&>(kv_);
  auto& st = const_cast<StateSlotPool&>(states_);
  if (device_) {  // the host pools stage the device's bytes
    const int64_t b0 = begin / bs, b1 = (end + bs - 1) / bs;
    if (end > begin)
      device_->DownloadBlocks({s->blocks.data() + b0, static_cast<size_t>(b1 - b0)}, &kv);
    if (include_state) device_->DownloadSlot(s->slot, &st);
  }
  SequenceExport ex;
  ex.model_fingerprint = ModelFingerprint();
  ex.num_tokens = end;
  for (size_t l = 0; l < c.layer_types.size(); ++l) {
    const int64_t idx = attn_index_[l];
    if (c.layer_types[l] == LayerKind::kFullAttention) {
      Segment seg;
      seg.desc = {static_cast<int32_t>(l),
                  SegmentKind::kAttnKv,
                  begin,
                  end,
                  {2, end - begin, c.num_kv_heads, c.head_dim},
                  "F32"};
      seg.bytes.resize(sizeof(float) * 2 * (end - begin) * row);
      auto* dst = reinterpret_cast<float*>(seg.bytes.data());
      for (int64_t p = begin; p < end; ++p) {
        const int32_t blk = s->blocks[p / bs];
        const int64_t off = (p % bs) * row;
        std::memcpy(dst + (p - begin) * row, kv.K(idx, blk) + off, sizeof(float) * row);
        std::memcpy(dst + (end - begin + p - begin) * row, kv.V(idx, blk) + off,
                    sizeof(float) * row);
      }
      ex.segments.push_back(std::move(seg));
    } else if (include_state) {
      Segment conv;
      conv.desc = {static_cast<int32_t>(l),
                   SegmentKind::kConvState,
                   end,
                   end,
                   {c.linear_conv_kernel_dim - 1, c.conv_dim()},
                   "F32"};
      const float* cp = st.Conv(idx, s->slot);
      conv.bytes.assign(reinterpret_cast<const uint8_t*>(cp),
                        reinterpret_cast<const uint8_t*>(cp + st.conv_floats()));
      ex.segments.push_back(std::move(conv));
      Segment ssm;
      ssm.desc = {static_cast<int32_t>(l),
                  SegmentKind::kSsmState,
                  end,
                  end,
                  {c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim},
                  "F32"};
      const float* sp = st.Ssm(idx, s->slot);
      ssm.bytes.assign(reinterpret_cast<const uint8_t*>(sp),
                       reinterpret_cast<const uint8_t*>(sp + st.ssm_floats()));
      ex.segments.push_back(std::move(ssm));
    }
  }
  return ex;
}

Status Engine::Import(SequenceId id, const SequenceExport& data) {
  PRFAAS_ASSIGN_OR_RETURN(Sequence * s, Find(id));
  if (data.model_fingerprint != ModelFingerprint())
    return FailedPrecondition("Import: export comes from a different model shape");
  const ModelConfig& c = config_;
  const int64_t row = c.num_kv_heads * c.head_dim;
  const int64_t end = data.num_tokens;
  // Validate everything before touching the sequence.
  std::vector<const Segment*> kv_seg(c.layer_types.size(), nullptr), conv_seg(kv_seg),
      ssm_seg(kv_seg);
  for (const auto& seg : data.segments) {
    const auto& d = seg.desc;
    const std::string where = std::string("Import: segment ") + SegmentKindName(d.kind) +
                              " of layer " + std::to_string(d.layer);
    if (d.layer < 0 || d.layer >= static_cast<int32_t>(c.layer_types.size()))
      return InvalidArgument(where + ": no such layer");
    if (d.dtype != "F32")
      return InvalidArgument(where + ": dtype " + d.dtype + " not supported (F32)");
    const bool attn = c.layer_types[d.layer] == LayerKind::kFullAttention;
    int64_t want = 0;
    if (d.kind == SegmentKind::kAttnKv) {
      if (!attn) return InvalidArgument(where + ": layer is not full attention");
      if (d.token_begin != s->length || d.token_end != end)
        return FailedPrecondition(where + ": covers [" + std::to_string(d.token_begin) + ", " +
                                  std::to_string(d.token_end) + ") but the sequence has length " +
                                  std::to_string(s->length) + " and the export ends at " +
                                  std::to_string(end));
      want = 2 * (d.token_end - d.token_begin) * row * 4;
      kv_seg[d.layer] = &seg;
    } else {
      if (attn) return InvalidArgument(where + ": layer is not linear attention");
      if (d.token_begin != end || d.token_end != end)
        return FailedPrecondition(where + ": state valid at " + std::to_string(d.token_end) +
                                  ", export ends at " + std::to_string(end));
      want = (d.kind == SegmentKind::kConvState ? states_.conv_floats() : states_.ssm_floats()) * 4;
      (d.kind == SegmentKind::kConvState ? conv_seg : ssm_seg)[d.layer] = &seg;
    }
    if (static_cast<int64_t>(seg.bytes.size()) != want)
      return InvalidArgument(where + ": " + std::to_string(seg.bytes.size()) + " bytes, expected " +
                             std::to_string(want));
  }
  for (size_t l = 0; l < c.layer_types.size(); ++l) {
    const bool attn = c.layer_types[l] == LayerKind::kFullAttention;
    if (attn && !kv_seg[l] && end > s->length)
      return InvalidArgument("Import: missing attn_kv for layer " + std::to_string(l));
    if (!attn && (!conv_seg[l] || !ssm_seg[l]))
      return InvalidArgument("Import: missing GDN state for layer " + std::to_string(l));
  }
  if (end < s->length) return FailedPrecondition("Import: export is shorter than the sequence");
  PRFAAS_RETURN_IF_ERROR(EnsureBlocks(s, end));
  const int64_t bs = kv_.block_size();
  // Device: stage the touched blocks on the host first (the first may hold earlier tokens).
  std::span<const int32_t> touched;
  if (device_ && end > s->length) {
    const int64_t b0 = s->length / bs, b1 = (end + bs - 1) / bs;
    touched = {s->blocks.data() + b0, static_cast<size_t>(b1 - b0)};
    device_->DownloadBlocks(touched, &kv_);
  }
  bool state_written = false;
  for (size_t l = 0; l < c.layer_types.size(); ++l) {
    const int64_t idx = attn_index_[l];
    if (kv_seg[l]) {
      const auto* src = reinterpret_cast<const float*>(kv_seg[l]->bytes.data());
      const int64_t n = end - s->length;
      for (int64_t p = s->length; p < end; ++p) {
        const int32_t blk = s->blocks[p / bs];
        const int64_t off = (p % bs) * row;
        std::memcpy(kv_.K(idx, blk) + off, src + (p - s->length) * row, sizeof(float) * row);
        std::memcpy(kv_.V(idx, blk) + off, src + (n + p - s->length) * row, sizeof(float) * row);
      }
    }
    if (conv_seg[l]) {
      std::memcpy(states_.Conv(idx, s->slot), conv_seg[l]->bytes.data(), conv_seg[l]->bytes.size());
      std::memcpy(states_.Ssm(idx, s->slot), ssm_seg[l]->bytes.data(), ssm_seg[l]->bytes.size());
      state_written = true;
    }
  }
  if (device_) {
    device_->UploadBlocks(touched, &kv_);
    if (state_written) device_->UploadSlot(s->slot, &states_);
  }
  s->length = end;
  return Status::Ok();
}

}  // namespace prfaas::engine
