// CUDA backend of the Engine: weights uploaded once, KV/state pools and the forward on the device.
// See backend.h. The forward mirrors Engine::Forward (engine.cpp) step for step:
//   embed → per layer [RmsNorm → mixer → residual, RmsNorm → SwiGLU MLP → residual] → final norm
//   of each span's last row → LM head.
// Residual adds are fused into the output projections (GEMM with beta = 1 into the fp32 stream).
// Mixers use the backend's own kernels (model_kernels.h: any head size, fp32 or bf16), or with
// library_kernels in bf16 the kernels/cuda attention / conv1d / GDN kernels where they apply.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "engine/cuda/backend.h"
#include "engine/cuda/model_kernels.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/common.h"
#include "kernels/cuda/conv1d.h"
#include "kernels/cuda/gdn.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"

namespace prfaas::engine {
namespace {

namespace kc = kernels::cuda;
using bf16 = __nv_bfloat16;

// Device buffer that frees itself; sized in elements of T.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(int64_t n) { Resize(n); }
  ~DeviceArray() {
    if (ptr_) (void)cudaFree(ptr_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : ptr_(o.ptr_), n_(o.n_) {
    o.ptr_ = nullptr;
    o.n_ = 0;
  }
  void Resize(int64_t n) {
    if (ptr_) CUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr;
    n_ = n;
    if (n > 0) CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), sizeof(T) * n));
  }
  T* get() const { return ptr_; }
  int64_t size() const { return n_; }

 private:
  T* ptr_ = nullptr;
  int64_t n_ = 0;
};

template <typename T>
T FromFloat(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return __float2bfloat16(v);
  }
}
template <typename T>
float ToFloat(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return __bfloat162float(v);
  }
}

// Uploads host fp32 values as T.
template <typename T>
void Upload(const std::vector<float>& host, DeviceArray<T>* dev) {
  dev->Resize(static_cast<int64_t>(host.size()));
  if (host.empty()) return;
  if constexpr (std::is_same_v<T, float>) {
    CUDA_CHECK(
        cudaMemcpy(dev->get(), host.data(), sizeof(float) * host.size(), cudaMemcpyHostToDevice));
  } else {
    std::vector<T> tmp(host.size());
    for (size_t i = 0; i < host.size(); ++i) tmp[i] = FromFloat<T>(host[i]);
    CUDA_CHECK(cudaMemcpy(dev->get(), tmp.data(), sizeof(T) * tmp.size(), cudaMemcpyHostToDevice));
  }
}

template <typename T>
constexpr kc::DType kDType = std::is_same_v<T, float> ? kc::DType::kF32 : kc::DType::kBF16;

