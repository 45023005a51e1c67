#include "serving/bundle_codec.h"

#include <algorithm>
#include <cstring>

namespace prfaas::serving {
namespace {

transport::SegmentKind ToWire(engine::SegmentKind k) {
  switch (k) {
    case engine::SegmentKind::kAttnKv: return transport::SegmentKind::kAttnKv;
    case engine::SegmentKind::kConvState: return transport::SegmentKind::kConvState;
    case engine::SegmentKind::kSsmState: return transport::SegmentKind::kSsmState;
  }
  return transport::SegmentKind::kAttnKv;
}

Result<engine::SegmentKind> FromWire(transport::SegmentKind k) {
  switch (k) {
    case transport::SegmentKind::kAttnKv: return engine::SegmentKind::kAttnKv;
    case transport::SegmentKind::kConvState: return engine::SegmentKind::kConvState;
    case transport::SegmentKind::kSsmState: return engine::SegmentKind::kSsmState;
  }
  return InvalidArgument("unknown segment kind " + std::to_string(static_cast<int>(k)));
}

}  // namespace

std::vector<transport::LayerDesc> LayerLayout(const engine::ModelConfig& config) {
  std::vector<transport::LayerDesc> out;
  for (auto kind : config.layer_types) {
    transport::LayerDesc d;
    d.kind = kind == engine::LayerKind::kFullAttention ? transport::LayerKind::kFullAttention
                                                       : transport::LayerKind::kLinearAttention;
    d.kv_dtype = transport::DType::kF32;
    d.state_dtype = transport::DType::kF32;
    out.push_back(d);
  }
  return out;
}

uint64_t BundleBytes(const engine::ModelConfig& config, int64_t skip, int64_t n) {
  return static_cast<uint64_t>(config.KvBytesPerToken(4) * (n - skip) +
                               config.StateBytesPerSequence(4, 4));
}

transport::BundleHeader MakeBundleHeader(const engine::ModelConfig& config, uint64_t fingerprint,
                                         uint64_t ticket_id, const std::string& request_id,
                                         int64_t skip, int64_t n, uint32_t block_size) {
  transport::BundleHeader h;
  h.ticket_id = ticket_id;
  h.request_id = request_id.substr(0, 255);
  h.model_fingerprint = fingerprint;
  h.layers = LayerLayout(config);
  h.block_size_tokens = block_size;
  h.token_begin = static_cast<uint64_t>(skip);
  h.token_end = static_cast<uint64_t>(n);
  return h;
}

transport::SegmentInfo DescribeSegment(const engine::Segment& seg, uint32_t block_size,
                                       bool final_piece) {
  transport::SegmentInfo info;
  info.layer = static_cast<uint32_t>(seg.desc.layer);
  info.kind = ToWire(seg.desc.kind);
  if (seg.desc.kind == engine::SegmentKind::kAttnKv) {
    info.block_begin = static_cast<uint32_t>(seg.desc.token_begin / block_size);
    info.block_end = static_cast<uint32_t>((seg.desc.token_end + block_size - 1) / block_size);
  }
  // GDN layers have two kinds, the SSM state comes last; attention layers end with the KV piece
  // of the final export.
  info.last_of_layer = final_piece && seg.desc.kind != engine::SegmentKind::kConvState;
  return info;
}

Result<engine::SequenceExport> ToExport(const engine::ModelConfig& config,
                                        const transport::Bundle& bundle) {
  engine::SequenceExport exp;
  exp.model_fingerprint = bundle.header.model_fingerprint;
  exp.num_tokens = static_cast<int64_t>(bundle.header.token_end);
  const int64_t begin = static_cast<int64_t>(bundle.header.token_begin);
  const int64_t end = exp.num_tokens;
  const int64_t bs = bundle.header.block_size_tokens;
  const int64_t row = config.num_kv_heads * config.head_dim;
  if (bundle.header.layers.size() != config.layer_types.size()) {
    return InvalidArgument("bundle has " + std::to_string(bundle.header.layers.size()) +
                           " layers, model has " + std::to_string(config.layer_types.size()));
  }
  if (bs <= 0 || end < begin) return InvalidArgument("bundle header has a bad block size or range");
  // Attention KV arrives in block-aligned pieces; each layer's pieces are joined here.
  std::vector<int64_t> kv_index(config.layer_types.size(), -1);    // -> exp.segments
  std::vector<int64_t> kv_next(config.layer_types.size(), begin);  // next token expected
  for (const auto& seg : bundle.segments) {
    if (seg.info.layer >= config.layer_types.size()) {
      return InvalidArgument("bundle segment for layer " + std::to_string(seg.info.layer) +
                             " beyond the model's " + std::to_string(config.layer_types.size()));
    }
    PRFAAS_ASSIGN_OR_RETURN(engine::SegmentKind kind, FromWire(seg.info.kind));
    const uint32_t layer = seg.info.layer;
    const std::string where = "layer " + std::to_string(layer) + " " +
                              transport::SegmentKindName(seg.info.kind) + " segment";
    bool full = config.layer_types[layer] == engine::LayerKind::kFullAttention;
    if (kind == engine::SegmentKind::kAttnKv) {
      if (!full) return InvalidArgument("attention KV for linear layer " + std::to_string(layer));
      const int64_t t0 = std::max(begin, static_cast<int64_t>(seg.info.block_begin) * bs);
      const int64_t t1 = std::min(end, static_cast<int64_t>(seg.info.block_end) * bs);
      if (t0 != kv_next[layer] || t1 <= t0) {
        return InvalidArgument(where + " covers tokens [" + std::to_string(t0) + ", " +
                               std::to_string(t1) + "), expected a piece starting at " +
                               std::to_string(kv_next[layer]));
      }
      const uint64_t want = static_cast<uint64_t>(2 * (t1 - t0) * row) * 4;
      if (seg.size != want) {
        return DataLoss(where + " has " + std::to_string(seg.size) + " bytes, expected " +
                        std::to_string(want));
      }
      if (kv_index[layer] < 0) {
        engine::Segment out;
        out.desc.layer = static_cast<int32_t>(layer);
        out.desc.kind = kind;
        out.desc.token_begin = begin;
        out.desc.token_end = end;
        out.desc.shape = {2, end - begin, config.num_kv_heads, config.head_dim};
        out.bytes.resize(static_cast<size_t>(2 * (end - begin) * row) * 4);
        kv_index[layer] = static_cast<int64_t>(exp.segments.size());
        exp.segments.push_back(std::move(out));
      }
      // Piece layout [2, t1-t0, row]: K rows then V rows; the joined segment is [2, end-begin,
      // row].
      auto* dst = reinterpret_cast<float*>(exp.segments[kv_index[layer]].bytes.data());
      const auto* src = reinterpret_cast<const float*>(seg.data.get());
      const size_t piece = static_cast<size_t>((t1 - t0) * row);
      std::memcpy(dst + (t0 - begin) * row, src, piece * 4);
      std::memcpy(dst + (end - begin + t0 - begin) * row, src + piece, piece * 4);
      kv_next[layer] = t1;
      continue;
    }
    if (full) return InvalidArgument("GDN state for attention layer " + std::to_string(layer));
    engine::Segment out;
    out.desc.layer = static_cast<int32_t>(layer);
    out.desc.kind = kind;
    out.desc.token_begin = out.desc.token_end = end;
    if (kind == engine::SegmentKind::kConvState) {
      out.desc.shape = {config.linear_conv_kernel_dim - 1, config.conv_dim()};
    } else {
      out.desc.shape = {config.linear_num_value_heads, config.linear_key_head_dim,
                        config.linear_value_head_dim};
    }
    int64_t elems = 1;
    for (auto d : out.desc.shape) elems *= d;
    if (static_cast<uint64_t>(elems) * 4 != seg.size) {
      return DataLoss(where + " has " + std::to_string(seg.size) + " bytes, expected " +
                      std::to_string(elems * 4));
    }
    out.bytes.resize(seg.size);
    std::memcpy(out.bytes.data(), seg.data.get(), seg.size);
    exp.segments.push_back(std::move(out));
  }
  for (size_t l = 0; l < config.layer_types.size(); ++l) {
    if (kv_index[l] >= 0 && kv_next[l] != end) {
      return DataLoss("layer " + std::to_string(l) + " attention KV ends at token " +
                      std::to_string(kv_next[l]) + ", the bundle at " + std::to_string(end));
    }
  }
  return exp;
}

}  // namespace prfaas::serving