template <typename T>
class CudaBackend final : public DeviceBackend {
 public:
  CudaBackend(const ModelConfig& config, std::shared_ptr<const ModelWeights> weights,
              const DeviceBackendOptions& options)
      : c_(config), host_weights_(std::move(weights)), opt_(options) {
    CUDA_CHECK(cudaGetDevice(&device_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    UploadWeights();
    row_ = c_.num_kv_heads * c_.head_dim;
    n_attn_ = c_.num_full_attention_layers();
    kv_.Resize(n_attn_ * opt_.num_kv_blocks * 2 * opt_.kv_block_size * row_);
    conv_floats_ = (c_.linear_conv_kernel_dim - 1) * c_.conv_dim();
    ssm_floats_ = c_.linear_num_value_heads * c_.linear_key_head_dim * c_.linear_value_head_dim;
    slot_floats_ = c_.num_linear_attention_layers() * (conv_floats_ + ssm_floats_);
    states_.Resize(opt_.num_state_slots * slot_floats_);
    if (states_.size() > 0)
      CUDA_CHECK(cudaMemset(states_.get(), 0, sizeof(float) * states_.size()));
    std::vector<float> inv(std::max<int64_t>(1, c_.rotary_dim() / 2));
    kc::RopeInvFreq(c_.rotary_dim(), static_cast<float>(c_.rope_theta), inv.data());
    Upload(inv, &inv_freq_);
    int64_t a = 0, g = 0;
    for (auto kind : c_.layer_types)
      index_.push_back(kind == LayerKind::kFullAttention ? a++ : g++);
    if constexpr (std::is_same_v<T, bf16>) {
      lib_ = opt_.library_kernels;
      // The library kernels move states as float4 and load rows as 16-byte vectors.
      const int64_t layer_floats = conv_floats_ + ssm_floats_;
      const int64_t gdn_width =
          c_.conv_dim() + c_.linear_value_dim() + 2 * c_.linear_num_value_heads;
      lib_conv_ = lib_ && c_.conv_dim() % 8 == 0 && gdn_width % 8 == 0 && layer_floats % 4 == 0 &&
                  conv_floats_ % 4 == 0;
      lib_gdn_ = lib_conv_ && c_.linear_key_head_dim == kc::kGdnHeadDim &&
                 c_.linear_value_head_dim == kc::kGdnHeadDim && slot_floats_ % 4 == 0;
      lib_attn_ = lib_ && c_.head_dim % 8 == 0 && c_.head_dim <= 512;
    }
  }
  ~CudaBackend() override { (void)cudaStreamDestroy(stream_); }

  std::string Describe() const override {
    cudaDeviceProp prop{};
    (void)cudaGetDeviceProperties(&prop, device_);
    return "cuda:" + std::to_string(device_) + " " + prop.name +
           (std::is_same_v<T, float> ? " fp32" : " bf16") + (lib_ ? " library-kernels" : "");
  }

  void Forward(std::span<const DeviceSpan> spans, const int32_t* tokens, float* logits) override;

  void CopyBlock(int32_t src, int32_t dst) override {
    const int64_t per = 2 * opt_.kv_block_size * row_;
    for (int64_t l = 0; l < n_attn_; ++l)
      CUDA_CHECK(cudaMemcpyAsync(KvBlock(l, dst), KvBlock(l, src), sizeof(T) * per,
                                 cudaMemcpyDeviceToDevice, stream_));
  }
  void CopySlot(int32_t src, int32_t dst) override {
    if (slot_floats_ == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(Slot(dst), Slot(src), sizeof(float) * slot_floats_,
                               cudaMemcpyDeviceToDevice, stream_));
  }
  void ZeroSlot(int32_t slot) override {
    if (slot_floats_ == 0) return;
    CUDA_CHECK(cudaMemsetAsync(Slot(slot), 0, sizeof(float) * slot_floats_, stream_));
  }
  void DownloadBlocks(std::span<const int32_t> blocks, KvBlockPool* host) override {
    const int64_t per = 2 * opt_.kv_block_size * row_;
    std::vector<T> tmp(per);
    for (int64_t l = 0; l < n_attn_; ++l) {
      for (int32_t b : blocks) {
        CUDA_CHECK(cudaMemcpyAsync(tmp.data(), KvBlock(l, b), sizeof(T) * per,
                                   cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        float* dst = host->K(l, b);  // K then V, contiguous like the device block
        for (int64_t i = 0; i < per; ++i) dst[i] = ToFloat(tmp[i]);
      }
    }
  }
  void UploadBlocks(std::span<const int32_t> blocks, KvBlockPool* host) override {
    const int64_t per = 2 * opt_.kv_block_size * row_;
    std::vector<T> tmp(per);
    for (int64_t l = 0; l < n_attn_; ++l) {
      for (int32_t b : blocks) {
        const float* src = host->K(l, b);
        for (int64_t i = 0; i < per; ++i) tmp[i] = FromFloat<T>(src[i]);
        CUDA_CHECK(cudaMemcpyAsync(KvBlock(l, b), tmp.data(), sizeof(T) * per,
                                   cudaMemcpyHostToDevice, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
      }
    }
  }
  void DownloadSlot(int32_t slot, StateSlotPool* host) override {
    if (slot_floats_ == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(host->Conv(0, slot), Slot(slot), sizeof(float) * slot_floats_,
                               cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void UploadSlot(int32_t slot, StateSlotPool* host) override {
    if (slot_floats_ == 0) return;
    CUDA_CHECK(cudaMemcpyAsync(Slot(slot), host->Conv(0, slot), sizeof(float) * slot_floats_,
                               cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  struct Layer {
    DeviceArray<float> input_norm, post_norm, q_norm, k_norm, conv1d, a_log, dt_bias, gdn_norm;
    DeviceArray<T> qkv, o, in_proj, out_proj, gate_up, down;
  };

  T* KvBlock(int64_t attn_layer, int32_t block) const {
    return kv_.get() + ((attn_layer * opt_.num_kv_blocks + block) * 2) * opt_.kv_block_size * row_;
  }
  float* Slot(int32_t slot) const { return states_.get() + slot * slot_floats_; }

  void UploadWeights() {
    const ModelWeights& w = *host_weights_;
    Upload(w.embed, &embed_);
    if (!w.lm_head.empty()) Upload(w.lm_head, &lm_head_);
    Upload(w.final_norm, &final_norm_);
    layers_.resize(w.layers.size());
    for (size_t i = 0; i < w.layers.size(); ++i) {
      const LayerWeights& lw = w.layers[i];
      Layer& d = layers_[i];
      Upload(lw.input_norm, &d.input_norm);
      Upload(lw.post_norm, &d.post_norm);
      Upload(lw.gate_up, &d.gate_up);
      Upload(lw.down, &d.down);
      if (lw.kind == LayerKind::kFullAttention) {
        Upload(lw.attn.qkv_proj, &d.qkv);
        Upload(lw.attn.o_proj, &d.o);
        Upload(lw.attn.q_norm, &d.q_norm);
        Upload(lw.attn.k_norm, &d.k_norm);
      } else {
        Upload(lw.gdn.in_proj, &d.in_proj);
        Upload(lw.gdn.out_proj, &d.out_proj);
        Upload(lw.gdn.conv1d, &d.conv1d);
        Upload(lw.gdn.a_log, &d.a_log);
        Upload(lw.gdn.dt_bias, &d.dt_bias);
        Upload(lw.gdn.norm, &d.gdn_norm);
      }
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  }

  // Scratch for `rows` rows and `n` spans; grows, never shrinks.
  void Reserve(int64_t rows, int64_t n);
  // y (fp32 residual stream, beta 1) or T output = x · w^T.
  void Gemm(const T* x, const DeviceArray<T>& w, int64_t m, int64_t n, int64_t k, void* y,
            kc::DType out, float beta) {
    kc::GemmArgs g;
    g.x = x;
    g.w = w.get();
    g.y = y;
    g.m = m;
    g.n = n;
    g.k = k;
    g.in = kDType<T>;
    g.out = out;
    g.beta = beta;
    kc::Linear(g, stream_);
  }
  // Normalises the fp32 stream into the GEMM input dtype.
  const T* Norm(const float* x, int64_t rows, const DeviceArray<float>& w) {
    const int64_t h = c_.hidden_size;
    const float eps = static_cast<float>(c_.rms_norm_eps);
    kc::RmsNorm<float>(x, h, rows, h, w.get(), eps, xn_.get(), h, stream_);
    if constexpr (std::is_same_v<T, float>) {
      return xn_.get();
    } else {
      kc::Convert<float, bf16>(xn_.get(), rows * h, xn_t_.get(), stream_);
      return xn_t_.get();
    }
  }
  void Attention(int64_t layer, const T* in, const gpu::BatchMeta& meta, bool decode);
  void Gdn(int64_t layer, const T* in, const gpu::BatchMeta& meta, bool decode);
  // Workspace of at least `bytes` for the library kernels.
  void* Workspace(size_t bytes) {
    if (static_cast<int64_t>(bytes) > ws_.size()) ws_.Resize(static_cast<int64_t>(bytes));
    return ws_.get();
  }

  ModelConfig c_;
  std::shared_ptr<const ModelWeights> host_weights_;
  DeviceBackendOptions opt_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  int64_t row_ = 0, n_attn_ = 0, conv_floats_ = 0, ssm_floats_ = 0, slot_floats_ = 0;
  std::vector<int64_t> index_;  // layer -> index among attention (or GDN) layers
  bool lib_ = false, lib_attn_ = false, lib_conv_ = false, lib_gdn_ = false;
  DeviceArray<uint8_t> ws_;
  DeviceArray<T> embed_, lm_head_;
  DeviceArray<float> final_norm_, inv_freq_;
  std::vector<Layer> layers_;
  DeviceArray<T> kv_;
  DeviceArray<float> states_;
  // Scratch.
  int64_t cap_rows_ = 0, cap_spans_ = 0;
  DeviceArray<float> x_, xn_, last_, logits_;
  DeviceArray<T> xn_t_, proj_, q_, gate_, k_, v_, attn_, conv_, gdn_, gdn_raw_, z_, act_, last_t_;
  DeviceArray<int32_t> meta_;
  std::vector<int32_t> meta_host_;
};

template <typename T>
void CudaBackend<T>::Reserve(int64_t rows, int64_t n) {
  if (rows <= cap_rows_ && n <= cap_spans_) return;
  rows = std::max(rows, cap_rows_);
  n = std::max(n, cap_spans_);
  const int64_t h = c_.hidden_size, d = c_.head_dim, hq = c_.num_attention_heads;
  const int64_t attn_w = hq * 2 * d + 2 * c_.num_kv_heads * d;
  const int64_t gdn_w = c_.conv_dim() + c_.linear_value_dim() + 2 * c_.linear_num_value_heads;
  const int64_t proj_w = std::max({attn_w, gdn_w, 2 * c_.intermediate_size});
  x_.Resize(rows * h);
  xn_.Resize(rows * h);
  if constexpr (!std::is_same_v<T, float>) xn_t_.Resize(rows * h);
  proj_.Resize(rows * proj_w);
  q_.Resize(rows * hq * d);
  gate_.Resize(rows * hq * d);
  k_.Resize(rows * row_);
  v_.Resize(rows * row_);
  attn_.Resize(rows * hq * d);
  conv_.Resize(rows * c_.conv_dim());
  gdn_.Resize(rows * c_.linear_value_dim());
  if (lib_gdn_) {
    gdn_raw_.Resize(rows * c_.linear_value_dim());
    z_.Resize(rows * c_.linear_value_dim());
  }
  act_.Resize(rows * c_.intermediate_size);
  last_.Resize(n * h);
  last_t_.Resize(n * h);
  logits_.Resize(n * c_.vocab_size);
  cap_rows_ = rows;
  cap_spans_ = n;
}

template <typename T>
void CudaBackend<T>::Forward(std::span<const DeviceSpan> spans, const int32_t* tokens,
                             float* logits) {
  const int64_t n = static_cast<int64_t>(spans.size());
  int64_t rows = 0, max_blocks = 1, max_len = 0;
  for (const auto& sp : spans) {
    rows += sp.t;
    max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(sp.blocks.size()));
    max_len = std::max(max_len, sp.t);
  }
  if (rows == 0) return;
  Reserve(rows, n);
  // Metadata, one upload: tokens | positions | row_span | row0 (n+1) | len | slot | last | tables.
  auto& m = meta_host_;
  m.clear();
  m.insert(m.end(), tokens, tokens + rows);
  const size_t pos_off = m.size();
  for (const auto& sp : spans)
    for (int64_t i = 0; i < sp.t; ++i) m.push_back(static_cast<int32_t>(sp.pos0 + i));
  const size_t span_off = m.size();
  for (int64_t s = 0; s < n; ++s)
    for (int64_t i = 0; i < spans[s].t; ++i) m.push_back(static_cast<int32_t>(s));
  const size_t row0_off = m.size();
  int64_t r = 0;
  for (const auto& sp : spans) {
    m.push_back(static_cast<int32_t>(r));
    r += sp.t;
  }
  m.push_back(static_cast<int32_t>(r));
  const size_t pos0_off = m.size();
  int64_t max_context = 0;
  for (const auto& sp : spans) {
    m.push_back(static_cast<int32_t>(sp.pos0));
    max_context = std::max(max_context, sp.pos0 + sp.t);
  }
  const size_t len_off = m.size();
  for (const auto& sp : spans) m.push_back(static_cast<int32_t>(sp.t));
  const size_t slot_off = m.size();
  for (const auto& sp : spans) m.push_back(sp.slot);
  const size_t last_off = m.size();
  r = 0;
  for (const auto& sp : spans) {
    r += sp.t;
    m.push_back(static_cast<int32_t>(r - 1));
  }
  const size_t table_off = m.size();
  for (const auto& sp : spans) {
    m.insert(m.end(), sp.blocks.begin(), sp.blocks.end());
    m.resize(m.size() + (max_blocks - static_cast<int64_t>(sp.blocks.size())), 0);
  }
  if (meta_.size() < static_cast<int64_t>(m.size()))
    meta_.Resize(static_cast<int64_t>(m.size()) * 2);
  CUDA_CHECK(cudaMemcpyAsync(meta_.get(), m.data(), sizeof(int32_t) * m.size(),
                             cudaMemcpyHostToDevice, stream_));
  const int32_t* md = meta_.get();
  gpu::BatchMeta meta;
  meta.rows = static_cast<int32_t>(rows);
  meta.spans = static_cast<int32_t>(n);
  meta.positions = md + pos_off;
  meta.row_span = md + span_off;
  meta.span_row0 = md + row0_off;
  meta.span_pos0 = md + pos0_off;
  meta.span_len = md + len_off;
  meta.span_slot = md + slot_off;
  meta.block_tables = md + table_off;
  meta.bt_stride = static_cast<int32_t>(max_blocks);
  meta.max_len = static_cast<int32_t>(max_len);
  meta.max_context = static_cast<int32_t>(max_context);
  const bool decode = max_len == 1 && rows == n;  // one token per sequence: decode kernels

  const int64_t h = c_.hidden_size, inter = c_.intermediate_size;
  kc::Embedding<T>(embed_.get(), h, md, rows, x_.get(), stream_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    const T* in = Norm(x_.get(), rows, L.input_norm);
    if (c_.layer_types[l] == LayerKind::kFullAttention) {
      Attention(static_cast<int64_t>(l), in, meta, decode);
    } else {
      Gdn(static_cast<int64_t>(l), in, meta, decode);
    }
    in = Norm(x_.get(), rows, L.post_norm);
    Gemm(in, L.gate_up, rows, 2 * inter, h, proj_.get(), kDType<T>, 0.0f);
    kc::SwiGLU<T>(proj_.get(), proj_.get() + inter, rows, inter, 2 * inter, act_.get(), stream_);
    Gemm(act_.get(), L.down, rows, h, inter, x_.get(), kc::DType::kF32, 1.0f);
  }
  gpu::GatherRows(x_.get(), md + last_off, n, h, last_.get(), stream_);
  const T* last = Norm(last_.get(), n, final_norm_);
  // Norm wrote through the row scratch (xn_), which has room for n <= rows rows.
  const DeviceArray<T>& out_w = lm_head_.size() > 0 ? lm_head_ : embed_;
  Gemm(last, out_w, n, c_.vocab_size, h, logits_.get(), kc::DType::kF32, 0.0f);
  CUDA_CHECK(cudaMemcpyAsync(logits, logits_.get(), sizeof(float) * n * c_.vocab_size,
                             cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

template <typename T>
void CudaBackend<T>::Attention(int64_t layer, const T* in, const gpu::BatchMeta& meta,
                               bool decode) {
  const Layer& L = layers_[layer];
  const int64_t h = c_.hidden_size, d = c_.head_dim, hq = c_.num_attention_heads,
                hkv = c_.num_kv_heads, rows = meta.rows;
  const int64_t width = hq * 2 * d + 2 * hkv * d;
  Gemm(in, L.qkv, rows, width, h, proj_.get(), kDType<T>, 0.0f);
  gpu::AttnPrep<T>(proj_.get(), rows, hq, hkv, d, L.q_norm.get(), L.k_norm.get(),
                   static_cast<float>(c_.rms_norm_eps), meta.positions, inv_freq_.get(),
                   c_.rotary_dim(), q_.get(), gate_.get(), k_.get(), v_.get(), stream_);
  T* base = KvBlock(index_[layer], 0);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  bool done = false;
  if constexpr (std::is_same_v<T, bf16>) {
    if (lib_attn_) {  // writes K/V into the paged cache itself, then attends
      kc::AttentionBatch b;
      b.q = q_.get();
      b.k_new = k_.get();
      b.v_new = v_.get();
      b.out = attn_.get();
      b.cu_seqlens = meta.span_row0;
      b.first_pos = meta.span_pos0;
      b.cache.k_cache = base;
      b.cache.v_cache = base + opt_.kv_block_size * row_;
      b.cache.block_stride = 2 * opt_.kv_block_size * row_;
      b.cache.block_size = static_cast<int32_t>(opt_.kv_block_size);
      b.cache.block_tables = meta.block_tables;
      b.cache.block_table_stride = meta.bt_stride;
      b.num_seqs = meta.spans;
      b.total_tokens = meta.rows;
      b.max_new_tokens = meta.max_len;
      b.max_context = meta.max_context;
      b.q_heads = static_cast<int32_t>(hq);
      b.kv_heads = static_cast<int32_t>(hkv);
      b.head_dim = static_cast<int32_t>(d);
      b.scale = scale;
      if (decode) {
        const size_t ws =
            kc::AttentionDecodeWorkspaceBytes(b.num_seqs, b.q_heads, b.head_dim, b.max_context);
        kc::AttentionDecode(b, Workspace(ws), ws, stream_);
      } else {
        kc::AttentionPrefill(b, stream_);
      }
      done = true;
    }
  }
  if (!done) {
    gpu::PagedKvWrite<T>(k_.get(), v_.get(), meta, base, opt_.kv_block_size, row_, stream_);
    gpu::PagedAttention<T>(q_.get(), meta, base, opt_.kv_block_size, hq, hkv, d, scale, attn_.get(),
                           stream_);
  }
  kc::SigmoidGateMul<T>(attn_.get(), gate_.get(), rows, hq * d, hq * d, attn_.get(), stream_);
  Gemm(attn_.get(), L.o, rows, h, hq * d, x_.get(), kc::DType::kF32, 1.0f);
}

template <typename T>
void CudaBackend<T>::Gdn(int64_t layer, const T* in, const gpu::BatchMeta& meta, bool decode) {
  const Layer& L = layers_[layer];
  const int64_t h = c_.hidden_size, cd = c_.conv_dim(), vd = c_.linear_value_dim(),
                hv = c_.linear_num_value_heads, rows = meta.rows;
  const int64_t width = cd + vd + 2 * hv;
  const int64_t gi = index_[layer];
  Gemm(in, L.in_proj, rows, width, h, proj_.get(), kDType<T>, 0.0f);
  float* layer_state = states_.get() + gi * (conv_floats_ + ssm_floats_);
  bool conv_done = false;
  if constexpr (std::is_same_v<T, bf16>) {
    if (lib_conv_) {
      kc::Conv1dArgs a;
      a.x = proj_.get();
      a.x_stride = width;
      a.weight = L.conv1d.get();
      a.y = conv_.get();
      a.cu_seqlens = meta.span_row0;
      a.slots = meta.span_slot;
      a.states = {layer_state, slot_floats_};
      a.num_seqs = meta.spans;
      a.total_tokens = meta.rows;
      a.channels = static_cast<int32_t>(cd);
      a.kernel_size = static_cast<int32_t>(c_.linear_conv_kernel_dim);
      if (decode) {
        kc::causal_conv1d_update(a, stream_);
      } else {
        kc::causal_conv1d_prefill(a, stream_);
      }
      conv_done = true;
    }
  }
  if (!conv_done)
    gpu::CausalConv<T>(proj_.get(), width, meta, cd, c_.linear_conv_kernel_dim, L.conv1d.get(),
                       layer_state, slot_floats_, conv_.get(), stream_);
  gpu::GdnLayer g;
  g.key_heads = c_.linear_num_key_heads;
  g.value_heads = hv;
  g.key_dim = c_.linear_key_head_dim;
  g.value_dim = c_.linear_value_head_dim;
  g.a_log = L.a_log.get();
  g.dt_bias = L.dt_bias.get();
  g.norm = L.gdn_norm.get();
  g.eps = static_cast<float>(c_.rms_norm_eps);
  g.scale = 1.0f / std::sqrt(static_cast<float>(c_.linear_key_head_dim));
  g.ssm_base = layer_state + conv_floats_;
  g.slot_stride = slot_floats_;
  bool gdn_done = false;
  if constexpr (std::is_same_v<T, bf16>) {
    if (lib_gdn_) {
      const int64_t kd = c_.linear_key_dim();
      kc::GdnArgs a;
      a.q = conv_.get();
      a.k = conv_.get() + kd;
      a.v = conv_.get() + 2 * kd;
      a.q_stride = a.k_stride = a.v_stride = cd;
      a.gates = {proj_.get() + cd + vd + hv, proj_.get() + cd + vd, width, L.a_log.get(),
                 L.dt_bias.get()};
      a.out = gdn_raw_.get();
      a.cu_seqlens = meta.span_row0;
      a.slots = meta.span_slot;
      a.states = {g.ssm_base, slot_floats_};
      a.scale = g.scale;
      a.num_seqs = meta.spans;
      a.total_tokens = meta.rows;
      a.key_heads = static_cast<int32_t>(g.key_heads);
      a.value_heads = static_cast<int32_t>(hv);
      if (decode) {
        kc::gdn_decode(a, stream_);
      } else {
        const size_t ws = kc::gdn_chunk_prefill_workspace_bytes(a.total_tokens, a.num_seqs,
                                                                a.key_heads, a.value_heads);
        kc::gdn_chunk_prefill(a, Workspace(ws), ws, stream_);
      }
      // z sits inside the projection rows: gather it dense for the gated norm.
      CUDA_CHECK(cudaMemcpy2DAsync(z_.get(), sizeof(T) * vd, proj_.get() + cd, sizeof(T) * width,
                                   sizeof(T) * vd, rows, cudaMemcpyDeviceToDevice, stream_));
      kc::GatedRmsNorm<T>(gdn_raw_.get(), z_.get(), rows * hv, c_.linear_value_head_dim,
                          L.gdn_norm.get(), g.eps, gdn_.get(), stream_);
      gdn_done = true;
    }
  }
  if (!gdn_done)
    gpu::GdnRecurrent<T>(g, conv_.get(), proj_.get(), width, cd, cd + vd, cd + vd + hv, meta,
                         gdn_.get(), stream_);
  Gemm(gdn_.get(), L.out_proj, rows, h, vd, x_.get(), kc::DType::kF32, 1.0f);
}

}  // namespace

Result<std::unique_ptr<DeviceBackend>> CreateCudaBackend(
    const ModelConfig& config, std::shared_ptr<const ModelWeights> weights,
    const DeviceBackendOptions& options) {
  if (!kc::DeviceAvailable()) return Unavailable("CUDA backend: no CUDA device present");
  const int64_t dk = config.linear_key_head_dim;
  if (config.num_linear_attention_layers() > 0 && dk != 16 && dk != 32 && dk != 64 && dk != 128)
    return Unimplemented("CUDA backend: linear_key_head_dim " + std::to_string(dk) +
                         " (supported: 16, 32, 64, 128)");
  if (config.linear_conv_kernel_dim > 8)
    return Unimplemented("CUDA backend: linear_conv_kernel_dim > 8");
  if (config.head_dim > 512) return Unimplemented("CUDA backend: head_dim > 512");
  if (options.bf16)
    return std::unique_ptr<DeviceBackend>(
        new CudaBackend<bf16>(config, std::move(weights), options));
  return std::unique_ptr<DeviceBackend>(
      new CudaBackend<float>(config, std::move(weights), options));
}

}  // namespace prfaas::engine
